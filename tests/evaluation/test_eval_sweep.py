"""Sweeps: grid expansion, validation, and resume after a real SIGKILL."""

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from privfed.evaluation.sweep import (
    VOLATILE_COLUMNS,
    SweepError,
    expand_points,
    load_sweep,
    point_status,
    run_sweep,
)

TINY_SET = textwrap.dedent("""
    [sweep.set]
    rounds = 2
    "federation.num_clients" = 6
    "groups.text.source_params" = { vocab = 16, num_owners = 6, lam = 0.5, concentration = 0.1, \
tokens_per_owner = 200 }
    "federation.aggregator" = "plain"
    "eval.every" = 1
    "dp.noise_multiplier" = 1.0
""")


def write_sweep(tmp_path: Path, body: str, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[sweep]\nname = "{name}"\nbase = "quickstart"\n{TINY_SET}\n{body}')
    return path


KILL_GRID = textwrap.dedent("""
    [sweep.grid]
    "dp.target_epsilon" = [inf]
    seed = [0, 1]

    [[sweep.baselines]]
    name = "dp"
    "dp.target_epsilon" = 50.0
    seed = 0
    rounds = 5
""")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def strip_wall(rows):
    return [{k: v for k, v in r.items() if k not in VOLATILE_COLUMNS} for r in rows]


def test_expand_grid_baselines_and_dedup(tmp_path):
    spec = load_sweep(
        write_sweep(
            tmp_path,
            textwrap.dedent("""
        [sweep.grid]
        "dp.target_epsilon" = [4, inf]
        "federation.algorithm" = ["fedavg", "local"]
        seed = [0, 1]

        [[sweep.baselines]]
        name = "same-as-grid"
        "dp.target_epsilon" = inf
        "federation.algorithm" = "fedavg"

        [[sweep.baselines]]
        name = "ft"
        "federation.algorithm" = "fedavg-ft"
        "dp.target_epsilon" = inf
    """),
        )
    )
    points = expand_points(spec)
    # 2*2*2 grid + 2 fine-tune seeds; the first baseline equals grid points and runs once
    assert len(points) == 10
    assert len({p.id for p in points}) == 10
    assert [p.label for p in points].count("ft") == 2
    ft = [p for p in points if p.label == "ft"]
    assert {p.config.seed for p in ft} == {0, 1}
    assert all(p.config.federation.algorithm == "fedavg-ft" for p in ft)
    assert points[0].config.dp.target_epsilon == 4.0 and points[0].config.rounds == 2
    # ids are stable across loads
    assert [p.id for p in expand_points(load_sweep(spec.source))] == [p.id for p in points]


def test_unquoted_dotted_keys_are_the_same_axes(tmp_path):
    quoted = load_sweep(
        write_sweep(tmp_path, '[sweep.grid]\n"dp.target_epsilon" = [4, inf]\n', name="quoted")
    )
    bare = load_sweep(
        write_sweep(tmp_path, "[sweep.grid]\ndp.target_epsilon = [4, inf]\n", name="bare")
    )
    assert list(bare.axes) == ["dp.target_epsilon"] == list(quoted.axes)
    assert [p.id for p in expand_points(bare)] == [p.id for p in expand_points(quoted)]
    assert expand_points(bare)[1].config.dp.target_epsilon == float("inf")


def test_invalid_axis_value_names_the_axis(tmp_path):
    path = write_sweep(tmp_path, '[sweep.grid]\n"dp.target_epsilon" = [4, -1]\n')
    with pytest.raises(SweepError, match=r"(?s)axis .dp.target_epsilon. value -1.*must be in"):
        load_sweep(path)
    path = write_sweep(tmp_path, '[sweep.grid]\n"dp.target_epsilonn" = [4]\n')
    with pytest.raises(SweepError, match="dp.target_epsilonn"):
        load_sweep(path)
    path = write_sweep(tmp_path, '[sweep.grid]\n"federation.algorithm" = ["fedavg", "nope"]\n')
    with pytest.raises(SweepError, match="federation.algorithm.*nope"):
        load_sweep(path)
    path = write_sweep(tmp_path, "[sweep.grid]\nseed = []\n")
    with pytest.raises(SweepError, match="non-empty"):
        load_sweep(path)


def test_algorithm_params_apply_to_the_points_of_their_algorithm(tmp_path):
    path = write_sweep(
        tmp_path,
        textwrap.dedent("""
        [sweep.algorithm_params.ditto]
        lambda = 0.5

        [sweep.grid]
        "federation.algorithm" = ["fedavg", "ditto"]
    """),
    )
    points = {p.config.federation.algorithm: p.config for p in expand_points(load_sweep(path))}
    assert dict(points["ditto"].federation.algorithm_params) == {"lambda": 0.5}
    assert dict(points["fedavg"].federation.algorithm_params) == {}
    bad = write_sweep(
        tmp_path,
        "[sweep.algorithm_params.ditto]\nmu = 0.5\n[sweep.grid]\nseed = [0]\n",
        name="bad",
    )
    with pytest.raises(SweepError, match=r"(?s)algorithm_params.ditto.*mu is not a parameter"):
        load_sweep(bad)


def _sweep_cmd(path: Path, out: Path, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "privfed.cli",
        "sweep",
        str(path),
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--quiet",
    ]


def test_sweep_killed_with_sigkill_resumes_to_the_same_results(tmp_path):
    path = write_sweep(tmp_path, KILL_GRID)
    out = tmp_path / "killed"
    spec = load_sweep(path)
    points = expand_points(spec)
    assert len(points) == 3
    dirs = [out / "points" / p.id for p in points]

    log = tmp_path / "first.log"
    with open(log, "w") as fh:  # a file, not a pipe: nothing can block on a leftover writer
        proc = subprocess.Popen(_sweep_cmd(path, out, 2), stdout=fh, stderr=subprocess.STDOUT)
    killed = False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        states = [point_status(d) for d in dirs]
        # kill once a point finished and the (slower) DP point has a checkpoint to resume from
        if "finished" in states and states[2] == "partial":
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    out_text = log.read_text()
    assert killed, f"sweep ended before it could be killed mid-way:\n{out_text}"
    assert proc.returncode == -signal.SIGKILL
    states = [point_status(d) for d in dirs]
    assert "finished" in states and states != ["finished"] * 3
    time.sleep(0.5)  # the orphaned workers die with their parent

    again = subprocess.run(_sweep_cmd(path, out, 1), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "to resume" in again.stdout and ", 0 to resume" not in again.stdout, again.stdout
    assert all(point_status(d) == "finished" for d in dirs)

    ref = tmp_path / "reference"
    result = run_sweep(spec, ref, workers=1, progress=False, echo=lambda _m: None)
    assert not result.failed and len(result.ran) == 3

    got = read_rows(out / "results.csv")
    want = read_rows(ref / "results.csv")
    assert len(got) == 3 * 5
    keys = [(r["point_id"], r["task"]) for r in got]
    assert len(set(keys)) == len(keys), "duplicate rows"
    assert strip_wall(got) == strip_wall(want)
    # the DP baseline really spent a finite epsilon and the non-private points report inf
    eps = {r["label"]: r["epsilon_max"] for r in got}
    assert eps["grid"] == "inf" and 0 < float(eps["dp"]) <= 50

    # a third run has nothing to do and leaves the table unchanged
    third = run_sweep(spec, out, workers=1, progress=False, echo=lambda _m: None)
    assert third.ran == () and len(third.skipped) == 3
    assert read_rows(out / "results.csv") == got


def test_sweep_cli_reports_bad_file_with_exit_2(tmp_path, capsys):
    from privfed.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text('[sweep]\nbase = "missing.toml"\n')
    assert main(["sweep", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "missing.toml" in err and "not found" in err


def test_results_and_report_show_epsilon_and_delta_of_every_guarantee(tmp_path):
    """Record-level and client-level (epsilon, delta) in separate columns and tables."""
    from privfed.evaluation.report import make_report

    spec = load_sweep(
        write_sweep(
            tmp_path,
            textwrap.dedent("""
        [sweep.grid]
        "dp.target_epsilon" = [50.0]
        seed = [0]

        [[sweep.baselines]]
        name = "client"
        "dp.target_epsilon" = inf
        "client_dp.mode" = "central"
        "client_dp.target_epsilon" = 20.0
        "client_dp.delta" = 0.02
        "rounds" = 1
    """),
        )
    )
    out = tmp_path / "out"
    result = run_sweep(spec, out, progress=False, echo=lambda m: None)
    assert not result.failed
    rows = read_rows(out / "results.csv")
    record = [r for r in rows if r["label"] == "grid"]
    client = [r for r in rows if r["label"] == "client"]
    assert record and client
    for r in record:
        assert r["delta"] == "1e-05" and float(r["epsilon_max"]) <= 50.0
        assert r["client_dp"] == "off" and r["client_epsilon"] == r["client_delta"] == ""
    for r in client:
        assert r["epsilon_max"] == "inf"  # no record-level guarantee on this point
        assert r["client_dp"] == "central" and r["client_delta"] == "0.02"
        assert float(r["client_target_epsilon"]) == 20.0 and 0 < float(r["client_epsilon"]) <= 20.0
        assert r["privacy_warnings"] == "1"  # delta * 6 clients = 0.12: warned, not refused
    md = make_report(out).markdown.read_text()
    assert "| target ε | δ | source |" in md
    assert "| mode | target ε | δ | ε guaranteed (max over points) |" in md
    assert "| central | 20 | 0.02 |" in md
    assert "**privacy warnings** in 1 point(s)" in md
    for r in record:
        assert r["privacy_warnings"] == "0"


def test_sweep_on_the_process_backend_gives_the_serial_results(tmp_path):
    """Points one at a time, each run on 2 worker processes: the same results.csv."""
    from privfed.backends import BackendOptions

    path = write_sweep(tmp_path, '[sweep.grid]\n"dp.target_epsilon" = [inf, 50.0]\n')
    spec = load_sweep(path)
    serial = run_sweep(spec, tmp_path / "s", workers=1, progress=False, echo=lambda _m: None)
    pool = run_sweep(
        spec,
        tmp_path / "p",
        workers=2,
        backend=BackendOptions(backend="process", workers=2),
        progress=False,
        echo=lambda _m: None,
    )
    assert not serial.failed and not pool.failed and len(pool.ran) == 2
    drop = {"run_dir", *VOLATILE_COLUMNS}
    rows = [
        [{k: v for k, v in r.items() if k not in drop} for r in read_rows(res.results_csv)]
        for res in (serial, pool)
    ]
    assert rows[0] == rows[1]
    with pytest.raises(SweepError, match="never starts more processes than --workers"):
        run_sweep(
            spec, tmp_path / "x", workers=1, backend=BackendOptions(backend="process", workers=2)
        )
