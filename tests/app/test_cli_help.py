"""Every subcommand has a help text and user errors are one line."""

import pytest
from tensorfield.app.cli import build_parser, main

SUBCOMMANDS = ["demo", "train", "eval", "render", "export", "methods"]


def test_top_level_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tensorfield " + name)
    assert len(out.splitlines()) >= 3


def test_render_requires_out():
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["render", "runs/x"])
    assert exc.value.code == 2
