"""Benchmark of secure aggregation against baselines measured in the same run.

Runs the real protocol (:func:`~privfed.secagg.simulate.secure_sum`) over ``--clients`` random
integer vectors of ``--length`` entries, with a fraction ``--dropout`` of the clients vanishing
before the masked-input round (the costly case: their pairwise masks must be reconstructed and
removed). In the same process it times two baselines:

* a plain numpy float32 sum of as many vectors as the server sums (what the server would do
  without secure aggregation);
* bare keystream generation for the bytes one client masks with (one AES-256-CTR call per mask
  into a preallocated buffer, ``1 + degree`` masks).

It prints client and server time per phase, the ratios to those baselines, bytes per client and
the communication expansion against sending the raw float32 vector. ``privfed bench secagg``
calls :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from privfed.secagg.config import SecAggConfig
from privfed.secagg.field import dtype_for_bits, reduce_inplace
from privfed.secagg.prg import mask_into
from privfed.secagg.simulate import PHASES, secure_sum


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="privfed bench secagg", description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=100, help="number of clients")
    p.add_argument("--length", type=int, default=1 << 16, help="entries per vector")
    p.add_argument("--graph", choices=("complete", "harary"), default="complete")
    p.add_argument("--degree", type=int, default=None, help="harary degree (default O(log n))")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="fraction of clients that vanish before the masked-input round")
    p.add_argument("--bits", type=int, default=32, help="modulus exponent")
    p.add_argument("--threshold", type=int, default=None, help="Shamir threshold (default: paper)")
    p.add_argument("--workers", type=int, default=1, help="server threads for mask removal")
    p.add_argument("--repeats", type=int, default=5, help="repeats of each baseline (min taken)")
    p.add_argument("--seed", type=int, default=0, help="seed of the input data and dropouts")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    return p.parse_args(argv)


def _best(fn: object, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best


def run(args: argparse.Namespace) -> dict[str, object]:
    """Run the benchmark described by ``args`` and return its figures."""
    config = SecAggConfig(
        threshold=args.threshold, bits=args.bits, graph=args.graph, degree=args.degree,
        workers=args.workers,
    )
    rng = np.random.default_rng(args.seed)
    n, m = args.clients, args.length
    dt = dtype_for_bits(args.bits)
    inputs = {c: rng.integers(0, 2**args.bits, size=m, dtype=np.uint64).astype(dt)
              for c in range(n)}
    n_drop = int(round(args.dropout * n))
    dropped = sorted(int(c) for c in rng.choice(n, size=n_drop, replace=False)) if n_drop else []

    t0 = time.perf_counter()
    res = secure_sum(inputs, config=config, dropouts={"masked_input": dropped})
    wall = time.perf_counter() - t0
    expected = np.zeros(m, dtype=dt)
    for c in res.included:
        expected += inputs[c]
    reduce_inplace(expected, args.bits)
    correct = bool(np.array_equal(expected, res.total))

    # Baseline 1: the plain float32 sum of as many vectors as the server summed.
    floats = [rng.standard_normal(m).astype(np.float32) for _ in res.included]

    def plain_sum() -> None:
        total = np.zeros(m, dtype=np.float32)
        for v in floats:
            np.add(total, v, out=total)

    plain = _best(plain_sum, args.repeats)

    # Baseline 2: bare keystream for the bytes one client masks (self mask + one per neighbour).
    masks_per_client = 1 + res.degree
    buf = np.empty(m, dtype=dt)
    keys = [bytes([i % 256]) * 32 for i in range(masks_per_client)]

    def keystream() -> None:
        for k in keys:
            mask_into(k, buf)

    bare = _best(keystream, args.repeats)

    server_total = sum(res.server_seconds.values())
    masking = statistics.median(res.masking_seconds.values())
    per_client_phase = {p: res.client_seconds[p] / n for p in PHASES}
    sent = [sum(res.bytes_sent[c].values()) for c in range(n) if c not in dropped]
    recv = [sum(res.bytes_received[c].values()) for c in range(n) if c not in dropped]
    raw = 4.0 * m
    return {
        "command": "privfed bench secagg " + " ".join(sys.argv[1:] if args.argv is None
                                                      else args.argv),
        "clients": n, "length": m, "graph": args.graph, "degree": res.degree,
        "threshold": res.threshold, "bits": args.bits, "dropout": args.dropout,
        "dropped": len(dropped), "included": len(res.included), "correct": correct,
        "workers": args.workers, "wall_seconds": wall,
        "server_seconds_per_phase": dict(res.server_seconds),
        "client_seconds_per_phase_mean": per_client_phase,
        "server_seconds": server_total,
        "plain_sum_seconds": plain,
        "server_over_plain_sum": server_total / plain,
        "client_masking_seconds_median": masking,
        "bare_keystream_seconds": bare,
        "client_masking_over_keystream": masking / bare,
        "client_masked_input_phase_over_keystream": per_client_phase["masked_input"] / bare,
        "bytes_sent_per_client": statistics.mean(sent),
        "bytes_received_per_client": statistics.mean(recv),
        "bytes_per_phase": dict(res.bytes_per_phase),
        "expansion_sent_vs_float32": statistics.mean(sent) / raw,
        "expansion_total_vs_float32": (statistics.mean(sent) + statistics.mean(recv)) / raw,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = _parse(argv)
    args.argv = argv
    fig = run(args)
    print(f"secure aggregation: {fig['clients']} clients x {fig['length']} entries, graph "
          f"{fig['graph']} (degree {fig['degree']}, t={fig['threshold']}), bits {fig['bits']}, "
          f"dropout {fig['dropout']} ({fig['dropped']} clients), correct={fig['correct']}")
    print("phase            client mean s   server s")
    for p in PHASES:
        c = fig["client_seconds_per_phase_mean"][p]  # type: ignore[index]
        s = fig["server_seconds_per_phase"][p]  # type: ignore[index]
        print(f"  {p:<15}{c:>13.5f}{s:>11.5f}")
    print(f"server total {fig['server_seconds']:.4f} s = {fig['server_over_plain_sum']:.2f}x the "
          f"plain float32 sum ({fig['plain_sum_seconds']:.4f} s)")
    print(f"client masking {fig['client_masking_seconds_median']:.5f} s = "
          f"{fig['client_masking_over_keystream']:.2f}x bare keystream "
          f"({fig['bare_keystream_seconds']:.5f} s); whole masked-input step "
          f"{fig['client_masked_input_phase_over_keystream']:.2f}x")
    print(f"bytes per client: sent {fig['bytes_sent_per_client']:.0f}, received "
          f"{fig['bytes_received_per_client']:.0f}; expansion vs float32: sent "
          f"{fig['expansion_sent_vs_float32']:.3f}x, sent+received "
          f"{fig['expansion_total_vs_float32']:.3f}x")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(fig, indent=2, sort_keys=True) + "\n")
        tmp.replace(args.json)
    return 0 if fig["correct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
