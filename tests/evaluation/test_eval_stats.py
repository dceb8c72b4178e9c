"""Paired tests and Holm's correction, against scipy.stats and hand-computed values."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from privfed.evaluation.stats import holm, paired_t_test, wilcoxon_signed_rank

A = [0.61, 0.58, 0.66, 0.70, 0.59, 0.63, 0.64, 0.60, 0.67, 0.62]
B = [0.55, 0.59, 0.61, 0.62, 0.575, 0.548, 0.652, 0.513, 0.603, 0.637]


def test_paired_t_matches_scipy_and_hand_computation():
    res = paired_t_test(A, B)
    ref = stats.ttest_rel(A, B)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    d = np.subtract(A, B)
    hw = stats.t.ppf(0.975, 9) * d.std(ddof=1) / math.sqrt(10)
    assert res.mean_difference == pytest.approx(d.mean())
    assert (res.ci_low, res.ci_high) == pytest.approx((d.mean() - hw, d.mean() + hw))
    assert res.n == 10 and res.test == "paired t"


def test_paired_t_known_value():
    # d = (1, 2, 3): mean 2, sd 1, t = 2 / (1 / sqrt 3) = 3.4641, df 2, p = 0.07418
    res = paired_t_test([2, 3, 4], [1, 1, 1])
    assert res.statistic == pytest.approx(2 * math.sqrt(3))
    assert res.p_value == pytest.approx(0.0741799, abs=1e-6)


def test_paired_t_degenerate_cases():
    one = paired_t_test([0.5], [0.4])
    assert one.p_value == 1.0 and math.isnan(one.ci_low)
    same = paired_t_test([0.5, 0.6], [0.5, 0.6])
    assert same.p_value == 1.0 and same.mean_difference == 0.0
    with pytest.raises(ValueError, match="equal length"):
        paired_t_test([1, 2], [1])
    with pytest.raises(ValueError, match="finite"):
        paired_t_test([1, math.nan], [1, 2])


def test_wilcoxon_exact_matches_scipy():
    res = wilcoxon_signed_rank(A, B)
    ref = stats.wilcoxon(A, B, method="exact")
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    # scipy reports min(W+, W-) for the two-sided test
    n = res.n
    assert min(res.statistic, n * (n + 1) / 2 - res.statistic) == pytest.approx(ref.statistic)


def test_wilcoxon_known_value_all_positive():
    # 10 positive differences with distinct magnitudes: p = 2 / 2^10
    res = wilcoxon_signed_rank(np.arange(1, 11) * 0.01, np.zeros(10))
    assert res.p_value == pytest.approx(2 / 1024)
    assert res.statistic == 55


def test_wilcoxon_ties_and_zeros_use_the_normal_approximation_like_scipy():
    a = [1.0, 2.0, 2.0, 3.0, 0.0, 5.0, -1.0, 4.0]
    b = [0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    res = wilcoxon_signed_rank(a, b)
    ref = stats.wilcoxon(a, b, method="approx", zero_method="wilcox", correction=False)
    assert res.n == 7
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-10)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.floats(min_value=-1, max_value=1, allow_nan=False).filter(lambda v: abs(v) > 1e-6),
        min_size=3,
        max_size=20,
        unique=True,
    )
)
def test_wilcoxon_exact_agrees_with_scipy_on_distinct_differences(diffs):
    if len({abs(d) for d in diffs}) < len(diffs):
        return  # tied magnitudes take the approximation; covered above
    res = wilcoxon_signed_rank(diffs, [0.0] * len(diffs))
    ref = stats.wilcoxon(diffs, method="exact")
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)


def test_holm_hand_computed_and_against_bonferroni():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert all(h <= min(1.0, 4 * x) for h, x in zip(holm(p), p, strict=True))
    assert holm([]) == []
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    assert holm([0.04, 0.3]) == pytest.approx([0.08, 0.3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([1.5])
