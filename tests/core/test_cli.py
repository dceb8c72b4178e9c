"""The command line as a user runs it: a real subprocess of the installed ``privfed``."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
from support import tiny_dict


def _privfed(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("privfed")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "privfed.cli", *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_run_prints_per_task_accuracy_and_epsilon(tmp_path: Path):
    data = tiny_dict()
    data["federation"]["aggregator"] = "secagg"
    (tmp_path / "tiny.toml").write_text(tomli_w.dumps(data))
    proc = _privfed("run", "tiny.toml", "--out", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for task in ("image.identity", "image.parity", "text.next"):
        assert task in out
    assert "worst-10%" in out and "epsilon" in out and "aggregator=secagg" in out
    assert "Bayes-optimal" in out
    assert "it/s" in proc.stderr or "round" in proc.stderr  # the progress bar
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["finished"] and manifest["aggregator"] == "secagg"
    # a finished run refuses to be overwritten, with a message that says what to do
    again = _privfed("run", "tiny.toml", "--out", "out", cwd=tmp_path)
    assert again.returncode == 2
    assert "--resume" in again.stderr


def test_bad_config_lists_every_problem(tmp_path: Path):
    (tmp_path / "bad.toml").write_text(
        "rounds = 0\n[dp]\ntarget_epsilon = -1\n[train]\nbatchsize = 3\n"
    )
    proc = _privfed("run", "bad.toml", cwd=tmp_path)
    assert proc.returncode == 2
    err = proc.stderr
    assert "bad.toml" in err
    assert "rounds must be in [1, inf], got 0" in err
    assert "dp.target_epsilon must be in (0.0, inf], got -1" in err
    assert "train.batchsize is not a known field (did you mean 'batch_size'?)" in err
    assert not (tmp_path / "runs").exists()


def test_list_shows_plugins(tmp_path: Path):
    proc = _privfed("list", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ("digits", "markov", "dirichlet", "natural", "fedavg", "local"):
        assert name in proc.stdout


def test_poison_command_reports_backdoor_accuracy(tmp_path: Path):
    data = tiny_dict(rounds=1)
    data["dp"] = {"target_epsilon": "inf"}
    (tmp_path / "t.toml").write_text(tomli_w.dumps(data))
    assert _privfed("run", "t.toml", "--out", "r", "--quiet", cwd=tmp_path).returncode == 0
    proc = _privfed(
        "poison", "--run", "r", "--seed", "0", "--rounds", "2", "--json", "p.json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "backdoor accuracy" in proc.stdout
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["seed"] == 0
    assert report["backdoor_acc_poisoned"] > report["backdoor_acc_clean"]
    bad = _privfed("poison", "--run", "r", "--client", "99", cwd=tmp_path)
    assert bad.returncode == 2 and "client 99" in bad.stderr


def test_run_on_a_process_pool_gives_the_serial_numbers(tmp_path: Path):
    data = tiny_dict(rounds=2)
    data["federation"]["aggregator"] = "secagg"
    (tmp_path / "t.toml").write_text(tomli_w.dumps(data))
    serial = _privfed("run", "t.toml", "--out", "s", "--quiet", "--backend", "serial", cwd=tmp_path)
    assert serial.returncode == 0, serial.stderr
    assert "[serial]" in serial.stdout
    pool = _privfed("run", "t.toml", "--out", "p", "--quiet", "--workers", "2", cwd=tmp_path)
    assert pool.returncode == 0, pool.stderr
    assert "[process, 2 workers]" in pool.stdout and "cost:" in pool.stdout
    for name in ("metrics.jsonl", "privacy.json"):
        assert (tmp_path / "s" / name).read_text() == (tmp_path / "p" / name).read_text()
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["backend"]["name"] == "process" and manifest["backend"]["workers"] == 2
    bad = _privfed("run", "t.toml", "--backend", "serial", "--workers", "2", cwd=tmp_path)
    assert bad.returncode == 2 and "--workers needs --backend process or ray" in bad.stderr


def test_run_uses_every_core_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse
    import importlib.util

    from privfed import backends
    from privfed.cli import backend_options

    def args(**kw: object) -> argparse.Namespace:
        return argparse.Namespace(**{"backend": None, "workers": 0, "address": "", **kw})

    monkeypatch.setattr(backends, "default_workers", lambda: 2)
    default = backend_options(args())
    assert (default.backend, default.workers) == ("process", 2)  # every core, named
    assert backend_options(args(backend="serial")).backend == "serial"
    real = importlib.util.find_spec  # the choice does not need Ray installed to be tested
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: real("os") if n == "ray" else real(n, *a)
    )
    ray = backend_options(args(address="auto"))
    assert (ray.backend, ray.workers) == ("ray", 0)  # 0: all the cluster's CPUs, once connected
    monkeypatch.setattr(backends, "default_workers", lambda: 1)
    assert backend_options(args()).backend == "serial"  # one core: nothing to parallelize
    assert backend_options(args(workers=1)).backend == "process"  # asked for explicitly
