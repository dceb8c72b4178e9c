"""Pure metric functions shared by the attacks (no torch, no randomness).

* :func:`roc_auc` -- area under the ROC curve of a score where higher means "member".
* :func:`tpr_at_fpr` -- true-positive rate at a fixed low false-positive rate, the figure LiRA
  argues for (Carlini et al., "Membership Inference Attacks From First Principles", S&P 2022,
  Sec. III).
* :func:`psnr` -- peak signal-to-noise ratio of a reconstruction in ``[0, 1]``.
"""

from __future__ import annotations

import numpy as np


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.shape}) and labels ({y.shape}) differ in length")
    if y.all() or not y.any():
        raise ValueError("labels need at least one member and one non-member")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return s, y


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a random member > score of a random non-member), ties counting one half.

    Args:
        scores: one score per record, higher meaning "member".
        labels: True for members.
    """
    s, y = _check(scores, labels)
    from scipy.stats import rankdata

    ranks = rankdata(s, method="average")  # average ranks over ties (Mann-Whitney U)
    n1 = int(y.sum())
    n0 = len(y) - n1
    u = ranks[y].sum() - n1 * (n1 + 1) / 2.0
    return float(u / (n1 * n0))


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, *, fpr: float) -> float:
    """Largest TPR of a threshold rule ``score > tau`` whose FPR is at most ``fpr``.

    With ``n0`` non-members the smallest non-zero FPR is ``1 / n0``; below that only thresholds
    above every non-member count (FPR 0), so the figure is honest for small challenge sets.
    """
    s, y = _check(scores, labels)
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    neg = np.sort(s[~y])[::-1]
    pos = s[y]
    allowed = int(np.floor(fpr * len(neg) + 1e-12))  # non-members allowed above tau
    tau = neg[allowed] if allowed < len(neg) else -np.inf
    return float((pos > tau).mean())


def psnr(reconstruction: np.ndarray, target: np.ndarray, *, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (``inf`` for an exact reconstruction)."""
    a = np.asarray(reconstruction, dtype=np.float64).reshape(-1)
    b = np.asarray(target, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"reconstruction {a.shape} and target {b.shape} differ in size")
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(peak**2 / mse))


def best_psnr(reconstruction: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
    """PSNR against the closest of ``targets`` (rows) and that row's index."""
    t = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
    r = np.asarray(reconstruction, dtype=np.float64).reshape(1, -1)
    mse = ((t - r) ** 2).mean(axis=1)
    i = int(np.argmin(mse))
    return (float("inf") if mse[i] == 0 else float(10.0 * np.log10(1.0 / mse[i]))), i
