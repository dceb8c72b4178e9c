"""The experiment configs of the new workloads load, and the Shakespeare page refuses dirt."""

import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from privfed.config import load_config
from privfed.evaluation.sweep import expand_points, load_sweep

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "experiments" / "configs"


def test_digits_cnn_config() -> None:
    cfg = load_config(CONFIGS / "digits_cnn.toml")
    g = cfg.groups["image"]
    assert g.model == "cnn" and g.architecture == "shared-trunk" and len(g.tasks) == 3
    assert cfg.dp.private and cfg.federation.aggregator == "secagg"


@pytest.mark.parametrize("name", ["shakespeare.toml", "shakespeare_smoke.toml"])
def test_shakespeare_sweeps(name: str) -> None:
    spec = load_sweep(CONFIGS / name)
    text = spec.base.groups["text"]
    assert text.source == "leaf" and text.model == "lstm"
    assert text.partition.kind == "natural" and text.split_order == "ordered"
    grid = {
        (p.config.dp.target_epsilon, p.config.federation.aggregator) for p in expand_points(spec)
    }
    assert grid == {
        (float("inf"), "plain"),
        (float("inf"), "secagg"),
        (8.0, "plain"),
        (8.0, "secagg"),
    }


def _script(monkeypatch: pytest.MonkeyPatch) -> Any:
    path = ROOT / "experiments" / "benchmarks" / "shakespeare.py"
    spec = importlib.util.spec_from_file_location("shakespeare_benchmark", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, script)  # dataclasses look the module up
    spec.loader.exec_module(script)
    return script


def test_the_private_learning_rate_is_tuned_under_the_full_runs_noise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import tomli_w

    script = _script(monkeypatch)
    config = CONFIGS / "shakespeare.toml"
    spec = load_sweep(config)
    doc = script._sweep_doc(str(config))
    args = script.parse_args(["--tuning_lrs", "1.0,0.3,0.1", "--tuning_rounds", "30"])
    tuning = script.tuning_sweep(doc, spec, args=args)
    path = tmp_path / "tuning.toml"
    path.write_text(tomli_w.dumps(tuning), encoding="utf-8")
    points = expand_points(load_sweep(path))
    assert {(p.config.dp.target_epsilon, p.config.train.lr) for p in points} == {
        (8.0, 1.0),
        (8.0, 0.3),
        (8.0, 0.1),
    }
    full = spec.base
    for p in points:
        c = p.config
        assert c.rounds == 30 and c.seed == 100 and c.seed != full.seed
        # as many planned participations as the full run: the same noise multiplier
        assert math.ceil(c.rounds * c.dp.planned_participation) == math.ceil(
            full.rounds * full.dp.planned_participation
        )
    assert script.tuning_sweep(doc, spec, args=script.parse_args(["--tuning_lrs", ""])) is None

    rows = [
        {"dp.target_epsilon": "8.0", "train.lr": "1.0", "val_mean_acc": "0.12"},
        {"dp.target_epsilon": "8.0", "train.lr": "0.3", "val_mean_acc": "0.25"},
        {"dp.target_epsilon": "8.0", "train.lr": "0.1", "val_mean_acc": "0.25"},
    ]
    chosen = script.select(rows)
    assert set(chosen) == {8.0}
    assert chosen[8.0].lr == 0.3  # best validation accuracy; a tie goes to the larger rate
    assert [lr for lr, _ in chosen[8.0].tried] == [1.0, 0.3, 0.1]
    final = tmp_path / "final.toml"
    final.write_text(tomli_w.dumps(script.final_sweep(doc, chosen)), encoding="utf-8")
    got = {
        (p.config.dp.target_epsilon, p.config.federation.aggregator, p.config.train.lr)
        for p in expand_points(load_sweep(final))
    }
    assert got == {
        (math.inf, "plain", full.train.lr),
        (math.inf, "secagg", full.train.lr),
        (8.0, "plain", 0.3),
        (8.0, "secagg", 0.3),
    }


def test_the_results_page_refuses_a_dirty_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script(monkeypatch)
    monkeypatch.chdir(ROOT)  # the script changes to the repository root; restored afterwards
    from privfed.evaluation import provenance

    dirty = provenance.Checkout("abc", (" M privfed/engine.py",))
    monkeypatch.setattr(provenance, "checkout", lambda repo: dirty)
    page = tmp_path / "page.md"
    assert script.main(["--page", str(page), "--out", str(tmp_path / "runs")]) == 2
    assert "uncommitted changes" in capsys.readouterr().err and not page.exists()
    # --allow-dirty never writes into docs/results
    docs = ROOT / "docs" / "results" / "shakespeare.md"
    assert script.main(["--page", str(docs), "--allow-dirty", "--out", str(tmp_path / "r")]) == 2
    assert "--allow-dirty writes only outside" in capsys.readouterr().err
    monkeypatch.setattr(provenance, "checkout", lambda repo: provenance.Checkout("unknown", ()))
    assert script.main(["--page", str(page), "--out", str(tmp_path / "runs")]) == 2
    assert "not a git checkout" in capsys.readouterr().err and not page.exists()
