"""The vectorized RDP curve of the sampled Gaussian against Opacus's ``compute_rdp``.

``_rdp_fast_curve`` (Mironov, Talwar, Zhang 2019, Sec. 3.3, vectorized) must reproduce Opacus's
per-order loops (kept as ``_rdp_reference``) to 1e-9 relative, or 1e-12 absolute where the RDP
value itself is tiny (both implementations carry ~1e-13 of rounding and truncation error).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants.analysis.rdp import get_privacy_spent

import privfed.privacy.accounting as acc
from privfed.privacy.accounting import (
    DEFAULT_ORDERS,
    _rdp_fast_curve,
    _rdp_reference,
    calibrate_noise,
    epsilon_from_rdp,
    rdp_vector,
)

DELTA = 1e-5
RTOL = 1e-9
ATOL = 1e-12
FAST = settings(max_examples=15, deadline=None, derandomize=True)


def assert_curves_match(
    fast: np.ndarray, ref: np.ndarray, *, rtol: float = RTOL, atol: float = ATOL
) -> None:
    fast = np.asarray(fast, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert fast.shape == ref.shape
    assert np.array_equal(np.isinf(fast), np.isinf(ref))
    finite = np.isfinite(ref)
    diff = np.abs(fast[finite] - ref[finite])
    bound = np.maximum(rtol * np.abs(ref[finite]), atol)
    worst = int(np.argmax(diff / bound)) if diff.size else 0
    assert np.all(diff <= bound), (
        f"max |fast - ref| / bound = {(diff / bound)[worst]:.3g} at finite index {worst}: "
        f"fast={fast[finite][worst]!r}, ref={ref[finite][worst]!r}"
    )


def check(sigma: float, q: float, orders: Sequence[float] = DEFAULT_ORDERS) -> None:
    assert_curves_match(_rdp_fast_curve(sigma, q, orders), _rdp_reference(sigma, q, orders))


@pytest.mark.parametrize("q", [1e-4, 0.01, 0.1, 0.5, 0.95, 1.0])
@pytest.mark.parametrize("sigma", [0.3, 1.1, 4.0, 50.0])
def test_grid_matches_opacus(q: float, sigma: float) -> None:
    check(sigma, q)


log_uniform_q = st.floats(min_value=math.log(1e-4), max_value=0.0).map(math.exp)
log_uniform_sigma = st.floats(min_value=math.log(0.3), max_value=math.log(50.0)).map(math.exp)


@FAST
@given(q=log_uniform_q, sigma=log_uniform_sigma)
def test_random_mechanisms_match_opacus(q: float, sigma: float) -> None:
    check(sigma, min(q, 1.0))


fractional_order = st.floats(min_value=1.01, max_value=80.0).filter(lambda a: not a.is_integer())


@FAST
@given(
    q=log_uniform_q,
    sigma=log_uniform_sigma,
    orders=st.lists(fractional_order, min_size=1, max_size=6),
)
def test_random_fractional_orders_match_opacus(q: float, sigma: float, orders: list[float]) -> None:
    check(sigma, min(q, 1.0), orders)


def test_mixed_and_large_orders_match_opacus() -> None:
    orders = [1.5, 2.0, 2.25, 7.0, 31.5, 64.0, 128.0, 256.0, 100.5, math.inf]
    for sigma, q in [(0.7, 0.02), (2.0, 0.3), (20.0, 1e-3)]:
        check(sigma, q, orders)


@pytest.mark.parametrize(
    ("sigma", "q"), [(0.0, 0.1), (0.0, 1.0), (1.3, 0.0), (0.0, 0.0), (1.3, 1.0), (0.3, 1.0)]
)
def test_edge_cases_exactly_as_opacus(sigma: float, q: float) -> None:
    orders = [*DEFAULT_ORDERS, math.inf]
    fast = _rdp_fast_curve(sigma, q, orders)
    ref = _rdp_reference(sigma, q, orders)
    assert np.array_equal(fast, ref)


def test_orders_at_most_one_defer_to_opacus() -> None:
    orders = [0.5, 0.9, 1.5]
    assert np.array_equal(
        _rdp_fast_curve(1.0, 0.1, orders)[:2], _rdp_reference(1.0, 0.1, orders)[:2]
    )
    check(1.0, 0.1, orders)


@pytest.mark.parametrize(
    ("sigma", "q", "steps", "delta"),
    [
        (1.1, 0.01, 10_000, 1e-5),
        (4.0, 0.01, 10_000, 1e-5),
        (0.8, 0.25, 120, 1e-5),
        (2.5, 0.333, 120, 1e-6),
        (50.0, 1e-4, 1_000_000, 1e-5),
        (0.5, 0.9, 3, 1e-3),
    ],
)
def test_epsilon_agrees_with_opacus(sigma: float, q: float, steps: int, delta: float) -> None:
    fast = _rdp_fast_curve(sigma, q, DEFAULT_ORDERS) * steps
    ref = _rdp_reference(sigma, q, DEFAULT_ORDERS) * steps
    eps_fast = epsilon_from_rdp(fast, delta=delta)
    eps_ref = epsilon_from_rdp(ref, delta=delta)
    assert eps_fast == pytest.approx(eps_ref, rel=RTOL)
    with warnings.catch_warnings():  # Opacus warns when the optimum is an extreme order
        warnings.simplefilter("ignore", UserWarning)
        opacus_eps, _ = get_privacy_spent(orders=list(DEFAULT_ORDERS), rdp=ref, delta=delta)
    assert eps_fast == pytest.approx(float(opacus_eps), rel=RTOL)


def test_known_answer_still_holds() -> None:
    # Field notes: Opacus RDP 5.6320 for q=0.01, sigma=1.1, T=10,000, delta=1e-5.
    rdp = _rdp_fast_curve(1.1, 0.01, DEFAULT_ORDERS) * 10_000
    assert round(epsilon_from_rdp(rdp, delta=DELTA), 4) == 5.6320


def test_public_paths_use_the_fast_curve(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(**_: object) -> None:
        raise AssertionError("Opacus compute_rdp called on a hot path")

    acc._rdp_one_step.cache_clear()
    acc._calibrate_cached.cache_clear()
    monkeypatch.setattr(acc._opacus_rdp, "compute_rdp", forbidden)
    try:
        vec = rdp_vector(noise_multiplier=1.1, sample_rate=0.01, steps=10_000)
        assert round(epsilon_from_rdp(vec, delta=DELTA), 4) == 5.6320
        calibrate_noise(target_epsilon=8.0, delta=DELTA, sample_rate=0.1, steps=120)
    finally:
        acc._rdp_one_step.cache_clear()
        acc._calibrate_cached.cache_clear()


@pytest.mark.parametrize(("q", "expected"), [(0.1, 1.038816), (0.25, 1.957616), (0.333, 2.497743)])
def test_calibration_unchanged_and_sound_by_reference(q: float, expected: float) -> None:
    # Expected sigmas were produced by the Opacus-based calibration before vectorization.
    acc._calibrate_cached.cache_clear()
    sigma = calibrate_noise(target_epsilon=8.0, delta=DELTA, sample_rate=q, steps=120)
    assert sigma == pytest.approx(expected, rel=1e-5)
    eps_ref = epsilon_from_rdp(_rdp_reference(sigma, q, DEFAULT_ORDERS) * 120, delta=DELTA)
    assert eps_ref <= 8.0 * (1 + RTOL)
    below = sigma * (1 - 1e-4)
    eps_below = epsilon_from_rdp(_rdp_reference(below, q, DEFAULT_ORDERS) * 120, delta=DELTA)
    assert eps_below > 8.0
