"""The experiment configs of the new workloads load, and the Shakespeare page refuses dirt."""

import importlib.util
import sys
from pathlib import Path

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


def test_the_results_page_refuses_a_dirty_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ROOT / "experiments" / "benchmarks" / "shakespeare.py"
    spec = importlib.util.spec_from_file_location("shakespeare_benchmark", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, script)  # dataclasses look the module up
    spec.loader.exec_module(script)
    monkeypatch.chdir(ROOT)  # the script changes to the repository root; restored afterwards
    import privfed.repro

    monkeypatch.setattr(privfed.repro, "git_commit", lambda: {"commit": "abc", "dirty": True})
    page = tmp_path / "page.md"
    assert script.main(["--page", str(page), "--out", str(tmp_path / "runs")]) == 2
    assert "uncommitted changes" in capsys.readouterr().err and not page.exists()
    monkeypatch.setattr(privfed.repro, "git_commit", lambda: {"commit": "unknown"})
    assert script.main(["--page", str(page), "--out", str(tmp_path / "runs")]) == 2
    assert "not a git checkout" in capsys.readouterr().err and not page.exists()
