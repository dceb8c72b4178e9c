"""Benchmark of secure aggregation against baselines measured in the same run.

Runs the real protocol (:func:`~privfed.secagg.simulate.secure_sum`) over ``--clients`` random
integer vectors of ``--length`` entries, in the semi-honest and the malicious (signed,
consistency-checked) setting (``--security both``, the default), with a fraction ``--dropout``
of the clients vanishing before the masked-input round (the costly case: their pairwise masks
must be reconstructed and removed). Every client derives the key roster on its own, as
separate devices would (the in-process sharing of :class:`~privfed.secagg.parties.LocalParties`
would hide per-client costs). In the same process it times three baselines:

* a plain numpy float32 sum of as many vectors as the server sums (what the server would do
  without secure aggregation);
* the server's *floor*: the keystream expansions it must do (one AES-128-CTR mask of
  ``--length`` entries per mask it removes) plus the additions it cannot avoid (the uint sum of
  the vectors it receives, and one add per mask). Each part is the faster of two ways of doing
  it, so the floor is never inflated: the keystream in cache-sized calls into the server's
  chunk buffer or in one call per mask into a full-length buffer; the input sum chunked
  exactly as the server walks it (:data:`~privfed.secagg.prg.CHUNK_ENTRIES`) or one whole
  vector at a time; the mask adds are in-cache adds of a chunk buffer into a chunk. The input
  sum reads the very vectors the server summed (views into the ``MASKED_INPUT`` messages it
  received, kept by the benchmark's transport hook), so both read the same memory: whether a
  buffer is backed by transparent huge pages is an accident of allocation (numpy asks for
  them for its arrays from 4 MiB on, a ``bytes`` message gets them only if it lands where
  numpy asked before) and changes the speed of a memory-bound sum by ~15% on the benchmark
  machine;
* bare keystream generation for the bytes one client masks with (``1 + degree`` AES-128-CTR
  masks; the faster of one call per mask into a full-length buffer and cache-sized calls).

Each baseline is the median of ``--repeats`` calls, timed right after every protocol run (on
that run's vectors); a run is compared with the faster of the baselines timed after it and
after the run before it (when that one removed as many masks), and the median ratio over runs
is reported. Python's cyclic garbage collector is paused during timed regions, as
``timeit`` does (``--keep-gc`` leaves it on). Times are CPU time by default (``--clock cpu``:
this process and its forked mask-removal workers), so other load on the machine does not
distort the ratios; ``--clock wall`` gives elapsed time, which is what ``--workers`` > 1
improves. It prints the processor (``/proc/cpuinfo``), client and server time per phase, the
server's ratios to the plain sum and to its floor, where the server's time goes (mask removal,
signature checks, secret reconstruction and key derivation, message handling; each against the
floor), the malicious setting's cost next to the semi-honest one, bytes per client and the
communication expansion against sending the raw float32 vector. ``privfed bench secagg`` calls
:func:`main`.
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

from privfed.secagg.config import SECURITY_MODES, SecAggConfig, resolve_degree
from privfed.secagg.field import dtype_for_bits, reduce_inplace
from privfed.secagg.identity import make_pki
from privfed.secagg.messages import SERVER_ID, MaskedInput, ShareKind
from privfed.secagg.prg import CHUNK_ENTRIES, MASK_KEY_BYTES, MaskStream, mask_into, padded_buffer
from privfed.secagg.server import COMPONENTS
from privfed.secagg.simulate import PHASES, SecureSumResult, secure_sum

try:
    import resource
except ImportError:  # pragma: no cover - not Unix
    resource = None  # type: ignore[assignment]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="privfed bench secagg", description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=100, help="number of clients")
    p.add_argument("--length", type=int, default=1 << 16, help="entries per vector")
    p.add_argument("--graph", choices=("complete", "harary"), default="complete")
    p.add_argument("--degree", type=int, default=None, help="harary degree (default: computed)")
    p.add_argument(
        "--security",
        choices=("both", *SECURITY_MODES),
        default="both",
        help="protocol setting(s) to run; 'both' reports malicious next to semi-honest",
    )
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
        help="protocol runs per setting (median ratio reported; the least server time shown)",
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


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux, else :mod:`platform`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


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


class Baselines:
    """The in-run baselines: plain float32 sum, the server's floor, a client's bare keystream.

    Args:
        m: vector length.
        bits: modulus exponent.
        summed: vectors the server sums.
        client_masks: masks one client expands (``1 + degree``).
        rng: simulation generator for the baseline data.
    """

    def __init__(
        self, *, m: int, bits: int, summed: int, client_masks: int, rng: np.random.Generator
    ) -> None:
        self.m = m
        self.dt = dtype_for_bits(bits)
        self.floats = [rng.standard_normal(m).astype(np.float32) for _ in range(summed)]
        #: The vectors the input sum of the floor adds (:meth:`measure` sets them).
        self.ints: list[np.ndarray] = []
        self.keys = [
            bytes([i % 256, i // 256]) * (MASK_KEY_BYTES // 2) for i in range(client_masks)
        ]
        self.buf = np.empty(m, dtype=self.dt)
        self.chunk_buf = padded_buffer(min(m, CHUNK_ENTRIES), self.dt)
        self.acc = np.zeros(min(m, CHUNK_ENTRIES), dtype=self.dt)

    def plain_sum(self) -> None:
        """The float32 sum of the vectors (in-place adds into one accumulator)."""
        total = np.zeros(self.m, dtype=np.float32)
        for v in self.floats:
            np.add(total, v, out=total)

    def int_sum(self) -> None:
        """The uint sum of the received vectors, one whole vector at a time."""
        total = np.zeros(self.m, dtype=self.dt)
        for v in self.ints:
            np.add(total, v, out=total)

    def int_sum_chunked(self) -> None:
        """The uint sum of the received vectors, chunk by chunk as the server walks them."""
        total = np.empty(self.m, dtype=self.dt)
        vs = self.ints
        for c0 in range(0, self.m, CHUNK_ENTRIES):
            c1 = min(c0 + CHUNK_ENTRIES, self.m)
            seg = total[c0:c1]
            if len(vs) == 1:
                np.copyto(seg, vs[0][c0:c1])
            elif vs:
                np.add(vs[0][c0:c1], vs[1][c0:c1], out=seg)
            for v in vs[2:]:
                np.add(seg, v[c0:c1], out=seg)

    def _streams(self, masks: int) -> None:
        step = CHUNK_ENTRIES
        for i in range(masks):
            key = bytes([i % 256, (i // 256) % 256]) * (MASK_KEY_BYTES // 2)
            stream = MaskStream(key, start=0, itemsize=self.dt.itemsize)
            for lo in range(0, self.m, step):
                stream.fill(self.chunk_buf, min(step, self.m - lo))

    def mask_adds(self, masks: int) -> None:
        """One in-cache add per mask chunk (the additions of the masks to the running sum)."""
        part = self.chunk_buf[: self.acc.shape[0]]
        for _ in range(masks):
            for lo in range(0, self.m, CHUNK_ENTRIES):
                n = min(CHUNK_ENTRIES, self.m - lo)
                np.add(self.acc[:n], part[:n], out=self.acc[:n])

    def _full_streams(self, masks: int) -> None:
        for i in range(masks):
            key = bytes([i % 256, (i // 256) % 256]) * (MASK_KEY_BYTES // 2)
            mask_into(key, self.buf)

    def measure(
        self, repeats: int, clock: Callable[[], float], masks: int, summed: list[np.ndarray]
    ) -> dict[str, float]:
        """Median seconds of every baseline (the floor for ``masks`` server masks).

        Each part of the floor is the faster of its two measured ways (see the module
        docstring), so the floor is a lower bound on what the server's own loop can reach.

        Args:
            repeats: calls per baseline (median taken).
            clock: the timer.
            masks: masks the server removed.
            summed: the vectors the server summed: views into the very messages it received,
                so the floor's input sum reads the same memory (page size included).
        """
        self.ints = summed

        def one_call_per_mask() -> None:
            for k in self.keys:
                mask_into(k, self.buf)

        def chunked() -> None:
            for k in self.keys:
                stream = MaskStream(k, start=0, itemsize=self.dt.itemsize)
                for lo in range(0, self.m, CHUNK_ENTRIES):
                    stream.fill(self.chunk_buf, min(CHUNK_ENTRIES, self.m - lo))

        keystream = min(
            _typical(lambda: self._streams(masks), repeats, clock),
            _typical(lambda: self._full_streams(masks), repeats, clock),
        )
        adds = min(
            _typical(self.int_sum, repeats, clock),
            _typical(self.int_sum_chunked, repeats, clock),
        ) + _typical(lambda: self.mask_adds(masks), repeats, clock)
        self.ints = []
        return {
            "plain_sum": _typical(self.plain_sum, repeats, clock),
            "floor_keystream": keystream,
            "floor_additions": adds,
            "floor": keystream + adds,
            "client_keystream": min(
                _typical(one_call_per_mask, repeats, clock), _typical(chunked, repeats, clock)
            ),
        }


def _run_setting(
    args: argparse.Namespace,
    security: str,
    inputs: dict[int, np.ndarray],
    dropped: list[int],
    base: Baselines,
    clock: Callable[[], float],
) -> dict[str, object]:
    """Protocol runs of one setting with the baselines timed around each run."""
    config = SecAggConfig(
        security=security,
        threshold=args.threshold,
        bits=args.bits,
        graph=args.graph,
        degree=args.degree,
        workers=args.workers,
    )
    n = args.clients
    pki = make_pki(range(n)) if security == "malicious" else None
    res: SecureSumResult | None = None
    wall = math.inf
    ratios: dict[str, list[float]] = {"plain": [], "floor": [], "unmask": [], "client": []}
    parts: dict[str, list[float]] = {k: [] for k in (*COMPONENTS, "message_handling")}
    best: dict[str, float] = {}
    before: dict[str, float] | None = None
    masks = -1
    received: dict[int, bytes] = {}

    def capture(phase: str, sender: int, receiver: int, data: bytes) -> tuple[bytes]:
        if phase == "masked_input" and receiver == SERVER_ID:
            received[sender] = data  # the very bytes the server decodes and sums
        return (data,)

    for _ in range(args.protocol_repeats):
        with _timed_region(not args.keep_gc):
            t0 = time.perf_counter()
            run_res = secure_sum(
                inputs,
                config=config,
                dropouts={"masked_input": dropped},
                clock=clock,
                identities=pki.identities if pki else None,
                registry=pki.registry if pki else None,
                share_rosters=False,
                transport=capture,
            )
            elapsed = time.perf_counter() - t0
        if run_res.masks_removed != masks:  # (Harary: the graph, so the count, is per session)
            masks, before = run_res.masks_removed, None
        summed = [MaskedInput.decode(received[c]).vector for c in run_res.included]
        with _timed_region(not args.keep_gc):
            after = base.measure(args.repeats, clock, masks, summed)
        del summed
        received.clear()
        near = after if before is None else {k: min(before[k], after[k]) for k in after}
        before = after
        for k, v in near.items():
            best[k] = min(best.get(k, math.inf), v)
        server = sum(run_res.server_seconds.values())
        ratios["plain"].append(server / near["plain_sum"])
        ratios["floor"].append(server / near["floor"])
        ratios["unmask"].append(run_res.server_seconds["unmask"] / near["floor"])
        for k, v in _components(run_res).items():
            parts[k].append(v / near["floor"])
        ratios["client"].append(
            statistics.median(run_res.masking_seconds.values()) / near["client_keystream"]
        )
        if res is None or server < sum(res.server_seconds.values()):
            res, wall = run_res, elapsed
    assert res is not None
    expected = np.zeros(args.length, dtype=base.dt)
    for c in res.included:
        expected += inputs[c]
    reduce_inplace(expected, args.bits)
    alive = [c for c in range(n) if c not in dropped]
    sent = [sum(res.bytes_sent[c].values()) for c in alive]
    recv = [sum(res.bytes_received[c].values()) for c in alive]
    client_phase = {p: res.client_seconds[p] / max(1, len(alive)) for p in PHASES}
    raw = 4.0 * args.length
    return {
        "security": security,
        "degree": res.degree,
        "threshold": res.threshold,
        "included": len(res.included),
        "correct": bool(np.array_equal(expected, res.total)),
        "masks_removed": res.masks_removed,
        "wall_seconds": wall,
        "server_seconds_per_phase": dict(res.server_seconds),
        "server_seconds": sum(res.server_seconds.values()),
        "server_unmask_seconds": res.server_seconds["unmask"],
        "client_seconds_per_phase_mean": client_phase,
        "client_seconds_mean": sum(client_phase.values()),
        "client_masking_seconds_median": statistics.median(res.masking_seconds.values()),
        "baselines": best,
        "server_over_plain_sum": statistics.median(ratios["plain"]),
        "server_over_plain_sum_per_run": ratios["plain"],
        "server_over_floor": statistics.median(ratios["floor"]),
        "server_over_floor_per_run": ratios["floor"],
        "server_unmask_over_floor": statistics.median(ratios["unmask"]),
        "server_components_seconds": _components(res),
        "server_components_over_floor": {k: statistics.median(v) for k, v in parts.items()},
        "client_masking_over_keystream": statistics.median(ratios["client"]),
        "client_masked_input_phase_over_keystream": client_phase["masked_input"]
        / best["client_keystream"],
        "bytes_sent_per_client": statistics.mean(sent),
        "bytes_received_per_client": statistics.mean(recv),
        "bytes_per_phase": dict(res.bytes_per_phase),
        "expansion_sent_vs_float32": statistics.mean(sent) / raw,
        "expansion_total_vs_float32": (statistics.mean(sent) + statistics.mean(recv)) / raw,
    }


def _components(res: SecureSumResult) -> dict[str, float]:
    """The server's time by component; ``message_handling`` is the rest (parsing, checks, relay)."""
    out = {k: float(res.server_components.get(k, 0.0)) for k in COMPONENTS}
    out["message_handling"] = sum(res.server_seconds.values()) - sum(out.values())
    return out


def run(args: argparse.Namespace) -> dict[str, object]:
    """Run the benchmark described by ``args`` and return its figures."""
    if args.clock == "wall":
        clock = time.perf_counter
    else:  # with one worker nothing is forked: skip the children's (empty) rusage
        clock = cpu_time if args.workers > 1 else time.process_time
    rng = np.random.default_rng(args.seed)
    n, m = args.clients, args.length
    dt = dtype_for_bits(args.bits)
    inputs = {
        c: rng.integers(0, 2**args.bits, size=m, dtype=np.uint64).astype(dt) for c in range(n)
    }
    n_drop = int(round(args.dropout * n))
    dropped = sorted(int(c) for c in rng.choice(n, size=n_drop, replace=False)) if n_drop else []
    probe = SecAggConfig(
        graph=args.graph, degree=args.degree, threshold=args.threshold, bits=args.bits
    )
    degree = resolve_degree(probe, n)
    base = Baselines(m=m, bits=args.bits, summed=n - n_drop, client_masks=1 + degree, rng=rng)
    settings = list(SECURITY_MODES) if args.security == "both" else [args.security]
    results = {s: _run_setting(args, s, inputs, dropped, base, clock) for s in settings}
    out: dict[str, object] = {
        "command": "privfed bench secagg "
        + " ".join(sys.argv[1:] if args.argv is None else args.argv),
        "clients": n,
        "length": m,
        "graph": args.graph,
        "bits": args.bits,
        "dropout": args.dropout,
        "dropped": len(dropped),
        "workers": args.workers,
        "protocol_repeats": args.protocol_repeats,
        "seed": args.seed,
        "clock": args.clock,
        "gc_paused_while_timing": not args.keep_gc,
        "correct": all(bool(r["correct"]) for r in results.values()),
        "settings": results,
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    if len(results) == 2:
        semi, mal = results["semi-honest"], results["malicious"]
        out["malicious_over_semi_honest_server"] = float(mal["server_seconds"]) / float(  # type: ignore[arg-type]
            semi["server_seconds"]  # type: ignore[arg-type]
        )
        out["malicious_over_semi_honest_client"] = float(mal["client_seconds_mean"]) / float(  # type: ignore[arg-type]
            semi["client_seconds_mean"]  # type: ignore[arg-type]
        )
    return out


def wire_bytes_per_client(
    *, clients: int, length: int, bits: int, degree: int, security: str = "malicious"
) -> dict[str, tuple[int, int]]:
    """Exact bytes one client sends and receives per phase when nobody drops out.

    Computed by encoding messages of the right shapes (no cryptography), so the communication of
    configurations too large to simulate (e.g. Bonawitz et al.'s 2^10 clients on the complete
    graph) can be stated exactly; a test checks it against the bytes counted in a real run.

    Returns:
        phase -> (bytes sent, bytes received).
    """
    from privfed.secagg.envelope import ENVELOPE_BYTES
    from privfed.secagg.identity import SIGNATURE_BYTES
    from privfed.secagg.messages import (
        AdvertiseKeys,
        ConsistencyRequest,
        ConsistencySignature,
        ForwardedShares,
        KeyRoster,
        MaskedInput,
        ShareKeys,
        SignedSurvivors,
        UnmaskRequest,
        UnmaskResponse,
    )
    from privfed.secagg.shamir import SHARE_BYTES

    signed = security == "malicious"
    key, session, env = bytes(32), bytes(32), bytes(ENVELOPE_BYTES)
    sig = bytes(SIGNATURE_BYTES) if signed else b""
    neigh = tuple(range(1, degree + 1))
    closed = (0, *neigh)
    everyone = tuple(range(clients))
    vec = np.zeros(length, dtype=dtype_for_bits(bits))
    out = {
        "advertise_keys": (len(AdvertiseKeys(0, 0, key, key, sig).encode()), 0),
        "share_keys": (
            len(ShareKeys(0, 0, session, bytes(32), tuple((v, env) for v in neigh)).encode()),
            len(KeyRoster(0, signed, tuple((c, key, key, sig) for c in everyone)).encode()),
        ),
        "masked_input": (
            len(MaskedInput(0, 0, session, bits, neigh, (), vec).encode()),
            len(ForwardedShares(0, session, tuple((v, env) for v in neigh)).encode()),
        ),
        "consistency_check": (0, 0),
        "unmask": (
            len(
                UnmaskResponse(
                    0,
                    0,
                    session,
                    tuple((c, ShareKind.SELF_MASK, bytes(SHARE_BYTES)) for c in closed),
                ).encode()
            ),
            len(
                SignedSurvivors(0, session, tuple((c, sig) for c in everyone)).encode()
                if signed
                else UnmaskRequest(0, session, closed, ()).encode()
            ),
        ),
    }
    if signed:
        out["consistency_check"] = (
            len(ConsistencySignature(0, 0, session, sig).encode()),
            len(ConsistencyRequest(0, session, everyone).encode()),
        )
    return out


def _print_setting(fig: dict[str, object], name: str) -> None:
    r = fig["settings"][name]  # type: ignore[index]
    print(
        f"[{name}] degree {r['degree']}, t={r['threshold']}, {r['included']} included, "
        f"{r['masks_removed']} masks removed, correct={r['correct']}"
    )
    print("  phase                client mean s   server s")
    for p in PHASES:
        c = r["client_seconds_per_phase_mean"][p]
        s = r["server_seconds_per_phase"][p]
        print(f"    {p:<19}{c:>13.5f}{s:>11.5f}")
    b = r["baselines"]
    print(
        f"  server {r['server_seconds']:.4f} s: {r['server_over_floor']:.2f}x its floor "
        f"({b['floor']:.4f} s = keystream {b['floor_keystream']:.4f} + additions "
        f"{b['floor_additions']:.4f}), {r['server_over_plain_sum']:.2f}x the plain float32 sum "
        f"({b['plain_sum']:.4f} s); unmask phase {r['server_unmask_over_floor']:.2f}x the floor"
    )
    secs, over = r["server_components_seconds"], r["server_components_over_floor"]
    names = {
        "mask_removal": "mask removal",
        "signatures": "signature checks",
        "secrets": "secrets (Shamir, commitments, key agreement)",
        "message_handling": "message handling",
    }
    print(
        "  server by component (s, x floor): "
        + "; ".join(f"{names[k]} {secs[k]:.4f} ({over[k]:.3f}x)" for k in names)
    )
    print(
        f"  client {r['client_seconds_mean']:.5f} s in all (mean); masking "
        f"{r['client_masking_seconds_median']:.5f} s = {r['client_masking_over_keystream']:.2f}x "
        f"bare keystream ({b['client_keystream']:.5f} s); masked-input step "
        f"{r['client_masked_input_phase_over_keystream']:.2f}x"
    )
    print(
        f"  bytes per client: sent {r['bytes_sent_per_client']:.0f}, received "
        f"{r['bytes_received_per_client']:.0f}; expansion vs float32: sent "
        f"{r['expansion_sent_vs_float32']:.3f}x, sent+received "
        f"{r['expansion_total_vs_float32']:.3f}x"
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = _parse(argv)
    args.argv = argv
    if args.bytes_only:
        probe = SecAggConfig(graph=args.graph, degree=args.degree, bits=args.bits)
        degree = resolve_degree(probe, args.clients)
        settings = list(SECURITY_MODES) if args.security == "both" else [args.security]
        out: dict[str, object] = {
            "clients": args.clients,
            "length": args.length,
            "bits": args.bits,
            "graph": args.graph,
            "degree": degree,
        }
        for name in settings:
            per = wire_bytes_per_client(
                clients=args.clients,
                length=args.length,
                bits=args.bits,
                degree=degree,
                security=name,
            )
            sent = sum(s for s, _ in per.values())
            recv = sum(r for _, r in per.values())
            out[name] = {
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
        f"{fig['graph']}, bits {fig['bits']}, dropout {fig['dropout']} ({fig['dropped']} "
        f"clients), clock {fig['clock']}, correct={fig['correct']}"
    )
    print(f"cpu: {fig['cpu']}")
    for name in fig["settings"]:  # type: ignore[attr-defined]
        _print_setting(fig, name)
    if "malicious_over_semi_honest_server" in fig:
        print(
            f"malicious / semi-honest: server {fig['malicious_over_semi_honest_server']:.3f}x, "
            f"client {fig['malicious_over_semi_honest_client']:.3f}x"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(fig, indent=2, sort_keys=True) + "\n")
        tmp.replace(args.json)
    return 0 if fig["correct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
