"""The benchmark's accounting matches the protocol's (correctness, not speed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from privfed.secagg import PHASES, SecAggConfig, secure_sum
from privfed.secagg.bench import main, wire_bytes_per_client


@pytest.mark.parametrize("security", ["semi-honest", "malicious"])
@pytest.mark.parametrize("graph,degree", [("complete", None), ("harary", 4)])
def test_analytic_wire_bytes_match_a_real_run(
    graph: str, degree: int | None, security: str
) -> None:
    n, m, bits = 9, 50, 26
    inputs = {c: np.zeros(m, dtype=np.uint32) for c in range(n)}
    cfg = SecAggConfig(graph=graph, degree=degree, bits=bits, security=security)
    res = secure_sum(inputs, config=cfg)
    per = wire_bytes_per_client(
        clients=n, length=m, bits=bits, degree=res.degree, security=security
    )
    for c in range(n):
        for phase in PHASES:
            assert res.bytes_sent[c][phase] == per[phase][0], (c, phase)
            assert res.bytes_received[c][phase] == per[phase][1], (c, phase)


def test_bench_runs_and_checks_the_sum(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    code = main(
        [
            "--clients",
            "12",
            "--length",
            "4096",
            "--graph",
            "harary",
            "--dropout",
            "0.1",
            "--repeats",
            "1",
            "--protocol-repeats",
            "1",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    fig = json.loads(out.read_text())
    assert fig["correct"] and fig["dropped"] == 1 and fig["cpu"]
    assert set(fig["settings"]) == {"semi-honest", "malicious"}
    for r in fig["settings"].values():
        assert r["correct"] and r["included"] == 11
        assert r["expansion_sent_vs_float32"] > 1.0
        b = r["baselines"]
        # the least floor over runs is at least the least keystream plus the least additions
        assert b["floor"] >= b["floor_keystream"] + b["floor_additions"] - 1e-12
        assert r["server_over_floor"] > 0 and r["server_over_plain_sum"] > 0
        assert r["masks_removed"] > r["included"]  # the dropped client's pairwise masks too
    assert fig["malicious_over_semi_honest_server"] > 0
    assert fig["gc_paused_while_timing"] is True


def test_bench_leaves_the_garbage_collector_as_it_found_it(tmp_path: Path) -> None:
    import gc

    assert gc.isenabled()
    out = tmp_path / "b.json"
    assert (
        main(
            [
                "--clients",
                "5",
                "--length",
                "256",
                "--repeats",
                "1",
                "--protocol-repeats",
                "1",
                "--keep-gc",
                "--security",
                "semi-honest",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["gc_paused_while_timing"] is False
    assert (
        main(["--clients", "5", "--length", "256", "--repeats", "1", "--protocol-repeats", "1"])
        == 0
    )
    assert gc.isenabled()


def test_cpu_model_is_named() -> None:
    from privfed.secagg.bench import cpu_model

    assert cpu_model() and cpu_model() != "unknown"


def test_bytes_only_reports_both_settings(tmp_path: Path) -> None:
    out = tmp_path / "bytes.json"
    assert main(["--bytes-only", "--clients", "1024", "--length", "1024", "--json", str(out)]) == 0
    fig = json.loads(out.read_text())
    semi, mal = fig["semi-honest"], fig["malicious"]
    # signatures: 64 bytes per advertisement and consistency signature, per roster entry and
    # per forwarded signature
    assert mal["bytes_sent_per_client"] > semi["bytes_sent_per_client"]
    assert mal["bytes_received_per_client"] - semi["bytes_received_per_client"] > 1024 * 64
