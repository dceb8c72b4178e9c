"""``[[attacks]]`` in a run config: attacks run on the finished run, metrics land beside it."""

import csv
import json
from pathlib import Path

import pytest
from support import tiny_dict

from privfed.config import dump_config, from_dict, load_config
from privfed.engine import run_experiment
from privfed.errors import ConfigError


def _cfg(**extra):
    data = tiny_dict(rounds=1)
    data["attacks"] = [{"name": "mia-loss"}, {"name": "inversion-aggregate", **extra}]
    return from_dict(data)


def test_unknown_attack_is_a_config_error():
    data = tiny_dict()
    data["attacks"] = [{"name": "mia-los"}]
    with pytest.raises(ConfigError, match=r"attacks\[0\].name: unknown attack 'mia-los'"):
        from_dict(data)


def test_attacks_run_after_the_run_and_are_recorded(tmp_path: Path):
    cfg = _cfg()
    (tmp_path / "c.toml").write_text(dump_config(cfg))
    assert load_config(tmp_path / "c.toml") == cfg  # [[attacks]] round-trips through TOML
    summary = run_experiment(cfg, tmp_path / "r", progress=False, echo=lambda m: None)
    data = json.loads((tmp_path / "r" / "attacks.json").read_text())
    assert set(data) == {"mia-loss", "inversion-aggregate"}
    assert "auc.max" in data["mia-loss"]["metrics"]
    assert data["mia-loss"]["seed"] >= 0 and data["mia-loss"]["threat_model"]
    assert summary.attacks == data
    # same config and seed: same attack numbers
    run_experiment(cfg, tmp_path / "r2", progress=False, echo=lambda m: None)
    again = json.loads((tmp_path / "r2" / "attacks.json").read_text())
    assert {k: v["metrics"] for k, v in again.items()} == {k: v["metrics"] for k, v in data.items()}


def test_sweep_results_carry_attack_columns(tmp_path: Path):
    from privfed.evaluation.sweep import load_sweep, run_sweep

    base = tmp_path / "base.toml"
    base.write_text(dump_config(_cfg()))
    (tmp_path / "s.toml").write_text(
        '[sweep]\nname = "att"\nbase = "base.toml"\n[sweep.grid]\n"dp.target_epsilon" = [4.0]\n'
    )
    run_sweep(
        load_sweep(tmp_path / "s.toml"),
        tmp_path / "out",
        workers=1,
        progress=False,
        echo=lambda m: None,
    )
    with open(tmp_path / "out" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and "attack:mia-loss:auc.max" in rows[0]
    assert all(r["attack:mia-loss:auc.max"] not in ("", "nan") for r in rows)
