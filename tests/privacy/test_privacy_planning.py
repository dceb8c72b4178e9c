"""Record-level planning: composed calibration, one ledger per (client, source), admission."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from support import dp_accounting_pld_epsilon, dp_accounting_rdp_epsilon, tiny_dict, trainers_of

from privfed.config import from_dict
from privfed.engine import Engine
from privfed.errors import ConfigError, PrivacyBudgetError
from privfed.privacy.accounting import (
    DPEvent,
    calibrate_noise,
    calibrate_noise_composed,
    plan_epsilon,
    smallest_feasible_epsilon,
)
from privfed.privacy.ledger import SourceLedger
from privfed.privacy.planning import check_delta, public_sample_rate, sample_rate_for

DELTA = 1e-5


def test_composed_calibration_single_mechanism_is_the_old_calibration() -> None:
    one = calibrate_noise_composed(target_epsilon=3.0, delta=DELTA, plan=[(0.05, 200)])
    assert one == calibrate_noise(target_epsilon=3.0, delta=DELTA, sample_rate=0.05, steps=200)
    # order and splitting of equal rates do not matter (canonical plan, one cache entry)
    split = calibrate_noise_composed(
        target_epsilon=3.0, delta=DELTA, plan=[(0.05, 120), (0.05, 80), (0.2, 0)]
    )
    assert split == one


def test_composed_calibration_is_tight_against_dp_accounting() -> None:
    plan = [(0.02, 300), (0.1, 40), (0.05, 100)]
    sigma = calibrate_noise_composed(target_epsilon=4.0, delta=DELTA, plan=plan)
    events = [(sigma, q, s) for q, s in plan]
    assert plan_epsilon(plan, noise_multiplier=sigma, delta=DELTA) <= 4.0
    assert dp_accounting_rdp_epsilon(events, DELTA) == pytest.approx(4.0, rel=1e-4)
    # the tighter accountant: never above ours
    assert dp_accounting_pld_epsilon(events, DELTA) < 4.0
    below = dp_accounting_rdp_epsilon([(sigma * 0.99, q, s) for q, s in plan], DELTA)
    assert below > 4.0
    # calibrating each part separately to the target would spend far more on the records
    parts = [
        calibrate_noise(target_epsilon=4.0, delta=DELTA, sample_rate=q, steps=s) for q, s in plan
    ]
    naive = dp_accounting_rdp_epsilon(
        [(z, q, s) for z, (q, s) in zip(parts, plan, strict=True)], DELTA
    )
    assert naive > 5.0


def test_impossible_target_names_the_smallest_feasible_epsilon() -> None:
    plan = [(0.02, 100)]
    floor = smallest_feasible_epsilon(plan, delta=DELTA)
    assert 0.05 < floor < 0.2
    with pytest.raises(PrivacyBudgetError, match=f"smallest feasible epsilon is {floor:.4g}"):
        calibrate_noise_composed(target_epsilon=floor * 0.9, delta=DELTA, plan=plan)
    assert plan_epsilon(plan, noise_multiplier=0.0, delta=DELTA) == math.inf


def test_admit_is_greedy_and_never_exceeds_the_target() -> None:
    ledger = SourceLedger(0, "digits", delta=DELTA, target_epsilon=3.0)
    big = DPEvent(noise_multiplier=2.0, sample_rate=0.1, steps=100)
    small = DPEvent(noise_multiplier=2.0, sample_rate=0.1, steps=20)
    assert ledger.admit([small, small]) == (True, True)
    ledger.record(noise_multiplier=2.0, sample_rate=0.1, steps=100, task="a")
    flags = ledger.admit([big, small, small])
    assert flags[0] is False and flags[1] is True
    for ev, ok in zip([big, small, small], flags, strict=True):
        if ok:
            ledger.record(
                noise_multiplier=ev.noise_multiplier,
                sample_rate=ev.sample_rate,
                steps=ev.steps,
                task="b",
            )
    assert ledger.epsilon() <= 3.0
    assert ledger.steps == 100 + 20 * sum(flags[1:])
    unlimited = SourceLedger(0, "d", delta=DELTA, target_epsilon=math.inf)
    assert unlimited.admit([big, big]) == (True, True)


def test_delta_checks() -> None:
    ok = check_delta(delta=1e-5, n=300, field_name="dp.delta", unit="records")
    assert not ok.refuse and not ok.warn and ok.message == ""
    warn = check_delta(delta=1e-2, n=20, field_name="client_dp.delta", unit="clients")
    assert warn.warn and "client_dp.delta" in warn.message
    bad = check_delta(delta=1e-2, n=150, field_name="dp.delta", unit="records")
    assert bad.refuse and "below" in bad.message


def test_sample_rates() -> None:
    assert sample_rate_for(40, 8) == 1 / 5
    assert sample_rate_for(3, 8) == 1.0
    assert public_sample_rate(nominal_records=100, batch_size=16) == 1 / 7
    with pytest.raises(ConfigError, match="nominal_records"):
        public_sample_rate(nominal_records=0, batch_size=16)


def _two_groups(**extra):
    data = tiny_dict(rounds=3)
    data["groups"] = {
        "a": {"source": "digits", "tasks": ["identity"], "hidden": [8]},
        "b": {"source": "digits", "tasks": ["parity", "ge5"], "hidden": [8]},
    }
    data.update(extra)
    return from_dict(data)


def test_two_groups_on_one_source_compose_on_one_ledger(tmp_path: Path) -> None:
    """Two task groups on digits: one ledger per (client, source), pinned by dp-accounting.

    Canaries in group a give the audited client a larger train set there (another sampling
    rate), so its ledger composes heterogeneous events.
    """
    cfg = _two_groups(audit={"canaries": 40, "client": 0, "group": "a"})
    engine = Engine(cfg, tmp_path / "r", progress=False, echo=lambda m: None)
    state = engine.fresh_state()
    for r in range(cfg.rounds):
        engine.run_round(r, state)
    a, b = engine.fed.groups["a"], engine.fed.groups["b"]
    assert a.ledger_key == b.ledger_key == "digits"
    # one partition per source: a client holds the same records in both groups
    n_original = len(b.source.x)
    for c in b.clients:
        mine = a.clients[c].train
        assert np.array_equal(mine[mine < n_original], b.clients[c].train)
    assert (a.clients[0].train >= n_original).sum() > 0  # the canaries: group a only
    assert {lg.source for lg in state.ledger} == {"digits"}
    assert len(state.ledger) == len(b.clients)
    for lg in state.ledger:
        assert set(lg.steps_by_task) == {"a.identity", "b.parity", "b.ge5"}
        # the events actually taken, read from every Opacus trainer of that client
        history = [
            h
            for (c, _), tr in trainers_of(engine).items()
            if c == lg.client and tr.engine is not None
            for h in tr.engine.accountant.history
        ]
        assert sum(h[2] for h in history) == lg.steps
        theirs = dp_accounting_rdp_epsilon(history, cfg.dp.delta)
        assert lg.epsilon() == pytest.approx(theirs, rel=2e-3)
        assert lg.epsilon() >= dp_accounting_pld_epsilon(history, cfg.dp.delta)
        assert lg.epsilon() <= cfg.dp.target_epsilon * (1 + 1e-9)
        # the group-a steps alone spend less: keying by group would have under-reported
        alone = dp_accounting_rdp_epsilon(
            [
                h
                for (c, u), tr in trainers_of(engine).items()
                if c == lg.client and u.startswith("a.")
                for h in tr.engine.accountant.history
            ],
            cfg.dp.delta,
        )
        assert alone < 0.8 * lg.epsilon()
    audited = state.ledger[(0, "digits")]
    assert len({e.sample_rate for e in audited.events}) == 2  # heterogeneous rates composed
    assert audited.epsilon() == pytest.approx(cfg.dp.target_epsilon, rel=1e-3)


def test_groups_on_one_source_must_share_the_partition() -> None:
    data = tiny_dict()
    data["groups"] = {
        "a": {"source": "digits", "tasks": ["identity"]},
        "b": {"source": "digits", "tasks": ["parity"], "partition": {"alpha": 5.0}},
    }
    with pytest.raises(ConfigError, match="groups.b: shares source 'digits' with groups.a"):
        from_dict(data)


def test_impossible_record_budget_is_refused_before_training(tmp_path: Path) -> None:
    cfg = from_dict(tiny_dict(dp={"target_epsilon": 0.05, "delta": 1e-4}))
    with pytest.raises(ConfigError, match="smallest feasible epsilon is"):
        Engine(cfg, tmp_path / "r", progress=False, echo=lambda m: None)
    fixed = from_dict(tiny_dict(dp={"target_epsilon": 1.0, "delta": 1e-4, "noise_multiplier": 0.3}))
    with pytest.raises(ConfigError, match=r"no client would ever train; raise dp.noise_multiplier"):
        Engine(fixed, tmp_path / "r2", progress=False, echo=lambda m: None)


def test_record_delta_at_one_over_n_is_refused(tmp_path: Path) -> None:
    cfg = from_dict(tiny_dict(dp={"target_epsilon": 8.0, "delta": 0.02}))
    with pytest.raises(ConfigError, match="dp.delta = 0.02 is at least 1/n"):
        Engine(cfg, tmp_path / "r", progress=False, echo=lambda m: None)
    warned = Engine(
        from_dict(tiny_dict(dp={"target_epsilon": 8.0, "delta": 1e-3})),
        tmp_path / "w",
        progress=False,
        echo=lambda m: None,
    )
    assert any("dp.delta = 0.001 is within a factor 10" in w for w in warned.warnings)


def test_public_sampling_uses_only_public_parameters(tmp_path: Path) -> None:
    import json

    from privfed.engine import run_experiment

    cfg = from_dict(
        tiny_dict(
            rounds=2,
            dp={
                "target_epsilon": 8.0,
                "delta": 1e-4,
                "public_sampling": True,
                "nominal_records": 50,
            },
        )
    )
    engine = Engine(cfg, tmp_path / "e", progress=False, echo=lambda m: None)
    plan = engine.record_plan
    assert plan is not None and plan.public_sample_rate == public_sample_rate(
        nominal_records=50, batch_size=16
    )
    # one sigma per source, the same for every client whatever its record count
    for source in ("digits", "markov"):
        sigmas = {p.noise_multiplier for (c, s), p in plan.sources.items() if s == source}
        assert len(sigmas) == 1
    state = engine.fresh_state()
    for r in range(cfg.rounds):
        engine.run_round(r, state)
    for (_, _), tr in trainers_of(engine).items():
        assert tr.sample_rate == plan.public_sample_rate
        assert tr.loader.sample_rate == plan.public_sample_rate
        assert tr.optimizer.expected_batch_size == plan.public_batch_size
        assert {h[1] for h in tr.engine.accountant.history} == {plan.public_sample_rate}
    for lg in state.ledger:
        assert {e.sample_rate for e in lg.events} == {plan.public_sample_rate}
        assert lg.epsilon() <= cfg.dp.target_epsilon
    run_experiment(cfg, tmp_path / "r", progress=False, echo=lambda m: None)
    report = json.loads((tmp_path / "r" / "privacy.json").read_text())
    assert report["public_sampling"]["sample_rate"] == plan.public_sample_rate
    assert not any("treated as public" in a for a in report["assumptions"])
    run_experiment(
        from_dict(tiny_dict(rounds=1)), tmp_path / "p", progress=False, echo=lambda m: None
    )
    plain = json.loads((tmp_path / "p" / "privacy.json").read_text())
    assert plain["public_sampling"] is None
    assert any("record count is treated as public" in a for a in plain["assumptions"])


def test_public_sampling_needs_a_nominal_count() -> None:
    with pytest.raises(ConfigError, match="nominal_records must be >= 1 with public_sampling"):
        from_dict(tiny_dict(dp={"public_sampling": True}))
    with pytest.raises(ConfigError, match="nominal_records is only used with public_sampling"):
        from_dict(tiny_dict(dp={"nominal_records": 10}))


def test_plan_is_a_pure_function_of_public_plan_inputs() -> None:
    """plan_record_level without an engine: composed per (client, source), warnings, refusals."""
    from privfed.privacy.planning import SourceHolding, plan_record_level

    holdings = {
        (0, "digits"): SourceHolding(records=40, units=(("a.x", 40), ("b.y", 40))),
        (1, "digits"): SourceHolding(records=400, units=(("a.x", 400),)),
    }
    common = dict(
        target_epsilon=2.0,
        delta=1e-5,
        planned_participation=1.0,
        public_sampling=False,
        nominal_records=0,
        rounds=5,
        local_steps=4,
        batch_size=16,
        trainings_per_participation=1,
        holdings=holdings,
        units_by_source={"digits": [("a.x", 1), ("b.y", 1)]},
    )
    plan = plan_record_level(noise_multiplier=0.0, **common)
    p0 = plan.sources[(0, "digits")]
    assert [t.sample_rate for t in p0.trainings] == [1 / 3, 1 / 3]
    assert p0.planned_epsilon <= 2.0 and p0.planned_epsilon == pytest.approx(2.0, rel=1e-4)
    # client 0 trains two units on the same records: more noise than client 1's single unit
    assert p0.noise_multiplier > plan.sources[(1, "digits")].noise_multiplier
    assert any("treated as public" in a for a in plan.assumptions)
    # a fixed sigma that only the large client can afford: a warning, not a refusal
    sigma = 1.2
    small = plan_epsilon([(1 / 3, 4)], noise_multiplier=sigma, delta=1e-5)
    large = plan_epsilon([(1 / 25, 4)], noise_multiplier=sigma, delta=1e-5)
    assert large < 2.0 < small
    warned = plan_record_level(noise_multiplier=sigma, **common)
    assert len(warned.warnings) == 1 and "1 of 2 (client, source) pairs" in warned.warnings[0]
    with pytest.raises(ConfigError, match="no client would ever train"):
        plan_record_level(noise_multiplier=0.2, **common)
