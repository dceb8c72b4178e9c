"""Backends change where clients train, never a number: serial, process and Ray runs compared.

Each case is a tiny run of a feature that crosses the client seam differently: fixed point and
masking under secure aggregation, Ditto's kept personal models, FedRep's two phases, central
client-level DP with adaptive clipping (the clip bound travels in the task), the distributed
discrete Gaussian (client-side noise, then masking), MOCHA (the server's proximal term in the
task, individual models back).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from support import tiny_dict

from privfed.backends import BackendError, BackendOptions
from privfed.config import ExperimentConfig, from_dict
from privfed.engine import Engine, run_experiment
from privfed.io import read_jsonl


def _mocha() -> dict[str, Any]:
    return {
        "name": "convex",
        "seed": 0,
        "rounds": 2,
        "groups": {
            "convex": {
                "source": "synthetic",
                "source_params": {
                    "alpha": 1.0,
                    "beta": 1.0,
                    "num_owners": 6,
                    "samples_per_owner": 60,
                },
                "tasks": ["label"],
                "hidden": [],
                "partition": {"kind": "natural"},
            }
        },
        "federation": {
            "num_clients": 6,
            "aggregator": "plain",
            "algorithm": "mocha",
            "algorithm_params": {"lambda": 0.05},
        },
        "train": {"local_steps": 2, "batch_size": 16, "lr": 0.1},
        "dp": {"target_epsilon": 8.0, "delta": 1e-3},
        "eval": {"every": 1},
    }


def _case(name: str) -> ExperimentConfig:
    data = tiny_dict(rounds=3)
    fed = data["federation"]
    if name == "fedavg-secagg":
        fed.update({"aggregator": "secagg", "cohort_fraction": 0.8, "dropout": 0.2})
        # t = 2 of a 3-4 client cohort has no margin against a server that lies about
        # dropouts; fine for comparing backends, and it must be said out loud
        data["secagg"] = {"threshold": 2, "min_clients": 2, "allow_insecure_threshold": True}
    elif name in ("ditto", "fedrep"):
        fed["algorithm"] = name
    elif name == "central-adaptive":
        data["client_dp"] = {
            "mode": "central",
            "target_epsilon": 10.0,
            "delta": 1e-2,
            "adaptive": True,
            "count_noise_multiplier": 3.0,
            "clip": 0.01,
        }
    elif name == "distributed-dp":
        fed["aggregator"] = "secagg"
        data["client_dp"] = {"mode": "distributed", "target_epsilon": 10.0, "delta": 1e-2}
        data["secagg"] = {"bits": 40}
    elif name == "mocha":
        data = _mocha()
    return from_dict(data)


CASES = ("fedavg-secagg", "ditto", "fedrep", "central-adaptive", "distributed-dp", "mocha")


def _run(cfg: ExperimentConfig, out: Path, backend: BackendOptions | None = None) -> Path:
    run_experiment(cfg, out, progress=False, echo=lambda _m: None, backend=backend)
    return out


def _bytes(run: Path) -> list[list[Any]]:
    """Per round, per client: bytes down and up (the measured seconds left out)."""
    return [[c[:3] for c in row["clients"]] for row in read_jsonl(run / "costs.jsonl")]


def _assert_same(a: Path, b: Path) -> None:
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()
    assert (a / "privacy.json").read_text() == (b / "privacy.json").read_text()
    assert _bytes(a) == _bytes(b)


@pytest.fixture(scope="module")
def serial_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serial")
    return {name: _run(_case(name), root / name) for name in CASES}


@pytest.mark.parametrize("name", CASES)
def test_process_backend_gives_identical_outputs(
    name: str, serial_runs: dict[str, Path], tmp_path: Path
) -> None:
    run = _run(_case(name), tmp_path / "p", BackendOptions(backend="process", workers=2))
    _assert_same(serial_runs[name], run)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["backend"]["name"] == "process" and manifest["backend"]["workers"] == 2


def test_ray_backend_gives_identical_outputs_and_resumes(
    serial_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One local Ray session (2 CPUs) for every case, then an interrupted run resumed on Ray."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", configure_logging=False)
    try:
        options = BackendOptions(backend="ray", workers=2)
        for name in CASES:
            _assert_same(serial_runs[name], _run(_case(name), tmp_path / name, options))
        _interrupt_and_resume(_case("fedavg-secagg"), tmp_path / "cut", options, monkeypatch)
        _assert_same(serial_runs["fedavg-secagg"], tmp_path / "cut")
    finally:
        ray.shutdown()


def _interrupt_and_resume(
    cfg: ExperimentConfig, out: Path, options: BackendOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Engine.run_round

    def crash_in_round_three(self: Engine, r: int, state: Any) -> Any:
        if r == 2:
            raise KeyboardInterrupt
        return original(self, r, state)

    monkeypatch.setattr(Engine, "run_round", crash_in_round_three)
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, out, options)
    monkeypatch.setattr(Engine, "run_round", original)
    assert [r["round"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    run_experiment(cfg, out, resume=True, progress=False, echo=lambda _m: None, backend=options)


@pytest.mark.parametrize("name", ["fedavg-secagg", "ditto"])
def test_resume_after_interruption_is_identical_on_the_process_backend(
    name: str, serial_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = BackendOptions(backend="process", workers=2)
    _interrupt_and_resume(_case(name), tmp_path / "cut", options, monkeypatch)
    _assert_same(serial_runs[name], tmp_path / "cut")


def test_outputs_do_not_depend_on_the_order_participations_arrive(
    serial_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from privfed.backends import Backend

    original = Backend.map

    def reversed_map(self: Backend, tasks: Any, **kw: Any) -> Any:
        return list(reversed(original(self, list(reversed(tasks)), **kw)))

    monkeypatch.setattr(Backend, "map", reversed_map)
    _assert_same(serial_runs["ditto"], _run(_case("ditto"), tmp_path / "rev"))


def test_a_dead_worker_stops_the_round_and_says_how_to_continue(tmp_path: Path) -> None:
    cfg = _case("ditto")
    with Engine(
        cfg,
        tmp_path / "r",
        progress=False,
        echo=lambda _m: None,
        backend=BackendOptions(backend="process", workers=2),
    ) as eng:
        state = eng.fresh_state()
        eng.run_round(0, state)
        os.kill(eng.backend._procs[1].pid, signal.SIGKILL)  # type: ignore[attr-defined]
        with pytest.raises(BackendError, match="exited .* continue with --resume"):
            eng.run_round(1, state)


def test_a_malicious_participate_function_needs_the_serial_backend(tmp_path: Path) -> None:
    from privfed.participation import participate

    eng = Engine(
        _case("ditto"),
        tmp_path / "r",
        progress=False,
        echo=lambda _m: None,
        backend=BackendOptions(backend="process", workers=2),
        behaviours={0: participate},
    )
    with pytest.raises(BackendError, match="needs the serial backend"):
        eng.run_round(0, eng.fresh_state())
    eng.close()


def test_backend_options_are_checked() -> None:
    with pytest.raises(BackendError, match="--backend must be one of serial, process, ray"):
        BackendOptions(backend="threads")
    with pytest.raises(BackendError, match="--address names a Ray cluster"):
        BackendOptions(backend="process", address="auto")
    with pytest.raises(BackendError, match="--workers must be >= 1"):
        BackendOptions(backend="process", workers=-1)


def test_a_ray_run_without_ray_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    import tomli_w

    from privfed.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    with pytest.raises(BackendError, match=r"needs Ray: pip install -e '\.\[ray\]'"):
        BackendOptions(backend="ray")
    (tmp_path / "t.toml").write_text(tomli_w.dumps(tiny_dict(rounds=1)))
    out = tmp_path / "run"
    assert main(["run", str(tmp_path / "t.toml"), "--backend", "ray", "--out", str(out)]) == 2
    assert "needs Ray" in capsys.readouterr().err
    assert not out.exists()
