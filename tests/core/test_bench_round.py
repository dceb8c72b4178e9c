"""``privfed bench round``: its plumbing at tiny sizes, and the memory behaviour it relies on.

The benchmark's figures are measurements (never checked here); what is checked is that it runs
each backend in its own process, reports every field, compares the final models across
backends, and fails clearly on bad arguments -- and, deterministically, that nothing a round
leaves behind grows with the number of clients seen: trainers are bounded per worker and keep
no gradients between rounds, and the driver keeps no per-client state for an algorithm without
personal models.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support import tiny, tiny_dict

from privfed.bench_round import main, scale_workload, summarize, workload
from privfed.config import dump_config, from_dict
from privfed.engine import Engine
from privfed.errors import PrivfedError


def _tiny_toml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(dump_config(tiny(federation={"aggregator": "secagg"})))
    return path


def test_bench_round_runs_each_backend_and_compares_models(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    code = main(
        [
            "--workloads",
            str(_tiny_toml(tmp_path)),
            "--backends",
            "serial,process",
            "--workers",
            "2",
            "--rounds",
            "2",
            "--warmup",
            "1",
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "final global model identical on serial, process: yes" in printed
    report = json.loads(out.read_text())
    assert report["machine"]["cpu"] and report["machine"]["versions"]["torch"]
    (part,) = report["parts"]
    (entry,) = part["workloads"].values()
    assert entry["identical"] is True
    serial, process = entry["backends"]["serial"], entry["backends"]["process"]
    assert serial["workers"] == 1 and process["workers"] == 2
    for res in (serial, process):
        assert len(res["rounds"]) == 3
        assert res["startup_s"] > res["import_s"] > 0
        assert res["driver_peak_rss"] > 0 and res["summary"]["steady_rounds"] == 2
        assert all(r["participations"] == 4 and r["wall_s"] > 0 for r in res["rounds"])
    assert len(process["worker_peak_rss"]) == 2 and min(process["worker_peak_rss"]) > 0
    assert serial["summary"]["speedup_vs_serial"] == 1.0
    assert serial["model_sha256"] == process["model_sha256"]


def test_bench_round_refuses_bad_arguments() -> None:
    with pytest.raises(PrivfedError, match="neither a built-in workload"):
        main(["--workloads", "no-such-workload"])
    with pytest.raises(PrivfedError, match="--backends takes"):
        main(["--workloads", "digits", "--backends", "serial,gpu"])


def test_summary_separates_warmup_from_steady_rounds() -> None:
    rounds = [
        {"wall_s": w, "cpu_s": w / 2, "participations": 10, "driver_rss": 100 + i}
        for i, w in enumerate([5.0, 1.0, 2.0, 3.0])
    ]
    s = summarize({"rounds": rounds}, warmup=1)
    assert s["steady_rounds"] == 3 and s["warmup_round_s"] == [5.0]
    assert s["round_s_median"] == 2.0 and s["round_s_mean"] == 2.0
    assert s["cpu_s_per_round"] == 1.0
    assert s["participations_per_s"] == pytest.approx(30 / 6)
    assert (s["driver_rss_first"], s["driver_rss_last"]) == (100, 103)


def test_rss_is_judged_flat_on_the_last_rounds_only() -> None:
    from privfed.bench_round import rss_window

    mib = 2**20
    # the 20-round scale point measured on 2026-12-02: growth while clients are first seen,
    # then level
    measured = [482.4, 490.3, 515.3, 521.5, 519.7, 534.4, 545.0, 552.6, 546.8, 543.8]
    measured += [561.0, 554.1, 560.8, 558.7, 550.4, 550.4, 560.0, 560.7, 550.9, 550.9]
    w = rss_window([int(x * mib) for x in measured])
    assert w is not None and w["flat"] and (w["first_round"], w["last_round"]) == (11, 20)
    assert w["min"] == int(550.4 * mib) and w["max"] == int(561.0 * mib)
    growing = rss_window([int((500 + 2 * i) * mib) for i in range(20)])  # +2 MiB every round
    assert growing is not None and not growing["flat"]
    assert growing["slope_per_round"] == pytest.approx(2 * mib)
    assert rss_window([mib] * 19) is None  # too short to judge


def test_builtin_workloads_are_valid_configs() -> None:
    for name in ("quickstart", "digits", "synthetic", "scale"):
        cfg = workload(name)
        assert cfg.rounds >= 1
    scale = from_dict(scale_workload(clients=200, per_round=20))
    assert scale.federation.num_clients == 200 and scale.secagg.graph == "harary"
    assert scale.federation.cohort_fraction == pytest.approx(0.1)


# ---------------------------------------------------------------------------- memory
def test_trainers_are_bounded_per_worker_and_keep_no_gradients(tmp_path: Path) -> None:
    """A worker sees more clients than its cache holds: the cache stays at its capacity and
    every cached trainer (DP or not) holds no gradient or per-sample gradient after training."""
    from privfed.backends import BackendOptions

    for eps in (8.0, float("inf")):
        data = tiny_dict(
            rounds=3,
            federation={"num_clients": 8, "cohort_fraction": 0.6},
            dp={"target_epsilon": eps},
        )
        data["groups"]["text"]["source_params"]["num_owners"] = 8
        cfg = from_dict(data)
        options = BackendOptions(backend="serial", trainer_cache=3)
        with Engine(
            cfg, tmp_path / f"r{eps}", progress=False, echo=lambda _m: None, backend=options
        ) as eng:
            state = eng.fresh_state()
            seen: set[int] = set()
            for r in range(3):
                seen.update(eng.run_round(r, state).cohort)
            trainers = eng.backend.worker.trainers  # type: ignore[attr-defined]
            assert len(seen) > 3 and len(trainers) == 3
            for _, tr in trainers.items():
                for p in tr.model.parameters():
                    assert p.grad is None
                    assert getattr(p, "grad_sample", None) is None
                    assert getattr(p, "summed_grad", None) is None
            # the driver keeps no per-client state for FedAvg (no personal models)
            assert state.personal == {}


def test_release_drops_every_gradient_of_a_trainer() -> None:
    """What ``participate`` calls after each training: no gradient, no per-sample gradient."""
    import torch

    from privfed.client import UnitSpec, UnitTrainer
    from privfed.models import flat_parameters
    from privfed.participation import _release

    spec = UnitSpec("g", "g", ("a",), 8, (16,), {"a": 3})
    gen = np.random.default_rng(0)
    x = torch.from_numpy(gen.normal(size=(30, 8)).astype(np.float32))
    y = {"a": torch.from_numpy(gen.integers(0, 3, 30))}
    for sigma in (1.0, None):
        tr = UnitTrainer(
            spec,
            x=x,
            y=y,
            batch_size=8,
            lr=0.1,
            noise_multiplier=sigma,
            max_grad_norm=1.0,
            seed=0,
            stream=(0, 0),
        )
        tr.train(flat_parameters(spec.build()), steps=3, round_index=0)
        _release(tr)
        for p in tr.model.parameters():
            assert p.grad is None and getattr(p, "grad_sample", None) is None


def test_bench_round_end_to_end_and_scale_plumbing(tmp_path: Path, capsys) -> None:
    """Whole privfed run calls compared byte for byte, and a scale point at 200 clients."""
    out = tmp_path / "bench.json"
    code = main(
        [
            "--parts",
            "end-to-end,scale",
            "--config",
            str(_tiny_toml(tmp_path)),
            "--backends",
            "serial,process",
            "--workers",
            "2",
            "--scale-clients",
            "200",
            "--scale-per-round",
            "20",
            "--scale-rounds",
            "2",
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "metrics.jsonl and privacy.json identical on serial, process: True" in printed
    e2e, scale = json.loads(out.read_text())["parts"]
    assert e2e["identical"] is True
    assert e2e["runs"]["process"]["workers"] == 2 and e2e["runs"]["serial"]["wall_s"] > 0
    assert e2e["runs"]["serial"]["ratio_vs_serial"] == 1.0
    assert scale["kind"] == "scale" and len(scale["rounds"]) == 2
    assert scale["summary"]["within_4gib"] is True
    assert all(r["participations"] > 0 and r["driver_rss"] > 0 for r in scale["rounds"])
    with pytest.raises(PrivfedError, match="--parts takes"):
        main(["--parts", "everything"])
