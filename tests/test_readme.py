"""The README's first lines are the set-up commands, and CI runs exactly its test command."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.DOTALL)
    assert block, "README must open with a bash block of set-up commands"
    assert text.index("```bash") < 40, "the set-up block must be at the top of the README"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_demo_and_test_commands():
    commands = _commands()
    assert len(commands) == 2
    demo, tests = commands
    assert "pip install" in demo and "tensorfield demo" in demo
    assert "pip install" in tests and '".[test]"' in tests and "pytest" in tests


def _ci_extract(marker: str) -> str:
    """The first line .ci/run's ``sed`` takes from the README for the command containing ``marker``."""
    script = (ROOT / ".ci" / "run").read_text()
    extract = re.search(rf"^(sed -n .*{marker}.*README\.md.*)$", script, re.MULTILINE)
    assert extract, f".ci/run must take its '{marker}' command from the README"
    sed_command = extract.group(1).split("|")[0]
    out = subprocess.run(sed_command, shell=True, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[0]


def test_ci_runs_the_readme_test_command():
    assert _ci_extract("pytest") == _commands()[1]


def test_ci_runs_the_readme_demo_command_in_a_temporary_folder():
    assert _ci_extract("tensorfield demo") == _commands()[0]
    script = (ROOT / ".ci" / "run").read_text()
    assert "mktemp -d" in script and "--out ${demo_dir}/demo_run" in script
    code = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    assert not any("apt-get" in line for line in code), "CI must rely on the README's lines to install"
