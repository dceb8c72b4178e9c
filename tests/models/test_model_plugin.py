"""A third-party model package from docs/writing-a-model.md, installed and run via the CLI."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "writing-a-model.md"


def _doc_files() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    found = re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, flags=re.S)
    return {name: body for name, body in found}


def _privfed(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("privfed")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "privfed.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_doc_holds_a_complete_package() -> None:
    files = _doc_files()
    assert set(files) == {"pyproject.toml", "toy_model.py", "toy.toml"}
    assert '"privfed.models"' in files["pyproject.toml"]


def test_third_party_model_installs_lists_runs_and_is_checked(tmp_path: Path) -> None:
    # --no-build-isolation (offline) builds with the environment's own setuptools
    pytest.importorskip("setuptools", reason="building the doc's package offline needs setuptools")
    files = _doc_files()
    pkg = tmp_path / "privfed-toy-model"
    pkg.mkdir()
    for name in ("pyproject.toml", "toy_model.py"):
        (pkg / name).write_text(files[name], encoding="utf-8")
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
    assert list(site.glob("privfed_toy_model-*.dist-info"))
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
    }

    listed = _privfed("list", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "toy-conv" in listed.stdout and "Toy convolution + GroupNorm" in listed.stdout
    assert "lstm" in listed.stdout and "cnn" in listed.stdout

    config = tmp_path / "toy.toml"
    config.write_text(files["toy.toml"], encoding="utf-8")
    run = _privfed(
        "run", str(config), "--out", str(tmp_path / "run"), "--quiet", env=env, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert "image.identity" in run.stdout and "image.parity" in run.stdout
    assert (tmp_path / "run" / "metrics.jsonl").is_file()

    config.write_text(files["toy.toml"].replace('"toy-conv"', '"toy-conv-bn"'), encoding="utf-8")
    bad = _privfed("run", str(config), "--out", str(tmp_path / "bad"), env=env, cwd=tmp_path)
    assert bad.returncode == 2
    assert (
        "groups.image.model ('toy-conv-bn', unit image): layer trunk.1 (BatchNorm2d)" in bad.stderr
    )
    assert "nn.GroupNorm" in bad.stderr and "Traceback" not in bad.stderr

    config.write_text(files["toy.toml"].replace("channels = 2", "chanels = 2"), encoding="utf-8")
    typo = _privfed("run", str(config), "--out", str(tmp_path / "typo"), env=env, cwd=tmp_path)
    assert typo.returncode == 2
    assert "groups.image.model_params.chanels is not a parameter of model 'toy-conv'" in typo.stderr
    assert "accepted: channels" in typo.stderr
