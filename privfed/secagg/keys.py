"""X25519 key agreement, HKDF-SHA256 derivations and the session id.

Domain separation (Bonawitz et al. 2017, Sec. 4: each pair of clients derives an encryption
key from ``c``-keys and a mask seed from ``s``-keys): every derived key comes from
:func:`derive_key`, whose HKDF ``salt`` is the session id and whose ``info`` is
``b"privfed/secagg/v3/" + label + b"/" + session``. The session id commits to the protocol
version, the session context (round, model hash, security mode, vector length, modulus) and,
on top, the graph parameters and every advertised public key, so a server that shows
different rosters or models to different clients breaks the key agreement between them
instead of isolating one update (Pasquini et al., CCS 2022). A client commits to its
self-mask seed ``b`` with :func:`seed_commitment` (bound to the session and the client), so a
corrupted share of ``b`` cannot turn into a wrong sum: the server checks the reconstruction.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: Version tag of every label, message and session id of this protocol.
PROTOCOL_VERSION = 3
LABEL_PREFIX = b"privfed/secagg/v%d/" % PROTOCOL_VERSION
KEY_BYTES = 32

#: HKDF labels, one per kind of derived key.
LABEL_PAIRWISE_MASK = "pairwise-mask"
LABEL_SELF_MASK = "self-mask"
LABEL_SHARE_ENVELOPE = "share-envelope"
#: Bytes of a session id, session context and seed commitment (SHA-256).
DIGEST_BYTES = 32


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair as raw 32-byte strings."""

    private: bytes
    public: bytes

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()[:16]}..., private=<hidden>)"


def keypair_from_private(private: bytes) -> KeyPair:
    """The key pair of a raw 32-byte X25519 private key (pure)."""
    key = X25519PrivateKey.from_private_bytes(private)
    from cryptography.hazmat.primitives import serialization

    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return KeyPair(private=private, public=public)


def generate_keypair(random_bytes: Callable[[int], bytes] = os.urandom) -> KeyPair:
    """A fresh X25519 key pair from 32 bytes of ``random_bytes`` (``os.urandom`` by default)."""
    return keypair_from_private(random_bytes(KEY_BYTES))


def x25519(private: bytes | X25519PrivateKey, public: bytes) -> bytes:
    """The X25519 shared secret (RFC 7748, Sec. 6.1); raises ValueError on a low-order point.

    Args:
        private: raw 32-byte private key, or an already loaded key object (loading costs more
            than the exchange, so parties that agree with many peers load once).
        public: the peer's raw 32-byte public key.
    """
    key = (
        private
        if isinstance(private, X25519PrivateKey)
        else X25519PrivateKey.from_private_bytes(private)
    )
    return key.exchange(X25519PublicKey.from_public_bytes(public))


def load_private(private: bytes) -> X25519PrivateKey:
    """Load a raw private key once for repeated :func:`x25519` calls."""
    return X25519PrivateKey.from_private_bytes(private)


def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869) extract-and-expand."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def derive_key(secret: bytes, *, label: str, session: bytes, length: int = KEY_BYTES) -> bytes:
    """Derive a key for ``label`` in ``session`` from a shared secret or seed.

    Args:
        secret: input keying material (an X25519 shared secret or a 32-byte seed).
        label: one of the ``LABEL_*`` constants.
        session: the 32-byte session id.
        length: bytes of output.
    """
    if len(session) != 32:
        raise ValueError("session id must be 32 bytes")
    info = LABEL_PREFIX + label.encode("ascii") + b"/" + session
    return hkdf_sha256(secret, salt=session, info=info, length=length)


def session_context(
    *, round_index: int, model_hash: bytes, security: str, bits: int, length: int
) -> bytes:
    """The 32-byte digest of what a session is about before any key is known.

    Clients sign their advertised keys over it (round 0), so an advertisement cannot be
    replayed into another round, model or parameter set.
    """
    h = hashlib.sha256()
    h.update(LABEL_PREFIX + b"session-context\0")
    h.update(struct.pack(">QIIQ", round_index, len(model_hash), bits, length))
    h.update(model_hash)
    h.update(security.encode("ascii") + b"\0")
    return h.digest()


def session_id(
    *,
    context: bytes,
    roster: Mapping[int, tuple[bytes, bytes]],
    graph: str,
    degree: int,
    threshold: int,
) -> bytes:
    """The 32-byte session id: SHA-256 over everything both sides must agree on.

    Args:
        context: :func:`session_context` (round, model hash, security mode, bits, length).
        roster: client id -> (encryption public key, mask public key) of every advertised client.
        graph: graph kind.
        degree: resolved degree.
        threshold: resolved threshold.
    """
    if len(context) != DIGEST_BYTES:
        raise ValueError("session context must be 32 bytes")
    h = hashlib.sha256()
    h.update(LABEL_PREFIX + b"session\0")
    h.update(context)
    h.update(struct.pack(">II", degree, threshold))
    h.update(graph.encode("ascii") + b"\0")
    h.update(struct.pack(">I", len(roster)))
    h.update(b"".join(cid.to_bytes(4, "big") + b"".join(roster[cid]) for cid in sorted(roster)))
    return h.digest()


def seed_commitment(seed: bytes, *, session: bytes, client_id: int) -> bytes:
    """SHA-256 commitment to a client's 32-byte self-mask seed ``b_u`` in ``session``.

    Binding (SHA-256 collision resistance) and hiding for a uniformly random 256-bit seed; the
    server checks every reconstructed ``b_u`` against it before removing a self mask.
    """
    if len(session) != DIGEST_BYTES:
        raise ValueError("session id must be 32 bytes")
    h = hashlib.sha256()
    h.update(LABEL_PREFIX + b"self-mask-commitment\0")
    h.update(session)
    h.update(struct.pack(">I", client_id))
    h.update(seed)
    return h.digest()
