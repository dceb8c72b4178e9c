"""Benchmark: epsilon queries on privfed's ledgers vs Opacus's recomputing RDP accountant.

Simulates ``--ledgers`` client/source ledgers over ``--rounds`` rounds. Each round every ledger
records ``--steps`` DP-SGD steps of one of two tasks that share the source but use different
sample rates (so histories do not merge and grow by one event per round, as in a real multi-task
run), then asks for epsilon. privfed keeps running RDP totals; Opacus's ``RDPAccountant``
recomputes the whole history on every ``get_epsilon``. The Opacus side is timed on
``--baseline-ledgers`` of the same ledgers and scaled up linearly (its cost per ledger does not
depend on the other ledgers). Both sides are measured in this run and checked to agree.

Usage::

    python experiments/benchmarks/accounting.py              # 1,000 ledgers x 50 rounds
    python experiments/benchmarks/accounting.py --ledgers 200 --rounds 20 --baseline-ledgers 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from opacus.accountants import RDPAccountant

from privfed.privacy import accounting
from privfed.privacy.ledger import PrivacyLedger

DELTA = 1e-5
SIGMA = 1.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ledgers", type=int, default=1000, help="number of (client, source) ledgers")
    p.add_argument("--rounds", type=int, default=50, help="rounds; one record + query each")
    p.add_argument("--steps", type=int, default=10, help="DP-SGD steps recorded per round")
    p.add_argument(
        "--baseline-ledgers", type=int, default=2, help="ledgers timed with Opacus (scaled up)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the per-client dataset sizes")
    return p.parse_args(argv)


def _plan(args: argparse.Namespace) -> list[list[tuple[float, float, int]]]:
    """Per ledger, per round: (sigma, q, steps). 20 distinct dataset sizes, two batch sizes."""
    rng = np.random.default_rng(args.seed)
    sizes = rng.choice(np.arange(200, 1200, 50), size=args.ledgers)
    plans = []
    for n in sizes:
        rates = (16 / float(n), 32 / float(n))  # task A batch 16, task B batch 32
        plans.append([(SIGMA, rates[r % 2], args.steps) for r in range(args.rounds)])
    return plans


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print timings and the speed ratio; return 0 on success."""
    args = _parse(argv)
    plans = _plan(args)

    # privfed: running totals. Clear the one-step RDP cache so its fill cost is included.
    accounting._rdp_one_step.cache_clear()
    book = PrivacyLedger(delta=DELTA, target_epsilon=float("inf"))
    privfed_eps = np.zeros(args.ledgers)
    round_s = []
    t0 = time.perf_counter()
    for r in range(args.rounds):
        tr = time.perf_counter()
        for i, plan in enumerate(plans):
            sigma, q, steps = plan[r]
            ledger = book.get(i, "digits")
            ledger.record(noise_multiplier=sigma, sample_rate=q, steps=steps, task=f"t{r % 2}")
            privfed_eps[i] = ledger.epsilon()
        round_s.append(time.perf_counter() - tr)
    privfed_s = time.perf_counter() - t0
    distinct = accounting._rdp_one_step.cache_info().currsize
    warm = round_s[2:]  # both tasks' (sigma, q) are cached from round 2 on

    # Opacus: recompute the whole history on each query, on a subsample of the same ledgers.
    k = min(args.baseline_ledgers, args.ledgers)
    opacus_eps = np.zeros(k)
    t0 = time.perf_counter()
    for i in range(k):
        acc = RDPAccountant()
        for r in range(args.rounds):
            sigma, q, steps = plans[i][r]
            for _ in range(steps):
                acc.step(noise_multiplier=sigma, sample_rate=q)
            opacus_eps[i] = acc.get_epsilon(DELTA)
    opacus_sub_s = time.perf_counter() - t0
    opacus_s = opacus_sub_s * args.ledgers / k

    queries = args.ledgers * args.rounds
    max_rel = float(np.max(np.abs(privfed_eps[:k] - opacus_eps) / opacus_eps))
    print(
        f"ledgers={args.ledgers} rounds={args.rounds} steps/round={args.steps} "
        f"queries={queries} final events/ledger={len(book.get(0, 'digits').events)}"
    )
    print(
        f"privfed running totals : {privfed_s:10.3f} s  "
        f"({1e6 * privfed_s / queries:9.1f} us per record+epsilon)"
    )
    if warm:
        print(
            f"  of which rounds 1-2 (first RDP curve of {distinct} distinct (sigma, q)): "
            f"{sum(round_s[:2]):.3f} s; later rounds "
            f"{1e6 * sum(warm) / (len(warm) * args.ledgers):.1f} us per record+epsilon"
        )
    print(
        f"opacus recompute       : {opacus_s:10.3f} s  "
        f"({1e6 * opacus_s / queries:9.1f} us per record+epsilon; measured {opacus_sub_s:.3f} s "
        f"on {k} ledgers, scaled x{args.ledgers / k:g})"
    )
    print(f"speed-up (opacus / privfed): {opacus_s / privfed_s:.1f}x")
    print(
        f"final epsilon: privfed max {privfed_eps.max():.4f} mean {privfed_eps.mean():.4f}; "
        f"max relative difference vs opacus on the subsample {max_rel:.2e}"
    )
    return 0 if max_rel < 1e-9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
