"""`privfed bench client` measures every built-in model against bare Opacus in one run."""

import json
from pathlib import Path

import pytest

from privfed.cli import main


def test_bench_client_reports_a_ratio_per_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "client", "--steps", "5", "--repeats", "3", "--batch-size", "8"]
    assert main([*argv, "--lstm-hidden", "8", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert [m["model"] for m in data["models"]] == ["mlp", "cnn", "lstm"]
    assert data["clock"] == "cpu"
    for m in data["models"]:
        assert m["bare_opacus_ms_per_step"] > 0 and m["privfed_ms_per_step"] > 0
        assert m["ratio"] == pytest.approx(m["privfed_ms_per_step"] / m["bare_opacus_ms_per_step"])
        assert m["model"] in printed
    with pytest.raises(SystemExit):
        main(["bench", "client", "--models", "gru"])
    assert "unknown model(s) gru; choose from mlp, cnn, lstm" in capsys.readouterr().err
