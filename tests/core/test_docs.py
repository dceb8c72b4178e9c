import re
from pathlib import Path

from privfed.configdoc import reference_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_is_current():
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert text == reference_markdown(), "run: python -m privfed.configdoc > docs/configuration.md"


def test_every_config_field_is_documented():
    text = reference_markdown()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows
    undocumented = [r for r in rows if r.rstrip().endswith("|  |")]
    assert not undocumented, undocumented


def test_readme_commands_and_ci_agree():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert block, "README must start with a sh block of the two set-up commands"
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    install_run, test_cmd = commands
    assert "pip install" in install_run and install_run.rstrip().endswith("privfed run")
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd.strip() in ci.splitlines()


def test_ci_enforces_code_health():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for check in ("ruff check .", "ruff format --check .", "mypy"):
        assert check in ci, f".ci/run must run {check!r}"
