"""A third-party attack package from docs/writing-an-attack.md, installed and run via the CLI."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import tiny

from privfed.engine import run_experiment

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "writing-an-attack.md"


def _doc_files() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    found = re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, flags=re.S)
    return {name: body for name, body in found}


def _privfed(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("privfed")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "privfed.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("victim") / "run"
    run_experiment(tiny(), d, progress=False, echo=lambda _m: None)
    return d


def test_doc_holds_a_complete_package() -> None:
    files = _doc_files()
    assert set(files) == {"pyproject.toml", "toy_attack.py"}
    assert '"privfed.attacks"' in files["pyproject.toml"]


def test_third_party_attack_installs_lists_and_runs(tmp_path: Path, run_dir: Path) -> None:
    # --no-build-isolation (offline) builds with the environment's own setuptools
    pytest.importorskip("setuptools", reason="building the doc's package offline needs setuptools")
    pkg = tmp_path / "privfed-toy-attack"
    pkg.mkdir()
    for name, body in _doc_files().items():
        (pkg / name).write_text(body, encoding="utf-8")
    site = tmp_path / "site"
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--target",
            str(site),
            str(pkg),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stderr
    assert list(site.glob("privfed_toy_attack-*.dist-info"))
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        # the suite's own path entries stay (tests/conftest.py may have put the checkout's
        # entry points there)
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }

    listed = _privfed("list", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "toy-norm" in listed.stdout and "mia-lira" in listed.stdout

    out = tmp_path / "toy.json"
    proc = _privfed(
        "attack",
        "toy-norm",
        "--run",
        str(run_dir),
        "--seed",
        "3",
        "--param",
        "scale=2",
        "--json",
        str(out),
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "outsider [released-models]" in proc.stdout
    data = json.loads(out.read_text())
    assert data["attack"] == "toy-norm" and data["seed"] == 3
    assert 0.0 <= data["metrics"]["auc"] <= 1.0 and data["metrics"]["norm"] > 0

    # uninstall: without the package on the path the name is unknown again
    shutil.rmtree(site)
    gone = _privfed("attack", "toy-norm", "--run", str(run_dir), env=env, cwd=tmp_path)
    assert gone.returncode == 2 and "unknown attack 'toy-norm'" in gone.stderr
    assert "mia-loss" in gone.stderr  # the message lists the registered ones


def test_builtin_attack_through_the_cli_writes_json(
    tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from privfed.cli import main

    out = tmp_path / "r.json"
    assert main(["attack", "mia-loss", "--run", str(run_dir), "--json", str(out)]) == 0
    assert "(drawn; pass --seed)" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert isinstance(data["seed"], int) and "auc.image.identity" in data["metrics"]
    assert main(["attack", "mia-loss", "--run", str(tmp_path / "nope")]) == 2
    assert "config.toml does not exist" in capsys.readouterr().err
    assert main(["attack", "mia-lira", "--run", str(run_dir), "--param", "shadows"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
