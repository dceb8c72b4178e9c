"""End-to-end: privfed sweep + privfed report on a tiny grid; the PNGs are valid images."""

import csv
import re
import sys
import textwrap
from pathlib import Path

import pytest

from privfed.cli import main
from privfed.errors import PrivfedError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

SWEEP = textwrap.dedent("""
    [sweep]
    name = "e2e"
    base = "quickstart"

    [sweep.set]
    rounds = 2
    "federation.num_clients" = 6
    "groups.text.source_params" = { vocab = 16, num_owners = 6, lam = 0.5, \
concentration = 0.1, tokens_per_owner = 200 }
    "federation.aggregator" = "plain"
    "eval.every" = 1
    "dp.noise_multiplier" = 1.0

    [sweep.grid]
    "dp.target_epsilon" = [20.0, inf]
    "groups.image.partition.alpha" = [0.3, 1.0]
    seed = [0, 1]

    [[sweep.baselines]]
    name = "local"
    "federation.algorithm" = "local"
    "dp.target_epsilon" = inf
""")


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    path = tmp / "e2e.toml"
    path.write_text(SWEEP)
    out = tmp / "out"
    assert main(["sweep", str(path), "--out", str(out), "--quiet"]) == 0
    return out


def test_results_csv_has_one_row_per_point_and_task(sweep_dir):
    with open(sweep_dir / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # grid 2 eps x 2 alpha x 2 seeds = 8 points, local baseline 2 alpha x 2 seeds = 4 points
    assert len({r["point_id"] for r in rows}) == 12
    assert len(rows) == 12 * 5
    cols = rows[0].keys()
    for c in (
        "dp.target_epsilon",
        "groups.image.partition.alpha",
        "federation.algorithm",
        "seed",
        "config_hash",
        "mean_acc",
        "median_acc",
        "worst_acc",
        "val_mean_acc",
        "mean_loss",
        "majority_acc",
        "epsilon_max",
        "epsilon_mean",
        "delta",
        "accountant",
        "wall_time_s",
        "bytes_down_per_participation",
        "bytes_up_per_participation",
        "compute_s_per_participation",
        "round_s",
    ):
        assert c in cols
    for r in rows:  # plain aggregation: the task down, the float32 update up (none for local)
        assert float(r["bytes_down_per_participation"]) > 0
        assert (float(r["bytes_up_per_participation"]) > 0) == (r["label"] != "local")
        assert float(r["compute_s_per_participation"]) > 0
    for r in rows:
        assert float(r["worst_acc"]) <= float(r["mean_acc"]) + 1e-12
        if r["dp.target_epsilon"] == "inf":
            assert r["epsilon_max"] == "inf"
        else:
            assert 0 < float(r["epsilon_max"]) <= 20.0 + 1e-6
    assert {r["label"] for r in rows} == {"grid", "local"}


def test_report_writes_markdown_and_valid_pngs(sweep_dir):
    assert main(["report", str(sweep_dir)]) == 0
    md = (sweep_dir / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    names = {Path(x).name for x in links}
    for expected in (
        "acc_vs_epsilon_image.identity.png",
        "acc_vs_epsilon_text.next.png",
        "acc_vs_alpha.png",
        "multitask.png",
        "client_spread.png",
        "cost.png",
    ):
        assert expected in names
    assert "## Cost" in md and "| series | KiB down | KiB up | compute (ms) | round (s) |" in md
    import matplotlib.image as mpimg
    from PIL import Image

    for link in links:
        png = sweep_dir / link
        data = png.read_bytes()
        assert data.startswith(PNG_SIGNATURE), png
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            w, h = im.size
            assert w > 300 and h > 200
        arr = mpimg.imread(png)
        assert arr.ndim == 3 and arr.shape[0] == h and arr.shape[1] == w
        assert arr[..., :3].std() > 0.01  # not a blank canvas
    # tables: mean ± CI over the two seeds, and provenance from the manifests
    assert "±" in md and "(n=2)" in md
    assert "torch" in md and "commit(s):" in md
    assert "## Worst-10% client test accuracy" in md and "multi-task average" in md


def test_report_epsilon_must_be_swept_and_missing_results_is_an_error(sweep_dir, tmp_path, capsys):
    assert main(["report", str(sweep_dir), "--epsilon", "3", "--out", str(tmp_path)]) == 2
    assert "--epsilon 3 was not swept" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "run `privfed sweep` first" in capsys.readouterr().err


def test_report_without_matplotlib_says_how_to_install(sweep_dir, tmp_path, monkeypatch):
    from privfed.evaluation.report import make_report

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(
        PrivfedError, match=r"pip install matplotlib \(or pip install -e '\.\[report\]'"
    ):
        make_report(sweep_dir, out_dir=tmp_path)
