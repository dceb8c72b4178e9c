"""Same-workload comparison of privfed with pfl-research 0.6 and Flower 1.42 (simulation).

Run with privfed's own environment (``. /work/venv/bin/activate``)::

    python experiments/benchmarks/peers/peers.py [--venv-dir /tmp/privfed-peers] [--rounds 12]

What it does, top to bottom:

1. creates one virtual environment per peer under ``--venv-dir`` (unless it exists) and installs
   the peer from the package registry: ``torch==2.13.0`` first (the CPU wheel on this machine),
   then ``pfl==0.6.*`` or ``flwr[simulation]==1.42.*``; records the installed versions. A peer
   that cannot be installed is reported with pip's own error and skipped. No peer code is kept
   in this repository: the scripts only install and drive the peers.
2. exports each workload's client training records from privfed's federation (so every
   framework trains on exactly the same clients' data) to ``--venv-dir/WORKLOAD.npz``;
3. runs privfed through ``privfed bench round``'s child (serial = one worker, and the process
   backend with ``--workers`` workers), then each peer's driver script
   (``drive_pfl.py``, ``drive_flwr.py``) with that peer's Python;
4. prints, per workload and framework: start-up (launch to first round), the steady round's
   median wall time (after ``--warmup`` rounds), and peak memory (all processes of the run);
   and writes everything to ``--json``.

Workloads (``privfed bench round`` defines them; see ``privfed/bench_round.py``):

* ``digits``: scikit-learn digits, an MLP 64-64-10, 100 clients (Dirichlet alpha 1), a cohort of
  ~10 per round, 10 local SGD steps of batch 16, lr 0.1, FedAvg, no DP;
* ``synthetic``: FedProx Synthetic(1, 1), a linear model 60-10, 1,000 clients, ~100 per round,
  10 local steps of batch 16, lr 0.1, FedAvg, no DP.

privfed samples its cohort by Poisson sampling (10 on average); the peers take exactly 10 (100).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

PEERS = {
    "pfl": {"packages": ["pfl==0.6.*"], "dist": "pfl", "driver": "drive_pfl.py"},
    "flwr": {
        "packages": ["flwr[simulation]==1.42.*"],
        "dist": "flwr",
        "driver": "drive_flwr.py",
    },
}
TORCH = "torch==2.13.0"


def sh(cmd: list[str], *, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def ensure_venv(name: str, venv_dir: Path) -> dict[str, Any]:
    """Create the peer's venv and install it; its versions, or why it could not be installed."""
    venv = venv_dir / name
    py = venv / "bin" / "python"
    spec = PEERS[name]
    if not py.exists():
        print(f"[{name}] creating {venv}", flush=True)
        made = sh([sys.executable, "-m", "venv", str(venv)])
        if made.returncode != 0:
            return {"error": f"python -m venv failed: {made.stderr.strip()[-500:]}"}
    for pkgs in ([TORCH], spec["packages"]):
        if sh([str(py), "-m", "pip", "show", pkgs[0].split("[")[0].split("=")[0]]).returncode == 0:
            continue  # installed by an earlier run (the versions are recorded below)
        print(f"[{name}] pip install {' '.join(pkgs)}", flush=True)
        inst = sh([str(py), "-m", "pip", "install", "-q", *pkgs])
        if inst.returncode != 0:
            lines = [ln for ln in inst.stderr.splitlines() if "ignored: it is neither" not in ln]
            return {"error": f"pip install {' '.join(pkgs)} failed: " + " | ".join(lines[-6:])}
    versions = {}
    for dist in (spec["dist"], "torch", "numpy", "ray"):
        out = sh(
            [str(py), "-c", f"from importlib import metadata; print(metadata.version({dist!r}))"]
        )
        versions[dist] = out.stdout.strip() if out.returncode == 0 else "not installed"
    return {"python": str(py), "versions": versions}


def export(workload: str, path: Path) -> dict[str, Any]:
    """Write the workload's clients' training records and training settings to ``path``."""
    import numpy as np

    from privfed.bench_round import workload as load_workload
    from privfed.federation import Federation

    cfg = load_workload(workload)
    fed = Federation(cfg)
    (group,) = fed.groups
    unit = fed.units[0]
    xs, ys, offsets = [], [], [0]
    task = unit.tasks[0]
    for c in range(cfg.federation.num_clients):
        if c in fed.groups[group].clients:
            x, yd = fed.tensors(group, "train", c)
            xs.append(x.numpy().reshape(len(x), -1))
            ys.append(yd[task].numpy())
        offsets.append(offsets[-1] + (len(xs[-1]) if c in fed.groups[group].clients else 0))
    cohort = round(cfg.federation.num_clients * cfg.federation.cohort_fraction)
    np.savez(
        path,
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        offsets=np.asarray(offsets),
        hidden=np.asarray(unit.hidden, dtype=np.int64),
        classes=unit.heads[task],
        local_steps=cfg.train.local_steps,
        batch_size=cfg.train.batch_size,
        lr=cfg.train.lr,
        cohort=cohort,
    )
    return {"clients": cfg.federation.num_clients, "cohort": cohort, "records": offsets[-1]}


def run_privfed(
    workload: str, backend: str, workers: int, rounds: int, warmup: int
) -> dict[str, Any]:
    from privfed.bench_round import _launch, summarize

    res = _launch(
        {"workload": workload, "backend": backend, "workers": workers, "rounds": rounds},
        timeout=3600,
    )
    if "error" in res:
        return res
    s = summarize(res, warmup=warmup)
    peak = res["driver_peak_rss"] + sum(res["worker_peak_rss"])
    return {
        "framework": "privfed",
        "backend": backend,
        "workers": res["workers"],
        "startup_s": res["startup_s"],
        "round_s": [r["wall_s"] for r in res["rounds"]],
        "round_s_median": s["round_s_median"],
        "cpu_s_per_round": s["cpu_s_per_round"],
        "participations_per_round": statistics.fmean(
            r["participations"] for r in res["rounds"][warmup:] or res["rounds"]
        ),
        "peak_rss": peak,
        "processes": 1 + len(res["worker_peak_rss"]),
    }


def run_peer(
    name: str, env: dict[str, Any], data: Path, rounds: int, warmup: int
) -> dict[str, Any]:
    cmd = [env["python"], str(HERE / PEERS[name]["driver"]), str(data), "--rounds", str(rounds)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=3600, env=_peer_env(), cwd=HERE
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-8:])
        return {"error": f"exit {proc.returncode}: {tail}"}
    res = dict(json.loads(lines[-1]))
    res["round_s_median"] = statistics.median(res["round_s"][warmup:] or res["round_s"])
    if res.get("cpu_s"):
        res["cpu_s_per_round"] = statistics.fmean(res["cpu_s"][warmup:] or res["cpu_s"])
    return res


def _per_part(r: dict[str, Any]) -> str:
    """Steady wall seconds per participation, in milliseconds (privfed's cohort varies)."""
    parts = r.get("participations_per_round")
    return f"{1000 * r['round_s_median'] / parts:.2f}ms" if parts else "-"


def _cpu(r: dict[str, Any]) -> str:
    return f"{r['cpu_s_per_round']:.4f}s" if "cpu_s_per_round" in r else "-"


def _peer_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    # The drivers import exported.py from this directory (also in Ray's worker processes).
    env["PYTHONPATH"] = str(HERE)
    return env


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--venv-dir", default="/tmp/privfed-peers", help="where the peers' venvs go")
    p.add_argument("--workloads", default="digits,synthetic")
    p.add_argument("--peers", default="pfl,flwr")
    p.add_argument("--rounds", type=int, default=12, help="rounds per run (warm-up included)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="privfed process-backend workers")
    p.add_argument("--json", default="", help="write the report here")
    args = p.parse_args()
    venv_dir = Path(args.venv_dir)
    venv_dir.mkdir(parents=True, exist_ok=True)
    from privfed.bench_round import machine_info

    info = machine_info()
    print(f"machine: {info['cpu']}, {info['usable_cores']} cores, load {info['loadavg']}")
    envs = {name: ensure_venv(name, venv_dir) for name in args.peers.split(",") if name}
    for name, env in envs.items():
        if "error" in env:
            print(f"[{name}] NOT INSTALLED: {env['error']}")
        else:
            print(f"[{name}] versions: {env['versions']}")
    report: dict[str, Any] = {"machine": info, "peers": envs, "workloads": {}}
    for workload in args.workloads.split(","):
        data = venv_dir / f"{workload}.npz"
        shape = export(workload, data)
        print(
            f"\n== {workload}: {shape['clients']} clients, {shape['cohort']} per round, "
            f"{shape['records']} training records"
        )
        rows = {
            "privfed (1 worker, serial)": run_privfed(
                workload, "serial", 1, args.rounds, args.warmup
            ),
            f"privfed ({args.workers} workers, process)": run_privfed(
                workload, "process", args.workers, args.rounds, args.warmup
            ),
        }
        for name, env in envs.items():
            rows[f"{name} {env.get('versions', {}).get(PEERS[name]['dist'], '')}"] = (
                {"error": f"not installed: {env['error']}"}
                if "error" in env
                else run_peer(name, env, data, args.rounds, args.warmup)
            )
        print(
            f"{'framework':<32}{'start-up':>10}{'1st round':>11}{'steady round':>14}"
            f"{'per part.':>11}{'CPU/round':>11}{'peak memory':>13}{'procs':>7}"
        )
        for label, r in rows.items():
            if "error" in r:
                print(f"{label:<32} FAILED: {r['error']}")
                continue
            print(
                f"{label:<32}{r['startup_s']:>9.2f}s{r['round_s'][0]:>10.2f}s"
                f"{r['round_s_median']:>13.4f}s{_per_part(r):>11}"
                f"{_cpu(r):>11}{r['peak_rss'] / 2**20:>9.0f} MiB{r['processes']:>7}"
            )
        base = rows.get("pfl " + envs.get("pfl", {}).get("versions", {}).get("pfl", ""), {})
        if "round_s_median" in base:
            for label, r in rows.items():
                if label.startswith("privfed") and "round_s_median" in r:
                    print(
                        f"  {label}: {base['round_s_median'] / r['round_s_median']:.2f}x "
                        "pfl's speed (steady round)"
                    )
        report["workloads"][workload] = {"shape": shape, "runs": rows}
    report["machine"]["loadavg_after"] = list(os.getloadavg())
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nreport written to {args.json}")
    return 0


if __name__ == "__main__":
    t0 = time.time()
    code = main()
    print(f"(peers benchmark took {time.time() - t0:.0f} s)")
    sys.exit(code)
