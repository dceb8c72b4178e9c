"""Mask expansion: a derived key -> a keystream viewed as integers modulo 2^bits.

The PRG is AES in counter mode from ``cryptography`` (Bonawitz et al. 2017, Sec. 3 require a
secure PRG; AES-CTR is the standard choice). Mask keys are 16 bytes (AES-128, a 128-bit security
level matching X25519's): each is derived through HKDF-SHA256 from the *full* 32-byte X25519
shared secret or self-mask seed with its own label and the session id (see
:mod:`privfed.secagg.keys`), so every bit of the seed determines the mask, no key is ever reused
across masks or sessions, and a zero starting counter is safe. AES-128 was chosen over AES-256
because mask expansion is the protocol's bottleneck and AES-128-CTR is ~1.2-1.4x faster on the
benchmark machine (docs/secure-aggregation.md); :func:`keystream_into` accepts 32-byte keys too.

The raw keystream is viewed as the packing dtype of ``bits``
(:func:`~privfed.secagg.field.dtype_for_bits`); the mask value is that integer modulo
``2**bits``. Callers may accumulate unreduced words with wraparound and reduce once at the end
(:func:`~privfed.secagg.field.reduce_inplace`).
"""

from __future__ import annotations

import mmap
import os
import sys
from collections.abc import Callable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from privfed.secagg.field import dtype_for_bits, reduce_inplace

#: Bytes of a mask key (AES-128).
MASK_KEY_BYTES = 16
#: Entries per chunk when streaming masks (256 KiB of uint32: the running sum and the mask
#: buffer stay in a 1-2 MiB L2 cache). The fastest of 2^13..2^18 on the 2-vCPU benchmark
#: machine for both the client's masking and the server's mask removal (2^17 was within a few
#: percent on a machine with 1 MiB of L2 per core).
CHUNK_ENTRIES = 1 << 16
_AES_KEY_SIZES = (16, 32)
BLOCK_BYTES = 16


def keystream_into(key: bytes, out: bytearray | memoryview | np.ndarray, *, counter: bytes) -> None:
    """Write AES-CTR keystream for ``key`` starting at counter block ``counter`` into ``out``.

    Known-answer tested against NIST SP 800-38A F.5.1 (CTR-AES128) and F.5.5 (CTR-AES256)
    through this function.

    Args:
        key: 16-byte (AES-128) or 32-byte (AES-256) key.
        out: writable buffer; its whole length is filled.
        counter: the 16-byte initial counter block.
    """
    if len(key) not in _AES_KEY_SIZES:
        raise ValueError(f"mask key must be 16 or 32 bytes, got {len(key)}")
    view = memoryview(out).cast("B")  # type: ignore[arg-type]
    n = view.nbytes
    enc = Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()
    # update_into needs len(data) + 15 bytes of room: fill the largest such prefix in one call,
    # then the (< 31 byte) remainder with update().
    head = ((n - (BLOCK_BYTES - 1)) // BLOCK_BYTES) * BLOCK_BYTES if n >= 2 * BLOCK_BYTES else 0
    if head:
        enc.update_into(_zeros(head), view)
    if n > head:
        view[head:] = enc.update(bytes(n - head))


_ZERO_CACHE: dict[int, memoryview] = {}


def _zeros(n: int) -> memoryview:
    buf = _ZERO_CACHE.get(0)
    if buf is None or buf.nbytes < n:
        buf = memoryview(bytes(max(n, 1 << 16)))
        _ZERO_CACHE[0] = buf
    return buf[:n]


def counter_block(block_index: int) -> bytes:
    """The 16-byte big-endian counter block for keystream block ``block_index``."""
    return block_index.to_bytes(BLOCK_BYTES, "big")


def mask_into(key: bytes, out: np.ndarray, *, start: int = 0) -> None:
    """Fill ``out`` with mask words ``start .. start+len(out)`` of ``key``, unreduced.

    Args:
        key: derived mask key (16 bytes; 32 accepted).
        out: contiguous unsigned integer array (the packing dtype of ``bits``).
        start: index of the first word; ``start * itemsize`` must be a multiple of 16.
    """
    offset = start * out.dtype.itemsize
    if offset % BLOCK_BYTES:
        raise ValueError("mask offsets must be aligned to 16 bytes")
    keystream_into(key, out, counter=counter_block(offset // BLOCK_BYTES))


def expand_mask(key: bytes, *, length: int, bits: int) -> np.ndarray:
    """The mask of ``length`` integers in ``[0, 2**bits)`` expanded from ``key`` (reduced)."""
    out = np.empty(length, dtype=dtype_for_bits(bits))
    mask_into(key, out)
    return reduce_inplace(out, bits)


class MaskStream:
    """A mask keystream consumed chunk by chunk (one cipher context, many ``update_into``).

    Creating an AES context costs about as much as 64 KiB of keystream, so chunked consumers
    keep one context per mask and stream through it instead of re-keying per chunk.

    Args:
        key: derived mask key (16 bytes; 32 accepted).
        start: index of the first word; ``start * itemsize`` must be a multiple of 16.
        itemsize: bytes per word (the packing dtype of ``bits``).
    """

    def __init__(self, key: bytes, *, start: int, itemsize: int) -> None:
        if len(key) not in _AES_KEY_SIZES:
            raise ValueError(f"mask key must be 16 or 32 bytes, got {len(key)}")
        offset = start * itemsize
        if offset % BLOCK_BYTES:
            raise ValueError("mask offsets must be aligned to 16 bytes")
        self._enc = Cipher(
            algorithms.AES(key), modes.CTR(counter_block(offset // BLOCK_BYTES))
        ).encryptor()
        self._itemsize = itemsize
        #: The raw call behind :meth:`fill`: ``update_into(zeros, view)`` writes
        #: ``len(zeros)`` bytes of keystream to the start of ``view``, which needs 15 bytes of
        #: room past them (for hot loops that prepare both once).
        self.update_into = self._enc.update_into

    def fill(self, buf: np.ndarray, count: int) -> None:
        """Write the next ``count`` words into ``buf[:count]`` in one call.

        ``buf`` must have room for ``count`` words plus 15 bytes (see :func:`padded_buffer`).
        """
        n = count * self._itemsize
        view = memoryview(buf).cast("B")  # type: ignore[arg-type]
        if view.nbytes < n + BLOCK_BYTES - 1:
            raise ValueError("buffer needs 15 bytes of room past the words it receives")
        self._enc.update_into(_zeros(n), view)


def padded_buffer(words: int, dtype: np.dtype) -> np.ndarray:
    """A buffer for ``words`` words with the 16 bytes of slack ``update_into`` needs."""
    return np.empty(words + BLOCK_BYTES // dtype.itemsize, dtype=dtype)


def apply_masks(
    vectors: list[np.ndarray],
    jobs: list[tuple[bytes, bool]],
    *,
    length: int,
    bits: int,
    workers: int = 1,
    chunk: int = CHUNK_ENTRIES,
) -> np.ndarray:
    """``sum(vectors) + sum(+-mask(key))`` modulo ``2**bits``, streamed in chunks.

    The vector is walked in cache-sized chunks: the partial sum of a chunk stays in cache while
    every input chunk is added and every mask chunk is generated (one ``update_into`` call of
    the mask's :class:`MaskStream`) into a preallocated buffer and added or subtracted with
    wraparound. With ``workers > 1`` the vector is split into contiguous ranges and all but
    the first are computed by forked worker processes (:func:`run_ranges`), which write into
    shared memory; threads would not help, because ``cryptography``'s AES-CTR call holds the
    GIL. Worker processes cut wall time on a multi-core server, not CPU time.

    Args:
        vectors: arrays in the packing dtype of ``bits`` (added).
        jobs: (mask key, True to add / False to subtract).
        length: vector length.
        bits: modulus exponent.
        workers: processes (1 = this process only; more only where ``os.fork`` is safe to use,
            i.e. on Linux; elsewhere the ranges run here one after the other).
        chunk: entries per chunk.
    """
    dt = dtype_for_bits(bits)
    for v in vectors:
        if v.dtype != dt or v.shape != (length,):
            raise ValueError(f"inputs must be {length} words of {dt}, got {v.shape} of {v.dtype}")
    align = max(1, BLOCK_BYTES // dt.itemsize)
    step = max(align, chunk - chunk % align)
    workers = max(1, min(workers, -(-length // step)))
    per = -(-length // workers)
    per += (-per) % align
    ranges = [(lo, min(lo + per, length)) for lo in range(0, length, per)] if length else []
    forked = len(ranges) > 1 and FORK_WORKERS
    if forked:  # the workers write their ranges into memory shared with this process
        shared = mmap.mmap(-1, max(1, length * dt.itemsize))
        total = np.frombuffer(shared, dtype=dt, count=length)
    else:
        total = np.empty(length, dtype=dt)

    def work(bounds: tuple[int, int]) -> None:
        lo, hi = bounds
        streams = [
            (MaskStream(k, start=lo, itemsize=dt.itemsize).update_into, add) for k, add in jobs
        ]
        buf = padded_buffer(min(step, hi - lo), dt)
        view = memoryview(buf).cast("B")  # type: ignore[arg-type]
        add_, subtract = np.add, np.subtract
        for c0 in range(lo, hi, step):
            c1 = min(c0 + step, hi)
            seg = total[c0:c1]
            part = buf[: c1 - c0]
            zeros = _zeros((c1 - c0) * dt.itemsize)
            # ``src`` is the running sum of this chunk so far; the first operation reads the
            # first input directly instead of copying it into ``seg`` (one pass fewer).
            src: np.ndarray = seg
            if not vectors:
                seg.fill(0)
            elif len(vectors) == 1:
                src = vectors[0][c0:c1]
            else:
                np.add(vectors[0][c0:c1], vectors[1][c0:c1], out=seg)
            for y in vectors[2:]:
                np.add(seg, y[c0:c1], out=seg)
            for update_into, add in streams:
                update_into(zeros, view)  # the next c1 - c0 mask words into part
                (add_ if add else subtract)(src, part, out=seg)
                src = seg
            if src is not seg:  # one input and no masks
                np.copyto(seg, src, casting="no")

    run_ranges(work, ranges, fork=forked)
    if forked:
        total = total.copy()  # a private array; the shared mapping is released
    return reduce_inplace(total, bits)


#: Whether :func:`apply_masks` may fork worker processes (Linux only: forking a process that
#: uses system frameworks is unsafe on macOS, and Windows has no fork).
FORK_WORKERS = sys.platform.startswith("linux") and hasattr(os, "fork")


def run_ranges(
    work: Callable[[tuple[int, int]], None], ranges: list[tuple[int, int]], *, fork: bool
) -> None:
    """Run ``work`` on every range: the first here, the others in forked children if ``fork``.

    A child that fails (non-zero exit, or killed) or cannot be forked does not lose the
    result: its range is computed here. Children exit with ``os._exit`` so they never run the
    parent's exit handlers; their CPU time shows in ``resource.getrusage(RUSAGE_CHILDREN)``
    once reaped.
    """
    if not fork or len(ranges) <= 1:
        for r in ranges:
            work(r)
        return
    children: list[tuple[int, tuple[int, int]]] = []
    failed: list[tuple[int, int]] = []
    try:
        for r in ranges[1:]:
            try:
                pid = os.fork()
            except OSError:  # no more processes allowed: this range runs here
                failed.append(r)
                continue
            if pid == 0:  # child
                code = 1
                try:
                    work(r)
                    code = 0
                finally:
                    os._exit(code)
            children.append((pid, r))
        work(ranges[0])
    finally:
        for pid, r in children:
            _, status = os.waitpid(pid, 0)
            if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                failed.append(r)
    for r in failed:
        work(r)


class DeterministicRandom:
    """TEST MODE ONLY: a seeded CSPRNG standing in for ``os.urandom``.

    Produces AES-256-CTR keystream under ``SHA-256(seed)``, so protocol runs (keys, shares,
    nonces) are reproducible for known-answer tests and debugging. Never use it for real
    aggregation: anybody who knows the seed knows every key.
    """

    def __init__(self, seed: bytes) -> None:
        from cryptography.hazmat.primitives import hashes

        digest = hashes.Hash(hashes.SHA256())
        digest.update(b"privfed/secagg/v1/test-mode-random" + seed)
        self._enc = Cipher(algorithms.AES(digest.finalize()), modes.CTR(bytes(16))).encryptor()

    def __call__(self, n: int) -> bytes:
        """Return the next ``n`` bytes of the stream."""
        return self._enc.update(bytes(n))
