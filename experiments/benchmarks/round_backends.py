"""Quickstart wall and CPU time on each backend (serial, a process pool, local Ray).

    python experiments/benchmarks/round_backends.py --rounds 30 --workers 2

Runs the bundled quickstart once per backend into a temporary directory and prints, per backend,
the wall time of the run, the driver's CPU time, the CPU time of reaped worker processes (the
process backend's; Ray's actors are not the driver's children) and the clients' summed compute
seconds from ``costs.jsonl``; then the wall-time ratio to serial. Checks that every backend wrote
the same ``metrics.jsonl``. Wall times mean something only on an otherwise idle machine: report
the CPU figures next to them and name the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path


def run(backend: str, workers: int, rounds: int, out: Path) -> dict[str, float]:
    """One quickstart run on ``backend``; its wall and CPU figures."""
    from privfed.backends import BackendOptions
    from privfed.cli import _quickstart_path
    from privfed.config import load_config, with_overrides
    from privfed.engine import run_experiment

    cfg = with_overrides(load_config(_quickstart_path()), {"rounds": rounds})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0, c0 = time.perf_counter(), time.process_time()
    run_experiment(
        cfg,
        out,
        progress=False,
        echo=lambda _m: None,
        backend=BackendOptions(backend=backend, workers=workers if backend != "serial" else 0),
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rows = [json.loads(line) for line in (out / "costs.jsonl").read_text().splitlines()]
    return {
        "wall_s": wall,
        "driver_cpu_s": cpu,
        "children_cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "client_compute_s": sum(r["compute_seconds"] for r in rows),
    }


def main() -> None:
    """Run the quickstart on every backend and print the comparison."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--backends", default="serial,process,ray")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, dict[str, float]] = {}
        metrics: dict[str, str] = {}
        for name in args.backends.split(","):
            out = Path(tmp) / name
            results[name] = run(name, args.workers, args.rounds, out)
            metrics[name] = (out / "metrics.jsonl").read_text()
        serial = results.get("serial", {}).get("wall_s")
        for name, r in results.items():
            ratio = f", {r['wall_s'] / serial:.2f}x serial wall" if serial else ""
            print(
                f"{name:8} wall {r['wall_s']:7.1f} s  driver CPU {r['driver_cpu_s']:6.1f} s  "
                f"workers' CPU {r['children_cpu_s']:6.1f} s  clients' compute "
                f"{r['client_compute_s']:6.1f} s{ratio}"
            )
        same = len(set(metrics.values())) == 1
        print(f"metrics.jsonl identical on every backend: {same}")


if __name__ == "__main__":
    main()
