"""Versioned, length-checked wire format of every protocol message.

Every message is ``header || body``. The header is ``b"PFSA"``, the protocol version (1 byte),
the message type (1 byte), the round (8 bytes), the sender id (4 bytes; :data:`SERVER_ID` for
the server) and the body length (4 bytes), all big-endian. Bodies are fixed-layout sequences of
big-endian integers, 32-byte keys/session ids, fixed-size envelopes and, for the masked input,
the vector packed little-endian in the smallest unsigned type holding ``bits`` bits, starting at
a multiple of :data:`VECTOR_ALIGN` bytes from the start of the message (zero padding before
it). Decoding checks magic, version, type, exact length, counts, duplicates and ranges, and
raises :class:`~privfed.secagg.errors.MessageError`; nothing is ever unpickled.

Versions: 1 had no alignment padding; 2 added it; 3 (this one) adds the Ed25519 signatures of
the active-adversary variant (advertised keys, roster entries, the ConsistencyCheck round and
its messages), the commitment to the self-mask seed in ``SHARE_KEYS`` and the set of peers a
client actually masked with in ``MASKED_INPUT``. Older versions are refused by name.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from privfed.secagg.envelope import ENVELOPE_BYTES
from privfed.secagg.errors import MessageError
from privfed.secagg.field import dtype_for_bits
from privfed.secagg.identity import SIGNATURE_BYTES
from privfed.secagg.shamir import PRIME, SHARE_BYTES

MAGIC = b"PFSA"
WIRE_VERSION = 3
#: Versions this code refuses, and why (what they lack).
OLD_VERSIONS = {
    1: "version 1 (unaligned masked vectors)",
    2: "version 2 (no signatures, no seed commitment, no mask-peer set)",
}
SERVER_ID = 0xFFFFFFFF
_HEADER = struct.Struct(">4sBBQII")
HEADER_BYTES = _HEADER.size
KEY_BYTES = 32
SESSION_BYTES = 32
COMMITMENT_BYTES = 32


class MsgType(enum.IntEnum):
    """Message types, in protocol order."""

    ADVERTISE_KEYS = 1
    KEY_ROSTER = 2
    SHARE_KEYS = 3
    FORWARDED_SHARES = 4
    MASKED_INPUT = 5
    UNMASK_REQUEST = 6
    UNMASK_RESPONSE = 7
    CONSISTENCY_REQUEST = 8
    CONSISTENCY_SIGNATURE = 9
    SIGNED_SURVIVORS = 10


class ShareKind(enum.IntEnum):
    """Which of a client's two secrets a revealed share belongs to."""

    SELF_MASK = 0
    MASK_KEY = 1


_KINDS = (ShareKind.SELF_MASK, ShareKind.MASK_KEY)


class _Reader:
    def __init__(self, data: bytes | memoryview, what: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.what = what

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise MessageError(f"{self.what}: truncated body")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def ids(self) -> tuple[int, ...]:
        count = self.u32()
        if count * 4 > len(self.data) - self.pos:
            raise MessageError(f"{self.what}: truncated id list")
        out: tuple[int, ...] = struct.unpack(f">{count}I", self.take(4 * count))
        if len(set(out)) != len(out):
            raise MessageError(f"{self.what}: duplicate ids")
        return out

    def done(self) -> None:
        if self.pos != len(self.data):
            raise MessageError(f"{self.what}: {len(self.data) - self.pos} trailing bytes")


def _ids_at(body: memoryview, pos: int, what: str) -> tuple[tuple[int, ...], int]:
    """The id list at ``pos`` of ``body`` and the position after it (as :meth:`_Reader.ids`)."""
    if pos + 4 > len(body):
        raise MessageError(f"{what}: truncated body")
    (count,) = _U32.unpack_from(body, pos)
    pos += 4
    if count * 4 > len(body) - pos:
        raise MessageError(f"{what}: truncated id list")
    out: tuple[int, ...] = struct.unpack_from(f">{count}I", body, pos)
    if len(set(out)) != count:
        raise MessageError(f"{what}: duplicate ids")
    return out, pos + 4 * count


_U32 = struct.Struct(">I")


def _ids(ids: tuple[int, ...]) -> bytes:
    return struct.pack(">I", len(ids)) + np.asarray(ids, dtype=">u4").tobytes()


def frame(
    kind: MsgType,
    *,
    round_index: int,
    sender: int,
    body: bytes | bytearray | Sequence[bytes | bytearray | memoryview],
) -> bytes:
    """Prefix ``body`` (one buffer, or parts joined in order) with the header; one copy."""
    parts = [body] if isinstance(body, bytes | bytearray) else body
    size = sum(memoryview(p).nbytes for p in parts)
    return b"".join(
        [_HEADER.pack(MAGIC, WIRE_VERSION, int(kind), round_index, sender, size), *parts]
    )


@dataclass(frozen=True)
class Header:
    """A parsed header."""

    kind: MsgType
    round_index: int
    sender: int


def unframe(data: bytes, expected: MsgType) -> tuple[Header, memoryview]:
    """Parse and check a header; return it and the body.

    Raises:
        MessageError: wrong magic, version, type or length.
    """
    if len(data) < HEADER_BYTES:
        raise MessageError(f"{expected.name}: message shorter than its header")
    magic, version, kind, round_index, sender, body_len = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise MessageError(f"{expected.name}: bad magic")
    if version != WIRE_VERSION:
        if version in OLD_VERSIONS:
            raise MessageError(
                f"{expected.name}: unsupported wire version {version}: "
                f"{OLD_VERSIONS[version]} is no longer accepted; this is version {WIRE_VERSION}"
            )
        raise MessageError(
            f"{expected.name}: unsupported wire version {version} (this is version {WIRE_VERSION})"
        )
    if kind != expected:
        got = MsgType(kind).name if kind in MsgType._value2member_map_ else str(kind)
        raise MessageError(f"expected message {expected.name}, received {got}")
    if len(data) != HEADER_BYTES + body_len:
        raise MessageError(
            f"{expected.name}: length {len(data)} does not match header ({HEADER_BYTES + body_len})"
        )
    return Header(expected, round_index, sender), memoryview(data)[HEADER_BYTES:]


def _signature(r: _Reader) -> bytes:
    size = r.u8()
    if size not in (0, SIGNATURE_BYTES):
        raise MessageError(f"{r.what}: signature of {size} bytes (0 or {SIGNATURE_BYTES})")
    return bytes(r.take(size))


@dataclass(frozen=True)
class AdvertiseKeys:
    """Client -> server: the client's two public keys (Bonawitz et al. 2017, round 0).

    In the malicious setting ``signature`` is the client's Ed25519 signature over
    :func:`~privfed.secagg.identity.advertise_message`; empty otherwise.
    """

    round_index: int
    sender: int
    enc_public: bytes
    mask_public: bytes
    signature: bytes = b""

    def encode(self) -> bytes:
        """Serialize."""
        if len(self.signature) not in (0, SIGNATURE_BYTES):
            raise MessageError("ADVERTISE_KEYS: signature has the wrong length")
        return frame(
            MsgType.ADVERTISE_KEYS,
            round_index=self.round_index,
            sender=self.sender,
            body=b"".join(
                [self.enc_public, self.mask_public, bytes([len(self.signature)]), self.signature]
            ),
        )

    @classmethod
    def decode(cls, data: bytes) -> AdvertiseKeys:
        """Parse and check."""
        h, body = unframe(data, MsgType.ADVERTISE_KEYS)
        r = _Reader(body, "ADVERTISE_KEYS")
        c_pk, s_pk = bytes(r.take(KEY_BYTES)), bytes(r.take(KEY_BYTES))
        sig = _signature(r)
        r.done()
        return cls(h.round_index, h.sender, c_pk, s_pk, sig)


@dataclass(frozen=True)
class KeyRoster:
    """Server -> clients: every advertised (id, encryption key, mask key, signature).

    ``signed`` says whether entries carry the clients' 64-byte signatures (malicious setting)
    or none (semi-honest); every entry of one roster has the same layout.
    """

    round_index: int
    signed: bool
    entries: tuple[tuple[int, bytes, bytes, bytes], ...]

    def encode(self) -> bytes:
        """Serialize."""
        sig_bytes = SIGNATURE_BYTES if self.signed else 0
        parts = [struct.pack(">BI", int(self.signed), len(self.entries))]
        for cid, c_pk, s_pk, sig in self.entries:
            if len(c_pk) != KEY_BYTES or len(s_pk) != KEY_BYTES or len(sig) != sig_bytes:
                raise MessageError("KEY_ROSTER: entry has the wrong key or signature length")
            parts.append(struct.pack(">I", cid) + c_pk + s_pk + sig)
        return frame(
            MsgType.KEY_ROSTER, round_index=self.round_index, sender=SERVER_ID, body=b"".join(parts)
        )

    @classmethod
    def decode(cls, data: bytes) -> KeyRoster:
        """Parse and check (no duplicate ids)."""
        h, body = unframe(data, MsgType.KEY_ROSTER)
        r = _Reader(body, "KEY_ROSTER")
        signed = r.u8()
        if signed > 1:
            raise MessageError(f"KEY_ROSTER: signed flag must be 0 or 1, got {signed}")
        count = r.u32()
        sig = SIGNATURE_BYTES if signed else 0
        size = 4 + 2 * KEY_BYTES + sig
        if count * size != len(body) - 5:
            raise MessageError("KEY_ROSTER: length does not match entry count")
        raw = bytes(r.take(count * size))
        r.done()
        entries = tuple(
            (
                int.from_bytes(raw[i : i + 4], "big"),
                raw[i + 4 : i + 36],
                raw[i + 36 : i + 68],
                raw[i + 68 : i + 68 + sig],
            )
            for i in range(0, len(raw), size)
        )
        if len({e[0] for e in entries}) != count:
            raise MessageError("KEY_ROSTER: duplicate client ids")
        return cls(h.round_index, bool(signed), entries)


_SHARE_ITEM = struct.Struct(f">IB{SHARE_BYTES}s")
#: Bytes of one ``(owner u32, kind u8, share)`` record of ``UNMASK_RESPONSE``.
SHARE_RECORD_BYTES = _SHARE_ITEM.size


#: One ``(party u32 big-endian, envelope)`` record of ``SHARE_KEYS`` / ``FORWARDED_SHARES``.
ENVELOPE_RECORD = np.dtype([("party", ">u4"), ("envelope", f"V{ENVELOPE_BYTES}")])


def envelope_records(items: tuple[tuple[int, bytes], ...]) -> np.ndarray:
    """``(party, envelope)`` pairs as an array of :data:`ENVELOPE_RECORD`."""
    out = np.zeros(len(items), dtype=ENVELOPE_RECORD)
    for i, (party, env) in enumerate(items):
        if len(env) != ENVELOPE_BYTES:
            raise MessageError("envelope has the wrong length")
        out[i] = (party, env)
    return out


def _records_body(session: bytes, records: np.ndarray) -> list[bytes | memoryview]:
    if len(session) != SESSION_BYTES:
        raise MessageError("session id has the wrong length")
    if (
        records.dtype.names != ENVELOPE_RECORD.names
        or records.ndim != 1
        or (records.dtype["envelope"] != ENVELOPE_RECORD["envelope"])
    ):
        raise MessageError("envelope records have the wrong layout")
    records = np.ascontiguousarray(records.astype(ENVELOPE_RECORD, copy=False))  # big-endian
    return [session, struct.pack(">I", records.shape[0]), records.data.cast("B")]


def _as_pairs(records: np.ndarray) -> tuple[tuple[int, bytes], ...]:
    return tuple(zip(records["party"].tolist(), records["envelope"].tolist(), strict=True))


@dataclass(frozen=True)
class EnvelopeRecords:
    """A ``SHARE_KEYS`` or ``FORWARDED_SHARES`` message decoded column-wise.

    No Python object per envelope: the server relays ``n * k`` envelopes per round.

    Attributes:
        commitment: ``SHARE_KEYS`` only: the sender's commitment to its self-mask seed
            (:func:`~privfed.secagg.keys.seed_commitment`); empty for ``FORWARDED_SHARES``.
        records: array of :data:`ENVELOPE_RECORD`.
        parties: the set of ``records["party"]`` (distinct: checked when decoding).
    """

    round_index: int
    sender: int
    session: bytes
    commitment: bytes
    records: np.ndarray
    parties: frozenset[int] = frozenset()

    @classmethod
    def decode(cls, data: bytes, kind: MsgType) -> EnvelopeRecords:
        """Parse and check a message of ``kind`` (no party twice, exact length)."""
        h, body = unframe(data, kind)
        what = kind.name
        pos = SESSION_BYTES + (COMMITMENT_BYTES if kind is MsgType.SHARE_KEYS else 0)
        if len(body) < pos + 4:
            raise MessageError(f"{what}: truncated body")
        session = bytes(body[:SESSION_BYTES])
        commitment = bytes(body[SESSION_BYTES:pos])
        (count,) = _U32.unpack_from(body, pos)
        size = ENVELOPE_RECORD.itemsize
        if count * size != len(body) - pos - 4:
            raise MessageError(f"{what}: length does not match envelope count")
        records = np.frombuffer(body[pos + 4 :], dtype=ENVELOPE_RECORD)  # a read-only view
        parties = frozenset(records["party"].tolist())
        if len(parties) != count:
            raise MessageError(f"{what}: duplicate parties")
        return cls(h.round_index, h.sender, session, commitment, records, parties)


def encode_forwarded(round_index: int, session: bytes, records: np.ndarray) -> bytes:
    """A ``FORWARDED_SHARES`` message from ``(sender, envelope)`` records.

    ``records`` is an array of :data:`ENVELOPE_RECORD` layout (any byte order of ``party``),
    or the records' wire bytes as a C-contiguous ``(count, ENVELOPE_RECORD.itemsize)`` uint8
    array (what the server's relay builds: no conversion at all).
    """
    if records.dtype == np.uint8 and records.ndim == 2:
        if records.shape[1] != ENVELOPE_RECORD.itemsize or not records.flags.c_contiguous:
            raise MessageError("envelope records have the wrong layout")
        if len(session) != SESSION_BYTES:
            raise MessageError("session id has the wrong length")
        body: list[bytes | memoryview] = [
            session,
            struct.pack(">I", records.shape[0]),
            records.data.cast("B") if records.size else b"",
        ]
    else:
        body = _records_body(session, records)
    return frame(MsgType.FORWARDED_SHARES, round_index=round_index, sender=SERVER_ID, body=body)


@dataclass(frozen=True)
class ShareKeys:
    """Client -> server: the commitment to ``b_u`` and one sealed envelope per neighbour."""

    round_index: int
    sender: int
    session: bytes
    commitment: bytes
    envelopes: tuple[tuple[int, bytes], ...]

    def encode(self) -> bytes:
        """Serialize."""
        if len(self.commitment) != COMMITMENT_BYTES:
            raise MessageError("SHARE_KEYS: commitment must be 32 bytes")
        body = _records_body(self.session, envelope_records(self.envelopes))
        return frame(
            MsgType.SHARE_KEYS,
            round_index=self.round_index,
            sender=self.sender,
            body=[body[0], self.commitment, *body[1:]],
        )

    @classmethod
    def decode(cls, data: bytes) -> ShareKeys:
        """Parse and check."""
        m = EnvelopeRecords.decode(data, MsgType.SHARE_KEYS)
        return cls(m.round_index, m.sender, m.session, m.commitment, _as_pairs(m.records))


@dataclass(frozen=True)
class ForwardedShares:
    """Server -> one client: the envelopes addressed to it (sender, envelope)."""

    round_index: int
    session: bytes
    envelopes: tuple[tuple[int, bytes], ...]

    def encode(self) -> bytes:
        """Serialize."""
        return encode_forwarded(self.round_index, self.session, envelope_records(self.envelopes))

    @classmethod
    def decode(cls, data: bytes) -> ForwardedShares:
        """Parse and check."""
        m = EnvelopeRecords.decode(data, MsgType.FORWARDED_SHARES)
        return cls(m.round_index, m.session, _as_pairs(m.records))


#: The masked vector starts at a multiple of this many bytes from the start of the message, so
#: a receiver's zero-copy view of it is aligned (numpy's unaligned loops are ~15% slower).
VECTOR_ALIGN = 16


@dataclass(frozen=True)
class MaskedInput:
    """Client -> server: the masked vector, the peers it masked with and those it rejected.

    ``masked_with`` is exactly the set of peers whose pairwise masks are in ``vector`` (the
    senders of the envelopes that reached the client and authenticated); ``rejected`` the
    senders whose envelopes failed to authenticate.
    """

    round_index: int
    sender: int
    session: bytes
    bits: int
    masked_with: tuple[int, ...]
    rejected: tuple[int, ...]
    vector: np.ndarray

    def encode(self) -> bytes:
        """Serialize (vector packed little-endian at the dtype of ``bits``, aligned).

        One copy of the vector: straight into the message.
        """
        dt = dtype_for_bits(self.bits)
        data = np.ascontiguousarray(self.vector, dtype=dt)
        if data.ndim != 1:
            raise MessageError("MASKED_INPUT: the vector must be 1-D")
        prefix = b"".join(
            [
                self.session,
                struct.pack(">B", self.bits),
                _ids(self.masked_with),
                _ids(self.rejected),
                struct.pack(">I", data.shape[0]),
            ]
        )
        pad = bytes(-(HEADER_BYTES + len(prefix)) % VECTOR_ALIGN)
        return frame(
            MsgType.MASKED_INPUT,
            round_index=self.round_index,
            sender=self.sender,
            body=[prefix, pad, data.data.cast("B")],
        )

    @classmethod
    def decode(cls, data: bytes) -> MaskedInput:
        """Parse and check (vector is a read-only view of ``data``)."""
        h, body = unframe(data, MsgType.MASKED_INPUT)
        what, size = "MASKED_INPUT", len(body)
        if size < SESSION_BYTES + 1:
            raise MessageError(f"{what}: truncated body")
        session, bits = bytes(body[:SESSION_BYTES]), body[SESSION_BYTES]
        if not 1 <= bits <= 64:
            raise MessageError(f"MASKED_INPUT: bits {bits} out of range")
        masked_with, pos = _ids_at(body, SESSION_BYTES + 1, what)
        rejected, pos = _ids_at(body, pos, what)
        if rejected and not set(rejected).isdisjoint(masked_with):
            raise MessageError("MASKED_INPUT: a peer is both masked with and rejected")
        if pos + 4 > size:
            raise MessageError(f"{what}: truncated body")
        (length,) = _U32.unpack_from(body, pos)
        start = pos + 4 + (-(HEADER_BYTES + pos + 4) % VECTOR_ALIGN)
        if start > size:
            raise MessageError(f"{what}: truncated body")
        if any(body[pos + 4 : start]):
            raise MessageError("MASKED_INPUT: nonzero alignment padding")
        dt = dtype_for_bits(bits)
        end = start + length * dt.itemsize
        if end > size:
            raise MessageError(f"{what}: truncated body")
        if end != size:
            raise MessageError(f"{what}: {size - end} trailing bytes")
        vec = np.frombuffer(body[start:end], dtype=dt)
        return cls(h.round_index, h.sender, session, bits, masked_with, rejected, vec)


@dataclass(frozen=True)
class UnmaskRequest:
    """Server -> one client: which neighbours survived and which dropped."""

    round_index: int
    session: bytes
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    def encode(self) -> bytes:
        """Serialize."""
        return frame(
            MsgType.UNMASK_REQUEST,
            round_index=self.round_index,
            sender=SERVER_ID,
            body=self.session + _ids(self.survivors) + _ids(self.dropped),
        )

    @classmethod
    def decode(cls, data: bytes) -> UnmaskRequest:
        """Parse and check."""
        h, body = unframe(data, MsgType.UNMASK_REQUEST)
        r = _Reader(body, "UNMASK_REQUEST")
        session = bytes(r.take(SESSION_BYTES))
        survivors, dropped = r.ids(), r.ids()
        r.done()
        return cls(h.round_index, session, survivors, dropped)


@dataclass(frozen=True)
class ConsistencyRequest:
    """Server -> each survivor (malicious setting): the survivor set ``U3`` to sign."""

    round_index: int
    session: bytes
    survivors: tuple[int, ...]

    def encode(self) -> bytes:
        """Serialize."""
        return frame(
            MsgType.CONSISTENCY_REQUEST,
            round_index=self.round_index,
            sender=SERVER_ID,
            body=self.session + _ids(self.survivors),
        )

    @classmethod
    def decode(cls, data: bytes) -> ConsistencyRequest:
        """Parse and check."""
        h, body = unframe(data, MsgType.CONSISTENCY_REQUEST)
        r = _Reader(body, "CONSISTENCY_REQUEST")
        session = bytes(r.take(SESSION_BYTES))
        survivors = r.ids()
        r.done()
        return cls(h.round_index, session, survivors)


@dataclass(frozen=True)
class ConsistencySignature:
    """Client -> server (malicious setting): its signature over the survivor set it was told."""

    round_index: int
    sender: int
    session: bytes
    signature: bytes

    def encode(self) -> bytes:
        """Serialize."""
        if len(self.signature) != SIGNATURE_BYTES:
            raise MessageError("CONSISTENCY_SIGNATURE: signature must be 64 bytes")
        return frame(
            MsgType.CONSISTENCY_SIGNATURE,
            round_index=self.round_index,
            sender=self.sender,
            body=self.session + self.signature,
        )

    @classmethod
    def decode(cls, data: bytes) -> ConsistencySignature:
        """Parse and check."""
        h, body = unframe(data, MsgType.CONSISTENCY_SIGNATURE)
        r = _Reader(body, "CONSISTENCY_SIGNATURE")
        session = bytes(r.take(SESSION_BYTES))
        sig = bytes(r.take(SIGNATURE_BYTES))
        r.done()
        return cls(h.round_index, h.sender, session, sig)


_SIGNED = struct.Struct(f">I{SIGNATURE_BYTES}s")


@dataclass(frozen=True)
class SignedSurvivors:
    """Server -> each signer (malicious setting): the signatures it collected, (signer, sig).

    The unmask request of the malicious setting: a client reveals shares only if at least
    the consistency threshold of these verify over the survivor set *it* signed, and derives
    which share of whom to reveal from that set alone.
    """

    round_index: int
    session: bytes
    signatures: tuple[tuple[int, bytes], ...]

    def encode(self) -> bytes:
        """Serialize."""
        buf = bytearray(SESSION_BYTES + 4 + len(self.signatures) * _SIGNED.size)
        buf[:SESSION_BYTES] = self.session
        struct.pack_into(">I", buf, SESSION_BYTES, len(self.signatures))
        for i, (signer, sig) in enumerate(self.signatures):
            if len(sig) != SIGNATURE_BYTES:
                raise MessageError("SIGNED_SURVIVORS: signature must be 64 bytes")
            _SIGNED.pack_into(buf, SESSION_BYTES + 4 + i * _SIGNED.size, signer, sig)
        return frame(
            MsgType.SIGNED_SURVIVORS, round_index=self.round_index, sender=SERVER_ID, body=buf
        )

    @classmethod
    def decode(cls, data: bytes) -> SignedSurvivors:
        """Parse and check (no signer twice)."""
        h, body = unframe(data, MsgType.SIGNED_SURVIVORS)
        r = _Reader(body, "SIGNED_SURVIVORS")
        session = bytes(r.take(SESSION_BYTES))
        count = r.u32()
        if count * _SIGNED.size != len(body) - SESSION_BYTES - 4:
            raise MessageError("SIGNED_SURVIVORS: length does not match signature count")
        raw = bytes(r.take(count * _SIGNED.size))
        r.done()
        sigs = tuple((int(signer), bytes(sig)) for signer, sig in _SIGNED.iter_unpack(raw))
        if len({s for s, _ in sigs}) != count:
            raise MessageError("SIGNED_SURVIVORS: two signatures from one client")
        return cls(h.round_index, session, sigs)


@dataclass(frozen=True)
class UnmaskResponse:
    """Client -> server: revealed shares (owner, kind, share)."""

    round_index: int
    sender: int
    session: bytes
    shares: tuple[tuple[int, ShareKind, bytes], ...]

    def encode(self) -> bytes:
        """Serialize."""
        if len(self.session) != SESSION_BYTES:
            raise MessageError("session id has the wrong length")
        buf = bytearray(SESSION_BYTES + 4 + len(self.shares) * _SHARE_ITEM.size)
        buf[:SESSION_BYTES] = self.session
        struct.pack_into(">I", buf, SESSION_BYTES, len(self.shares))
        pack, size = _SHARE_ITEM.pack_into, _SHARE_ITEM.size
        for i, (owner, kind, share) in enumerate(self.shares):
            if len(share) != SHARE_BYTES:
                raise MessageError("share has the wrong length")
            pack(buf, SESSION_BYTES + 4 + i * size, owner, int(kind), share)
        return frame(
            MsgType.UNMASK_RESPONSE, round_index=self.round_index, sender=self.sender, body=buf
        )

    @classmethod
    def decode(cls, data: bytes) -> UnmaskResponse:
        """Parse and check (no owner twice, known kinds)."""
        cols = UnmaskColumns.decode(data)
        shares = tuple(
            (o, _KINDS[k], cols.raw[i : i + SHARE_BYTES])
            for o, k, i in zip(cols.owners, cols.kinds, cols.share_offsets, strict=True)
        )
        return cls(cols.round_index, cols.sender, cols.session, shares)


@dataclass(frozen=True)
class UnmaskColumns:
    """An ``UnmaskResponse`` decoded column-wise, without a Python object per share.

    The server parses a hundred responses of a hundred shares each per round; building tuples
    for every share there costs more than the parsing and wakes the garbage collector.

    Attributes:
        owners: owner id of each share.
        kinds: kind of each share (0 self-mask, 1 mask key), one byte each.
        raw: the share records; share ``j`` is ``raw[share_offsets[j] :][:SHARE_BYTES]``.
    """

    round_index: int
    sender: int
    session: bytes
    owners: list[int]
    kinds: bytes
    raw: bytes

    @property
    def share_offsets(self) -> range:
        """Offset of each share value in :attr:`raw`."""
        return range(5, len(self.raw), _SHARE_ITEM.size)

    def in_field(self) -> bool:
        """Whether every share is a field element, without converting the shares to integers.

        A 33-byte big-endian value is below ``PRIME = 2**256 + 297`` if its leading byte is 0;
        a leading byte of 1 (never drawn by honest clients but for a 297 / 2**256 chance) is
        checked exactly, a larger one never is.
        """
        if not self.owners:
            return True
        size = _SHARE_ITEM.size
        lead = np.frombuffer(self.raw, dtype=np.uint8)[5::size]
        top = int(lead.max())
        if top == 0:
            return True
        if top > 1:
            return False
        raw = self.raw
        return all(
            int.from_bytes(raw[5 + i * size : 5 + i * size + SHARE_BYTES], "big") < PRIME
            for i in np.flatnonzero(lead).tolist()
        )

    def values(self) -> list[int]:
        """Each share as a field element (:func:`~privfed.secagg.shamir.decode_share`).

        Raises:
            ValueError: a share is not a field element.
        """
        raw = self.raw
        values = [int.from_bytes(raw[i : i + SHARE_BYTES], "big") for i in self.share_offsets]
        if values and max(values) >= PRIME:  # one comparison per share, no call per share
            raise ValueError("share is not a field element")
        return values

    @classmethod
    def decode(cls, data: bytes) -> UnmaskColumns:
        """Parse and check (no owner twice, known kinds)."""
        h, body = unframe(data, MsgType.UNMASK_RESPONSE)
        if len(body) < SESSION_BYTES + 4:
            raise MessageError("UNMASK_RESPONSE: truncated body")
        session = bytes(body[:SESSION_BYTES])
        (count,) = _U32.unpack_from(body, SESSION_BYTES)
        size = _SHARE_ITEM.size
        if count * size != len(body) - SESSION_BYTES - 4:
            raise MessageError("UNMASK_RESPONSE: length does not match share count")
        raw = bytes(body[SESSION_BYTES + 4 :])
        kinds = raw[4::size]
        if kinds and max(kinds) > 1:
            raise MessageError("UNMASK_RESPONSE: unknown share kind")
        owners = np.ndarray((count,), dtype=">u4", buffer=raw, strides=(size,)).tolist()
        if len(set(owners)) != count:
            raise MessageError("UNMASK_RESPONSE: two shares for one client")
        return cls(h.round_index, h.sender, session, owners, kinds, raw)


class Stage(enum.Enum):
    """Protocol stages shared by the client and server state machines."""

    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    CONSISTENCY_CHECK = "consistency_check"
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"
