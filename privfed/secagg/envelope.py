"""AEAD envelopes carrying Shamir shares from one client to another through the server.

Bonawitz et al. 2017, Sec. 4 (ShareKeys): client ``u`` encrypts ``(u, v, share of s_u^SK,
share of b_u)`` under the key agreed from the ``c``-keys of ``u`` and ``v``, so the relaying
server learns nothing and a share cannot be redirected. Here the cipher is AES-256-GCM with a
random 96-bit nonce, the key comes from HKDF with the ``share-envelope`` label and the session,
and the associated data binds (version, session, round, sender, receiver): an envelope forwarded
to the wrong recipient, replayed from another round or session, or altered fails with one opaque
:class:`~privfed.secagg.errors.EnvelopeError`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privfed.secagg.errors import EnvelopeError
from privfed.secagg.keys import LABEL_PREFIX
from privfed.secagg.shamir import SHARE_BYTES

NONCE_BYTES = 12
TAG_BYTES = 16
PLAINTEXT_BYTES = 4 + 4 + 2 * SHARE_BYTES
#: Bytes of one sealed envelope: nonce || ciphertext || tag.
ENVELOPE_BYTES = NONCE_BYTES + PLAINTEXT_BYTES + TAG_BYTES


@dataclass(frozen=True)
class SharePair:
    """The two shares one client holds for another.

    Attributes:
        mask_key_share: share of the owner's mask private key ``s^SK`` (encoded field element).
        self_mask_share: share of the owner's self-mask seed ``b`` (encoded field element).
    """

    mask_key_share: bytes
    self_mask_share: bytes


def aead_seal(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """AES-256-GCM encryption: ``ciphertext || tag`` (the primitive under :func:`seal`)."""
    return AESGCM(key).encrypt(nonce, plaintext, ad)


def aead_open(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """AES-256-GCM decryption; raises :class:`EnvelopeError` on any failure."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, ad)
    except (InvalidTag, ValueError):
        raise EnvelopeError() from None


def associated_data(*, session: bytes, round_index: int, sender: int, receiver: int) -> bytes:
    """The AEAD associated data binding an envelope to its session, round and parties."""
    return LABEL_PREFIX + b"envelope" + session + struct.pack(">QII", round_index, sender, receiver)


def seal(
    key: bytes,
    shares: SharePair,
    *,
    session: bytes,
    round_index: int,
    sender: int,
    receiver: int,
    nonce: bytes,
) -> bytes:
    """Encrypt ``shares`` from ``sender`` to ``receiver`` (pure: the nonce is an argument)."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError("nonce must be 12 bytes")
    plaintext = b"".join(
        [struct.pack(">II", sender, receiver), shares.mask_key_share, shares.self_mask_share]
    )
    if len(plaintext) != PLAINTEXT_BYTES:
        raise ValueError("shares must be encoded field elements")
    ad = associated_data(session=session, round_index=round_index, sender=sender, receiver=receiver)
    return nonce + aead_seal(key, nonce, plaintext, ad)


def seal_random(
    key: bytes,
    shares: SharePair,
    *,
    session: bytes,
    round_index: int,
    sender: int,
    receiver: int,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """:func:`seal` with a fresh random nonce."""
    return seal(
        key,
        shares,
        session=session,
        round_index=round_index,
        sender=sender,
        receiver=receiver,
        nonce=random_bytes(NONCE_BYTES),
    )


def open_envelope(
    key: bytes, envelope: bytes, *, session: bytes, round_index: int, sender: int, receiver: int
) -> SharePair:
    """Decrypt and authenticate an envelope.

    Raises:
        EnvelopeError: for every failure (wrong length, key, session, round, parties or bytes).
    """
    if len(envelope) != ENVELOPE_BYTES:
        raise EnvelopeError()
    ad = associated_data(session=session, round_index=round_index, sender=sender, receiver=receiver)
    plaintext = aead_open(key, envelope[:NONCE_BYTES], envelope[NONCE_BYTES:], ad)
    if plaintext[:8] != struct.pack(">II", sender, receiver):
        raise EnvelopeError()
    return SharePair(
        mask_key_share=plaintext[8 : 8 + SHARE_BYTES], self_mask_share=plaintext[8 + SHARE_BYTES :]
    )
