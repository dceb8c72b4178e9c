"""``privfed bench round``: one workload on the serial, process and Ray backends, in one run.

Every (workload, backend) pair runs in a fresh Python process (so its start-up and peak
memory are its own) that builds the engine, starts the backend and plays rounds: plan ->
participate -> secure or plain sum -> apply, exactly as ``privfed run`` does, without the
evaluation and checkpoint that ``privfed run`` adds every round. It reports:

* ``startup_s``: from launching the process to the backend ready for the first round
  (imports, federation and server set-up, worker start), and its parts;
* ``round_s``: wall time of each round; the first ``--warmup`` rounds (trainers built, caches
  filled) are reported apart, the rest are the steady state (median and mean);
* ``participations_per_s``: client participations per steady-state wall second;
* ``cpu_s``: CPU seconds of the steady rounds, driver and workers (on a machine shared with
  other work, CPU time is the steadier figure; wall time is what a user waits);
* ``driver_peak_rss`` and ``worker_peak_rss`` (bytes, ``VmHWM``), and the driver's resident
  size after each round (``driver_rss``), to see whether memory is flat across rounds;
* ``speedup``: the serial backend's steady round over this backend's, measured in the same
  invocation;
* ``model_sha256``: the global model after the last round -- the same on every backend, or
  the benchmark says so and exits with status 1.

``--parts end-to-end`` times whole ``privfed run`` invocations (start-up, evaluation and
checkpoints included) and checks that ``metrics.jsonl`` and ``privacy.json`` are identical.

``--parts scale`` runs the scale point: a population of 10,000 clients, 1,000 per round, under
secure aggregation on the sparse (Harary) graph, with a small model and few local steps (see
:func:`scale_workload`), printing the time and the driver's resident memory after each round.

The report records the CPU model, core count, load average before and after, package
versions and the privfed commit, and is written as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "WORKLOADS",
    "machine_info",
    "main",
    "scale_workload",
    "workload",
]

#: Backends benchmarked by default, in this order (serial first: it is the baseline).
BACKENDS = ("serial", "process", "ray")


def _no_dp(name: str, group: str, spec: dict[str, Any], *, clients: int) -> dict[str, Any]:
    """A peers' workload: FedAvg, plain sum, no DP, 10% of the clients per round.

    Every participation takes 10 local SGD steps of batch 16 at learning rate 0.1.
    """
    return {
        "name": name,
        "seed": 0,
        "rounds": 12,
        "groups": {group: spec},
        "federation": {
            "num_clients": clients,
            "cohort_fraction": 0.1,
            "algorithm": "fedavg",
            "aggregator": "plain",
        },
        "train": {"local_steps": 10, "batch_size": 16, "lr": 0.1},
        "dp": {"target_epsilon": float("inf")},
        "eval": {"every": 12},
    }


def _digits() -> dict[str, Any]:
    """The peers' digits workload: MLP (64 hidden), 100 clients, 10 per round, 10 local steps."""
    spec = {
        "source": "digits",
        "tasks": ["identity"],
        "hidden": [64],
        "partition": {"kind": "dirichlet", "alpha": 1.0},
    }
    return _no_dp("bench-digits", "digits", spec, clients=100)


def _synthetic() -> dict[str, Any]:
    """The peers' synthetic workload: FedProx Synthetic(1, 1), 1,000 clients, 100 per round."""
    spec = {
        "source": "synthetic",
        "source_params": {"alpha": 1.0, "beta": 1.0, "num_owners": 1000},
        "tasks": ["label"],
        "hidden": [],
        "partition": {"kind": "natural"},
    }
    return _no_dp("bench-synthetic", "synthetic", spec, clients=1000)


def scale_workload(*, clients: int = 10_000, per_round: int = 1_000) -> dict[str, Any]:
    """The scale point: ``clients`` in the population, ``per_round`` of them each round.

    FedProx Synthetic(1, 1) with 20 records per client, a linear model (60 x 10), 2 local
    DP-SGD steps of expected batch 10 per participation (record-level DP, epsilon 8), secure
    aggregation on the Harary graph (SecAgg+, degree ``2 * ceil(log2 n)``): small enough that
    1,000 participations a round fit a 2-core machine, and every piece that costs memory per
    client is there (a trainer with Opacus state per participant, a ledger per client, a
    protocol state per cohort member).
    """
    return {
        "name": "bench-scale",
        "seed": 0,
        "rounds": 10,
        "groups": {
            "synthetic": {
                "source": "synthetic",
                "source_params": {
                    "alpha": 1.0,
                    "beta": 1.0,
                    "num_owners": clients,
                    "samples_per_owner": 20,
                },
                "tasks": ["label"],
                "hidden": [],
                "partition": {"kind": "natural"},
            }
        },
        "federation": {
            "num_clients": clients,
            "cohort_fraction": per_round / clients,
            "algorithm": "fedavg",
            "aggregator": "secagg",
        },
        "train": {"local_steps": 2, "batch_size": 10, "lr": 0.1},
        "dp": {"target_epsilon": 8.0, "delta": 1e-4, "planned_participation": 0.1},
        "secagg": {"graph": "harary"},
        "eval": {"every": 10},
    }


#: Built-in workloads: name -> (config dict factory, one-line description).
WORKLOADS: dict[str, tuple[Any, str]] = {
    "quickstart": (
        None,
        "the bundled quickstart: 20 clients (all per round), 3 units, DP-SGD, secure aggregation",
    ),
    "digits": (_digits, "digits MLP 64 hidden, 100 clients, 10 per round, 10 steps, no DP"),
    "synthetic": (
        _synthetic,
        "FedProx Synthetic(1,1) linear, 1,000 clients, 100 per round, 10 steps, no DP",
    ),
    "scale": (
        scale_workload,
        "10,000 clients, 1,000 per round, DP-SGD, SecAgg+ (Harary), linear, 2 steps",
    ),
}


def workload(name: str) -> Any:
    """The :class:`~privfed.config.ExperimentConfig` of a built-in workload or a TOML file."""
    from privfed.config import from_dict, load_config

    if name == "quickstart":
        from importlib import resources

        return load_config(Path(str(resources.files("privfed") / "configs" / "quickstart.toml")))
    if name in WORKLOADS:
        return from_dict(WORKLOADS[name][0]())
    path = Path(name)
    if path.suffix == ".toml" and path.exists():
        return load_config(path)
    from privfed.errors import PrivfedError

    raise PrivfedError(
        f"--workloads: {name!r} is neither a built-in workload ({', '.join(WORKLOADS)}) nor an "
        "existing .toml config file"
    )


# ---------------------------------------------------------------------------- measurements
def _status_bytes(pid: int | str, key: str) -> int:
    """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``) in bytes; 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (``/proc/PID/stat``); 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def peak_rss() -> int:
    """This process's peak resident set size in bytes."""
    hwm = _status_bytes("self", "VmHWM")
    if hwm:
        return hwm
    import resource

    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def current_rss() -> int:
    """This process's resident set size now, in bytes (0 where ``/proc`` is missing)."""
    return _status_bytes("self", "VmRSS")


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, load, versions and the privfed commit."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from privfed.repro import git_commit, package_versions

    versions = package_versions()
    try:
        from importlib import metadata

        versions["ray"] = metadata.version("ray")
    except Exception:  # not installed
        versions["ray"] = "not installed"
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": _status_bytes_meminfo(),
        "loadavg": load,
        "versions": versions,
        "git": dict(git_commit()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _status_bytes_meminfo() -> int:
    try:
        with open("/proc/meminfo") as fh:
            return int(fh.readline().split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        return 0


# ---------------------------------------------------------------------------- one child
def _worker_pids(backend: Any) -> list[int]:
    """The process ids of a started backend's workers (the driver's own for serial)."""
    from privfed.wire import pack, unpack

    if backend.name == "serial":
        return []
    replies = backend._call({w: pack({"op": "ping"}) for w in range(backend.workers)})
    return [int(unpack(raw)["pid"]) for _, raw in sorted(replies.items())]


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Play ``spec["rounds"]`` rounds of a workload on one backend; the measurements."""
    t_launch = float(spec["launched_at"])
    t0 = time.perf_counter()
    from privfed.backends import BackendOptions
    from privfed.engine import Engine
    from privfed.server import model_hash

    t_import = time.perf_counter() - t0
    cfg = workload(spec["workload"])
    if spec["workload"] == "scale" and "scale" in spec:
        from privfed.config import from_dict

        cfg = from_dict(scale_workload(**spec["scale"]))
    options = BackendOptions(
        backend=spec["backend"],
        workers=int(spec["workers"]) if spec["backend"] != "serial" else 0,
        start_method=spec.get("start_method", ""),
    )
    out: dict[str, Any] = {"workload": spec["workload"], "backend": spec["backend"]}
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        engine = Engine(
            cfg, Path(tmp) / "run", progress=False, echo=lambda _m: None, backend=options
        )
        state = engine.fresh_state()
        t_setup = time.perf_counter() - t1
        with engine:
            t2 = time.perf_counter()
            backend = engine.backend
            t_backend = time.perf_counter() - t2
            ready = time.time()
            pids = _worker_pids(backend)
            rounds: list[dict[str, Any]] = []
            for r in range(int(spec["rounds"])):
                cpu0 = time.process_time() + sum(_cpu_seconds(p) for p in pids)
                w0 = time.perf_counter()
                record = engine.run_round(r, state)
                wall = time.perf_counter() - w0
                cpu = time.process_time() + sum(_cpu_seconds(p) for p in pids) - cpu0
                rounds.append(
                    {
                        "round": r,
                        "wall_s": wall,
                        "cpu_s": cpu,
                        "participations": len(record.costs) or len(record.cohort),
                        "included": len(record.included),
                        "aborted": record.aborted,
                        "driver_rss": current_rss(),
                    }
                )
                if spec.get("echo"):
                    print(
                        f"  round {r + 1:>3}: {wall:7.3f} s wall, {cpu:7.3f} s CPU, "
                        f"{rounds[-1]['participations']} participations, driver RSS "
                        f"{rounds[-1]['driver_rss'] / 2**20:7.1f} MiB",
                        file=sys.stderr,
                        flush=True,
                    )
            out.update(
                {
                    "workers": backend.workers,
                    "startup_s": ready - t_launch,
                    "import_s": t_import,
                    "setup_s": t_setup,
                    "backend_start_s": t_backend,
                    "rounds": rounds,
                    "driver_peak_rss": peak_rss(),
                    "worker_peak_rss": [_status_bytes(p, "VmHWM") for p in pids],
                    "model_sha256": model_hash(state.globals).hex(),
                }
            )
    return out


# ---------------------------------------------------------------------------- summaries
def summarize(result: dict[str, Any], *, warmup: int) -> dict[str, Any]:
    """Steady-state figures of one child's measurements."""
    steady = result["rounds"][warmup:] or result["rounds"]
    walls = [r["wall_s"] for r in steady]
    parts = sum(r["participations"] for r in steady)
    return {
        "steady_rounds": len(steady),
        "round_s_median": statistics.median(walls),
        "round_s_mean": statistics.fmean(walls),
        "warmup_round_s": [r["wall_s"] for r in result["rounds"][:warmup]],
        "cpu_s_per_round": statistics.fmean(r["cpu_s"] for r in steady),
        "participations_per_s": parts / sum(walls) if sum(walls) > 0 else 0.0,
        "driver_rss_first": result["rounds"][0]["driver_rss"],
        "driver_rss_last": result["rounds"][-1]["driver_rss"],
    }


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def _launch(spec: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Run one child process (``python -m privfed.bench_round --child SPEC``)."""
    spec = dict(spec, launched_at=time.time())
    proc = subprocess.run(
        [sys.executable, "-m", "privfed.bench_round", "--child", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=None if spec.get("echo") else subprocess.PIPE,
        text=True,
        timeout=timeout,
        env=_child_env(),
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr or "").strip().splitlines()[-12:]
        return {"error": f"exit code {proc.returncode}: " + " | ".join(err)}
    return dict(json.loads(lines[-1]))


def _child_env() -> dict[str, str]:
    """The environment of a child: this one, with privfed's own source first on the path."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def bench_rounds(args: argparse.Namespace) -> dict[str, Any]:
    """Every workload on every backend; speed-ups against serial in the same invocation."""
    report: dict[str, Any] = {"kind": "rounds", "warmup": args.warmup, "workloads": {}}
    for name in args.workloads:
        print(f"\n== {name}: {_describe(name)}")
        print(
            f"{'backend':<10}{'workers':>8}{'start-up':>10}{'round (median)':>16}{'mean':>9}"
            f"{'CPU/round':>11}{'part./s':>9}{'speed-up':>10}{'driver peak':>13}"
            f"{'worker peak':>13}"
        )
        rows: dict[str, Any] = {}
        for backend in args.backends:
            spec = {
                "workload": name,
                "backend": backend,
                "workers": args.workers,
                "rounds": args.warmup + args.rounds,
                "start_method": args.start_method,
            }
            res = _launch(spec, timeout=args.timeout)
            if "error" in res:
                print(f"{backend:<10} FAILED: {res['error']}")
                rows[backend] = res
                continue
            res["summary"] = summarize(res, warmup=args.warmup)
            rows[backend] = res
            base = rows.get("serial", {}).get("summary")
            s = res["summary"]
            speed = base["round_s_median"] / s["round_s_median"] if base else float("nan")
            s["speedup_vs_serial"] = speed
            wpeak = max(res["worker_peak_rss"], default=0)
            print(
                f"{backend:<10}{res['workers']:>8}{res['startup_s']:>9.2f}s"
                f"{s['round_s_median']:>15.4f}s{s['round_s_mean']:>8.4f}s"
                f"{s['cpu_s_per_round']:>10.4f}s{s['participations_per_s']:>9.0f}"
                f"{speed:>9.2f}x{_mib(res['driver_peak_rss']):>13}"
                f"{_mib(wpeak) if wpeak else '-':>13}"
            )
        hashes = {b: r["model_sha256"] for b, r in rows.items() if "model_sha256" in r}
        same = len(set(hashes.values())) <= 1
        print(f"final global model identical on {', '.join(hashes)}: {'yes' if same else 'NO'}")
        report["workloads"][name] = {"backends": rows, "identical": same}
    return report


def _describe(name: str) -> str:
    return WORKLOADS[name][1] if name in WORKLOADS else name


def bench_end_to_end(args: argparse.Namespace) -> dict[str, Any]:
    """Whole ``privfed run`` invocations per backend (quickstart by default)."""
    report: dict[str, Any] = {"kind": "end_to_end", "runs": {}}
    config = args.config
    print(f"\n== privfed run {config or '(quickstart)'}, end to end")
    print(f"{'backend':<10}{'workers':>8}{'wall':>10}{'CPU':>10}{'vs serial':>11}{'peak RSS':>11}")
    outputs: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            out = Path(tmp) / backend
            cmd = [sys.executable, "-m", "privfed.cli", "run", "--quiet", "--out", str(out)]
            if config:
                cmd.insert(4, config)
            cmd += ["--backend", backend]  # explicit: privfed run's default is process
            if backend != "serial":
                cmd += ["--workers", str(args.workers)]
            before = os.times()
            t0 = time.perf_counter()
            proc = subprocess.run(
                ["/usr/bin/time", "-f", "%M", *cmd] if Path("/usr/bin/time").exists() else cmd,
                capture_output=True,
                text=True,
                timeout=args.timeout,
                env=_child_env(),
            )
            wall = time.perf_counter() - t0
            after = os.times()
            if proc.returncode != 0:
                tail = " | ".join(proc.stderr.strip().splitlines()[-8:])
                print(f"{backend:<10} FAILED (exit {proc.returncode}): {tail}")
                report["runs"][backend] = {"error": tail}
                continue
            cpu = (after.children_user - before.children_user) + (
                after.children_system - before.children_system
            )
            peak = 0
            last = proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else []
            if last and last[0].isdigit():
                peak = int(last[0]) * 1024
            base = wall if backend == "serial" else report["runs"].get("serial", {}).get("wall_s")
            ratio = wall / base if base else float("nan")
            report["runs"][backend] = {
                "wall_s": wall,
                "cpu_s": cpu,
                "ratio_vs_serial": ratio,
                "peak_rss_largest_process": peak,
                "workers": 1 if backend == "serial" else args.workers,
            }
            outputs[backend] = out
            print(
                f"{backend:<10}{report['runs'][backend]['workers']:>8}{wall:>9.2f}s{cpu:>9.2f}s"
                f"{ratio:>10.2f}x{_mib(peak) if peak else '-':>11}"
            )
        same = _same_outputs(outputs)
    report["identical"] = same
    print(f"metrics.jsonl and privacy.json identical on {', '.join(outputs)}: {same}")
    runs = report["runs"]
    if (
        "process" in runs
        and "ray" in runs
        and "wall_s" in runs["process"]
        and "wall_s" in runs["ray"]
    ):
        print(f"ray / process wall time: {runs['ray']['wall_s'] / runs['process']['wall_s']:.2f}x")
    return report


def _same_outputs(outputs: dict[str, Path]) -> bool:
    texts = [
        tuple((d / f).read_bytes() for f in ("metrics.jsonl", "privacy.json"))
        for d in outputs.values()
    ]
    return all(t == texts[0] for t in texts)


def bench_scale(args: argparse.Namespace) -> dict[str, Any]:
    """The scale point on one backend, with per-round time and driver memory."""
    print(
        f"\n== scale point: {args.scale_clients:,} clients, {args.scale_per_round:,} per round, "
        "DP-SGD, SecAgg+ (Harary), linear, 2 steps"
    )
    print(f"   backend {args.scale_backend}, {args.workers} workers, {args.scale_rounds} rounds")
    spec = {
        "workload": "scale",
        "backend": args.scale_backend,
        "workers": args.workers,
        "rounds": args.scale_rounds,
        "echo": True,
        "start_method": args.start_method,
        "scale": {"clients": args.scale_clients, "per_round": args.scale_per_round},
    }
    res = _launch(spec, timeout=args.timeout)
    if "error" in res:
        print(f"scale point FAILED: {res['error']}")
        return {"kind": "scale", "error": res["error"]}
    rss = [r["driver_rss"] for r in res["rounds"]]
    walls = [r["wall_s"] for r in res["rounds"]]
    growth = rss[-1] - rss[1] if len(rss) > 1 else 0
    limit = 4 * 2**30
    flat = rss_window(rss)
    res["summary"] = {
        "round_s_median": statistics.median(walls),
        "round_s": walls,
        "driver_rss": rss,
        "driver_peak_rss": res["driver_peak_rss"],
        "rss_growth_after_round_2": growth,
        "within_4gib": res["driver_peak_rss"] <= limit,
        "rss_last_rounds": flat,
    }
    print(
        f"start-up {res['startup_s']:.1f} s; median round {statistics.median(walls):.2f} s; "
        f"driver peak RSS {_mib(res['driver_peak_rss'])} "
        f"({'within' if res['driver_peak_rss'] <= limit else 'ABOVE'} 4 GiB); driver RSS "
        f"after round 2 -> last: {_mib(rss[1] if len(rss) > 1 else rss[0])} -> {_mib(rss[-1])} "
        f"({growth / 2**20:+.1f} MiB); worker peaks "
        f"{', '.join(_mib(x) for x in res['worker_peak_rss']) or '-'}"
    )
    if flat:
        print(
            f"driver RSS over rounds {flat['first_round']}-{flat['last_round']}: "
            f"{_mib(flat['min'])} to {_mib(flat['max'])}, fitted slope "
            f"{flat['slope_per_round'] / 2**20:+.2f} MiB/round: "
            f"{'flat' if flat['flat'] else 'GROWING'} (flat: the fitted growth over the window "
            f"is below {FLAT_FRACTION:.0%} of the mean RSS)"
        )
    return {"kind": "scale", **res}


#: A window of rounds is flat when the RSS growth fitted across it is below this fraction of
#: the mean RSS (noise from the allocator and the round's cohort is a few MiB either way).
FLAT_FRACTION = 0.02


def rss_window(rss: list[int], window: int = 10) -> dict[str, Any] | None:
    """The driver RSS over the last ``window`` rounds: range, least-squares slope, flat or not.

    The first rounds grow by design (every client seen for the first time gets a privacy
    ledger; the population is covered after a few dozen rounds), so flatness is judged on the
    last ``window`` rounds of a run at least twice that long; None for shorter runs.
    """
    if len(rss) < 2 * window:
        return None
    ys = rss[-window:]
    slope = statistics.linear_regression(range(window), ys).slope
    return {
        "first_round": len(rss) - window + 1,
        "last_round": len(rss),
        "min": min(ys),
        "max": max(ys),
        "slope_per_round": slope,
        "flat": abs(slope) * (window - 1) < FLAT_FRACTION * statistics.fmean(ys),
    }


# ---------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``privfed bench round``."""
    p = argparse.ArgumentParser(
        prog="privfed bench round",
        description="Round time, throughput, start-up and memory of one workload on the "
        "serial, process and Ray backends, measured in one invocation.",
    )
    p.add_argument(
        "--workloads",
        default="quickstart,digits,synthetic",
        help=f"comma-separated built-in workloads ({', '.join(WORKLOADS)}) or .toml configs",
    )
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated backends")
    p.add_argument("--workers", type=int, default=2, help="workers of process and ray")
    p.add_argument("--rounds", type=int, default=10, help="steady-state rounds measured")
    p.add_argument("--warmup", type=int, default=2, help="rounds played before measuring")
    p.add_argument(
        "--start-method",
        default="",
        choices=["", "fork", "forkserver", "spawn"],
        help="how the process backend starts workers (default: fork on Linux)",
    )
    p.add_argument(
        "--parts",
        default="rounds",
        help="comma-separated: rounds (steady rounds per backend), end-to-end (whole privfed "
        "run calls per backend), scale (the 10,000-client scale point)",
    )
    p.add_argument("--config", default="", help="end-to-end: config (default: quickstart)")
    p.add_argument("--scale-rounds", type=int, default=20)
    p.add_argument("--scale-clients", type=int, default=10_000, help="scale: population")
    p.add_argument("--scale-per-round", type=int, default=1_000, help="scale: clients per round")
    p.add_argument("--scale-backend", default="process", choices=list(BACKENDS))
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per child process")
    p.add_argument("--json", default="", help="write the full report to this JSON file")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``privfed bench round``; 1 if backends disagree or a run failed."""
    args = build_parser().parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))), flush=True)
        return 0
    args.workloads = [w for w in args.workloads.split(",") if w]
    parts = {x for x in args.parts.split(",") if x}
    if not parts or parts - {"rounds", "end-to-end", "scale"}:
        from privfed.errors import PrivfedError

        raise PrivfedError(f"--parts takes rounds, end-to-end and scale, got {args.parts!r}")
    args.backends = [b for b in args.backends.split(",") if b]
    bad = [b for b in args.backends if b not in BACKENDS]
    if bad or args.workers < 1 or args.rounds < 1 or args.warmup < 0:
        from privfed.errors import PrivfedError

        raise PrivfedError(
            f"--backends takes {', '.join(BACKENDS)} (got {', '.join(bad) or 'those'}); "
            "--workers and --rounds must be >= 1 and --warmup >= 0"
        )
    for name in args.workloads:
        workload(name)  # a bad name fails before anything runs
    info = machine_info()
    print(
        f"privfed bench round: {info['cpu']}, {info['usable_cores']} cores, load "
        f"{' '.join(f'{x:.2f}' for x in info['loadavg'])}; commit "
        f"{str(info['git'].get('commit', 'unknown'))[:12]}"
        f"{' (uncommitted changes)' if info['git'].get('dirty') else ''}; torch "
        f"{info['versions'].get('torch')}, opacus {info['versions'].get('opacus')}, ray "
        f"{info['versions'].get('ray')}"
    )
    report: dict[str, Any] = {"machine": info, "parts": []}
    ok = True
    if "rounds" in parts:
        part = bench_rounds(args)
        report["parts"].append(part)
        ok &= all(w["identical"] for w in part["workloads"].values())
        ok &= all(
            "error" not in r for w in part["workloads"].values() for r in w["backends"].values()
        )
    if "end-to-end" in parts:
        e2e = bench_end_to_end(args)
        report["parts"].append(e2e)
        ok &= bool(e2e["identical"]) and all("error" not in r for r in e2e["runs"].values())
    if "scale" in parts:
        scale = bench_scale(args)
        report["parts"].append(scale)
        ok &= "error" not in scale
    try:
        report["machine"]["loadavg_after"] = list(os.getloadavg())
    except OSError:
        pass
    if args.json:
        from privfed.io import atomic_write_json

        atomic_write_json(Path(args.json), report)
        print(f"\nreport written to {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
