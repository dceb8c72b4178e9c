"""Benchmark of secure aggregation against baselines measured in the same run.

Runs the real protocol (:func:`~privfed.secagg.simulate.secure_sum`) over ``--clients`` random
integer vectors of ``--length`` entries, with a fraction ``--dropout`` of the clients vanishing
before the masked-input round (the costly case: their pairwise masks must be reconstructed and
removed). In the same process it times two baselines:

* a plain numpy float32 sum of as many vectors as the server sums (what the server would do
  without secure aggregation);
* bare keystream generation for the bytes one client masks with (``1 + degree`` AES-128-CTR
  masks; the faster of one call per mask into a full-length buffer and cache-sized calls).

Each baseline is the median of ``--repeats`` calls; the client figure is the median over the
clients of a run. Python's cyclic garbage collector is paused during timed regions, as
``timeit`` does (``--keep-gc`` leaves it on): the simulation hosts every client in one process,
and a collection triggered by their objects would land at random in the server's time.

Times are CPU time by default (``--clock cpu``: this process and its forked mask-removal
workers), so other load on the machine does not distort the ratios; ``--clock wall`` gives
elapsed time, which is what ``--workers`` > 1 improves. It prints client and server time
per phase, the ratios to those baselines, bytes per client and
the communication expansion against sending the raw float32 vector. ``privfed bench secagg``
calls :func:`main`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from privfed.secagg.config import SecAggConfig, default_degree, resolve_degree
from privfed.secagg.field import dtype_for_bits, reduce_inplace
from privfed.secagg.messages import ShareKind
from privfed.secagg.prg import CHUNK_ENTRIES, MASK_KEY_BYTES, MaskStream, mask_into, padded_buffer
from privfed.secagg.simulate import PHASES, secure_sum

try:
    import resource
except ImportError:  # pragma: no cover - not Unix
    resource = None  # type: ignore[assignment]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="privfed bench secagg", description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=100, help="number of clients")
    p.add_argument("--length", type=int, default=1 << 16, help="entries per vector")
    p.add_argument("--graph", choices=("complete", "harary"), default="complete")
    p.add_argument("--degree", type=int, default=None, help="harary degree (default O(log n))")
    p.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        help="fraction of clients that vanish before the masked-input round",
    )
    p.add_argument("--bits", type=int, default=32, help="modulus exponent")
    p.add_argument("--threshold", type=int, default=None, help="Shamir threshold (default: paper)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes for mask removal (forked, Linux; see --clock)",
    )
    p.add_argument("--repeats", type=int, default=7, help="repeats of each baseline (median taken)")
    p.add_argument(
        "--protocol-repeats",
        type=int,
        default=3,
        help="protocol runs (the one with the least server time is reported)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the input data and dropouts")
    p.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: CPU time of the process and its worker processes (robust to other "
        "load; default); wall: elapsed",
    )
    p.add_argument(
        "--keep-gc",
        action="store_true",
        help="leave Python's cyclic garbage collector on during timed runs (by "
        "default it is paused there, as timeit does)",
    )
    p.add_argument(
        "--bytes-only",
        action="store_true",
        help="print the exact wire bytes per client without running the protocol",
    )
    p.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    return p.parse_args(argv)


def cpu_time() -> float:
    """CPU time of this process plus its reaped children (the forked mask-removal workers).

    With ``--workers > 1`` the workers' CPU time counts too, so the CPU-clock ratios never
    improve by moving work to another process; ``--clock wall`` shows what parallelism buys.
    """
    if resource is None:  # not Unix: no forked workers either
        return time.process_time()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


@contextlib.contextmanager
def _timed_region(pause_gc: bool) -> Iterator[None]:
    """Collect garbage, then keep the cyclic collector off while timing (as ``timeit`` does).

    The simulation hosts every client in the server's process, so a collection started by the
    clients' allocations would otherwise land at random in the server's (or a baseline's) time.
    """
    if not pause_gc:
        yield
        return
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _typical(fn: Callable[[], object], repeats: int, clock: Callable[[], float]) -> float:
    """Median time of ``repeats`` calls (the protocol side is a median too: like for like)."""
    times = []
    for _ in range(max(1, repeats)):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def run(args: argparse.Namespace) -> dict[str, object]:
    """Run the benchmark described by ``args`` and return its figures."""
    clock = cpu_time if args.clock == "cpu" else time.perf_counter
    config = SecAggConfig(
        threshold=args.threshold,
        bits=args.bits,
        graph=args.graph,
        degree=args.degree,
        workers=args.workers,
    )
    rng = np.random.default_rng(args.seed)
    n, m = args.clients, args.length
    dt = dtype_for_bits(args.bits)
    inputs = {
        c: rng.integers(0, 2**args.bits, size=m, dtype=np.uint64).astype(dt) for c in range(n)
    }
    n_drop = int(round(args.dropout * n))
    dropped = sorted(int(c) for c in rng.choice(n, size=n_drop, replace=False)) if n_drop else []

    # Baseline 1: the plain float32 sum of as many vectors as the server will sum.
    floats = [rng.standard_normal(m).astype(np.float32) for _ in range(n - n_drop)]

    def plain_sum() -> None:
        total = np.zeros(m, dtype=np.float32)
        for v in floats:
            np.add(total, v, out=total)

    # Baseline 2: bare keystream for the bytes one client masks (self mask + one per neighbour),
    # with the protocol's AES-128 mask keys.
    degree = resolve_degree(config, n)
    keys = [bytes([i % 256, i // 256]) * (MASK_KEY_BYTES // 2) for i in range(1 + degree)]
    buf = np.empty(m, dtype=dt)
    chunk_buf = padded_buffer(min(m, CHUNK_ENTRIES), dt)

    def keystream() -> None:  # one call per mask into a full-length buffer
        for k in keys:
            mask_into(k, buf)

    def keystream_chunked() -> None:  # one context per mask, cache-sized calls
        for k in keys:
            stream = MaskStream(k, start=0, itemsize=dt.itemsize)
            for lo in range(0, m, CHUNK_ENTRIES):
                stream.fill(chunk_buf, min(CHUNK_ENTRIES, m - lo))

    def baselines() -> tuple[float, float]:
        # The faster of the two ways to make the same bytes is the keystream baseline.
        with _timed_region(not args.keep_gc):
            return (
                _typical(plain_sum, args.repeats, clock),
                min(
                    _typical(keystream, args.repeats, clock),
                    _typical(keystream_chunked, args.repeats, clock),
                ),
            )

    # The protocol runs --protocol-repeats times (fresh keys each time). The baselines (each the
    # median of --repeats calls) are timed right before and after every run and each run is
    # compared with the faster of its two neighbouring baselines, so a change of machine load
    # between measurements does not skew the ratios; the median ratio over runs is reported
    # (and the best run's absolute times). The client figure of a run is the median over its
    # clients, so both sides of every ratio are medians.
    res = None
    wall = math.inf
    server_ratios, removal_ratios, client_ratios = [], [], []
    plain, bare = math.inf, math.inf
    before = baselines()
    for _ in range(args.protocol_repeats):
        with _timed_region(not args.keep_gc):
            t0 = time.perf_counter()
            run_res = secure_sum(
                inputs, config=config, dropouts={"masked_input": dropped}, clock=clock
            )
            elapsed = time.perf_counter() - t0
        after = baselines()
        p_run, k_run = min(before[0], after[0]), min(before[1], after[1])
        before = after
        plain, bare = min(plain, p_run), min(bare, k_run)
        server_ratios.append(sum(run_res.server_seconds.values()) / p_run)
        removal_ratios.append(run_res.server_seconds["unmask"] / p_run)
        client_ratios.append(statistics.median(run_res.masking_seconds.values()) / k_run)
        if res is None or sum(run_res.server_seconds.values()) < sum(res.server_seconds.values()):
            res, wall = run_res, elapsed
    assert res is not None
    expected = np.zeros(m, dtype=dt)
    for c in res.included:
        expected += inputs[c]
    reduce_inplace(expected, args.bits)
    correct = bool(np.array_equal(expected, res.total))

    server_total = sum(res.server_seconds.values())
    masking = statistics.median(res.masking_seconds.values())
    per_client_phase = {p: res.client_seconds[p] / n for p in PHASES}
    sent = [sum(res.bytes_sent[c].values()) for c in range(n) if c not in dropped]
    recv = [sum(res.bytes_received[c].values()) for c in range(n) if c not in dropped]
    raw = 4.0 * m
    return {
        "command": "privfed bench secagg "
        + " ".join(sys.argv[1:] if args.argv is None else args.argv),
        "clients": n,
        "length": m,
        "graph": args.graph,
        "degree": res.degree,
        "threshold": res.threshold,
        "bits": args.bits,
        "dropout": args.dropout,
        "dropped": len(dropped),
        "included": len(res.included),
        "correct": correct,
        "workers": args.workers,
        "wall_seconds": wall,
        "protocol_repeats": args.protocol_repeats,
        "seed": args.seed,
        "clock": args.clock,
        "gc_paused_while_timing": not args.keep_gc,
        "server_seconds_per_phase": dict(res.server_seconds),
        "client_seconds_per_phase_mean": per_client_phase,
        "server_seconds": server_total,
        "server_mask_removal_seconds": res.server_seconds["unmask"],
        "server_mask_removal_over_plain_sum": statistics.median(removal_ratios),
        "plain_sum_seconds": plain,
        "server_over_plain_sum": statistics.median(server_ratios),
        "server_over_plain_sum_per_run": server_ratios,
        "client_masking_seconds_median": masking,
        "bare_keystream_seconds": bare,
        "client_masking_over_keystream": statistics.median(client_ratios),
        "client_masking_over_keystream_per_run": client_ratios,
        "client_masked_input_phase_over_keystream": per_client_phase["masked_input"] / bare,
        "bytes_sent_per_client": statistics.mean(sent),
        "bytes_received_per_client": statistics.mean(recv),
        "bytes_per_phase": dict(res.bytes_per_phase),
        "expansion_sent_vs_float32": statistics.mean(sent) / raw,
        "expansion_total_vs_float32": (statistics.mean(sent) + statistics.mean(recv)) / raw,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def wire_bytes_per_client(
    *, clients: int, length: int, bits: int, degree: int
) -> dict[str, tuple[int, int]]:
    """Exact bytes one client sends and receives per phase when nobody drops out.

    Computed by encoding messages of the right shapes (no cryptography), so the communication of
    configurations too large to simulate (e.g. Bonawitz et al.'s 2^10 clients on the complete
    graph) can be stated exactly; a test checks it against the bytes counted in a real run.

    Returns:
        phase -> (bytes sent, bytes received).
    """
    from privfed.secagg.envelope import ENVELOPE_BYTES
    from privfed.secagg.messages import (
        AdvertiseKeys,
        ForwardedShares,
        KeyRoster,
        MaskedInput,
        ShareKeys,
        UnmaskRequest,
        UnmaskResponse,
    )
    from privfed.secagg.shamir import SHARE_BYTES

    key, session, env = bytes(32), bytes(32), bytes(ENVELOPE_BYTES)
    neigh = tuple(range(1, degree + 1))
    closed = (0, *neigh)
    vec = np.zeros(length, dtype=dtype_for_bits(bits))
    return {
        "advertise_keys": (len(AdvertiseKeys(0, 0, key, key).encode()), 0),
        "share_keys": (
            len(ShareKeys(0, 0, session, tuple((v, env) for v in neigh)).encode()),
            len(KeyRoster(0, tuple((c, key, key) for c in range(clients))).encode()),
        ),
        "masked_input": (
            len(MaskedInput(0, 0, session, bits, (), vec).encode()),
            len(ForwardedShares(0, session, tuple((v, env) for v in neigh)).encode()),
        ),
        "unmask": (
            len(
                UnmaskResponse(
                    0,
                    0,
                    session,
                    tuple((c, ShareKind.SELF_MASK, bytes(SHARE_BYTES)) for c in closed),
                ).encode()
            ),
            len(UnmaskRequest(0, session, closed, ()).encode()),
        ),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = _parse(argv)
    args.argv = argv
    if args.bytes_only:
        degree = (
            args.clients - 1
            if args.graph == "complete"
            else (args.degree if args.degree is not None else default_degree(args.clients))
        )
        per = wire_bytes_per_client(
            clients=args.clients, length=args.length, bits=args.bits, degree=degree
        )
        sent = sum(s for s, _ in per.values())
        recv = sum(r for _, r in per.values())
        out = {
            "clients": args.clients,
            "length": args.length,
            "bits": args.bits,
            "graph": args.graph,
            "degree": degree,
            "bytes_per_phase": per,
            "bytes_sent_per_client": sent,
            "bytes_received_per_client": recv,
            "expansion_sent_vs_float32": sent / (4 * args.length),
            "expansion_sent_vs_16bit": sent / (2 * args.length),
        }
        print(json.dumps(out, indent=2))
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
        return 0
    fig = run(args)
    print(
        f"secure aggregation: {fig['clients']} clients x {fig['length']} entries, graph "
        f"{fig['graph']} (degree {fig['degree']}, t={fig['threshold']}), bits {fig['bits']}, "
        f"dropout {fig['dropout']} ({fig['dropped']} clients), correct={fig['correct']}"
    )
    print("phase            client mean s   server s")
    for p in PHASES:
        c = fig["client_seconds_per_phase_mean"][p]  # type: ignore[index]
        s = fig["server_seconds_per_phase"][p]  # type: ignore[index]
        print(f"  {p:<15}{c:>13.5f}{s:>11.5f}")
    print(
        f"server total {fig['server_seconds']:.4f} s, plain float32 sum "
        f"{fig['plain_sum_seconds']:.4f} s: ratio {fig['server_over_plain_sum']:.2f}x "
        f"(median over runs of run / neighbouring baseline)"
    )
    print(
        f"server unmask phase (reconstruction + mask removal) "
        f"{fig['server_mask_removal_seconds']:.4f} s: ratio "
        f"{fig['server_mask_removal_over_plain_sum']:.2f}x"
    )
    print(
        f"client masking {fig['client_masking_seconds_median']:.5f} s, bare keystream "
        f"{fig['bare_keystream_seconds']:.5f} s: ratio "
        f"{fig['client_masking_over_keystream']:.2f}x; "
        f"whole masked-input step {fig['client_masked_input_phase_over_keystream']:.2f}x"
    )
    print(
        f"bytes per client: sent {fig['bytes_sent_per_client']:.0f}, received "
        f"{fig['bytes_received_per_client']:.0f}; expansion vs float32: sent "
        f"{fig['expansion_sent_vs_float32']:.3f}x, sent+received "
        f"{fig['expansion_total_vs_float32']:.3f}x"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(fig, indent=2, sort_keys=True) + "\n")
        tmp.replace(args.json)
    return 0 if fig["correct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
