"""Property and unit tests of the secagg building blocks."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privfed.errors import ConfigError
from privfed.secagg import shamir
from privfed.secagg.config import (
    InsecureThresholdWarning,
    SecAggConfig,
    check_no_overflow,
    default_degree,
    neighbourhood_failure_probability,
    resolve_threshold,
    round_failure_bound,
    two_thirds,
)
from privfed.secagg.envelope import ENVELOPE_BYTES, SharePair, open_envelope, seal
from privfed.secagg.errors import EnvelopeError, MessageError
from privfed.secagg.field import decode_fixed_point, dtype_for_bits, encode_fixed_point
from privfed.secagg.graph import build_graph, harary_graph
from privfed.secagg.keys import LABEL_PAIRWISE_MASK, derive_key, generate_keypair, x25519
from privfed.secagg.messages import (
    ENVELOPE_RECORD,
    EnvelopeRecords,
    ForwardedShares,
    MaskedInput,
    MsgType,
    ShareKeys,
    ShareKind,
    UnmaskColumns,
    UnmaskRequest,
    UnmaskResponse,
    encode_forwarded,
    envelope_records,
)
from privfed.secagg.prg import DeterministicRandom, apply_masks, expand_mask, mask_into
from privfed.secagg.server import combine

SESSION = bytes(range(32))


# -- Shamir ------------------------------------------------------------------------------------


def _is_probable_prime(n: int, rounds: int = 40) -> bool:
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    rng = random.Random(1)
    for _ in range(rounds):
        a = rng.randrange(2, n - 2)
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def test_field_prime_is_the_smallest_prime_above_2_256() -> None:
    assert shamir.PRIME == 2**256 + 297
    assert _is_probable_prime(shamir.PRIME)
    assert not any(_is_probable_prime(2**256 + k, rounds=8) for k in range(1, 297))


@settings(max_examples=30, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    n=st.integers(min_value=1, max_value=12),
    data=st.data(),
)
def test_any_t_subset_reconstructs(secret: bytes, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(min_value=1, max_value=n))
    ids = data.draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n, unique=True))
    xs = [shamir.evaluation_point(i) for i in ids]
    shares = shamir.share_secret(secret, threshold=t, xs=xs)
    subset = data.draw(st.lists(st.sampled_from(xs), min_size=t, max_size=n, unique=True))
    assert shamir.reconstruct({x: shares[x] for x in subset}, threshold=t) == secret
    if t > 1:
        with pytest.raises(ValueError):
            shamir.reconstruct({x: shares[x] for x in subset[: t - 1]}, threshold=t)


@settings(max_examples=25, deadline=None)
@given(
    s0=st.integers(0, 2**256 - 1),
    s1=st.integers(0, 2**256 - 1),
    t=st.integers(2, 6),
    seed=st.integers(0, 2**32),
)
def test_t_minus_1_shares_fit_every_secret_exactly_once(
    s0: int, s1: int, t: int, seed: int
) -> None:
    """For any t-1 shares and any other secret there is exactly one polynomial: the shares are a
    bijective image of the uniform coefficients, so their distribution does not depend on the
    secret."""
    rng = random.Random(seed)
    xs = list(range(1, t))
    coeffs = [rng.randrange(shamir.PRIME) for _ in range(t - 1)]
    shares = shamir.split(s0, coefficients=coeffs, xs=xs)
    # Solve for the coefficients that give the same shares under secret s1 (Lagrange basis).
    points = {0: s1, **shares}
    p = shamir.PRIME
    poly = [0] * t
    for xi, yi in points.items():
        basis, denom = [1], 1
        for xj in points:
            if xj == xi:
                continue
            basis = [(a - xj * b) % p for a, b in zip([0, *basis], [*basis, 0], strict=True)]
            denom = denom * (xi - xj) % p
        scale = yi * pow(denom, -1, p) % p
        poly = [(c + scale * b) % p for c, b in zip(poly, basis, strict=True)]
    assert poly[0] == s1
    assert shamir.split(s1, coefficients=poly[1:], xs=xs) == shares


def test_single_share_bits_do_not_depend_on_the_secret() -> None:
    """Statistical check, t = 2: the low bit of one share is a fair coin for two secrets."""
    counts = []
    for secret in (bytes(32), b"\xff" * 32):
        ones = sum(shamir.share_secret(secret, threshold=2, xs=[1, 2])[1] & 1 for _ in range(2000))
        counts.append(ones)
    for ones in counts:
        assert abs(ones - 1000) < 4 * math.sqrt(2000 * 0.25)


def test_corrupt_share_is_detected_when_out_of_range() -> None:
    with pytest.raises(ValueError):
        shamir.decode_share(shamir.PRIME.to_bytes(33, "big"))


# -- PRG and masks -----------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [8, 13, 16, 32, 33, 62])
def test_expand_mask_range_dtype_and_offsets(bits: int) -> None:
    key = bytes(range(32))
    m = expand_mask(key, length=1000, bits=bits)
    assert m.dtype == dtype_for_bits(bits)
    assert int(m.max()) < 2**bits
    raw = np.empty(1000, dtype=dtype_for_bits(bits))
    mask_into(key, raw)
    part = np.empty(1000 - 64, dtype=dtype_for_bits(bits))
    mask_into(key, part, start=64)
    assert np.array_equal(raw[64:], part)
    assert not np.array_equal(m, expand_mask(bytes(32), length=1000, bits=bits))


def test_pairwise_masks_cancel() -> None:
    ids = [3, 7, 11, 20]
    keys = {c: generate_keypair() for c in ids}
    total = np.zeros(257, dtype=np.uint32)
    for u in ids:
        for v in ids:
            if u == v:
                continue
            k = derive_key(
                x25519(keys[u].private, keys[v].public), label=LABEL_PAIRWISE_MASK, session=SESSION
            )
            m = expand_mask(k, length=257, bits=32)
            total = total + m if u < v else total - m
    assert not total.any()


@pytest.mark.parametrize("n_vectors", [0, 1, 2, 3])
@pytest.mark.parametrize("n_jobs", [0, 1, 5])
def test_combine_matches_slow_reference(n_vectors: int, n_jobs: int) -> None:
    rng = np.random.default_rng(0)
    for bits in (12, 32, 40):
        vecs = [
            rng.integers(0, 2**bits, size=1000, dtype=np.uint64).astype(dtype_for_bits(bits))
            for _ in range(n_vectors)
        ]
        jobs = [(bytes([i]) * 32, i % 2 == 0) for i in range(n_jobs)]
        fast = combine(vecs, jobs, length=1000, bits=bits, workers=2, chunk=96)
        assert np.array_equal(apply_masks(vecs, jobs, length=1000, bits=bits, chunk=128), fast)
        ref_vec = np.zeros(1000, dtype=object)
        for v in vecs:
            ref_vec = ref_vec + v.astype(object)
        for key, add in jobs:
            m = expand_mask(key, length=1000, bits=bits).astype(object)
            ref_vec = ref_vec + m if add else ref_vec - m
        ref_vec = ref_vec % (2**bits)
        assert [int(a) for a in fast] == [int(b) for b in ref_vec]


def test_deterministic_random_is_reproducible() -> None:
    a, b = DeterministicRandom(b"x"), DeterministicRandom(b"x")
    assert a(40) == b(40)
    assert DeterministicRandom(b"y")(40) != DeterministicRandom(b"x")(40)


# -- keys, envelopes ---------------------------------------------------------------------------


def test_derive_key_is_domain_separated() -> None:
    secret = bytes(32)
    a = derive_key(secret, label="pairwise-mask", session=SESSION)
    assert a != derive_key(secret, label="self-mask", session=SESSION)
    assert a != derive_key(secret, label="pairwise-mask", session=bytes(32))


def test_envelope_binds_session_round_and_parties() -> None:
    key = bytes(range(32))
    pair = SharePair(b"\x01" * 33, b"\x02" * 33)
    env = seal(key, pair, session=SESSION, round_index=4, sender=1, receiver=2, nonce=bytes(12))
    assert open_envelope(key, env, session=SESSION, round_index=4, sender=1, receiver=2) == pair
    for kwargs in (
        dict(session=bytes(32), round_index=4, sender=1, receiver=2),
        dict(session=SESSION, round_index=5, sender=1, receiver=2),
        dict(session=SESSION, round_index=4, sender=1, receiver=3),
        dict(session=SESSION, round_index=4, sender=9, receiver=2),
    ):
        with pytest.raises(EnvelopeError):
            open_envelope(key, env, **kwargs)
    with pytest.raises(EnvelopeError):
        open_envelope(key, env[:-1], session=SESSION, round_index=4, sender=1, receiver=2)


# -- graph -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,k", [(10, 4), (11, 4), (10, 3), (30, 6), (50, 10), (7, 6)])
def test_harary_graph_is_regular_and_symmetric(n: int, k: int) -> None:
    g = harary_graph(range(n), degree=k, session=SESSION)
    degrees = sorted(len(v) for v in g.values())
    assert degrees[0] == k and degrees[-1] <= k + 1
    assert all(u in g[v] for u in g for v in g[u])
    assert all(u not in g[u] for u in g)


def test_harary_graph_depends_on_session() -> None:
    a = build_graph(range(40), kind="harary", degree=6, session=SESSION)
    b = build_graph(range(40), kind="harary", degree=6, session=bytes(32))
    assert dict(a) != dict(b)


# -- fixed point -------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    xs=st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=1, max_size=50),
    scale_bits=st.integers(0, 20),
    seed=st.integers(0, 2**32),
)
def test_fixed_point_error_bound(xs: list[float], scale_bits: int, seed: int) -> None:
    x = np.asarray(xs, dtype=np.float32)
    enc = encode_fixed_point(
        x, clip=1.5, scale_bits=scale_bits, bits=48, rng=np.random.default_rng(seed)
    )
    back = decode_fixed_point(enc.values, bits=48, scale_bits=scale_bits)
    clipped = np.clip(x.astype(np.float64), -1.5, 1.5)
    assert np.all(np.abs(back - clipped) <= 2.0**-scale_bits)
    assert enc.clamped == int(np.sum(np.abs(x) > 1.5))


def test_integers_encode_exactly() -> None:
    x = np.array([0.0, 1.0, -1.0, 1.0, 0.0], dtype=np.float32)
    for seed in range(5):
        enc = encode_fixed_point(
            x, clip=1.0, scale_bits=16, bits=32, rng=np.random.default_rng(seed)
        )
        assert np.array_equal(decode_fixed_point(enc.values, bits=32, scale_bits=16), x)


def test_stochastic_rounding_is_unbiased() -> None:
    x = np.full(20000, 0.3, dtype=np.float64)
    enc = encode_fixed_point(x, clip=1.0, scale_bits=2, bits=16, rng=np.random.default_rng(0))
    mean = decode_fixed_point(enc.values, bits=16, scale_bits=2).mean()
    assert abs(mean - 0.3) < 0.01


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 300), bits=st.integers(16, 40), scale_bits=st.integers(0, 20))
def test_no_overflow_rule_is_exact(n: int, bits: int, scale_bits: int) -> None:
    try:
        cfg = SecAggConfig(bits=bits, scale_bits=scale_bits, clip=1.0)
    except ConfigError:
        return
    extreme = np.full(1, 1.0)
    enc = encode_fixed_point(
        extreme, clip=1.0, scale_bits=scale_bits, bits=bits, rng=np.random.default_rng(0)
    ).values.astype(object)
    low = encode_fixed_point(
        -extreme, clip=1.0, scale_bits=scale_bits, bits=bits, rng=np.random.default_rng(0)
    ).values.astype(object)
    fits = True
    try:
        check_no_overflow(cfg, num_clients=n)
    except ConfigError as exc:
        fits = False
        assert "bits" in exc.problems[0]
    for v, sign in ((enc, 1), (low, -1)):
        total = np.array([(int(v[0]) * n) % 2**bits], dtype=np.uint64)
        decoded = decode_fixed_point(total, bits=bits, scale_bits=scale_bits)[0]
        if fits:
            assert decoded == sign * n
    if not fits:  # the worst case really can wrap: all +clip or a mix is not representable
        span = n * (2 * 2**scale_bits + 1)
        assert span >= 2**bits


# -- config ------------------------------------------------------------------------------------


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        SecAggConfig(bits=3, graph="ring", clip=0.5, scale_bits=-1, threshold=1)
    fields = [p.split()[0] for p in info.value.problems]
    assert fields == ["threshold", "bits", "graph", "clip", "scale_bits"]
    assert "bits must be between 8 and 62, got 3" in info.value.problems


def test_config_refuses_degree_on_complete_graph() -> None:
    with pytest.raises(ConfigError, match="degree is only used"):
        SecAggConfig(degree=4)


def test_default_thresholds_are_two_thirds() -> None:
    assert resolve_threshold(SecAggConfig(), num_clients=30, degree=29) == 21
    assert resolve_threshold(SecAggConfig(graph="harary"), num_clients=1000, degree=20) == 15
    assert resolve_threshold(SecAggConfig(threshold=5), num_clients=30, degree=29) == 5
    for size in range(2, 200):
        t = two_thirds(size)
        assert 3 * t > 2 * size and 3 * (t - 1) <= 2 * size or t == size


# -- wire format -------------------------------------------------------------------------------


def test_messages_roundtrip_and_reject_truncation() -> None:
    vec = np.arange(10, dtype=np.uint32)
    msg = MaskedInput(3, 7, SESSION, 32, (4, 5, 6), (1, 2), vec)
    data = msg.encode()
    back = MaskedInput.decode(data)
    assert back.rejected == (1, 2) and back.masked_with == (4, 5, 6)
    assert np.array_equal(back.vector, vec)
    # header, session, bits, 3 peers, 2 rejected ids, length, zero padding to 16 bytes, vector
    prefix = 22 + 32 + 1 + 16 + 12 + 4
    assert prefix % 16 == 7
    assert len(data) == prefix + 9 + 40  # packed at 4 bytes per entry
    assert data[prefix : prefix + 9] == bytes(9)
    assert back.vector.ctypes.data % 16 == 0  # a view into bytes, aligned
    with pytest.raises(MessageError, match="padding"):
        MaskedInput.decode(data[:prefix] + b"\1" + data[prefix + 1 :])
    for cut in (1, 5, len(data) - 23):
        with pytest.raises(MessageError):
            MaskedInput.decode(data[:-cut])
    with pytest.raises(MessageError):
        MaskedInput.decode(data + b"\0")
    with pytest.raises(MessageError, match="expected message UNMASK_REQUEST"):
        UnmaskRequest.decode(data)
    with pytest.raises(MessageError, match="magic"):
        MaskedInput.decode(b"XXXX" + data[4:])
    with pytest.raises(MessageError, match="unsupported wire version 1: version 1"):
        MaskedInput.decode(data[:4] + b"\1" + data[5:])  # version 1 had no alignment padding
    with pytest.raises(MessageError, match="version 2 .no signatures, no seed commitment"):
        MaskedInput.decode(data[:4] + b"\2" + data[5:])
    with pytest.raises(MessageError, match="unsupported wire version 9 .this is version 3"):
        MaskedInput.decode(data[:4] + b"\x09" + data[5:])
    both = MaskedInput(3, 7, SESSION, 32, (1, 4), (1, 2), vec).encode()
    with pytest.raises(MessageError, match="both masked with and rejected"):
        MaskedInput.decode(both)


def test_masked_input_packs_at_bits() -> None:
    vec = np.arange(10, dtype=np.uint16)
    assert (
        len(MaskedInput(0, 0, SESSION, 16, (), (), vec).encode()) == 22 + 32 + 1 + 8 + 4 + 13 + 20
    )


@settings(max_examples=60, deadline=None)
@given(
    rejected=st.lists(st.integers(0, 2**32 - 2), unique=True, max_size=9),
    bits=st.integers(1, 64),
    length=st.integers(0, 40),
    round_index=st.integers(0, 2**64 - 1),
)
def test_masked_input_vector_is_aligned_and_roundtrips(
    rejected: list[int], bits: int, length: int, round_index: int
) -> None:
    dt = dtype_for_bits(bits)
    rng = np.random.default_rng(length)
    vec = rng.integers(0, 2**bits, size=length, dtype=np.uint64).astype(dt)
    data = MaskedInput(round_index, 4, SESSION, bits, (), tuple(rejected), vec).encode()
    assert (len(data) - vec.nbytes) % 16 == 0
    back = MaskedInput.decode(data)
    assert back.vector.dtype == dt and np.array_equal(back.vector, vec)
    assert back.rejected == tuple(rejected) and back.round_index == round_index
    assert (
        MaskedInput(
            round_index, 4, SESSION, bits, (), tuple(rejected), vec.astype(np.uint64)
        ).encode()
        == data
    )  # packed at the dtype of bits whatever it came in


def test_unmask_response_rejects_two_shares_for_one_client() -> None:
    share = bytes(33)
    msg = UnmaskResponse(
        0, 1, SESSION, ((5, ShareKind.SELF_MASK, share), (5, ShareKind.MASK_KEY, share))
    )
    with pytest.raises(MessageError, match="two shares"):
        UnmaskResponse.decode(msg.encode())


def test_apply_masks_refuses_inputs_of_the_wrong_dtype_or_length() -> None:
    good = np.zeros(10, dtype=np.uint32)
    with pytest.raises(ValueError, match="inputs must be 10 words of uint32"):
        apply_masks([good, np.zeros(10, dtype=np.uint64)], [], length=10, bits=32)
    with pytest.raises(ValueError, match="inputs must be 10 words"):
        apply_masks([np.zeros(9, dtype=np.uint32)], [], length=10, bits=32)


@settings(max_examples=40, deadline=None)
@given(xs=st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=40, unique=True))
def test_lagrange_coefficients_match_exact_rationals(xs: list[int]) -> None:
    from fractions import Fraction

    shamir.lagrange_at_zero.cache_clear()
    got = shamir.lagrange_at_zero(tuple(xs))
    for xi, li in zip(xs, got, strict=True):
        exact = Fraction(1)
        for xj in xs:
            if xj != xi:
                exact *= Fraction(xj, xj - xi)
        want = exact.numerator * pow(exact.denominator, -1, shamir.PRIME) % shamir.PRIME
        assert li == want


@settings(max_examples=40, deadline=None)
@given(parties=st.lists(st.integers(0, 2**32 - 1), unique=True, max_size=12), seed=st.integers())
def test_envelope_messages_roundtrip_column_wise(parties: list[int], seed: int) -> None:
    rng = random.Random(seed)
    envs = tuple((p, rng.randbytes(ENVELOPE_BYTES - 1) + b"\0") for p in parties)  # trailing 0
    commit = bytes(range(100, 132))
    data = ShareKeys(3, 9, SESSION, commit, envs).encode()
    assert ShareKeys.decode(data).envelopes == envs
    cols = EnvelopeRecords.decode(data, MsgType.SHARE_KEYS)
    assert cols.records["party"].tolist() == parties and cols.sender == 9
    assert cols.commitment == commit
    # The server relays records it built in native byte order; the wire stays big-endian.
    native = np.zeros(len(parties), dtype=[("party", "<u4"), ("envelope", f"V{ENVELOPE_BYTES}")])
    native["party"] = parties
    native["envelope"] = cols.records["envelope"]
    forwarded = encode_forwarded(3, SESSION, native)
    assert forwarded == ForwardedShares(3, SESSION, envs).encode()
    assert ForwardedShares.decode(forwarded).envelopes == envs
    if len(parties) >= 2:
        dup = ShareKeys(3, 9, SESSION, commit, (envs[0], (parties[0], envs[1][1]))).encode()
        with pytest.raises(MessageError, match="duplicate parties"):
            EnvelopeRecords.decode(dup, MsgType.SHARE_KEYS)
    with pytest.raises(MessageError, match="expected message FORWARDED_SHARES"):
        EnvelopeRecords.decode(data, MsgType.FORWARDED_SHARES)
    with pytest.raises(MessageError, match="wrong layout"):
        encode_forwarded(3, SESSION, np.zeros(2, dtype=[("party", "<u4"), ("envelope", "V9")]))
    assert ENVELOPE_RECORD.itemsize == 4 + ENVELOPE_BYTES


@settings(max_examples=40, deadline=None)
@given(owners=st.lists(st.integers(0, 2**32 - 1), unique=True, max_size=12), seed=st.integers())
def test_unmask_response_columns_match_the_tuple_decoding(owners: list[int], seed: int) -> None:
    rng = random.Random(seed)
    shares = tuple(
        (o, ShareKind(rng.randrange(2)), shamir.encode_share(rng.randrange(shamir.PRIME) >> 8 << 8))
        for o in owners
    )  # values ending in a zero byte must survive column-wise decoding
    data = UnmaskResponse(5, 2, SESSION, shares).encode()
    assert UnmaskResponse.decode(data).shares == shares
    cols = UnmaskColumns.decode(data)
    assert cols.owners == owners and list(cols.kinds) == [int(k) for _, k, _ in shares]
    assert cols.values() == [int.from_bytes(s, "big") for _, _, s in shares]
    bad = bytearray(data)
    if owners:
        bad[22 + 32 + 4 + 4] = 2  # the first share's kind byte
        with pytest.raises(MessageError, match="unknown share kind"):
            UnmaskColumns.decode(bytes(bad))


def test_forked_workers_give_the_same_sum_and_survive_a_failing_child() -> None:
    import os

    from privfed.secagg import prg

    rng = np.random.default_rng(3)
    vecs = [rng.integers(0, 2**32, size=5000, dtype=np.uint64).astype(np.uint32) for _ in range(4)]
    jobs = [(bytes([i]) * 16, i % 3 == 0) for i in range(6)]
    serial = apply_masks(vecs, jobs, length=5000, bits=32, workers=1, chunk=512)
    got = apply_masks(vecs, jobs, length=5000, bits=32, workers=3, chunk=512)
    assert np.array_equal(got, serial)
    if not prg.FORK_WORKERS:
        pytest.skip("no forked workers on this platform")
    parent = os.getpid()
    done: list[tuple[int, int]] = []

    def work(bounds: tuple[int, int]) -> None:
        if os.getpid() != parent and bounds[0] == 20:
            raise RuntimeError("a worker dies")  # its range must be recomputed by the parent
        done.append(bounds)

    prg.run_ranges(work, [(0, 10), (10, 20), (20, 30)], fork=True)
    # The parent ran its own range and redid the failed one; the good child's work happened
    # in the child (not visible in this process's list).
    assert done == [(0, 10), (20, 30)]


def test_ranges_run_here_when_no_process_can_be_forked(monkeypatch: pytest.MonkeyPatch) -> None:
    from privfed.secagg import prg

    def no_fork() -> int:
        raise OSError("Resource temporarily unavailable")

    monkeypatch.setattr(prg.os, "fork", no_fork)
    done: list[tuple[int, int]] = []
    prg.run_ranges(done.append, [(0, 10), (10, 20), (20, 30)], fork=True)
    assert sorted(done) == [(0, 10), (10, 20), (20, 30)]
    rng = np.random.default_rng(4)
    vecs = [rng.integers(0, 2**20, size=3000, dtype=np.uint64).astype(np.uint32)]
    jobs = [(bytes([9]) * 16, True)]
    assert np.array_equal(
        apply_masks(vecs, jobs, length=3000, bits=20, workers=3, chunk=256),
        apply_masks(vecs, jobs, length=3000, bits=20),
    )


# -- security parameters: minimums, margins, default degree ---------------------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"min_clients": 2}, "min_clients = 2 lets a server isolate one client's input"),
        ({"min_clients": 1}, "min_clients = 1 lets a server isolate"),
        ({"min_neighbours": 1}, "min_neighbours = 1 leaves a neighbourhood"),
        ({"threshold": 2}, "threshold = 2 gives no security margin for any roster"),
        ({"graph": "harary", "degree": 6, "threshold": 3}, "at most half of the closed"),
        ({"graph": "harary", "degree": 6, "threshold": 8}, "exceeds the closed neighbourhood"),
        ({"graph": "harary", "degree": 2}, "degree = 2 is below min_neighbours = 3"),
        ({"security": "paranoid"}, "security must be one of semi-honest, malicious"),
        ({"expected_dropout": 1.0}, "expected_dropout must be in [0, 1)"),
        ({"max_failure_probability": 0.0}, "max_failure_probability must be in (0, 1)"),
        ({"allow_insecure_threshold": 1}, "allow_insecure_threshold must be true or false"),
    ],
)
def test_config_refuses_settings_without_a_security_margin(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        SecAggConfig(**kwargs)  # type: ignore[arg-type]
    assert any(message in p for p in info.value.problems), info.value.problems


def test_insecure_settings_need_the_loud_flag_and_warn() -> None:
    with pytest.warns(InsecureThresholdWarning, match="attack experiments only"):
        cfg = SecAggConfig(min_clients=1, threshold=2, allow_insecure_threshold=True)
    assert cfg.min_clients == 1 and cfg.threshold == 2
    assert SecAggConfig().security == "malicious" and SecAggConfig().min_clients == 4


def test_neighbourhood_failure_probability_is_the_binomial_tail() -> None:
    from math import comb

    for size, t, p in [(15, 11, 0.1), (21, 15, 0.1), (5, 4, 0.3), (43, 29, 0.1)]:
        direct = sum(comb(size, j) * (1 - p) ** j * p ** (size - j) for j in range(t))
        got = neighbourhood_failure_probability(size=size, threshold=t, dropout=p)
        assert got == pytest.approx(direct, rel=1e-9)
    # The figure behind the old default (k = 14, t = 11): ~1.3% per neighbourhood.
    assert neighbourhood_failure_probability(size=15, threshold=11, dropout=0.1) == pytest.approx(
        0.0127, abs=5e-4
    )
    assert neighbourhood_failure_probability(size=3000, threshold=2001, dropout=0.1) < 1e-100


def test_default_degree_keeps_rounds_alive_at_ten_percent_dropout() -> None:
    """The default degree is the smallest even k >= 2 ceil(log2 n) whose union bound stays
    under 1% at 10% dropout with the two-thirds threshold; the old 2 ceil(log2 n) does not."""
    for n, want in [(100, 34), (1000, 42), (10_000, 54)]:
        k = default_degree(n)
        assert k == want, (n, k)
        bound = round_failure_bound(
            num_clients=n, degree=k, threshold=two_thirds(k + 1), dropout=0.1
        )
        assert bound <= 0.01
        smaller = round_failure_bound(
            num_clients=n, degree=k - 2, threshold=two_thirds(k - 1), dropout=0.1
        )
        assert smaller > 0.01
    assert default_degree(20) == 19  # small cohorts: the complete graph
    old = round_failure_bound(num_clients=100, degree=14, threshold=11, dropout=0.1)
    assert old > 1.0 - 1e-9  # the old default's bound is vacuous: rounds die often


@pytest.mark.slow
def test_failure_bound_against_simulated_dropouts_on_the_real_graph() -> None:
    """Monte Carlo on the Harary graph the protocol builds: the union bound is an upper bound,
    loose by a factor of about five (neighbourhoods overlap, so their failures coincide)."""
    from privfed.secagg.graph import harary_graph

    rng = np.random.default_rng(0)
    n, k = 100, 20
    t = two_thirds(k + 1)
    graph = harary_graph(range(n), degree=k, session=SESSION)
    closed = np.zeros((n, n), dtype=bool)
    for c, nb in graph.items():
        closed[c, list(nb | {c})] = True
    trials = 20_000
    alive = rng.random((trials, n)) >= 0.1
    counts = alive.astype(np.int32) @ closed.T.astype(np.int32)
    failed = (counts < t).any(axis=1).mean()
    bound = round_failure_bound(num_clients=n, degree=k, threshold=t, dropout=0.1)
    assert bound / 10 < failed <= bound


@settings(max_examples=60, deadline=None)
@given(
    t=st.integers(1, 40),
    groups=st.integers(1, 6),
    same=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_batched_interpolation_equals_python_integers(
    t: int, groups: int, same: bool, seed: int
) -> None:
    rng = random.Random(seed)
    ids = [rng.randrange(2**32 - 1) for _ in range(200)]
    points = []
    for g in range(groups):
        if same and g:
            points.append(points[0])
            continue
        points.append(tuple(sorted(shamir.evaluation_point(c) for c in rng.sample(ids, t))))
    # any 33-byte value, including values above the prime and the extremes
    pick = [0, 1, shamir.PRIME - 1, shamir.PRIME, (1 << 264) - 1]
    values = [
        [rng.choice(pick) if rng.random() < 0.2 else rng.randrange(1 << 264) for _ in range(t)]
        for _ in range(groups)
    ]
    raw = b"".join(v.to_bytes(shamir.SHARE_BYTES, "big") for row in values for v in row)
    shares = np.frombuffer(raw, dtype=np.uint8).reshape(groups, t, shamir.SHARE_BYTES)
    want = [
        sum(c * v for c, v in zip(shamir.lagrange_at_zero(x), row, strict=True)) % shamir.PRIME
        for x, row in zip(points, values, strict=True)
    ]
    assert shamir.interpolate_many(points, shares) == want


def test_interpolation_recovers_shared_secrets() -> None:
    rng = random.Random(5)
    secrets = [rng.randbytes(32) for _ in range(4)]
    xs = [1, 3, 4, 9, 12]
    shares = [shamir.share_secret(s, threshold=3, xs=xs) for s in secrets]
    use = (3, 9, 12)
    raw = b"".join(shamir.encode_share(sh[x]) for sh in shares for x in use)
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(4, 3, shamir.SHARE_BYTES)
    got = shamir.interpolate_many([use] * 4, rows)
    assert [v.to_bytes(32, "big") for v in got] == secrets
    assert shamir.interpolate(use, [sh[x] for x in use for sh in shares[:1]]) == secrets[0]
    with pytest.raises(ValueError, match="evaluation points"):
        shamir.interpolate(use, [1, 2])


def test_unmask_columns_field_check_without_integers() -> None:
    base = [(0, ShareKind.SELF_MASK, shamir.encode_share(5))]
    for value, ok in [
        (0, True),
        ((1 << 256) - 1, True),
        (1 << 256, True),
        (shamir.PRIME - 1, True),
        (shamir.PRIME, False),
        ((1 << 257) + 3, False),
        ((1 << 264) - 1, False),
    ]:
        shares = (*base, (7, ShareKind.MASK_KEY, value.to_bytes(33, "big")))
        cols = UnmaskColumns.decode(UnmaskResponse(5, 2, SESSION, shares).encode())
        assert cols.in_field() is ok, value
        try:  # the check on integers agrees
            cols.values()
            assert ok
        except ValueError:
            assert not ok
    assert UnmaskColumns.decode(UnmaskResponse(5, 2, SESSION, ()).encode()).in_field()


def test_relayed_envelope_rows_encode_like_records() -> None:
    rng = random.Random(2)
    envs = tuple((p, rng.randbytes(ENVELOPE_BYTES)) for p in (4, 9, 1))
    rows = envelope_records(envs).view(np.uint8).reshape(3, ENVELOPE_RECORD.itemsize)
    assert encode_forwarded(3, SESSION, rows) == ForwardedShares(3, SESSION, envs).encode()
    empty = np.zeros((0, ENVELOPE_RECORD.itemsize), dtype=np.uint8)
    assert encode_forwarded(3, SESSION, empty) == ForwardedShares(3, SESSION, ()).encode()
    with pytest.raises(MessageError, match="wrong layout"):
        encode_forwarded(3, SESSION, np.zeros((2, 7), dtype=np.uint8))
