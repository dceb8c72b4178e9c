"""privfed reproduce: a re-run of a run directory reports no difference, a tampered one does."""

import json

import pytest

from privfed.cli import _quickstart_path, main
from privfed.config import load_config, with_overrides
from privfed.engine import run_experiment
from privfed.evaluation.reproduce import diff_json, reproduce


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cfg = with_overrides(
        load_config(_quickstart_path()),
        {
            "rounds": 2,
            "federation.num_clients": 6,
            "groups.text.source_params": {
                "vocab": 16,
                "num_owners": 6,
                "lam": 0.5,
                "concentration": 0.1,
                "tokens_per_owner": 200,
            },
            "federation.aggregator": "plain",
            "eval.every": 1,
            "dp.target_epsilon": 30.0,
            "dp.noise_multiplier": 1.0,
        },
    )
    out = tmp_path_factory.mktemp("repro") / "run"
    run_experiment(cfg, out, progress=False, echo=lambda _m: None)
    return out


def test_reproduce_identical_exits_0(run_dir, tmp_path, capsys):
    assert main(["reproduce", str(run_dir), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "identical" in out
    result = reproduce(run_dir, out_dir=tmp_path / "third", progress=False)
    assert result.identical and result.compared > 100


def test_reproduce_reports_a_tampered_metric(run_dir, tmp_path, capsys):
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for name in ("config.toml", "manifest.json", "privacy.json"):
        (tampered / name).write_bytes((run_dir / name).read_bytes())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    row = json.loads(lines[-1])
    row["tasks"]["image.parity"]["mean_acc"] += 0.125
    lines[-1] = json.dumps(row, sort_keys=True)
    (tampered / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    code = main(["reproduce", str(tampered), "--out", str(tmp_path / "rerun"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 1
    assert "DIFFERENT: 1 of" in out
    assert "round 2.tasks.image.parity.mean_acc" in out


def test_reproduce_refuses_an_edited_config(run_dir, tmp_path, capsys):
    edited = tmp_path / "edited"
    edited.mkdir()
    for name in ("manifest.json", "privacy.json", "metrics.jsonl"):
        (edited / name).write_bytes((run_dir / name).read_bytes())
    text = (run_dir / "config.toml").read_text().replace("rounds = 2", "rounds = 3")
    (edited / "config.toml").write_text(text)
    assert main(["reproduce", str(edited), "--quiet"]) == 2
    assert "manifest.json records" in capsys.readouterr().err


def test_diff_json_paths_and_counts():
    diffs, n = diff_json({"a": [1, 2.0], "b": {"c": "x"}}, {"a": [1, 2.5], "b": {"c": "x"}})
    assert n == 3 and diffs == ["a[1]: 2.0 -> 2.5"]
    diffs, _ = diff_json({"a": 1}, {"b": 1})
    assert len(diffs) == 2
