"""The discrete Gaussian N_Z(0, sigma^2): a fast vectorized sampler, an exact reference, its pmf.

``N_Z(0, sigma^2)`` puts mass proportional to ``exp(-k^2 / (2 sigma^2))`` on every integer ``k``.
It is the noise of the distributed discrete Gaussian mechanism
(:mod:`privfed.privacy.distributed`).

Two samplers, both following Canonne, Kamath, Steinke, "The Discrete Gaussian for Differential
Privacy", NeurIPS 2020, Algorithm 3 (rejection sampling from a discrete Laplace with scale
``t = floor(sigma) + 1``, accepting ``Y`` with probability
``exp(-(|Y| - sigma^2 / t)^2 / (2 sigma^2))``):

* :func:`sample_discrete_gaussian` -- the one to use. Vectorized **float64** implementation:
  the discrete Laplace is the difference of two i.i.d. geometric variables with
  ``P(G = k) ∝ exp(-k / t)`` (numpy's geometric sampler), and the acceptance test compares a
  uniform double with the acceptance probability computed in float64. Its output distribution
  equals N_Z(0, sigma^2) up to float64 rounding of ``exp``/``log`` inside numpy's samplers
  (relative error ~1e-16 per probability); it is **not** constant-time. Since the outputs are
  integers, the low-order-bit leak of float Gaussian noise (Mironov, CCS 2012) does not arise,
  but a sub-1e-15 deviation of the probabilities cannot be ruled out: this is simulation
  randomness for research, seeded by the caller, not a production DP noise source.
* :func:`sample_discrete_gaussian_exact` -- scalar reference with exact rational arithmetic
  (``fractions.Fraction``) and exact Bernoulli trials (Algorithms 1-3 of the paper: Bernoulli
  ``exp(-gamma)``, discrete Laplace, discrete Gaussian). Slow; used by the tests to pin the
  fast sampler against the exact one.

Randomness is always an argument (a ``numpy.random.Generator``); nothing here seeds globally.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

__all__ = [
    "discrete_gaussian_pmf",
    "discrete_gaussian_variance",
    "sample_discrete_gaussian",
    "sample_discrete_gaussian_exact",
]


def _check_sigma(sigma: float) -> float:
    sigma_f = float(sigma)
    if not math.isfinite(sigma_f) or sigma_f < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    return sigma_f


def sample_discrete_gaussian(
    shape: int | tuple[int, ...], *, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """Draw i.i.d. samples of N_Z(0, sigma^2) (float64 implementation of CKS 2020, Algorithm 3).

    See the module docstring for the precision statement. The acceptance rate of the rejection
    step is bounded below by a constant (CKS 2020 analyse the running time of Algorithm 3), so
    the loop over rejected entries ends after a few vectorized passes.

    Args:
        shape: output shape.
        sigma: the discrete Gaussian's scale parameter (>= 0). ``sigma = 0`` returns zeros.
            Note that the variance of N_Z(0, sigma^2) is slightly *below* ``sigma^2`` for
            small ``sigma`` (see :func:`discrete_gaussian_variance`).
        rng: simulation generator.

    Returns:
        An ``int64`` array of ``shape``.

    Raises:
        ValueError: if ``sigma`` is negative or not finite.
    """
    sigma_f = _check_sigma(sigma)
    out = np.zeros(shape, dtype=np.int64)
    flat = out.reshape(-1)
    if sigma_f == 0.0 or flat.size == 0:
        return out
    t = math.floor(sigma_f) + 1
    p = -math.expm1(-1.0 / t)  # success probability: P(G - 1 = k) ∝ exp(-k / t)
    shift = sigma_f * sigma_f / t
    two_var = 2.0 * sigma_f * sigma_f
    todo = np.arange(flat.size)
    while todo.size:
        m = todo.size
        y = rng.geometric(p, size=m) - rng.geometric(p, size=m)  # discrete Laplace, scale t
        accept = rng.random(m) < np.exp(-np.square(np.abs(y) - shift) / two_var)
        flat[todo[accept]] = y[accept]
        todo = todo[~accept]
    return out


# --- exact reference (CKS 2020, Algorithms 1-3, rational arithmetic) ----------------------


def _uniform_below(n: int, rng: np.random.Generator) -> int:
    """A uniform integer in [0, n) for any positive Python int, exact (rejection on bits)."""
    bits = max(n - 1, 1).bit_length()
    nbytes = (bits + 7) // 8
    mask = (1 << bits) - 1
    while True:
        v = int.from_bytes(rng.bytes(nbytes), "little") & mask
        if v < n:
            return v


def _bernoulli(p: Fraction, rng: np.random.Generator) -> bool:
    """Exact Bernoulli(p) for rational p in [0, 1]."""
    return _uniform_below(p.denominator, rng) < p.numerator


def _bernoulli_exp(gamma: Fraction, rng: np.random.Generator) -> bool:
    """Exact Bernoulli(exp(-gamma)) for rational gamma >= 0 (CKS 2020, Algorithm 1)."""
    while gamma > 1:
        if not _bernoulli_exp(Fraction(1), rng):
            return False
        gamma -= 1
    k = 1
    while _bernoulli(gamma / k, rng):
        k += 1
    return k % 2 == 1


def _discrete_laplace(t: int, rng: np.random.Generator) -> int:
    """Exact discrete Laplace with P(y) ∝ exp(-|y| / t), integer t >= 1 (CKS 2020, Algorithm 2)."""
    while True:
        u = _uniform_below(t, rng)
        if not _bernoulli_exp(Fraction(u, t), rng):
            continue
        v = 0
        while _bernoulli_exp(Fraction(1), rng):
            v += 1
        y = u + t * v  # with s = 1 in the paper's notation: Y = floor(X / s) = X
        negative = _bernoulli(Fraction(1, 2), rng)
        if negative and y == 0:
            continue
        return -y if negative else y


def sample_discrete_gaussian_exact(
    size: int, *, sigma_squared: Fraction | int, rng: np.random.Generator
) -> np.ndarray:
    """Draw ``size`` samples of N_Z(0, sigma^2) exactly (CKS 2020, Algorithm 3), slowly.

    Every comparison is on integers or ``Fraction``s and every Bernoulli trial is exact, given
    uniform random bytes from ``rng``. Meant as the reference for tests (a few thousand samples
    per second), not for training.

    Args:
        size: number of samples.
        sigma_squared: the variance parameter ``sigma^2`` as an exact rational (> 0).
        rng: simulation generator (only its ``bytes`` method is used).

    Returns:
        An ``int64`` array of length ``size``.

    Raises:
        ValueError: if ``sigma_squared`` is not positive.
    """
    s2 = Fraction(sigma_squared)
    if s2 <= 0:
        raise ValueError(f"sigma_squared must be > 0, got {sigma_squared}")
    t = math.isqrt(math.floor(s2)) + 1  # floor(sigma) + 1, exactly: floor(sqrt(floor(x)))
    out = np.empty(size, dtype=np.int64)
    for i in range(size):
        while True:
            y = _discrete_laplace(t, rng)
            gamma = (abs(y) - s2 / t) ** 2 / (2 * s2)
            if _bernoulli_exp(gamma, rng):
                out[i] = y
                break
    return out


# --- pmf and moments ---------------------------------------------------------------------


def _support_radius(sigma: float) -> int:
    # exp(-k^2 / (2 sigma^2)) < 1e-300 beyond k = 37.2 sigma; keep a generous margin
    return int(math.ceil(40.0 * sigma)) + 2


def discrete_gaussian_pmf(k: np.ndarray, *, sigma: float) -> np.ndarray:
    """The probability mass of N_Z(0, sigma^2) at the integers ``k``.

    The normalizing constant is summed numerically over ``|k| <= 40 sigma + 2`` (the neglected
    tail is below 1e-300).

    Args:
        k: integer array.
        sigma: scale parameter (> 0).

    Raises:
        ValueError: if ``sigma`` is not positive.
    """
    sigma_f = _check_sigma(sigma)
    if sigma_f == 0.0:
        raise ValueError("sigma must be > 0 for the pmf")
    r = _support_radius(sigma_f)
    grid = np.arange(-r, r + 1, dtype=np.float64)
    norm = float(np.sum(np.exp(-np.square(grid) / (2.0 * sigma_f**2))))
    k_arr = np.asarray(k, dtype=np.float64)
    return np.exp(-np.square(k_arr) / (2.0 * sigma_f**2)) / norm


def discrete_gaussian_variance(*, sigma: float) -> float:
    """The exact variance of N_Z(0, sigma^2), by summing the pmf numerically.

    It is below ``sigma^2`` (CKS 2020 prove ``Var < sigma^2``) and indistinguishable from it
    once ``sigma`` exceeds ~2; e.g. ``sigma = 0.5`` gives ~0.2150.
    """
    sigma_f = _check_sigma(sigma)
    if sigma_f == 0.0:
        return 0.0
    r = _support_radius(sigma_f)
    grid = np.arange(-r, r + 1)
    pmf = discrete_gaussian_pmf(grid, sigma=sigma_f)
    return float(np.sum(pmf * np.square(grid.astype(np.float64))))
