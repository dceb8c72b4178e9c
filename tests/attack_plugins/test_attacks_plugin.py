"""docs/writing-an-attack.md run end to end, next to a package of broken plug-ins.

Every snippet of the page runs (tests/doc_runner.py): its package is installed into a temporary
directory by the page's own ``pip install`` line, listed, run and scored through the ``privfed``
command. A second package, installed first into the same directory, declares broken plug-ins:
one whose module fails to import, one whose module raises, one that is not an attack and one
model whose module is missing. They must be named with their errors and skipped, and everything
else must keep working.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from doc_runner import blocks, offline_pip_env, run_page

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "writing-an-attack.md"

BROKEN: dict[str, str] = {
    "pyproject.toml": """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "privfed-broken-plugins"
version = "0.1.0"

[project.entry-points."privfed.attacks"]
broken-import = "broken_plugins.needs_frobnicate:Attack"
broken-raise = "broken_plugins.boom:Attack"
not-an-attack = "broken_plugins.plain:NotAnAttack"

[project.entry-points."privfed.models"]
broken-model = "broken_plugins.nowhere:factory"

[tool.setuptools]
packages = ["broken_plugins"]
""",
    "broken_plugins/__init__.py": "",
    "broken_plugins/needs_frobnicate.py": "import frobnicate  # noqa: F401\n",
    "broken_plugins/boom.py": "raise RuntimeError('boom at import time')\n",
    "broken_plugins/plain.py": "class NotAnAttack:\n    name = 'not-an-attack'\n",
}


def _privfed(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("privfed")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "privfed.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_every_block_of_the_page_is_a_file_a_command_or_checked_output() -> None:
    kinds = [b.kind for b in blocks(DOC)]
    assert {"file", "sh", "python", "text"} == set(kinds)
    files = {b.path for b in blocks(DOC) if b.kind == "file"}
    assert {"privfed-toy-attack/pyproject.toml", "tiny.toml", "sweep.toml"} <= files


def test_the_page_runs_next_to_broken_plugins(tmp_path: Path) -> None:
    # --no-build-isolation (offline) builds with the environment's own setuptools
    pytest.importorskip("setuptools", reason="building the page's package offline needs setuptools")
    site, work = tmp_path / "site", tmp_path / "work"
    work.mkdir()
    env = offline_pip_env(site, ROOT)
    broken = tmp_path / "privfed-broken-plugins"
    for name, body in BROKEN.items():
        (broken / name).parent.mkdir(parents=True, exist_ok=True)
        (broken / name).write_text(body, encoding="utf-8")
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", str(broken)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert pip.returncode == 0, pip.stderr

    outputs = run_page(DOC, work, env)  # every snippet, with the broken plug-ins installed

    listed = next(out for out in outputs.values() if "problems:" in out)
    problems = listed[listed.index("problems:") :]
    for name, why in (
        ("broken-import", "No module named 'frobnicate'"),
        ("broken-raise", "RuntimeError: boom at import time"),
        ("not-an-attack", "not a subclass of privfed.attack_api.Attack"),
        ("broken-model", "No module named 'broken_plugins.nowhere'"),
    ):
        line = next(line for line in problems.splitlines() if f"'{name}'" in line)
        assert why in line and "privfed-broken-plugins 0.1.0" in line and "uninstall" in line
    assert "toy-norm" in listed and "mia-lira" in listed and "mlp" in listed
    result = json.loads((work / "toy.json").read_text())
    assert result["attack"] == "toy-norm" and result["seed"] == 0
    assert 0.0 <= result["metrics"]["auc"] <= 1.0 and result["metrics"]["norm"] > 0

    run = work / "runs" / "tiny"
    broke = _privfed("attack", "broken-import", "--run", str(run), env=env, cwd=work)
    assert broke.returncode == 2 and "No module named 'frobnicate'" in broke.stderr
    assert "fix that package or uninstall it" in broke.stderr
    bad = _privfed("attack", "not-an-attack", "--run", str(run), env=env, cwd=work)
    assert bad.returncode == 2 and "not a subclass" in bad.stderr

    # uninstalled: the name is unknown again, and the message lists the registered ones
    shutil.rmtree(site)
    gone = _privfed("attack", "toy-norm", "--run", str(run), env=env, cwd=work)
    assert gone.returncode == 2 and "unknown attack 'toy-norm'" in gone.stderr
    assert "mia-loss" in gone.stderr


def test_builtin_attack_through_the_cli_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from support import tiny

    from privfed.cli import main
    from privfed.engine import run_experiment

    run_dir = tmp_path / "run"
    run_experiment(tiny(), run_dir, progress=False, echo=lambda _m: None)
    out = tmp_path / "r.json"
    assert main(["attack", "mia-loss", "--run", str(run_dir), "--json", str(out)]) == 0
    assert "(drawn; pass --seed)" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert isinstance(data["seed"], int) and "auc.image.identity" in data["metrics"]
    assert main(["attack", "mia-loss", "--run", str(tmp_path / "nope")]) == 2
    assert "config.toml does not exist" in capsys.readouterr().err
    assert main(["attack", "mia-lira", "--run", str(run_dir), "--param", "shadows"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    # budgets spent after the run: the next round trains nobody, and the error says so
    assert main(["attack", "inversion-inbox", "--run", str(run_dir), "--round", "next"]) == 2
    err = capsys.readouterr().err
    assert "trained no client: every client's privacy budget is spent" in err
    assert "--round first" in err
