"""Client-level DP (DP-FedAvg): clipping, noise, adaptive clip bound, accounting."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from support import tiny_dict

from privfed.config import from_dict
from privfed.engine import Engine, run_experiment
from privfed.errors import ConfigError, PrivacyBudgetError
from privfed.privacy import client_dp
from privfed.privacy.ledger import DistributedLedger, DistributedRound


def test_clip_update_bounds_norm_and_reports_within():
    v = np.array([3.0, 4.0], dtype=np.float32)
    out, within = client_dp.clip_update(v, clip=1.0)
    assert not within and np.linalg.norm(out) == pytest.approx(1.0)
    np.testing.assert_allclose(out, [0.6, 0.8], rtol=1e-6)
    out2, within2 = client_dp.clip_update(v, clip=10.0)
    assert within2 and out2 is v


def test_adaptive_split_keeps_total_noise_multiplier():
    p = client_dp.resolve_params(
        target_epsilon=4.0,
        delta=1e-3,
        noise_multiplier=1.0,
        sample_rate=0.5,
        rounds=10,
        adaptive=True,
        count_noise_multiplier=5.0,
        expected_cohort=10,
    )
    # Andrew et al. 2021, Theorem 1: z^-2 = z_delta^-2 + (2 sigma_b)^-2
    assert p.update_noise_multiplier**-2 + (2 * 5.0) ** -2 == pytest.approx(1.0)
    assert p.update_noise_multiplier > 1.0
    with pytest.raises(ConfigError, match="count_noise_multiplier"):
        client_dp.resolve_params(
            target_epsilon=4.0,
            delta=1e-3,
            noise_multiplier=1.0,
            sample_rate=0.5,
            rounds=10,
            adaptive=True,
            count_noise_multiplier=0.4,
            expected_cohort=10,
        )


def test_adaptive_clipping_without_privacy_adds_no_noise():
    # target_epsilon = inf calibrates z = 0: adaptive clipping runs noiselessly (it used to
    # divide by zero while splitting z between the update and the clip count)
    p = client_dp.resolve_params(
        target_epsilon=math.inf,
        delta=1e-3,
        noise_multiplier=0.0,
        sample_rate=0.5,
        rounds=10,
        adaptive=True,
        count_noise_multiplier=0.0,
        expected_cohort=10,
    )
    assert (p.noise_multiplier, p.update_noise_multiplier, p.count_noise_std) == (0.0, 0.0, 0.0)


def test_noise_has_the_calibrated_standard_deviation():
    p = client_dp.ClientDPParams(1.3, 1.3, 0.0, 1.0)
    rng = np.random.default_rng(0)
    noisy = client_dp.add_noise(np.zeros(200_000), params=p, clip=0.5, rng=rng)
    # sample std of 200k normals is within 1% of the truth with overwhelming probability
    assert noisy.std() == pytest.approx(1.3 * 0.5, rel=0.01)


def test_next_clip_moves_toward_the_quantile():
    p = client_dp.ClientDPParams(1.0, 1.0, 1e-9, 1.0)
    rng = np.random.default_rng(0)
    # all 10 clients were within the bound: fraction 1 > quantile 0.5 -> shrink by exp(-0.2*0.5)
    c = client_dp.next_clip(
        1.0,
        centred_bit_sum=10 * 0.5,
        params=p,
        expected_cohort=10,
        target_quantile=0.5,
        lr=0.2,
        rng=rng,
    )
    assert c == pytest.approx(math.exp(-0.1))
    c2 = client_dp.next_clip(
        1.0,
        centred_bit_sum=-10 * 0.5,
        params=p,
        expected_cohort=10,
        target_quantile=0.5,
        lr=0.2,
        rng=rng,
    )
    assert c2 == pytest.approx(math.exp(0.1))


def _cdp_config(**cdp):
    data = tiny_dict(rounds=3)
    data["client_dp"] = {"mode": "central", "target_epsilon": 10.0, "delta": 1e-2, **cdp}
    return from_dict(data)


def test_engine_clips_each_client_and_hides_counts(tmp_path: Path):
    cfg = _cdp_config(clip=0.05)
    eng = Engine(cfg, tmp_path / "r", progress=False, echo=lambda m: None)
    state = eng.fresh_state()
    ups = eng.play_round(0, state, keep_updates=True).updates
    base = eng.fed.counter_base
    assert ups
    for vec in ups.values():
        assert np.linalg.norm(vec[:base].astype(np.float64)) <= 0.05 * (1 + 1e-5)
        assert not vec[base:].any()  # no participation counters under client-level DP
    assert state.client_ledger is not None and state.client_ledger.steps == 1


def test_client_level_epsilon_matches_independent_accountant(tmp_path: Path):
    dp_accounting = pytest.importorskip("dp_accounting")
    from dp_accounting.rdp import RdpAccountant

    from privfed.privacy.accounting import DEFAULT_ORDERS

    data = tiny_dict(rounds=3)
    data["federation"]["cohort_fraction"] = 0.5
    data["client_dp"] = {"mode": "central", "target_epsilon": 10.0, "delta": 1e-2}
    run_experiment(from_dict(data), tmp_path / "r", progress=False, echo=lambda m: None)
    report = json.loads((tmp_path / "r" / "privacy.json").read_text())
    cl = report["client_level"]
    assert cl["unit"].startswith("client") and report["unit"].startswith("record")
    assert cl["sample_rate"] == 0.5
    acc = RdpAccountant(orders=list(DEFAULT_ORDERS))
    for ev in cl["ledger"]["events"]:
        acc.compose(
            dp_accounting.PoissonSampledDpEvent(
                ev["sample_rate"], dp_accounting.GaussianDpEvent(ev["noise_multiplier"])
            ),
            ev["steps"],
        )
    assert cl["epsilon"] == pytest.approx(acc.get_epsilon(cl["delta"]), rel=2e-3)
    assert cl["epsilon"] <= 10.0 + 1e-9


def test_adaptive_clip_is_checkpointed_and_resumes(tmp_path: Path, monkeypatch):
    cfg = _cdp_config(adaptive=True, count_noise_multiplier=3.0, clip=0.01)
    run_experiment(cfg, tmp_path / "full", progress=False, echo=lambda m: None)
    original = Engine.run_round

    def crash(self, r, state, **kw):
        if r == 2:
            raise KeyboardInterrupt
        return original(self, r, state, **kw)

    monkeypatch.setattr(Engine, "run_round", crash)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "cut", progress=False, echo=lambda m: None)
    monkeypatch.setattr(Engine, "run_round", original)
    run_experiment(cfg, tmp_path / "cut", resume=True, progress=False, echo=lambda m: None)
    a = json.loads((tmp_path / "full" / "privacy.json").read_text())["client_level"]
    b = json.loads((tmp_path / "cut" / "privacy.json").read_text())["client_level"]
    assert a == b
    assert a["clip"] != 0.01  # the bound moved


def _ddg_config(**fed):
    data = tiny_dict(rounds=2)
    data["federation"].update({"aggregator": "secagg", **fed})
    data["client_dp"] = {"mode": "distributed", "target_epsilon": 10.0, "delta": 1e-2, "clip": 0.5}
    data["secagg"] = {"bits": 40}
    return from_dict(data)


def test_distributed_mode_needs_secure_aggregation():
    data = tiny_dict()
    data["client_dp"] = {"mode": "distributed"}
    with pytest.raises(ConfigError, match="needs federation.aggregator = 'secagg'"):
        from_dict(data)


def test_distributed_noise_is_in_the_securely_summed_total(tmp_path: Path):
    eng = Engine(_ddg_config(), tmp_path / "r", progress=False, echo=lambda m: None)
    state = eng.fresh_state()
    played = eng.play_round(0, state, keep_updates=True)
    agg = played.record
    assert agg.aggregate is not None and len(agg.included) == 4
    base = eng.fed.counter_base
    true = sum(v[:base].astype(np.float64) for v in played.updates.values())
    err = agg.aggregate[:base] - true
    per_client_std = eng.ddg.sigma * eng.ddg.gamma
    # the error is the sum of 4 clients' noise (plus negligible rounding): std 2 * per-client
    assert err.std() == pytest.approx(2 * per_client_std, rel=0.15)
    # what the server saw of each client is a masked integer vector, not the update
    assert all(v.dtype.kind == "u" for v in agg.observed.values())
    (entry,) = state.ddg_ledger.rounds
    assert entry.survivors == 4 and entry.cohort == 4
    # own share and colluders not counted: 4 survivors - 1 - colluders
    assert entry.honest_realized == 4 - 1 - eng.ddg_plan.colluders
    assert entry.honest_worst == entry.threshold - 1 - eng.ddg_plan.colluders


def test_distributed_epsilon_follows_survivors(tmp_path: Path):
    eng = Engine(_ddg_config(), tmp_path / "r", progress=False, echo=lambda m: None)
    plan = eng.ddg_plan
    t, c = plan.planned.threshold, plan.colluders

    def ledger_with(survivors):
        lg = DistributedLedger(eng.ddg, delta=1e-2, target_epsilon=10.0)
        for r, n in enumerate(survivors):
            lg.record(
                DistributedRound(
                    round=r,
                    cohort=4,
                    threshold=t,
                    survivors=n,
                    colluders=c,
                    honest_worst=t - 1 - c,
                    honest_realized=n - 1 - c,
                )
            )
        return lg

    full, fewer = ledger_with([4, 4]), ledger_with([4, t])
    assert fewer.epsilon(realized=True) > full.epsilon(realized=True)
    # the guarantee does not depend on what the server reports: calibrated to the target
    assert full.epsilon() == fewer.epsilon() <= 10.0 + 1e-6
    assert fewer.epsilon(realized=True) <= fewer.epsilon()
    with pytest.raises(PrivacyBudgetError, match="below"):
        full.record(
            DistributedRound(
                round=2,
                cohort=4,
                threshold=t,
                survivors=t - 1,
                colluders=c,
                honest_worst=t - 1 - c,
                honest_realized=t - 2 - c,
            )
        )


def test_fixed_central_noise_that_cannot_meet_the_target_is_refused_at_load():
    data = tiny_dict(rounds=30)
    data["client_dp"] = {
        "mode": "central",
        "target_epsilon": 1.0,
        "delta": 1e-3,
        "noise_multiplier": 0.3,
    }
    with pytest.raises(ConfigError) as exc:
        from_dict(data)
    (msg,) = exc.value.problems
    assert msg.startswith(
        "client_dp.noise_multiplier = 0.3 cannot meet client_dp.target_epsilon = 1 over 30 rounds"
    )
    spent = float(msg.split("smallest feasible epsilon is ")[1].split(":")[0])
    needed = float(msg.split("noise_multiplier to >= ")[1].split(",")[0])
    # the figures in the message are the accountant's
    from privfed.privacy.accounting import plan_epsilon

    assert spent == pytest.approx(
        plan_epsilon([(1.0, 30)], noise_multiplier=0.3, delta=1e-3), rel=1e-3
    )
    assert plan_epsilon([(1.0, 30)], noise_multiplier=needed * 1.001, delta=1e-3) <= 1.0
    # a fixed noise that fits over fewer rounds says how many
    data["client_dp"].update({"noise_multiplier": 3.0, "target_epsilon": 4.0})
    with pytest.raises(ConfigError, match=r"lower rounds to <= \d+"):
        from_dict(data)
    # one that fits is accepted, and a target below the accountant's floor is refused
    data["client_dp"].update({"noise_multiplier": 40.0})
    from_dict(data)
    data["client_dp"] = {"mode": "central", "target_epsilon": 0.01, "delta": 1e-3}
    with pytest.raises(ConfigError, match="whatever the noise: the smallest feasible epsilon"):
        from_dict(data)


def test_client_delta_at_one_over_n_is_refused_and_near_it_warned(tmp_path: Path):
    data = tiny_dict()
    data["client_dp"] = {"mode": "central", "target_epsilon": 10.0, "delta": 0.3}
    with pytest.raises(ConfigError, match=r"client_dp.delta = 0.3 is at least 1/n for the 4"):
        from_dict(data)
    data["client_dp"]["delta"] = 0.05
    eng = Engine(from_dict(data), tmp_path / "r", progress=False, echo=lambda m: None)
    assert any(w.startswith("client_dp.delta = 0.05 is within a factor 10") for w in eng.warnings)
    run = run_experiment(from_dict(data), tmp_path / "w", progress=False, echo=lambda m: None)
    report = json.loads((tmp_path / "w" / "privacy.json").read_text())
    assert report["warnings"] == list(run.warnings) and run.warnings


def test_central_budget_is_enforced_before_a_round(tmp_path: Path):
    cfg = _cdp_config(noise_multiplier=0.0)  # calibrated for 3 rounds
    messages: list[str] = []
    eng = Engine(cfg, tmp_path / "r", progress=False, echo=messages.append)
    state = eng.fresh_state()
    for r in range(3):
        assert not eng.run_round(r, state).refused
    before = state.client_ledger.epsilon()
    assert before <= 10.0
    record = eng.run_round(3, state)  # a fourth release would exceed the budget
    assert record.refused and record.trained == 0
    assert state.client_refused_rounds == [3]
    assert state.client_ledger.epsilon() == before
    assert any("round 4: refused" in m for m in messages)


def test_colluders_and_own_share_are_not_counted():
    from privfed.privacy.distributed import (
        ddg_epsilon,
        default_max_colluders,
        noise_shares,
        plan_distributed,
    )
    from privfed.secagg.config import SecAggConfig, resolve_degree, resolve_threshold

    sc = SecAggConfig(bits=40)
    t = resolve_threshold(sc, num_clients=20, degree=resolve_degree(sc, 20))
    c = default_max_colluders(sc, cohort=20)
    assert c == max(0, 2 * t - 20 - 1)
    shares = noise_shares(sc, cohort=20, colluders=c)
    assert shares.worst == t - 1 - c and shares.realized(20) == 19 - c
    kw = dict(
        dimension=100,
        clip=0.5,
        secagg=sc,
        num_clients=20,
        cohort=20,
        target_epsilon=8.0,
        delta=1e-3,
        rounds=10,
    )
    derived = plan_distributed(max_colluders=-1, **kw)
    trusting = plan_distributed(max_colluders=0, **kw)
    assert derived.colluders == c and derived.colluders_derived
    assert derived.planned.worst == t - 1 - c < trusting.planned.worst == t - 1
    assert (
        derived.params.sigma * derived.params.gamma > trusting.params.sigma * trusting.params.gamma
    )
    p = derived.params
    common = dict(
        l2_sensitivity=p.l2_sensitivity,
        l1_sensitivity=p.l1_sensitivity,
        sigma_per_client=p.sigma,
        dimension=p.padded_dimension,
        delta=1e-3,
        steps=10,
    )
    # calibrated for the worst admissible round: t survivors, c colluders, own share excluded
    assert ddg_epsilon(n_survivors=t - 1 - c, **common) <= 8.0
    assert ddg_epsilon(n_survivors=t - 1 - c, **common) == pytest.approx(8.0, rel=1e-3)
    # counting every survivor (the old accounting) would claim far less than is guaranteed
    assert ddg_epsilon(n_survivors=20, **common) < 0.7 * 8.0
    with pytest.raises(ConfigError, match="client_dp.max_colluders = 13 .* leaves no honest"):
        plan_distributed(max_colluders=t - 1, **kw)


def test_distributed_rounds_stop_at_the_budget_and_report_realized_vs_target(tmp_path: Path):
    cfg = _ddg_config()
    eng = Engine(cfg, tmp_path / "r", progress=False, echo=lambda m: None)
    state = eng.fresh_state()
    for r in range(cfg.rounds):
        assert not eng.run_round(r, state).refused
    assert eng.client_epsilon(state) <= cfg.client_dp.target_epsilon + 1e-9
    assert eng.run_round(cfg.rounds, state).refused  # one more would exceed
    assert len(state.ddg_ledger.rounds) == cfg.rounds
    report = eng.privacy_report(state, final=True)["client_level"]
    assert report["epsilon"] == pytest.approx(cfg.client_dp.target_epsilon, rel=1e-3)
    assert report["epsilon_realized"] <= report["epsilon"]
    assert report["refused_rounds"] == [cfg.rounds]
    rows = report["rounds"]
    assert [row["round"] for row in rows] == list(range(cfg.rounds))
    for row in rows:
        assert row["epsilon_realized"] <= row["epsilon"] <= row["target_epsilon"] + 1e-9
        assert row["honest_realized"] == row["survivors"] - 1 - report["max_colluders"]
    # resume: the ledger round-trips through the checkpoint
    eng.out.mkdir(parents=True, exist_ok=True)
    state.next_round = cfg.rounds
    eng.save_checkpoint(state)
    again = eng.load_checkpoint()
    assert again.ddg_ledger.rounds == state.ddg_ledger.rounds
    assert again.client_refused_rounds == [cfg.rounds]
