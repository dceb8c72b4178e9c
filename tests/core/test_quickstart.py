"""The quickstart's promise: every task beats the clients' majority-class baseline."""

import pytest

from privfed.cli import _quickstart_path
from privfed.config import load_config
from privfed.engine import run_experiment


@pytest.mark.slow
def test_quickstart_beats_majority_baseline_on_every_task(tmp_path):
    cfg = load_config(_quickstart_path())
    summary = run_experiment(cfg, tmp_path / "qs", progress=False, echo=lambda m: None)
    assert len(summary.tasks) == 5
    for task, m in summary.tasks.items():
        assert m["mean_acc"] > m["majority_acc"], task
    for src in ("digits", "markov"):
        assert 0 < summary.epsilon[src]["max"] <= 8.0
