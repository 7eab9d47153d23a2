"""How ``train CONFIG`` finds its config: a file, a packaged name, or ``configs/NAME.yaml`` from
any folder (the commands the README and ``tensorfield process`` print)."""

from __future__ import annotations

import pytest
from tensorfield.app.commands import CommandError, _resolve_config


def test_configs_path_resolves_to_the_packaged_config_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _resolve_config("configs/tensorf_vm_small.yaml", ["steps=7"])
    assert config.method == "tensorf_vm" and config.steps == 7
    assert _resolve_config("gaussians4d_small", []).method == "gaussians4d"


def test_a_local_file_wins_and_unknown_names_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tensorf_vm_small.yaml").write_text("method: tensorf_vm\nsteps: 11\n")
    assert _resolve_config("configs/tensorf_vm_small.yaml", []).steps == 11
    with pytest.raises(CommandError, match="no such config file or method"):
        _resolve_config("configs/nope.yaml", [])
