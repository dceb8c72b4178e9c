"""The report on synthetic results.csv files: baselines per panel, styles, intervals, labels."""

import csv
import json
import math

import pytest

from privfed.evaluation.report import make_report, series_styles
from privfed.evaluation.results import (
    Interval,
    baseline,
    collect,
    interval,
    layout_of,
    multitask_rows,
    panel_alphas,
)

ALPHA = "groups.image.partition.alpha"
FIELDS = [
    "point_id",
    "label",
    "dp.target_epsilon",
    ALPHA,
    "federation.algorithm",
    "client_dp.mode",
    "seed",
    "task",
    "source",
    "mean_acc",
    "worst_acc",
    "val_mean_acc",
    "majority_acc",
    "bayes_pooled_acc",
    "bayes_personal_acc",
    "target_epsilon",
    "epsilon_max",
    "epsilon_mean",
    "delta",
    "client_dp",
    "client_target_epsilon",
    "client_epsilon",
    "client_delta",
    "privacy_warnings",
    "accountant",
    "algorithm",
    "aggregator",
    "run_dir",
    "attack:mia-loss:auc.max",
]

MAJORITY = {0.1: 0.645, 1.0: 0.256}


def _rows():
    rows = []
    for alpha in (0.1, 1.0):
        for alg in ("fedavg", "local"):
            for eps in (4.0, math.inf):
                for seed in range(3):
                    pid = f"{alg}-{alpha}-{eps}-{seed}"
                    for task, source in (("image.identity", "digits"), ("text.next", "markov")):
                        acc = (0.9 if math.isinf(eps) else 0.4) + 0.01 * seed
                        if alg == "local":
                            acc += 0.05
                        if task == "text.next":
                            acc = 0.2 + 0.01 * seed  # the image alpha does not change text
                        rows.append(
                            {
                                "point_id": pid,
                                "label": "grid",
                                "dp.target_epsilon": repr(eps) if eps < 10 else "inf",
                                ALPHA: repr(alpha),
                                "federation.algorithm": alg,
                                "client_dp.mode": "off",
                                "seed": str(seed),
                                "task": task,
                                "source": source,
                                "mean_acc": repr(acc),
                                "worst_acc": repr(acc / 2),
                                "val_mean_acc": repr(acc),
                                "majority_acc": repr(
                                    MAJORITY[alpha] if task.startswith("image") else 0.1
                                ),
                                "bayes_pooled_acc": "0.11" if task == "text.next" else "nan",
                                "bayes_personal_acc": "0.316" if task == "text.next" else "nan",
                                "target_epsilon": "inf" if math.isinf(eps) else repr(eps),
                                "epsilon_max": "inf" if math.isinf(eps) else "3.99",
                                "epsilon_mean": "inf" if math.isinf(eps) else "3.9",
                                "delta": "1e-05",
                                "client_dp": "off",
                                "client_target_epsilon": "",
                                "client_epsilon": "",
                                "client_delta": "",
                                "privacy_warnings": "0",
                                "accountant": "rdp",
                                "algorithm": alg,
                                "aggregator": "plain",
                                "run_dir": f"points/{pid}",
                                "attack:mia-loss:auc.max": repr(0.5 + (0.1 if eps > 10 else 0.01)),
                            }
                        )
    # a client-level DP baseline: record-level epsilon inf, client-level epsilon 8
    for seed in range(3):
        for task, source in (("image.identity", "digits"), ("text.next", "markov")):
            rows.append(
                dict(
                    rows[0],
                    point_id=f"cdp-{seed}",
                    label="fedavg-client-dp",
                    **{"dp.target_epsilon": "inf", "client_dp.mode": "central"},
                    seed=str(seed),
                    task=task,
                    source=source,
                    mean_acc="0.3",
                    target_epsilon="inf",
                    epsilon_max="inf",
                    epsilon_mean="inf",
                    client_dp="central",
                    client_target_epsilon="8.0",
                    client_epsilon="7.9",
                    client_delta="0.01",
                    run_dir=f"points/cdp-{seed}",
                )
            )
    return rows


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("synthetic")
    with open(tmp_path / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(_rows())
    (tmp_path / "sweep.json").write_text(
        json.dumps(
            {
                "name": "synthetic",
                "axes": {
                    "dp.target_epsilon": [4.0, "inf"],
                    ALPHA: [0.1, 1.0],
                    "federation.algorithm": ["fedavg", "local"],
                    "seed": [0, 1, 2],
                },
                "baselines": [{"name": "fedavg-client-dp"}],
                "swept_fields": [
                    "dp.target_epsilon",
                    ALPHA,
                    "federation.algorithm",
                    "client_dp.mode",
                ],
            }
        )
    )
    return tmp_path


@pytest.fixture(scope="module")
def report(sweep_dir):
    return make_report(sweep_dir)


@pytest.fixture(scope="module")
def md(report):
    return report.markdown.read_text()


def test_two_alphas_give_two_baselines_per_panel(sweep_dir, md):
    rows = list(csv.DictReader(open(sweep_dir / "results.csv")))
    layout = layout_of(rows, json.loads((sweep_dir / "sweep.json").read_text()))
    b01 = baseline(rows, layout, "majority_acc", task="image.identity", alpha=0.1)
    b1 = baseline(rows, layout, "majority_acc", task="image.identity", alpha=1.0)
    assert b01 == pytest.approx(0.645) and b1 == pytest.approx(0.256)
    table = md.split("### image.identity")[1].split("###")[0]
    assert "| fedavg | 0.1 | 0.645 |" in table and "| fedavg | 1 | 0.256 |" in table
    # the text task does not depend on the image alpha: one panel, each seed counted once
    assert panel_alphas(collect(rows, layout, "mean_acc"), "text.next") == [None]
    text = md.split("### text.next")[1].split("###")[0]
    assert "n=3†" in text and "n=6" not in text
    assert "0.110 / 0.316" in text  # Bayes-optimal pooled / personal where the source knows them


def test_series_labels_show_only_fields_that_vary(md):
    assert "mode=" not in md and "aggregator=" not in md
    assert "| fedavg | 0.1 |" in md and "| local | 1 |" in md


def test_colour_of_a_series_is_the_same_in_every_figure():
    one = series_styles(["fedavg", "local", "x-baseline"])
    two = series_styles(["local", "fedavg", "x-baseline", "ditto"])
    assert one["fedavg"] == two["fedavg"] and one["local"].colour == two["local"].colour
    assert one["fedavg"].colour != one["local"].colour
    styles = series_styles([f"s{i}" for i in range(15)])
    assert len({(s.colour, s.marker) for s in styles.values()}) == 15


def test_intervals_are_clipped_to_the_metric_range_and_marked_when_few():
    iv = interval([0.0, 0.9], lower=0.0, upper=1.0)  # t interval would be -5.27 .. 6.17
    assert iv.low == 0.0 and iv.high == 1.0 and iv.n == 2 and iv.few
    assert iv.format() == "0.450 [0.000, 1.000] n=2†"
    wide = interval([0.5] * 3 + [0.51] * 3)
    assert not wide.few and wide.format().endswith("n=6")
    assert interval([]).format() == "—"
    assert Interval(math.inf, math.inf, math.inf, 2).format() == "∞"


def test_cost_column_and_reference_next_to_every_private_point(md):
    head = md.split("### image.identity")[1].split("\n")[2]
    assert "ε = ∞ (reference)" in head and "cost at ε = 4" in head
    row = next(r for r in md.split("\n") if r.startswith("| fedavg | 0.1 | 0.645 |"))
    # fedavg: 0.90/0.91/0.92 non-private vs 0.40/0.41/0.42 at epsilon 4: cost 0.5 every seed
    assert "0.500" in row.split("|")[-2]


def test_attack_columns_are_tabulated_and_plotted(report, md):
    assert "## Attacks" in md and "### mia-loss" in md and "| auc.max |" in md
    assert any(p.name == "attacks.png" for p in report.figures)


def test_client_level_points_have_their_own_columns_and_no_record_axis(md):
    assert "## Client-level DP points" in md
    assert "| fedavg-client-dp | 0.1 | central 8 | 7.900 | 0.01 | ∞ |" in md
    # not on the record-level epsilon axis (no fedavg-client-dp row in the accuracy tables)
    acc = md.split("## Mean client test accuracy")[1].split("## Worst-10%")[0]
    assert "fedavg-client-dp" not in acc
    priv = md.split("## Privacy guarantees")[1]
    assert "| record δ | client-level mode | client ε | client δ |" in priv
    assert "| fedavg-client-dp | digits | ∞ | ∞ | ∞ | 1e-05 | central | 7.900 | 0.01 |" in priv


def test_multitask_average_carries_the_mean_of_the_task_baselines(sweep_dir):
    rows = list(csv.DictReader(open(sweep_dir / "results.csv")))
    mt = multitask_rows(rows)
    avg = next(r for r in mt if r["task"] == "multi-task average" and r[ALPHA] == "0.1")
    assert float(avg["majority_acc"]) == pytest.approx((0.645 + 0.1) / 2)
