"""Ledger audit: every privacy.json recomputed by independent accountants, every event a step.

For a tiny run of every algorithm (record-level DP) and of client-level DP (central and
distributed), the test

* counts the DP-SGD steps each trainer's optimizer actually took (a global optimizer step hook,
  not the ledger), with the noise multiplier of its DP optimizer and the sampling rate of its
  data loader, and checks that the ledgers in ``privacy.json`` hold exactly those events;
* counts the client-level releases actually made (a wrapper on the noise addition / the secure
  sum) and checks the client-level ledger against them;
* recomputes every reported epsilon from the recorded events with Google's dp-accounting (RDP
  at the same orders, and PLD, whose pessimistic estimate upper-bounds the true epsilon) or,
  for the distributed discrete Gaussian, with an independent implementation of Kairouz et al.
  2021, Prop. 14 converted by dp-accounting, and asserts the reported epsilon is never below
  the recomputed one (beyond the ~1e-3 by which dp-accounting's fractional-order RDP differs).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon
from support import dp_accounting_pld_epsilon, dp_accounting_rdp_epsilon, tiny_dict, trainers_of
from torch.optim.optimizer import register_optimizer_step_post_hook

from privfed.config import from_dict
from privfed.engine import Engine
from privfed.privacy import client_dp

RDP_AGREEMENT = 2e-3  # dp-accounting's fractional-order series vs the exact (Opacus) values


def _events(ledger: dict[str, Any]) -> list[tuple[float, float, int]]:
    return [(e["noise_multiplier"], e["sample_rate"], e["steps"]) for e in ledger["events"]]


def _assert_not_under_reported(reported: float, events, delta: float) -> None:
    assert reported == pytest.approx(dp_accounting_rdp_epsilon(events, delta), rel=RDP_AGREEMENT)
    assert reported >= dp_accounting_pld_epsilon(events, delta)


def _ddg_epsilon_independent(params: dict[str, Any], shares: list[int], delta: float) -> float:
    """Kairouz, Liu, Steinke 2021, Prop. 14 (RDP of a sum of discrete Gaussians), from scratch.

    The sensitivities are recomputed from clip, gamma, beta and the padded dimension with the
    bound of conditional randomized rounding, then converted by dp-accounting.
    """
    big_d = params["padded_dimension"]
    norm = params["clip"] / params["gamma"]
    beta = params["beta"]
    l2 = min(
        norm + math.sqrt(big_d),
        math.sqrt(
            norm**2 + big_d / 4 + math.sqrt(2 * math.log(1 / beta)) * (norm + math.sqrt(big_d) / 2)
        ),
    )
    l1 = l2 * min(math.sqrt(big_d), l2)
    sigma = params["sigma_per_client"]
    orders = np.array([1.25, 1.5, 1.75, *range(2, 129), 160, 192, 256, 512], dtype=float)
    total = np.zeros_like(orders)
    for n in shares:
        assert n >= 1
        tau = 10 * sum(math.exp(-2 * math.pi**2 * sigma**2 * k / (k + 1)) for k in range(1, n))
        s = math.sqrt(n) * sigma
        t1 = orders / 2 * (l2 / s) ** 2 + tau * big_d
        t2 = orders / 2 * ((l2 / s) ** 2 + 2 * (l1 / s) * tau + tau**2 * big_d)
        t3 = orders / 2 * (l2 / s + math.sqrt(big_d) * tau) ** 2
        total += np.minimum(np.minimum(t1, t2), t3)
    return float(compute_epsilon(orders, total, delta)[0])


class StepCounter:
    """Counts optimizer steps per optimizer object with a global post-step hook."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()

    def __enter__(self) -> StepCounter:
        self._handle = register_optimizer_step_post_hook(
            lambda opt, args, kwargs: self.counts.update([id(opt)])
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


def _run(cfg, out: Path, monkeypatch) -> tuple[Engine, dict[str, Any], Counter, dict[str, list]]:
    releases: dict[str, list] = {"central": [], "distributed": []}
    original_noise = client_dp.add_noise
    original_session = Engine._secure_session

    def counted_noise(total, **kw):
        releases["central"].append(kw["params"].noise_multiplier)
        return original_noise(total, **kw)

    def counted_session(self, plan, senders):
        result = original_session(self, plan, senders)
        if self.ddg is not None:
            releases["distributed"].append((plan.round_index, len(senders), len(result.included)))
        return result

    monkeypatch.setattr(client_dp, "add_noise", counted_noise)
    monkeypatch.setattr(Engine, "_secure_session", counted_session)
    engine = Engine(cfg, out, progress=False, echo=lambda m: None)
    with StepCounter() as counter:
        engine.run()
    report = json.loads((out / "privacy.json").read_text())
    return engine, report, counter.counts, releases


def _audit_record_level(engine: Engine, report: dict[str, Any], counts: Counter) -> None:
    cfg = engine.cfg
    taken: dict[tuple[int, str], Counter] = {}
    for (client, key), tr in trainers_of(engine).items():
        unit = key.split("#")[0]
        source = engine.fed.unit_group[unit].ledger_key
        opt = getattr(tr.optimizer, "original_optimizer", tr.optimizer)
        steps = counts[id(opt)]
        if steps:
            sigma = float(tr.optimizer.noise_multiplier)
            q = float(tr.loader.sample_rate)
            taken.setdefault((client, source), Counter())[(sigma, q)] += steps
    recorded = {(lg["client"], lg["source"]): lg for lg in report["ledgers"]}
    assert set(recorded) == set(taken)
    for key, lg in recorded.items():
        events: Counter = Counter()
        for sigma, q, steps in _events(lg):
            events[(sigma, q)] += steps
        assert events == taken[key], key  # every recorded event is a step taken, and back
        assert sum(lg["steps_by_task"].values()) == sum(taken[key].values())
        _assert_not_under_reported(lg["epsilon"], _events(lg), report["delta"])
        assert lg["epsilon"] <= cfg.dp.target_epsilon * (1 + 1e-9)


ALGORITHMS = ["fedavg", "fedavg-ft", "fedprox", "fedper", "fedrep", "ditto", "mocha", "local"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_record_level_ledgers_match_steps_and_independent_accountants(
    algorithm: str, tmp_path: Path, monkeypatch
) -> None:
    data = tiny_dict(rounds=2)
    data["federation"]["algorithm"] = algorithm
    if algorithm == "fedprox":
        data["federation"]["algorithm_params"] = {"mu": 0.1}
    elif algorithm in ("ditto", "mocha"):
        data["federation"]["algorithm_params"] = {"lambda": 0.1}
    if algorithm in ("fedper", "fedrep"):
        data["groups"]["text"]["hidden"] = [8]
    engine, report, counts, _ = _run(from_dict(data), tmp_path / "r", monkeypatch)
    assert report["complete"] and report["ledgers"]
    _audit_record_level(engine, report, counts)


def test_central_client_level_ledger_matches_releases(tmp_path: Path, monkeypatch) -> None:
    data = tiny_dict(rounds=3)
    data["federation"]["cohort_fraction"] = 0.75
    data["client_dp"] = {"mode": "central", "target_epsilon": 10.0, "delta": 1e-2}
    engine, report, counts, releases = _run(from_dict(data), tmp_path / "r", monkeypatch)
    _audit_record_level(engine, report, counts)
    cl = report["client_level"]
    events = _events(cl["ledger"])
    assert sum(s for _, _, s in events) == len(releases["central"]) > 0
    assert {sigma for sigma, _, _ in events} == set(releases["central"])
    _assert_not_under_reported(cl["epsilon"], events, cl["delta"])
    assert cl["epsilon"] <= 10.0 * (1 + 1e-9)


def test_distributed_client_level_ledger_matches_secure_sums(tmp_path: Path, monkeypatch) -> None:
    data = tiny_dict(rounds=2)
    data["federation"].update({"aggregator": "secagg", "dropout": 0.1})
    data["client_dp"] = {"mode": "distributed", "target_epsilon": 10.0, "delta": 1e-2}
    data["secagg"] = {"bits": 40}
    engine, report, counts, releases = _run(from_dict(data), tmp_path / "r", monkeypatch)
    _audit_record_level(engine, report, counts)
    cl = report["client_level"]
    rounds = cl["rounds"]
    assert [(r["round"], r["cohort"], r["survivors"]) for r in rounds] == releases["distributed"]
    c = cl["max_colluders"]
    for r in rounds:
        assert r["honest_realized"] == r["survivors"] - 1 - c
        assert r["honest_worst"] == r["threshold"] - 1 - c
    delta = cl["delta"]
    worst = _ddg_epsilon_independent(cl["params"], [r["honest_worst"] for r in rounds], delta)
    realized = _ddg_epsilon_independent(cl["params"], [r["honest_realized"] for r in rounds], delta)
    # same orders, closed-form RDP: equal up to float rounding, never below
    assert cl["epsilon"] >= worst * (1 - 1e-9) and cl["epsilon"] == pytest.approx(worst, rel=1e-9)
    assert cl["epsilon_realized"] == pytest.approx(realized, rel=1e-9)
    assert realized <= worst
    assert cl["epsilon"] <= 10.0 * (1 + 1e-9)
