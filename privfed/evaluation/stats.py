"""Paired comparisons across seeds: paired t-test, Wilcoxon signed-rank test, Holm correction.

Two series of a sweep run with the same seeds share their data partition, initialization and
client sampling, so their accuracies pair up seed by seed; the difference per seed removes the
variation that both share. These are the tests the results pages state their comparisons with:

* :func:`paired_t_test` -- Student's paired t-test (two-sided) and the t interval of the mean
  difference;
* :func:`wilcoxon_signed_rank` -- Wilcoxon's signed-rank test (two-sided), exact null
  distribution for small samples without ties or zero differences, else the normal
  approximation with the tie correction (the choices of ``scipy.stats.wilcoxon``'s defaults);
* :func:`holm` -- Holm's step-down adjustment of a family of p-values (Holm 1979), which keeps
  the family-wise error rate at the level without assuming independence.

Pure functions of numbers; the tests pin them against ``scipy.stats`` and hand computations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["PairedTest", "holm", "paired_t_test", "wilcoxon_signed_rank"]

#: Largest sample for which the Wilcoxon null distribution is enumerated exactly.
EXACT_WILCOXON_MAX_N = 50


@dataclass(frozen=True)
class PairedTest:
    """A two-sided paired comparison of ``a`` against ``b`` (difference ``a - b`` per pair).

    Attributes:
        test: ``"paired t"`` or ``"Wilcoxon signed-rank"``.
        n: pairs compared (for Wilcoxon: pairs with a non-zero difference).
        mean_difference: mean of ``a - b`` over all pairs.
        ci_low: lower end of the t interval of the mean difference (nan for n < 2).
        ci_high: upper end of that interval.
        statistic: t (paired t) or the signed-rank sum of positive differences W+ (Wilcoxon).
        p_value: two-sided p-value (1.0 when nothing can be tested).
        confidence: level of the interval.
    """

    test: str
    n: int
    mean_difference: float
    ci_low: float
    ci_high: float
    statistic: float
    p_value: float
    confidence: float = 0.95


def _pairs(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"paired samples must be two 1-d sequences of equal length, got {x.shape} and "
            f"{y.shape}; pair the values seed by seed first"
        )
    d = x - y
    if not np.isfinite(d).all():
        raise ValueError("paired samples must be finite; drop the pairs with a missing value")
    return d


def _t_interval(d: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(half-width, sem, t quantile) of the mean of ``d``; nan for fewer than 2 values."""
    n = len(d)
    if n < 2:
        return math.nan, math.nan, math.nan
    sem = float(d.std(ddof=1)) / math.sqrt(n)
    q = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1))
    return q * sem, sem, q


def paired_t_test(
    a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95
) -> PairedTest:
    """Two-sided paired t-test of ``mean(a - b) = 0``.

    Args:
        a: one value per seed.
        b: the other series' value for the same seeds, in the same order.
        confidence: level of the interval of the mean difference.

    Returns:
        The test; with fewer than 2 pairs, or all differences equal, no test is possible
        and ``p_value`` is 1.0 (or 0.0 when the constant difference is non-zero and n >= 2:
        every seed agrees exactly, which no spread can explain away).

    Raises:
        ValueError: unequal lengths or a non-finite value.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = _pairs(a, b)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    hw, sem, _ = _t_interval(d, confidence)
    if n < 2:
        return PairedTest("paired t", n, mean, math.nan, math.nan, math.nan, 1.0, confidence)
    if sem == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        return PairedTest("paired t", n, mean, mean, mean, t, p, confidence)
    t = mean / sem
    p = float(2.0 * stats.t.sf(abs(t), df=n - 1))
    return PairedTest("paired t", n, mean, mean - hw, mean + hw, t, min(1.0, p), confidence)


def _signed_rank_null(n: int) -> np.ndarray:
    """Counts of each W+ value (0 .. n(n+1)/2) over the 2^n sign patterns of ranks 1..n."""
    top = n * (n + 1) // 2
    counts = np.zeros(top + 1, dtype=object)  # exact integers: 2^50 overflows float precision
    counts[0] = 1
    for r in range(1, n + 1):
        shifted = np.zeros_like(counts)
        shifted[r:] = counts[:-r]
        counts = counts + shifted
    return counts


def _rank(values: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) of ``values``, ties sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    s = values[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def wilcoxon_signed_rank(
    a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95
) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of ``a - b`` symmetric about 0.

    Zero differences are dropped (Wilcoxon's convention). With at most
    :data:`EXACT_WILCOXON_MAX_N` pairs and no tied absolute differences the p-value is exact
    (the null distribution of W+ enumerated over all sign patterns); otherwise it is the normal
    approximation with the tie-corrected variance and no continuity correction.

    Args:
        a: one value per seed.
        b: the other series' value for the same seeds, in the same order.
        confidence: level of the reported t interval of the mean difference.

    Raises:
        ValueError: unequal lengths or a non-finite value.
    """
    d_all = _pairs(a, b)
    mean = float(d_all.mean()) if len(d_all) else math.nan
    hw, _, _ = _t_interval(d_all, confidence)
    lo, hi = (mean - hw, mean + hw) if math.isfinite(hw) else (math.nan, math.nan)
    d = d_all[d_all != 0.0]
    n = len(d)
    if n == 0:
        return PairedTest("Wilcoxon signed-rank", 0, mean, lo, hi, 0.0, 1.0, confidence)
    ranks = _rank(np.abs(d))
    w_plus = float(ranks[d > 0].sum())
    top = n * (n + 1) / 2.0
    ties = len(np.unique(np.abs(d))) < n
    if n <= EXACT_WILCOXON_MAX_N and not ties:
        counts = _signed_rank_null(n)
        w = int(round(w_plus))
        total = 2**n
        lower = int(sum(counts[: w + 1]))  # P[W+ <= w]
        upper = int(sum(counts[w:]))  # P[W+ >= w]
        p = min(1.0, 2.0 * min(lower, upper) / total)
    else:
        mu = top / 2.0
        _, tie_counts = np.unique(np.abs(d), return_counts=True)
        var = n * (n + 1) * (2 * n + 1) / 24.0 - float((tie_counts**3 - tie_counts).sum()) / 48.0
        if var <= 0:
            p = 1.0
        else:
            z = (w_plus - mu) / math.sqrt(var)
            p = float(min(1.0, 2.0 * stats.norm.sf(abs(z))))
    return PairedTest("Wilcoxon signed-rank", n, mean, lo, hi, w_plus, p, confidence)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given.

    The i-th smallest p-value (1-based) is multiplied by ``m - i + 1`` and the results are made
    non-decreasing in that order and capped at 1; a hypothesis is rejected at level ``a`` iff its
    adjusted p-value is at most ``a``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("p_values must be a flat sequence")
    if np.any((p < 0) | (p > 1) | np.isnan(p)):
        raise ValueError(f"p-values must be in [0, 1], got {p.tolist()}")
    m = len(p)
    order = np.argsort(p, kind="mergesort")
    adjusted = np.empty(m, dtype=np.float64)
    running = 0.0
    for i, k in enumerate(order):
        running = max(running, min(1.0, float(p[k]) * (m - i)))
        adjusted[k] = running
    return adjusted.tolist()
