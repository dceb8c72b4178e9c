"""Long-term client identities (Ed25519) and the key registry the clients trust.

The active-adversary variant of Bonawitz et al. 2017 (Fig. 4, "Setup") assumes a PKI: every
client ``u`` holds a signing key ``d_u^SK`` and every party knows every client's verification
key ``d_u^PK``. Without it a server can fabricate clients (Sybils) or substitute keys. privfed
*simulates* that PKI: :class:`KeyRegistry` maps client ids to Ed25519 public keys and every
client trusts it; how the keys got there (enrolment, attestation, a certificate authority) is
outside the protocol and assumed honest. A client's private :class:`ClientIdentity` stays with
that client (the party that runs it); the server and the driver hold only the registry.

Every signed message starts with a versioned, stage-specific label (domain separation), so a
signature made for one stage or session can never be replayed as another:

* :func:`advertise_message` -- round 0: the client's two fresh X25519 public keys, bound to the
  session *context* (round, model hash and parameters; the session id itself depends on the
  roster, which does not exist yet).
* :func:`consistency_message` -- the ConsistencyCheck round: the survivor set, bound to the
  session id and round.

Ed25519 (RFC 8032) from ``cryptography``; known-answer tested against RFC 8032, Sec. 7.1.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from privfed.secagg.errors import SignatureError
from privfed.secagg.keys import LABEL_PREFIX

#: Bytes of an Ed25519 signature, public key and private seed.
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
SEED_BYTES = 32

_ADVERTISE = LABEL_PREFIX + b"sign/advertise-keys\0"
_CONSISTENCY = LABEL_PREFIX + b"sign/consistency-check\0"


@dataclass(frozen=True)
class ClientIdentity:
    """One client's long-term signing key (private: it never leaves the client's party).

    Attributes:
        client_id: the client it belongs to.
        public: the raw 32-byte Ed25519 verification key (what the registry holds).
    """

    client_id: int
    public: bytes
    _key: Ed25519PrivateKey = field(repr=False, compare=False)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"ClientIdentity(client_id={self.client_id}, public={self.public.hex()[:16]}...)"


def identity_from_seed(client_id: int, seed: bytes) -> ClientIdentity:
    """The identity with the 32-byte Ed25519 private seed ``seed`` (pure; RFC 8032 Sec. 5.1.5)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes, got {len(seed)}")
    key = Ed25519PrivateKey.from_private_bytes(seed)
    return ClientIdentity(client_id, key.public_key().public_bytes_raw(), key)


def generate_identity(
    client_id: int, random_bytes: Callable[[int], bytes] = os.urandom
) -> ClientIdentity:
    """A fresh identity from 32 bytes of ``random_bytes`` (``os.urandom`` by default)."""
    return identity_from_seed(client_id, random_bytes(SEED_BYTES))


class KeyRegistry:
    """The simulated PKI: client id -> Ed25519 verification key, trusted by every client.

    Args:
        keys: client id -> raw 32-byte public key.

    Raises:
        ValueError: a key is not 32 bytes or not a valid Ed25519 point encoding.
    """

    def __init__(self, keys: Mapping[int, bytes]) -> None:
        loaded: dict[int, Ed25519PublicKey] = {}
        raw: dict[int, bytes] = {}
        for cid, key in keys.items():
            if len(key) != PUBLIC_KEY_BYTES:
                raise ValueError(f"registry key of client {cid} must be 32 bytes, got {len(key)}")
            try:
                loaded[int(cid)] = Ed25519PublicKey.from_public_bytes(bytes(key))
            except ValueError:
                raise ValueError(f"registry key of client {cid} is not an Ed25519 key") from None
            raw[int(cid)] = bytes(key)
        self._loaded = loaded
        self.keys: Mapping[int, bytes] = MappingProxyType(raw)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._loaded

    def __len__(self) -> int:
        return len(self._loaded)

    def verify(self, client_id: int, message: bytes, signature: bytes) -> None:
        """Check ``signature`` over ``message`` by ``client_id``'s registered key.

        Raises:
            SignatureError: the client is not registered or the signature does not verify
                (one opaque error for every cause).
        """
        key = self._loaded.get(client_id)
        if key is None or len(signature) != SIGNATURE_BYTES:
            raise SignatureError()
        try:
            key.verify(signature, message)
        except InvalidSignature:
            raise SignatureError() from None

    def with_keys(self, keys: Mapping[int, bytes]) -> KeyRegistry:
        """A registry with ``keys`` added (or replaced)."""
        return KeyRegistry({**self.keys, **keys})


@dataclass(frozen=True)
class PKI:
    """A set of client identities and the registry of their public keys.

    Attributes:
        identities: client id -> private identity (each belongs to its client's party).
        registry: the public key registry every party trusts.
    """

    identities: Mapping[int, ClientIdentity]
    registry: KeyRegistry


def make_pki(ids: Iterable[int], random_bytes: Callable[[int], bytes] = os.urandom) -> PKI:
    """Fresh identities for ``ids`` and their registry (the simulated trusted enrolment)."""
    identities = {c: generate_identity(c, random_bytes) for c in sorted(ids)}
    registry = KeyRegistry({c: i.public for c, i in identities.items()})
    return PKI(MappingProxyType(identities), registry)


def advertise_message(
    *, context: bytes, client_id: int, enc_public: bytes, mask_public: bytes
) -> bytes:
    """What a client signs in round 0: its fresh public keys, bound to the session context."""
    if len(context) != 32:
        raise ValueError("session context must be 32 bytes")
    return b"".join([_ADVERTISE, context, struct.pack(">I", client_id), enc_public, mask_public])


def consistency_message(*, session: bytes, round_index: int, survivors: Iterable[int]) -> bytes:
    """What a client signs in the ConsistencyCheck round: the survivor set it was told."""
    if len(session) != 32:
        raise ValueError("session id must be 32 bytes")
    ids = sorted(survivors)
    return b"".join(
        [
            _CONSISTENCY,
            session,
            struct.pack(">QI", round_index, len(ids)),
            b"".join(struct.pack(">I", c) for c in ids),
        ]
    )
