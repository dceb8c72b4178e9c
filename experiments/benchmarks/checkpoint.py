"""CPU cost of the pickle-free checkpoint against torch.save / torch.load on the same tree.

    python experiments/benchmarks/checkpoint.py [--params 1000000] [--personal 100] [--repeat 5]

The tree imitates a run state: one global vector of ``--params`` float32, ``--personal``
personal vectors of the same size, and a ledger-like list of small dicts. Prints the median CPU
seconds (``time.process_time``) of writing and reading each way, and their ratios, measured in
the same process. ``torch.load`` runs with ``weights_only=False`` (what privfed used to do);
it is timed only to compare, on a file this script wrote.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from privfed.checkpoint import read_state, write_state


def _tree(params: int, personal: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "globals": {"unit": rng.standard_normal(params, dtype=np.float32)},
        "personal": [
            {"client": c, "unit": "unit", "vector": rng.standard_normal(params, dtype=np.float32)}
            for c in range(personal)
        ],
        "ledger": [
            {"client": c, "events": [{"sigma": 1.1, "q": 0.01, "steps": 10}] * 20}
            for c in range(1000)
        ],
    }


def _cpu(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def main() -> None:
    """Run the comparison and print it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=int, default=1_000_000)
    ap.add_argument("--personal", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    tree = _tree(args.params, args.personal)
    with tempfile.TemporaryDirectory() as d:
        ours, theirs = Path(d) / "state.ckpt", Path(d) / "state.pt"
        w_ours = _cpu(lambda: write_state(ours, tree), args.repeat)
        w_torch = _cpu(lambda: torch.save(tree, theirs), args.repeat)
        r_ours = _cpu(lambda: read_state(ours), args.repeat)
        r_torch = _cpu(lambda: torch.load(theirs, weights_only=False), args.repeat)
        size_ours, size_torch = ours.stat().st_size, theirs.stat().st_size
    mb = size_ours / 2**20
    print(f"tree: {1 + args.personal} vectors of {args.params} float32 ({mb:.0f} MiB on disk)")
    w, r = w_ours / w_torch, r_ours / r_torch
    print(f"write  privfed {w_ours:.3f} s  torch.save {w_torch:.3f} s  ratio {w:.2f}x")
    print(f"read   privfed {r_ours:.3f} s  torch.load {r_torch:.3f} s  ratio {r:.2f}x")
    print(f"file   privfed {size_ours} B  torch.save {size_torch} B")
    print("(CPU seconds, median; read_state also verifies the sha256 of the whole file)")


if __name__ == "__main__":
    main()
