"""The distributed discrete Gaussian mechanism: sampler, flattening, rounding, privacy, pipeline.

Statistical tests use fixed seeds; every tolerance is a multiple (4-6) of the standard error
implied by the sample size, so a correct implementation fails with negligible probability and a
wrong constant (a missing gamma, a sqrt(n) instead of n, a biased rounding) fails loudly.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants.analysis.rdp import compute_rdp
from scipy import linalg, stats

from privfed.errors import ConfigError
from privfed.privacy.accounting import epsilon_from_rdp
from privfed.privacy.discrete import (
    discrete_gaussian_pmf,
    discrete_gaussian_variance,
    sample_discrete_gaussian,
    sample_discrete_gaussian_exact,
)
from privfed.privacy.distributed import (
    DDG_ORDERS,
    DDGError,
    DDGParams,
    choose_gamma,
    conditional_randomized_rounding,
    ddg_calibrate_sigma,
    ddg_configure,
    ddg_epsilon,
    ddg_rdp,
    ddg_tau,
    decode,
    encode,
    encode_report,
    fwht,
    inverse_randomized_hadamard,
    padded_dimension,
    randomized_hadamard,
    realized_epsilon,
    rotation_signs,
    rounded_l1_bound,
    rounded_l2_bound,
    wrap_probability,
)
from privfed.secagg.field import dtype_for_bits

DELTA = 1e-5


# --- randomized Hadamard -----------------------------------------------------------------


@pytest.mark.parametrize("big_d", [1, 2, 4, 8, 16, 64, 128])
def test_fwht_matches_explicit_hadamard_matrix(big_d: int) -> None:
    rng = np.random.default_rng(big_d)
    x = rng.normal(size=(3, big_d))
    ref = x @ linalg.hadamard(big_d)  # slow obvious reference
    np.testing.assert_allclose(fwht(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d", [1, 3, 7, 64, 100, 1000])
def test_randomized_hadamard_inverse_and_norm(d: int) -> None:
    big_d = padded_dimension(d)
    assert big_d >= d and big_d & (big_d - 1) == 0 and big_d < 2 * max(d, 1) + 1
    signs = rotation_signs(123, padded_dimension=big_d)
    x = np.random.default_rng(d).normal(size=d)
    y = randomized_hadamard(x, signs=signs)
    assert y.shape == (big_d,)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    np.testing.assert_allclose(
        inverse_randomized_hadamard(y, signs=signs, dimension=d), x, rtol=0, atol=1e-12
    )


@settings(max_examples=40, deadline=None)
@given(d=st.integers(1, 300), seed=st.integers(0, 2**32 - 1), scale=st.floats(1e-6, 1e6))
def test_rotation_roundtrip_property(d: int, seed: int, scale: float) -> None:
    signs = rotation_signs(seed, padded_dimension=padded_dimension(d))
    x = np.random.default_rng(seed).normal(size=d) * scale
    y = randomized_hadamard(x, signs=signs)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-10)
    back = inverse_randomized_hadamard(y, signs=signs, dimension=d)
    np.testing.assert_allclose(back, x, rtol=0, atol=1e-10 * scale)


def test_randomized_hadamard_against_explicit_matrix() -> None:
    big_d = 16
    signs = rotation_signs(5, padded_dimension=big_d)
    x = np.random.default_rng(0).normal(size=11)
    padded = np.concatenate([x, np.zeros(5)])
    ref = linalg.hadamard(big_d) @ (signs * padded) / 4.0
    np.testing.assert_allclose(randomized_hadamard(x, signs=signs), ref, atol=1e-12)


def test_rotation_signs_are_public_and_shared() -> None:
    a = rotation_signs(np.random.SeedSequence([1, 2, 3]), padded_dimension=256)
    b = rotation_signs(np.random.SeedSequence([1, 2, 3]), padded_dimension=256)
    c = rotation_signs(np.random.SeedSequence([1, 2, 4]), padded_dimension=256)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) == {-1.0, 1.0}
    with pytest.raises(ValueError, match="power of two"):
        rotation_signs(1, padded_dimension=12)


def test_rotation_flattens_a_spike() -> None:
    big_d = 1024
    x = np.zeros(big_d)
    x[3] = 1.0
    y = randomized_hadamard(x, signs=rotation_signs(9, padded_dimension=big_d))
    assert np.max(np.abs(y)) == pytest.approx(1 / 32)  # every coordinate is +-1/sqrt(D)


# --- conditional randomized rounding ------------------------------------------------------


def test_rounded_l2_bound_known_answer() -> None:
    # norm 10, D 16, beta = e^-0.5: sqrt(100 + 4 + sqrt(2 * 0.5) * (10 + 2)) = sqrt(116)
    assert rounded_l2_bound(norm=10.0, beta=math.exp(-0.5), dimension=16) == pytest.approx(
        math.sqrt(116.0), rel=1e-12
    )
    assert rounded_l2_bound(norm=10.0, beta=0.0, dimension=16) == 14.0
    # tiny norm, huge D: the deterministic bound wins
    assert rounded_l2_bound(norm=0.1, beta=1e-9, dimension=4) == pytest.approx(2.1)
    assert rounded_l1_bound(l2_bound=3.0, dimension=100) == 9.0
    assert rounded_l1_bound(l2_bound=30.0, dimension=100) == 300.0


def test_conditional_rounding_is_unbiased_and_bounded() -> None:
    rng = np.random.default_rng(0)
    d, gamma, clip = 64, 0.05, 1.0
    x = rng.normal(size=d)
    x *= clip / np.linalg.norm(x)
    bound = rounded_l2_bound(norm=clip / gamma, beta=math.exp(-0.5), dimension=d)
    reps = 4000
    acc = np.zeros(d)
    tries = []
    for _ in range(reps):
        res = conditional_randomized_rounding(x, gamma=gamma, bound=bound, rng=rng, max_tries=100)
        assert res.values.dtype == np.int64
        assert res.norm <= bound
        assert np.all(np.abs(res.values - x / gamma) < 1)
        assert res.inflation == pytest.approx(res.norm / (clip / gamma))
        acc += res.values
        tries.append(res.tries)
    # per-coordinate rounding variance <= 1/4: SE of the mean <= 0.5 / sqrt(reps)
    # (conditioning biases it by far less than that at this acceptance rate)
    assert np.max(np.abs(acc / reps - x / gamma)) < 5 * 0.5 / math.sqrt(reps)
    assert np.mean(tries) < 1.0 / (1.0 - math.exp(-0.5))  # acceptance >= 1 - beta


@settings(max_examples=40, deadline=None)
@given(
    d=st.integers(1, 200),
    seed=st.integers(0, 2**32 - 1),
    gamma=st.floats(1e-3, 1.0),
    beta=st.sampled_from([0.0, 1e-6, math.exp(-0.5), 0.9]),
)
def test_rounding_respects_the_bound_property(d: int, seed: int, gamma: float, beta: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=d)
    x /= max(np.linalg.norm(x), 1e-300)  # clip = 1
    bound = rounded_l2_bound(norm=1.0 / gamma, beta=beta, dimension=d)
    res = conditional_randomized_rounding(x, gamma=gamma, bound=bound, rng=rng, max_tries=10_000)
    assert res.norm <= bound and np.all(np.abs(res.values - x / gamma) < 1)


def test_conditional_rounding_gives_up_loudly() -> None:
    x = np.full(16, 0.5)  # every coordinate rounds up or down: norm is never exactly |x|
    with pytest.raises(DDGError, match="failed 5 times"):
        conditional_randomized_rounding(
            x, gamma=1.0, bound=1.0, rng=np.random.default_rng(0), max_tries=5
        )


# --- discrete Gaussian sampler ------------------------------------------------------------


def test_exact_variance_below_sigma_squared() -> None:
    # by hand: sigma = 0.5 -> pmf ∝ exp(-2 k^2)
    w = np.exp(-2.0 * np.arange(-6, 7) ** 2)
    by_hand = float(np.sum(w * np.arange(-6, 7) ** 2) / np.sum(w))
    assert discrete_gaussian_variance(sigma=0.5) == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(0.2150, abs=1e-4) and by_hand < 0.25
    assert discrete_gaussian_variance(sigma=1.0) < 1.0
    assert discrete_gaussian_variance(sigma=10.0) == pytest.approx(100.0, rel=1e-12)
    assert float(np.sum(discrete_gaussian_pmf(np.arange(-100, 101), sigma=3.0))) == pytest.approx(
        1.0, rel=1e-12
    )


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0, 25.0])
def test_sampler_mean_variance_symmetry(sigma: float) -> None:
    n = 400_000
    x = sample_discrete_gaussian(n, sigma=sigma, rng=np.random.default_rng(int(sigma * 100)))
    assert x.dtype == np.int64 and x.shape == (n,)
    var = discrete_gaussian_variance(sigma=sigma)
    assert abs(x.mean()) < 5 * math.sqrt(var / n)
    # SE of the sample variance ~ var * sqrt((kurtosis - 1) / n) with kurtosis <= 3 (+ slack)
    assert abs(x.var() - var) < 5 * var * math.sqrt(3.0 / n)
    if sigma < 1:  # the exact variance, not sigma^2, is what the sampler reproduces
        assert abs(x.var() - sigma**2) > 10 * var * math.sqrt(3.0 / n)
    # symmetry: #{X = k} vs #{X = -k} for k = 1..3 are binomial splits with p = 1/2
    for k in (1, 2, 3):
        pos, neg = int(np.sum(x == k)), int(np.sum(x == -k))
        if pos + neg > 100:
            assert stats.binomtest(pos, pos + neg, 0.5).pvalue > 1e-4


def _chi_square_pvalue(samples: np.ndarray, sigma: float) -> float:
    """Chi-square goodness of fit against the pmf, tails pooled so every bin expects >= 20."""
    n = samples.size
    r = 1
    while n * discrete_gaussian_pmf(np.array([r + 1]), sigma=sigma)[0] >= 20:
        r += 1
    ks = np.arange(-r, r + 1)
    expected = n * discrete_gaussian_pmf(ks, sigma=sigma)
    tail = n - expected.sum()
    observed = np.array([np.sum(samples == k) for k in ks], dtype=np.float64)
    obs_tail = n - observed.sum()
    if tail > 1e-9:
        expected = np.append(expected, tail)
        observed = np.append(observed, obs_tail)
    return float(stats.chisquare(observed, expected).pvalue)


@pytest.mark.parametrize("sigma", [0.7, 1.5, 4.0])
def test_sampler_matches_pmf_chi_square(sigma: float) -> None:
    x = sample_discrete_gaussian((200, 500), sigma=sigma, rng=np.random.default_rng(42))
    assert x.shape == (200, 500)
    assert _chi_square_pvalue(x.ravel(), sigma) > 1e-3


def test_exact_reference_sampler_matches_pmf_and_fast_sampler() -> None:
    sigma2 = Fraction(9, 4)  # sigma = 1.5
    exact = sample_discrete_gaussian_exact(2500, sigma_squared=sigma2, rng=np.random.default_rng(7))
    assert _chi_square_pvalue(exact, 1.5) > 1e-3
    fast = sample_discrete_gaussian(2500, sigma=1.5, rng=np.random.default_rng(8))
    # two-sample chi-square on the bins -4..4 plus the pooled tails: same distribution
    table = np.array(
        [
            [np.sum(s <= -5), *(np.sum(s == k) for k in range(-4, 5)), np.sum(s >= 5)]
            for s in (exact, fast)
        ]
    )
    assert stats.chi2_contingency(table).pvalue > 1e-3


def test_sampler_edge_cases() -> None:
    rng = np.random.default_rng(0)
    assert np.all(sample_discrete_gaussian(5, sigma=0.0, rng=rng) == 0)
    assert sample_discrete_gaussian((0,), sigma=1.0, rng=rng).shape == (0,)
    with pytest.raises(ValueError):
        sample_discrete_gaussian(3, sigma=-1.0, rng=rng)
    a = sample_discrete_gaussian(100, sigma=2.0, rng=np.random.default_rng(3))
    b = sample_discrete_gaussian(100, sigma=2.0, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


# --- privacy ------------------------------------------------------------------------------


def test_tau_known_answer() -> None:
    assert ddg_tau(sigma_per_client=1.0, n_survivors=1) == 0.0
    assert ddg_tau(sigma_per_client=1.0, n_survivors=2) == pytest.approx(
        10 * math.exp(-(math.pi**2)), rel=1e-12
    )
    by_hand = 10 * (
        math.exp(-2 * math.pi**2 * 0.25 * 0.5) + math.exp(-2 * math.pi**2 * 0.25 * 2 / 3)
    )
    assert ddg_tau(sigma_per_client=0.5, n_survivors=3) == pytest.approx(by_hand, rel=1e-12)


def test_rdp_matches_hand_computed_proposition() -> None:
    l2, n, sigma, big_d = 3.0, 3, 0.5, 4
    l1 = rounded_l1_bound(l2_bound=l2, dimension=big_d)  # min(sqrt 4, 3) * 3 = 6
    assert l1 == 6.0
    tau = ddg_tau(sigma_per_client=sigma, n_survivors=n)
    s = math.sqrt(n) * sigma
    orders = (2.0, 8.0, 32.0)
    got = ddg_rdp(
        l2_sensitivity=l2,
        n_survivors=n,
        sigma_per_client=sigma,
        dimension=big_d,
        steps=3,
        orders=orders,
    )
    for a, value in zip(orders, got, strict=True):  # slow obvious loop
        t1 = a / 2 * (l2 / s) ** 2 + tau * big_d
        t2 = a / 2 * ((l2 / s) ** 2 + 2 * (l1 / s) * tau + tau**2 * big_d)
        t3 = a / 2 * (l2 / s + math.sqrt(big_d) * tau) ** 2
        assert value == pytest.approx(3 * min(t1, t2, t3), rel=1e-12)


def test_single_client_is_the_gaussian_mechanism_known_answer() -> None:
    # n = 1: tau = 0, and the discrete Gaussian has the continuous Gaussian's RDP for integer
    # sensitivity (CKS 2020); compare with Opacus's independent RDP code at q = 1.
    orders = [float(a) for a in range(2, 65)]
    for sigma, l2, steps in ((4.0, 3.0, 10), (50.0, 10.0, 200)):
        ours = ddg_rdp(
            l2_sensitivity=l2,
            n_survivors=1,
            sigma_per_client=sigma,
            dimension=64,
            steps=steps,
            orders=orders,
        )
        ref = compute_rdp(q=1.0, noise_multiplier=sigma / l2, steps=steps, orders=orders)
        np.testing.assert_allclose(ours, ref, rtol=1e-12)


def test_approaches_the_continuous_gaussian_and_never_below_it() -> None:
    n, big_d = 100, 1024
    gaps = []
    for sigma in (0.5, 0.7, 1.0, 5.0, 50.0):
        central = math.sqrt(n) * sigma
        # keep the central noise multiplier fixed (l2 / central = 1) as sigma grows
        l2_s = central
        eps = ddg_epsilon(
            l2_sensitivity=l2_s,
            n_survivors=n,
            sigma_per_client=sigma,
            dimension=big_d,
            delta=DELTA,
            steps=10,
        )
        orders = np.asarray(DDG_ORDERS)
        gauss = epsilon_from_rdp(
            10 * orders * l2_s**2 / (2 * central**2), delta=DELTA, orders=DDG_ORDERS
        )
        assert eps >= gauss - 1e-12  # never optimistic
        gaps.append(eps - gauss)
    assert gaps[0] > gaps[-1]
    assert gaps[0] > 1.0  # sigma = 0.5 with 100 shares: the tau * D slack is visible
    assert gaps[-1] < 1e-9  # sigma = 50: tau ~ 0, the continuous Gaussian's epsilon


def test_realized_epsilon_decreases_with_survivors() -> None:
    params = DDGParams(dimension=500, clip=1.0, bits=32, gamma=1e-3, sigma=2000.0)
    eps = [
        realized_epsilon(params=params, survivors_per_round=[n] * 50, delta=DELTA)
        for n in (5, 10, 20, 40, 80)
    ]
    assert all(a > b for a, b in zip(eps, eps[1:], strict=False))
    # a round with fewer survivors costs more than a full one
    mixed = realized_epsilon(params=params, survivors_per_round=[40] * 49 + [10], delta=DELTA)
    assert eps[3] < mixed < eps[1]
    assert realized_epsilon(params=params, survivors_per_round=[0], delta=DELTA) == math.inf
    with pytest.raises(DDGError):
        realized_epsilon(
            params=DDGParams(dimension=4, clip=1.0, bits=16, gamma=0.1, sigma=0.0),
            survivors_per_round=[3],
            delta=DELTA,
        )


def test_calibration_hits_target_for_expected_survivors() -> None:
    kw = dict(delta=DELTA, clip=1.0, gamma=1e-3, dimension=1000, steps=100)
    sigma = ddg_calibrate_sigma(target_epsilon=3.0, expected_survivors=50, **kw)
    big_d = padded_dimension(1000)
    l2 = rounded_l2_bound(norm=1000.0, beta=math.exp(-0.5), dimension=big_d)
    eps = ddg_epsilon(
        l2_sensitivity=l2,
        n_survivors=50,
        sigma_per_client=sigma,
        dimension=big_d,
        delta=DELTA,
        steps=100,
    )
    assert eps <= 3.0 and eps == pytest.approx(3.0, rel=1e-4)
    # calibrated for 50, only 30 survive: the realized guarantee is worse than the target
    params = DDGParams(dimension=1000, clip=1.0, bits=32, gamma=1e-3, sigma=sigma)
    assert realized_epsilon(params=params, survivors_per_round=[30] * 100, delta=DELTA) > 3.0
    more = ddg_calibrate_sigma(target_epsilon=3.0, expected_survivors=25, **kw)
    assert more == pytest.approx(sigma * math.sqrt(2), rel=1e-3)  # per-client noise ∝ 1/sqrt(n)


def test_subsampling_is_opt_in_and_never_worse() -> None:
    kw = dict(
        l2_sensitivity=1000.0, n_survivors=20, sigma_per_client=300.0, dimension=256, steps=100
    )
    full = ddg_rdp(**kw)
    np.testing.assert_array_equal(ddg_rdp(sample_rate=1.0, **kw), full)
    sampled = ddg_rdp(sample_rate=0.05, **kw)
    assert np.all(sampled <= full)
    assert ddg_epsilon(delta=DELTA, sample_rate=0.05, **kw) < ddg_epsilon(delta=DELTA, **kw)


def test_privacy_argument_checks() -> None:
    with pytest.raises(ValueError, match="0.5"):
        ddg_rdp(l2_sensitivity=1.0, n_survivors=3, sigma_per_client=0.3, dimension=4)
    assert np.all(
        ddg_rdp(l2_sensitivity=1.0, n_survivors=3, sigma_per_client=1.0, dimension=4, steps=0) == 0
    )
    with pytest.raises(ValueError):
        ddg_rdp(
            l2_sensitivity=1.0, n_survivors=3, sigma_per_client=1.0, dimension=4, sample_rate=0.0
        )


# --- parameters and wrap ------------------------------------------------------------------


def test_params_validation_reports_every_field() -> None:
    with pytest.raises(ConfigError) as info:
        DDGParams(dimension=0, clip=-1.0, bits=99, gamma=0.0, sigma=-1.0, beta=1.0)
    assert len(info.value.problems) == 6
    assert all(p.startswith("ddg.") for p in info.value.problems)
    p = DDGParams(dimension=1000, clip=2.0, bits=20, gamma=0.01, sigma=10.0)
    assert p.padded_dimension == 1024 and p.modulus == 2**20
    assert p.l2_sensitivity == pytest.approx(
        rounded_l2_bound(norm=200.0, beta=math.exp(-0.5), dimension=1024)
    )
    assert p.norm_inflation > 1 and p.expected_norm_inflation > 1
    assert p.expected_norm_inflation == pytest.approx(math.sqrt(1 + 1024 * 1e-4 / 16))


def test_choose_gamma_meets_the_wrap_bound() -> None:
    gamma = choose_gamma(
        clip=1.0, bits=16, n_clients=100, dimension=512, noise_std=0.5, max_wrap_probability=1e-6
    )
    params = DDGParams(dimension=512, clip=1.0, bits=16, gamma=gamma, sigma=0.5 / gamma)
    assert wrap_probability(params=params, n_clients=100) == pytest.approx(1e-6, rel=1e-6)
    assert wrap_probability(params=params, n_clients=50) < 1e-6
    with pytest.raises(DDGError, match="bits=6"):
        choose_gamma(
            clip=1.0, bits=6, n_clients=100, dimension=512, noise_std=0.5, max_wrap_probability=1e-6
        )


def test_too_small_bits_are_detected() -> None:
    with pytest.raises(DDGError, match="too small"):
        ddg_configure(
            dimension=512,
            clip=1.0,
            bits=8,
            cohort_size=100,
            expected_survivors=80,
            target_epsilon=2.0,
            delta=DELTA,
            steps=100,
        )
    good = ddg_configure(
        dimension=512,
        clip=1.0,
        bits=16,
        cohort_size=100,
        expected_survivors=80,
        target_epsilon=2.0,
        delta=DELTA,
        steps=100,
    )
    small = DDGParams(dimension=512, clip=1.0, bits=10, gamma=good.gamma, sigma=good.sigma)
    assert wrap_probability(params=small, n_clients=100) == 1.0
    with pytest.raises(DDGError, match="wrapped"):
        decode(np.zeros(512, dtype=np.uint16), params=small, n_clients=100, rotation_seed=0)


# --- the whole pipeline -------------------------------------------------------------------


def _clip(x: np.ndarray, c: float) -> np.ndarray:
    return x * min(1.0, c / float(np.linalg.norm(x)))


def _secure_sum(encodings: list[np.ndarray], bits: int) -> np.ndarray:
    total = np.zeros(encodings[0].shape, dtype=np.uint64)
    for e in encodings:
        total += e.astype(np.uint64)
    return total & np.uint64((1 << bits) - 1)


def test_decoded_sum_is_true_sum_plus_noise_of_the_right_variance() -> None:
    d, n, reps = 4096, 20, 3
    params = DDGParams(dimension=d, clip=1.0, bits=24, gamma=1e-3, sigma=30.0)
    assert wrap_probability(params=params, n_clients=n) < 1e-9
    residuals = []
    for rep in range(reps):
        data_rng = np.random.default_rng([rep, 0])
        xs = [data_rng.normal(size=d) * data_rng.uniform(0.5, 2.0) / math.sqrt(d) for _ in range(n)]
        encs = [
            encode(
                x, params=params, rotation_seed=1000 + rep, rng=np.random.default_rng([rep, 1, i])
            )
            for i, x in enumerate(xs)
        ]
        assert encs[0].dtype == dtype_for_bits(24) and int(encs[0].max()) < 2**24
        out = decode(_secure_sum(encs, 24), params=params, n_clients=n, rotation_seed=1000 + rep)
        residuals.append(out - sum(_clip(x, params.clip) for x in xs))
    r = np.concatenate(residuals)
    m = r.size
    noise_var = n * discrete_gaussian_variance(sigma=30.0) * params.gamma**2
    rounding_var_max = n * 0.25 * params.gamma**2  # <= 0.03% of the noise here
    assert abs(r.mean()) < 5 * math.sqrt((noise_var + rounding_var_max) / m)
    se = (noise_var + rounding_var_max) * math.sqrt(2.0 / m)  # ~Gaussian residual
    assert noise_var - 5 * se < r.var() < noise_var + rounding_var_max + 5 * se


def test_noise_free_pipeline_is_exact_up_to_rounding() -> None:
    d, n = 300, 7
    params = DDGParams(dimension=d, clip=2.0, bits=32, gamma=1e-4, sigma=0.0)
    rng = np.random.default_rng(5)
    xs = [rng.normal(size=d) for _ in range(n)]
    reports = [
        encode_report(x, params=params, rotation_seed=11, rng=np.random.default_rng(i))
        for i, x in enumerate(xs)
    ]
    assert all(r.clipped for r in reports)
    assert all(r.rounding_tries >= 1 and r.norm_inflation < params.norm_inflation for r in reports)
    out = decode(
        _secure_sum([r.values for r in reports], 32), params=params, n_clients=n, rotation_seed=11
    )
    true = sum(_clip(x, 2.0) for x in xs)
    # rounding moves each rotated coordinate by < 1 unit per client; rotation is orthonormal
    assert np.linalg.norm(out - true) < n * params.gamma * math.sqrt(params.padded_dimension)


def test_no_wrap_with_configured_bits_even_for_aligned_updates() -> None:
    d, n = 512, 100
    params = ddg_configure(
        dimension=d,
        clip=1.0,
        bits=16,
        cohort_size=n,
        expected_survivors=80,
        target_epsilon=2.0,
        delta=DELTA,
        steps=100,
    )
    assert wrap_probability(params=params, n_clients=n) <= 1e-6
    assert realized_epsilon(
        params=params, survivors_per_round=[80] * 100, delta=DELTA
    ) == pytest.approx(2.0, rel=1e-3)
    # worst case for the signal: every client sends the same vector at the clip norm
    direction = _clip(np.random.default_rng(0).normal(size=d), 1.0)
    encs = [
        encode(direction, params=params, rotation_seed=3, rng=np.random.default_rng(i))
        for i in range(n)
    ]
    out = decode(_secure_sum(encs, 16), params=params, n_clients=n, rotation_seed=3)
    # look in the rotated domain, where the modular sum lives: a wrap there is a jump of
    # 2^16 * gamma on one coordinate, far beyond the per-coordinate noise
    signs = rotation_signs(3, padded_dimension=params.padded_dimension)
    rotated_residual = randomized_hadamard(out - n * direction, signs=signs)
    noise_sd = math.sqrt(n * (params.sigma**2 + 0.25)) * params.gamma
    assert 2**16 * params.gamma > 12 * noise_sd
    assert np.max(np.abs(rotated_residual)) < 6 * noise_sd
    assert rotated_residual.std() == pytest.approx(noise_sd, rel=0.2)
    # the same encodings in too few bits do wrap; decoding them is refused by default, and
    # forcing it gives a result off by nonzero multiples of the modulus on most coordinates
    small = DDGParams(dimension=d, clip=1.0, bits=10, gamma=params.gamma, sigma=params.sigma)
    encs_small = [e.astype(np.uint64) & np.uint64(2**10 - 1) for e in encs]
    with pytest.raises(DDGError, match="wrapped"):
        decode(_secure_sum(encs_small, 10), params=small, n_clients=n, rotation_seed=3)
    garbage = decode(
        _secure_sum(encs_small, 10),
        params=small,
        n_clients=n,
        rotation_seed=3,
        max_wrap_probability=1.0,
    )
    jumps = randomized_hadamard(garbage - out, signs=signs) / (2**10 * params.gamma)
    np.testing.assert_allclose(jumps, np.round(jumps), atol=1e-6)
    assert np.mean(np.round(jumps) != 0) > 0.5
