import json
import math
from pathlib import Path

import numpy as np
import pytest
from support import tiny, trainers_of

from privfed.engine import Engine, run_experiment
from privfed.errors import CheckpointError
from privfed.io import read_jsonl


def _run(cfg, out: Path):
    return run_experiment(cfg, out, progress=False, echo=lambda m: None)


def test_run_writes_run_directory(tmp_path: Path, tiny_config):
    summary = _run(tiny_config, tmp_path / "run")
    out = tmp_path / "run"
    for name in (
        "config.toml",
        "manifest.json",
        "metrics.jsonl",
        "privacy.json",
        "checkpoint/state.ckpt",
    ):
        assert (out / name).exists(), name
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["round"] for r in rows] == [1, 2]
    assert set(rows[-1]["tasks"]) == {"image.identity", "image.parity", "text.next"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["finished"] and manifest["seed"] == 0
    assert {"torch", "opacus", "cryptography", "numpy"} <= set(manifest["versions"])
    assert set(manifest["partition_hashes"]) == {"image", "text"}
    privacy = json.loads((out / "privacy.json").read_text())
    assert privacy["complete"] and privacy["accountant"] == "rdp"
    # 4 clients x 2 data sources, each with events from every round it trained.
    assert len(privacy["ledgers"]) == 8
    for lg in privacy["ledgers"]:
        assert 0 < lg["epsilon"] <= 8.0
        assert lg["events"]
    for m in summary.tasks.values():
        assert 0.0 <= m["mean_acc"] <= 1.0
        assert m["worst_acc"] <= m["mean_acc"] + 1e-12


def test_same_config_same_numbers(tmp_path: Path, tiny_config):
    _run(tiny_config, tmp_path / "a")
    _run(tiny_config, tmp_path / "b")
    a = (tmp_path / "a" / "metrics.jsonl").read_text()
    b = (tmp_path / "b" / "metrics.jsonl").read_text()
    assert a == b
    pa = json.loads((tmp_path / "a" / "privacy.json").read_text())["ledgers"]
    pb = json.loads((tmp_path / "b" / "privacy.json").read_text())["ledgers"]
    assert pa == pb


def test_other_seed_other_numbers(tmp_path: Path):
    _run(tiny(seed=0), tmp_path / "a")
    _run(tiny(seed=1), tmp_path / "b")
    assert (tmp_path / "a" / "metrics.jsonl").read_text() != (
        tmp_path / "b" / "metrics.jsonl"
    ).read_text()


def test_resume_after_interruption_gives_identical_metrics(tmp_path: Path, monkeypatch):
    cfg = tiny(rounds=3)
    _run(cfg, tmp_path / "full")

    original = Engine.run_round

    def crash_in_round_three(self, r, state):
        if r == 2:
            raise KeyboardInterrupt
        return original(self, r, state)

    monkeypatch.setattr(Engine, "run_round", crash_in_round_three)
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, tmp_path / "cut")
    monkeypatch.setattr(Engine, "run_round", original)
    assert [r["round"] for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")] == [1, 2]
    with pytest.raises(CheckpointError, match="--resume"):
        _run(cfg, tmp_path / "cut")
    run_experiment(cfg, tmp_path / "cut", resume=True, progress=False, echo=lambda m: None)
    assert (tmp_path / "cut" / "metrics.jsonl").read_text() == (
        tmp_path / "full" / "metrics.jsonl"
    ).read_text()
    full = json.loads((tmp_path / "full" / "privacy.json").read_text())["ledgers"]
    cut = json.loads((tmp_path / "cut" / "privacy.json").read_text())["ledgers"]
    assert full == cut


def test_resume_refuses_other_config(tmp_path: Path):
    _run(tiny(rounds=2), tmp_path / "r")
    with pytest.raises(CheckpointError, match="differs"):
        run_experiment(tiny(rounds=3), tmp_path / "r", resume=True, progress=False)


def test_ledger_matches_opacus_accountant(tmp_path: Path):
    """What privfed records is exactly what each Opacus engine accounted."""
    cfg = tiny(rounds=3)
    engine = Engine(cfg, tmp_path / "r", progress=False, echo=lambda m: None)
    state = engine.fresh_state()
    for r in range(cfg.rounds):
        engine.run_round(r, state)
    trainers = trainers_of(engine)  # the serial backend's clients' trainers
    assert trainers
    for (client, unit), tr in trainers.items():
        # one unit per group in the tiny config, so each ledger belongs to one trainer
        group = engine.fed.unit_group[unit]
        ledger = state.ledger[(client, group.ledger_key)]
        history = tr.engine.accountant.history
        assert [(e.noise_multiplier, e.sample_rate, e.steps) for e in ledger.events] == [
            tuple(h) for h in history
        ]
        assert ledger.epsilon() == pytest.approx(tr.engine.get_epsilon(cfg.dp.delta), rel=1e-9)


def test_tasks_on_one_source_compose_on_one_ledger(tmp_path: Path):
    """Per-task models on the same records add their steps to one ledger."""
    from support import tiny_dict

    data = tiny_dict(rounds=2)
    data["groups"]["image"]["architecture"] = "per-task"
    from privfed.config import from_dict

    cfg = from_dict(data)
    engine = Engine(cfg, tmp_path / "r", progress=False, echo=lambda m: None)
    state = engine.fresh_state()
    for r in range(cfg.rounds):
        engine.run_round(r, state)
    lg = state.ledger[(0, "digits")]
    assert lg.steps_by_task == {"image.identity": 4, "image.parity": 4}
    assert lg.steps == 8
    # Calibrated for both tasks' planned steps: still within the budget.
    assert lg.epsilon() <= cfg.dp.target_epsilon


def test_budget_stops_training(tmp_path: Path):
    """Planned for one round, run for three: later rounds skip the spent clients."""
    cfg = tiny(rounds=3, dp={"target_epsilon": 2.0, "delta": 1e-4, "planned_participation": 0.34})
    engine = Engine(cfg, tmp_path / "r", progress=False, echo=lambda m: None)
    state = engine.fresh_state()
    records = [engine.run_round(r, state) for r in range(3)]
    assert records[0].trained > 0
    assert records[-1].budget_skips > 0
    for lg in state.ledger:
        assert lg.epsilon() <= 2.0


def test_non_private_run_reports_infinite_epsilon(tmp_path: Path):
    cfg = tiny(dp={"target_epsilon": math.inf})
    summary = _run(cfg, tmp_path / "r")
    assert all(math.isinf(v["max"]) for v in summary.epsilon.values())


def test_epsilon_of_real_run_matches_independent_accountant(tmp_path: Path):
    """Every ledger of a real run, recomputed with Google's dp-accounting (RDP)."""
    dp_accounting = pytest.importorskip("dp_accounting")
    from dp_accounting.rdp import RdpAccountant

    from privfed.privacy.accounting import DEFAULT_ORDERS

    _run(tiny(rounds=2), tmp_path / "r")
    privacy = json.loads((tmp_path / "r" / "privacy.json").read_text())
    for lg in privacy["ledgers"]:
        acc = RdpAccountant(orders=list(DEFAULT_ORDERS))
        for ev in lg["events"]:
            acc.compose(
                dp_accounting.PoissonSampledDpEvent(
                    ev["sample_rate"], dp_accounting.GaussianDpEvent(ev["noise_multiplier"])
                ),
                ev["steps"],
            )
        theirs = acc.get_epsilon(privacy["delta"])
        assert lg["epsilon"] == pytest.approx(theirs, rel=2e-3)


def test_local_only_algorithm_keeps_models_apart(tmp_path: Path):
    cfg = tiny(federation={"num_clients": 4, "aggregator": "plain", "algorithm": "local"})
    engine = Engine(cfg, tmp_path / "r", progress=False, echo=lambda m: None)
    state = engine.fresh_state()
    init = {k: v.copy() for k, v in state.globals.items()}
    engine.run_round(0, state)
    for name, vec in state.globals.items():
        assert np.array_equal(vec, init[name])  # nothing aggregated
    assert len(state.personal) == 4 * len(engine.fed.units)


def test_resume_before_first_checkpoint_starts_over(tmp_path: Path, tiny_config, monkeypatch):
    _run(tiny_config, tmp_path / "full")
    out = tmp_path / "cut"

    def killed(self, state):  # killed between the metrics line and the first checkpoint
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Engine, "save_checkpoint", killed)
        with pytest.raises(KeyboardInterrupt):
            _run(tiny_config, out)
    assert len(read_jsonl(out / "metrics.jsonl")) == 1
    assert not (out / "checkpoint" / "state.ckpt").exists()
    run_experiment(tiny_config, out, resume=True, progress=False, echo=lambda m: None)
    assert (out / "metrics.jsonl").read_text() == (tmp_path / "full" / "metrics.jsonl").read_text()


def test_diverged_training_is_not_sent(tmp_path: Path):
    cfg = tiny(train={"lr": 1e30, "local_steps": 3, "batch_size": 16})
    msgs: list[str] = []
    eng = Engine(cfg, tmp_path / "r", progress=False, echo=msgs.append)
    state = eng.fresh_state()
    record = eng.run_round(0, state)
    assert record.diverged > 0
    assert any("diverged" in m and "train.lr" in m for m in msgs)
    for vec in state.globals.values():
        assert np.isfinite(vec).all()
    assert all(lg.steps > 0 for lg in state.ledger)  # the privacy was spent all the same


def test_leaf_shakespeare_directory_trains_end_to_end(tmp_path: Path):
    import json as _json

    from privfed.config import from_dict

    text = "To be, or not to be: that is the question. Whether 'tis nobler in the mind~ to " * 3
    users = {}
    for u, name in enumerate(["HAMLET", "OPHELIA", "POLONIUS"]):
        xs = [text[i + u : i + u + 80] for i in range(30)]
        ys = [text[i + u + 80] for i in range(30)]
        users[name] = {"x": xs, "y": ys}
    doc = {"users": list(users), "num_samples": [30, 30, 30], "user_data": users}
    (tmp_path / "leaf").mkdir()
    (tmp_path / "leaf" / "all_data_0.json").write_text(_json.dumps(doc))
    cfg = from_dict(
        {
            "name": "leaf",
            "rounds": 1,
            "groups": {
                "text": {
                    "source": "leaf",
                    "source_params": {"path": str(tmp_path / "leaf")},
                    "tasks": ["next"],
                    "hidden": [8],
                    "partition": {"kind": "natural"},
                }
            },
            "federation": {"num_clients": 3, "aggregator": "plain"},
            "train": {"local_steps": 1, "batch_size": 8},
            "dp": {"target_epsilon": 8.0, "delta": 1e-3},
        }
    )
    summary = _run(cfg, tmp_path / "run")
    assert 0.0 <= summary.tasks["text.next"]["mean_acc"] <= 1.0
