import math

import pytest

from privfed.evaluation.metrics import mean_ci, summarize, worst_fraction_mean


def test_worst_fraction_of_ten_is_the_minimum():
    vals = [0.9, 0.5, 0.7, 0.2, 1.0, 0.8, 0.6, 0.3, 0.4, 0.1]
    assert worst_fraction_mean(vals) == pytest.approx(0.1)


def test_worst_fraction_of_twenty_is_mean_of_two_lowest():
    vals = [0.5] * 18 + [0.1, 0.3]
    assert worst_fraction_mean(vals) == pytest.approx(0.2)


def test_worst_fraction_rounds_up_and_keeps_at_least_one():
    # 11 clients * 0.1 = 1.1 -> the 2 lowest; 3 clients -> the lowest one
    assert worst_fraction_mean([5, 1, 2, 9, 9, 9, 9, 9, 9, 9, 9]) == pytest.approx(1.5)
    assert worst_fraction_mean([0.4, 0.2, 0.9]) == pytest.approx(0.2)
    assert worst_fraction_mean([0.4, 0.2, 0.9, 0.1], fraction=0.5) == pytest.approx(0.15)


def test_worst_fraction_rejects_bad_fraction_and_handles_empty():
    with pytest.raises(ValueError):
        worst_fraction_mean([1.0], fraction=0.0)
    assert math.isnan(worst_fraction_mean([]))


def test_summarize_hand_computed():
    s = summarize([0.2, 0.4, 0.6, 0.8])
    assert (s.mean, s.median, s.worst, s.n) == pytest.approx((0.5, 0.5, 0.2, 4))
    assert s.std == pytest.approx(math.sqrt(0.05))


def test_mean_ci_student_t_hand_computed():
    # mean 2, sample sd 1, n 3: half width = t(0.975, df=2) / sqrt(3)
    #   = 4.302652729911275 / 1.7320508
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci.mean == pytest.approx(2.0)
    assert ci.half_width == pytest.approx(4.302652729911275 / math.sqrt(3), rel=1e-9)
    assert ci.n == 3
    assert str(ci) == "2.000 ± 2.484"


def test_mean_ci_two_values_and_90_percent():
    # n 2: sd = |a-b|/sqrt(2), sem = |a-b|/2, t(0.975,1) = 12.706204736174707
    ci = mean_ci([0.5, 0.7])
    assert ci.half_width == pytest.approx(12.706204736174707 * 0.1, rel=1e-9)
    # 90%: t(0.95, 4) = 2.131846786326649; values 1..5: sd = sqrt(2.5)
    ci90 = mean_ci([1, 2, 3, 4, 5], confidence=0.9)
    assert ci90.half_width == pytest.approx(2.131846786326649 * math.sqrt(2.5) / math.sqrt(5))


def test_mean_ci_single_value_and_non_finite_values_dropped():
    one = mean_ci([0.8])
    assert one.mean == 0.8 and math.isnan(one.half_width) and str(one) == "0.800"
    ci = mean_ci([1.0, float("nan"), 3.0])
    assert ci.n == 2 and ci.mean == pytest.approx(2.0)
    assert mean_ci([]).n == 0
