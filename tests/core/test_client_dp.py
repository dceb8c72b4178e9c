"""Client-level DP (DP-FedAvg): clipping, noise, adaptive clip bound, accounting."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from support import tiny_dict

from privfed.config import from_dict
from privfed.engine import Engine, run_experiment
from privfed.errors import ConfigError
from privfed.privacy import client_dp


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
    assert state.ddg_survivors == [4]


def test_distributed_epsilon_follows_survivors(tmp_path: Path):
    eng = Engine(_ddg_config(), tmp_path / "r", progress=False, echo=lambda m: None)
    state = eng.fresh_state()
    state.ddg_survivors = [4, 4]
    full = eng.client_epsilon(state)
    state.ddg_survivors = [4, 2]
    fewer = eng.client_epsilon(state)
    assert full is not None and fewer is not None
    assert full <= 10.0 + 1e-6 < fewer
