"""Generated conclusions: every statement is a paired test that passes at the stated level."""

import math
import random
import re

import pytest

from privfed.evaluation.claims import conclusions
from privfed.evaluation.results import layout_of
from privfed.evaluation.stats import holm, paired_t_test

ALPHA = "groups.image.partition.alpha"


def _rows(means, *, majority=0.645, seeds=10, eps="4.0", spread=0.01):
    """One task, one alpha; per-seed accuracies: ``mean`` plus independent noise per series."""
    rows = []
    for i, (alg, mean) in enumerate(means.items()):
        noise = random.Random(i).uniform
        for seed in range(seeds):
            for e, m in ((eps, mean), ("inf", min(0.99, mean + 0.2))):
                rows.append(
                    {
                        "point_id": f"{alg}-{e}-{seed}",
                        "label": "grid",
                        "dp.target_epsilon": e,
                        ALPHA: "0.1",
                        "federation.algorithm": alg,
                        "seed": str(seed),
                        "task": "image.identity",
                        "mean_acc": repr(m + noise(-spread, spread)),
                        "majority_acc": repr(majority + 0.001 * (seed % 2)),
                        "target_epsilon": e,
                        "client_dp": "off",
                        "algorithm": alg,
                    }
                )
    return rows


def _layout(rows):
    return layout_of(
        rows,
        {
            "axes": {"dp.target_epsilon": [], ALPHA: [], "federation.algorithm": [], "seed": []},
            "swept_fields": ["dp.target_epsilon", ALPHA, "federation.algorithm"],
        },
    )


def test_statements_follow_the_tests_and_name_them():
    rows = _rows({"local": 0.736, "fedavg": 0.337, "ditto": 0.645})
    c = conclusions(rows, _layout(rows), epsilons=[4.0], tasks=["image.identity"])
    (panel,) = c.panels
    text = "\n".join(c.markdown())
    assert "paired t test" in text and "Holm-adjusted" in text
    sentences = panel.sentences(0.05)
    above = next(s for s in sentences if s.startswith("Above"))
    assert "local (+0.09" in above and "fedavg" not in above
    below = next(s for s in sentences if s.startswith("Below it"))
    assert "fedavg (-0.30" in below
    assert any(s.startswith("Not distinguishable from it: ditto") for s in sentences)
    assert panel.best == "local"
    # every stated comparison is significant after Holm over the whole family
    ps = [cmp.test.p_value for cmp in panel.comparisons]
    assert [cmp.p_adjusted for cmp in panel.comparisons] == pytest.approx(holm(ps))
    lo = next(cmp for cmp in panel.comparisons if cmp.kind == "baseline" and cmp.left == "local")
    seeds_local = [r for r in rows if r["algorithm"] == "local" and r["target_epsilon"] == "4.0"]
    ref = paired_t_test(
        [float(r["mean_acc"]) for r in seeds_local], [float(r["majority_acc"]) for r in seeds_local]
    )
    assert lo.test.p_value == pytest.approx(ref.p_value)


def test_no_private_method_beats_the_label_prior_when_none_is_above():
    rows = _rows({"fedavg": 0.337, "fedprox": 0.331, "ditto": 0.59})
    c = conclusions(rows, _layout(rows), epsilons=[4.0], tasks=["image.identity"])
    sentences = c.panels[0].sentences(0.05)
    assert sentences[0].startswith("No private method beats the label prior here")
    # and the privacy cost is stated (0.2 every seed, with spread)
    cost = next(s for s in sentences if s.startswith("Privacy cost"))
    assert re.search(r"fedavg \+0\.(19|20)\d", cost)


def test_small_differences_are_not_stated():
    rows = _rows({"a": 0.60, "b": 0.601}, seeds=3, spread=0.05)
    c = conclusions(rows, _layout(rows), epsilons=[4.0], tasks=["image.identity"])
    sentences = c.panels[0].sentences(0.05)
    ranking = next(s for s in sentences if s.startswith("Highest mean"))
    assert "not distinguishable from it: " in ranking and "below it" not in ranking


def test_wilcoxon_option_and_unknown_test():
    rows = _rows({"local": 0.736, "fedavg": 0.337})
    c = conclusions(rows, _layout(rows), epsilons=[4.0], test="wilcoxon")
    assert c.test == "Wilcoxon signed-rank"
    assert all(math.isfinite(p.majority) for p in c.panels if p.task == "image.identity")
    with pytest.raises(ValueError, match="test must be one of"):
        conclusions(rows, _layout(rows), epsilons=[4.0], test="z")
