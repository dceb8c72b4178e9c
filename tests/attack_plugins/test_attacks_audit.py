"""One-run canary audit of DP-SGD (Steinke, Nasr, Jagielski 2023)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from attacks.audit import AuditResult, audit_dp_sgd, one_run_epsilon_lower_bound
from attacks.base import Records
from privfed.client import UnitSpec

UNIT = UnitSpec("image.identity", "image", ("identity",), 64, (32,), {"identity": 10})


def test_bound_known_answers() -> None:
    # all r guesses right: the bound solves p(eps)^r = beta, p = e^eps / (1 + e^eps)
    for r in (10, 100):
        p = 0.05 ** (1 / r)
        expected = math.log(p / (1 - p))
        assert one_run_epsilon_lower_bound(guesses=r, correct=r) == pytest.approx(expected)
    assert one_run_epsilon_lower_bound(guesses=100, correct=50) == 0.0  # chance: nothing
    assert one_run_epsilon_lower_bound(guesses=0, correct=0) == 0.0
    with pytest.raises(ValueError, match="correct <= guesses"):
        one_run_epsilon_lower_bound(guesses=3, correct=4)


@settings(max_examples=50, deadline=None)
@given(r=st.integers(1, 200), data=st.data())
def test_bound_grows_with_correct_guesses(r: int, data: st.DataObject) -> None:
    v = data.draw(st.integers(0, r - 1))
    assert one_run_epsilon_lower_bound(guesses=r, correct=v) <= one_run_epsilon_lower_bound(
        guesses=r, correct=v + 1
    )


@pytest.fixture(scope="module")
def digits() -> tuple[Records, Records]:
    torch.set_num_threads(1)  # as the engine does
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    return Records(x[:200], {"identity": y[:200]}), Records(x[200:], {"identity": y[200:]})


def _audit(digits: tuple[Records, Records], sigma: float | None, **kw: float) -> AuditResult:
    data, pool = digits
    return audit_dp_sgd(
        UNIT,
        data,
        pool,
        canaries=200,
        guesses=20,
        steps=300,
        batch_size=32,
        lr=0.5,
        noise_multiplier=sigma,
        max_grad_norm=1.0,
        delta=1e-5,
        rng=np.random.default_rng(0),
        **kw,  # type: ignore[arg-type]
    )


def test_audit_finds_leakage_without_dp_and_flags_a_false_claim(digits) -> None:
    res = _audit(digits, None)
    assert res.epsilon_lower > 1.0 and not res.flagged  # no claim: epsilon is inf
    lie = _audit(digits, None, claimed_epsilon=0.5)  # "private" config that adds no noise
    assert lie.flagged and lie.epsilon_lower > lie.epsilon_accountant


def test_audited_bound_stays_below_the_accountant_with_dp(digits) -> None:
    res = _audit(digits, 1.0)
    assert math.isfinite(res.epsilon_accountant)
    assert res.epsilon_lower <= res.epsilon_accountant and not res.flagged


def test_audit_is_reproducible_from_its_generator(digits) -> None:
    data, pool = digits
    kw = dict(
        canaries=40,
        guesses=10,
        steps=20,
        batch_size=32,
        lr=0.5,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        delta=1e-5,
    )
    a = audit_dp_sgd(UNIT, data, pool, rng=np.random.default_rng(7), **kw)  # type: ignore[arg-type]
    b = audit_dp_sgd(UNIT, data, pool, rng=np.random.default_rng(7), **kw)  # type: ignore[arg-type]
    assert a == b
