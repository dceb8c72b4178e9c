"""Summaries of per-client metrics: mean, median, worst fraction, confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


def worst_fraction_mean(values: Sequence[float] | np.ndarray, *, fraction: float = 0.1) -> float:
    """Mean of the worst ``fraction`` of values (at least one value).

    With 20 clients and fraction 0.1 this is the mean of the 2 lowest accuracies.
    """
    if not len(values):
        return float("nan")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    arr = np.sort(np.asarray(values, dtype=np.float64))
    k = max(1, math.ceil(fraction * len(arr) - 1e-9))
    return float(arr[:k].mean())


@dataclass(frozen=True)
class ClientSummary:
    """Summary of one metric over clients."""

    mean: float
    median: float
    worst: float
    std: float
    n: int


def summarize(
    values: Sequence[float] | np.ndarray, *, worst_fraction: float = 0.1
) -> ClientSummary:
    """Mean, median, worst-fraction mean and standard deviation over clients."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        nan = float("nan")
        return ClientSummary(nan, nan, nan, nan, 0)
    return ClientSummary(
        mean=float(arr.mean()),
        median=float(np.median(arr)),
        worst=worst_fraction_mean(arr, fraction=worst_fraction),
        std=float(arr.std(ddof=0)),
        n=int(arr.size),
    )


@dataclass(frozen=True)
class MeanCI:
    """A mean with a two-sided Student-t confidence interval half-width."""

    mean: float
    half_width: float
    n: int

    def __str__(self) -> str:
        if self.n < 2 or not math.isfinite(self.half_width):
            return f"{self.mean:.3f}"
        return f"{self.mean:.3f} ± {self.half_width:.3f}"


def mean_ci(values: Sequence[float] | np.ndarray, *, confidence: float = 0.95) -> MeanCI:
    """Mean and t-interval half-width over ``values`` (e.g. seeds); nan width for n < 2."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(arr.size)
    if n == 0:
        return MeanCI(float("nan"), float("nan"), 0)
    if n == 1:
        return MeanCI(float(arr[0]), float("nan"), 1)
    sem = float(arr.std(ddof=1)) / math.sqrt(n)
    t = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1))
    return MeanCI(float(arr.mean()), t * sem, n)
