"""Known-answer and property tests of the attack metrics."""

import numpy as np
import pytest

from attacks.metrics import best_psnr, psnr, roc_auc, tpr_at_fpr


def test_auc_known_answers() -> None:
    y = np.array([1, 1, 0, 0], bool)
    assert roc_auc(np.array([4.0, 3, 2, 1]), y) == 1.0
    assert roc_auc(np.array([1.0, 2, 3, 4]), y) == 0.0
    assert roc_auc(np.array([1.0, 1, 1, 1]), y) == 0.5  # ties count one half
    # one inversion out of four member/non-member pairs
    assert roc_auc(np.array([4.0, 2, 3, 1]), y) == 0.75


def test_auc_matches_pairwise_loop() -> None:
    rng = np.random.default_rng(3)
    s = rng.integers(0, 5, size=60).astype(float)
    y = rng.random(60) < 0.4
    pairs = [(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]]
    assert roc_auc(s, y) == pytest.approx(np.mean(pairs))


def test_tpr_at_fpr_counts_only_thresholds_within_the_fpr() -> None:
    neg = np.arange(1000, dtype=float)  # non-members score 0..999
    pos = np.array([999.5, 998.5, 990.5, 500.0])
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(4, bool), np.zeros(1000, bool)])
    assert tpr_at_fpr(s, y, fpr=0.0) == 0.25  # only above every non-member
    assert tpr_at_fpr(s, y, fpr=0.001) == 0.5  # one non-member (999) may be above
    assert tpr_at_fpr(s, y, fpr=0.01) == 0.75
    with pytest.raises(ValueError, match="at least one member"):
        tpr_at_fpr(neg, np.zeros(1000, bool), fpr=0.01)


def test_psnr() -> None:
    a = np.zeros(64)
    assert psnr(a, a) == float("inf")
    assert psnr(a, np.full(64, 0.1)) == pytest.approx(20.0)
    value, idx = best_psnr(np.full(64, 0.5), np.stack([np.zeros(64), np.full(64, 0.4)]))
    assert idx == 1 and value == pytest.approx(20.0)
