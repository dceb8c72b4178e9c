"""Tests for privfed.privacy.ledger: running totals, budgets, serialization."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import RDPAccountant

from privfed.errors import PrivacyBudgetError
from privfed.privacy.accounting import DPEvent, epsilon_for, prv_epsilon
from privfed.privacy.ledger import PrivacyLedger, SourceLedger

DELTA = 1e-5

records = st.lists(
    st.tuples(
        st.sampled_from([0.8, 1.1, 2.5]),
        st.sampled_from([0.01, 0.03, 0.05]),
        st.integers(min_value=0, max_value=300),
        st.sampled_from(["digit", "parity", "ge5"]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=10, deadline=None)
@given(records)
def test_running_total_equals_recompute(recs: list[tuple[float, float, int, str]]) -> None:
    ledger = SourceLedger(0, "digits", delta=DELTA, target_epsilon=math.inf)
    opacus_acc = RDPAccountant()
    for sigma, q, steps, task in recs:
        ledger.record(noise_multiplier=sigma, sample_rate=q, steps=steps, task=task)
        for _ in range(steps):
            opacus_acc.step(noise_multiplier=sigma, sample_rate=q)
        # bit-identical to the from-scratch left-to-right sum after every record
        assert ledger.epsilon() == epsilon_for(ledger.events, delta=DELTA)
    assert [(e.noise_multiplier, e.sample_rate, e.steps) for e in ledger.events] == [
        tuple(h) for h in opacus_acc.history
    ]
    if ledger.events:
        # the vectorized RDP agrees with Opacus to ~1e-12 relative (test_privacy_rdp_fast.py)
        assert ledger.epsilon() == pytest.approx(opacus_acc.get_epsilon(DELTA), rel=1e-9)
    assert ledger.steps == sum(r[2] for r in recs)
    expected: dict[str, int] = {}
    for _, _, steps, task in recs:
        if steps:
            expected[task] = expected.get(task, 0) + steps
    assert ledger.steps_by_task == expected
    # round trip rebuilds the same running total
    again = SourceLedger.from_dict(json.loads(json.dumps(ledger.to_dict())))
    assert np.array_equal(again.rdp, ledger.rdp)
    assert again.epsilon() == ledger.epsilon()


def test_merging_and_epsilon_cache_invalidation() -> None:
    ledger = SourceLedger(1, "digits", delta=DELTA, target_epsilon=10.0)
    assert ledger.epsilon() == 0.0
    ledger.record(noise_multiplier=1.1, sample_rate=0.01, steps=100, task="digit")
    e1 = ledger.epsilon()
    ledger.record(noise_multiplier=1.1, sample_rate=0.01, steps=100, task="parity")
    e2 = ledger.epsilon()
    assert e2 > e1
    assert ledger.events == (DPEvent(noise_multiplier=1.1, sample_rate=0.01, steps=200),)
    ledger.record(noise_multiplier=1.1, sample_rate=0.02, steps=100, task="parity")
    assert len(ledger.events) == 2
    assert ledger.epsilon() > e2
    assert ledger.steps_by_task == {"digit": 100, "parity": 200}
    ledger.record(noise_multiplier=1.1, sample_rate=0.02, steps=0, task="ge5")
    assert len(ledger.events) == 2 and "ge5" not in ledger.steps_by_task


def test_would_exceed_stops_at_budget() -> None:
    target = 3.0
    ledger = SourceLedger(2, "digits", delta=DELTA, target_epsilon=target)
    chunk = {"noise_multiplier": 1.0, "sample_rate": 0.05, "steps": 20}
    rounds = 0
    while not ledger.would_exceed(**chunk):
        ledger.record(**chunk, task="digit")
        rounds += 1
        assert ledger.epsilon() <= target
        assert rounds < 1000
    assert rounds > 0
    after = epsilon_for([*ledger.events, DPEvent(**chunk)], delta=DELTA)
    assert after > target
    # a smaller step count may still fit; zero steps always fits
    assert not ledger.would_exceed(noise_multiplier=1.0, sample_rate=0.05, steps=0)
    # would_exceed does not record anything
    assert ledger.steps == rounds * 20


def test_would_exceed_prv_ledger_uses_tighter_accountant() -> None:
    # q=0.01, sigma=1.1, T=10,000: RDP 5.632, PRV 5.203 (field notes).
    planned = {"noise_multiplier": 1.1, "sample_rate": 0.01, "steps": 10_000}
    rdp_ledger = SourceLedger(0, "s", delta=DELTA, target_epsilon=5.4)
    prv_ledger = SourceLedger(0, "s", delta=DELTA, target_epsilon=5.4, accountant="prv")
    assert rdp_ledger.would_exceed(**planned)
    assert not prv_ledger.would_exceed(**planned)
    prv_ledger.record(**planned, task="t")
    assert prv_ledger.epsilon() == pytest.approx(5.2029, abs=1e-3)
    assert prv_ledger.epsilon(accountant="rdp") == pytest.approx(5.6320, abs=1e-4)


def test_no_noise_is_infinite_and_serializes() -> None:
    ledger = SourceLedger(3, "text", delta=DELTA, target_epsilon=math.inf)
    assert not ledger.would_exceed(noise_multiplier=0.0, sample_rate=0.1, steps=10)
    ledger.record(noise_multiplier=0.0, sample_rate=0.1, steps=10, task="next_token")
    assert ledger.epsilon() == math.inf
    data = ledger.to_dict()
    assert data["epsilon"] == "inf" and data["target_epsilon"] == "inf"
    text = json.dumps(data, allow_nan=False)
    back = SourceLedger.from_dict(json.loads(text))
    assert back.epsilon() == math.inf and back.target_epsilon == math.inf
    assert back.events == ledger.events and back.steps_by_task == ledger.steps_by_task
    # budgeted ledger refuses no-noise training
    budgeted = SourceLedger(3, "text", delta=DELTA, target_epsilon=8.0)
    assert budgeted.would_exceed(noise_multiplier=0.0, sample_rate=0.1, steps=1)


def test_from_dict_rejects_bad_input() -> None:
    ledger = SourceLedger(0, "s", delta=DELTA, target_epsilon=1.0)
    data = ledger.to_dict()
    with pytest.raises(PrivacyBudgetError, match="inf"):
        SourceLedger.from_dict({**data, "target_epsilon": "infinity"})
    del data["events"]
    with pytest.raises(PrivacyBudgetError, match="events"):
        SourceLedger.from_dict(data)


def test_invalid_arguments() -> None:
    with pytest.raises(PrivacyBudgetError, match="delta"):
        SourceLedger(0, "s", delta=1.5, target_epsilon=1.0)
    with pytest.raises(PrivacyBudgetError, match="target_epsilon"):
        SourceLedger(0, "s", delta=DELTA, target_epsilon=0.0)
    with pytest.raises(PrivacyBudgetError, match="accountant"):
        SourceLedger(0, "s", delta=DELTA, target_epsilon=1.0, accountant="gdp")
    with pytest.raises(PrivacyBudgetError, match="accountant"):
        PrivacyLedger(delta=DELTA, target_epsilon=1.0, accountant="gdp")
    ledger = SourceLedger(0, "s", delta=DELTA, target_epsilon=1.0)
    with pytest.raises(PrivacyBudgetError, match="steps"):
        ledger.record(noise_multiplier=1.0, sample_rate=0.1, steps=-2, task="t")
    assert ledger.events == ()


def test_privacy_ledger_mapping_summary_round_trip() -> None:
    book = PrivacyLedger(delta=DELTA, target_epsilon=8.0)
    for client, steps in [(0, 100), (1, 300), (2, 0)]:
        book.get(client, "digits").record(
            noise_multiplier=1.0, sample_rate=0.02, steps=steps, task="digit"
        )
    book.get(0, "text").record(noise_multiplier=2.0, sample_rate=0.1, steps=50, task="lm")
    assert len(book) == 4 and (1, "digits") in book and (1, "text") not in book
    assert book.get(1, "digits") is book[(1, "digits")]
    with pytest.raises(KeyError):
        book[(9, "digits")]
    eps = {(lg.client, lg.source): lg.epsilon() for lg in book}
    summary = book.summary()
    assert list(summary) == ["digits", "text"]
    digits = [eps[(c, "digits")] for c in range(3)]
    assert summary["digits"] == {
        "max": max(digits),
        "mean": pytest.approx(np.mean(digits)),
        "clients": 3,
    }
    assert summary["text"]["clients"] == 1
    assert eps[(2, "digits")] == 0.0 < eps[(0, "digits")] < eps[(1, "digits")]
    back = PrivacyLedger.from_dict(json.loads(json.dumps(book.to_dict(), allow_nan=False)))
    assert back.to_dict() == book.to_dict()
    with pytest.raises(PrivacyBudgetError, match="already exists"):
        back.add(SourceLedger(0, "digits", delta=DELTA, target_epsilon=1.0))


def test_prv_report_on_ledger_events() -> None:
    ledger = SourceLedger(0, "digits", delta=DELTA, target_epsilon=math.inf)
    ledger.record(noise_multiplier=1.1, sample_rate=0.01, steps=2000, task="digit")
    ledger.record(noise_multiplier=1.1, sample_rate=0.02, steps=1000, task="parity")
    prv = ledger.epsilon(accountant="prv")
    assert prv == prv_epsilon(ledger.events, delta=DELTA)
    assert 0 < prv < ledger.epsilon()
