"""Regenerate ``privfed/secagg/vectors/privfed_secagg_v3.json`` (run from the repository root).

The expected values are computed here *independently* of privfed's code: HKDF-SHA256 straight
from RFC 5869 with :mod:`hmac`, SHA-256 commitments and the signed-message layouts written out
byte by byte as docs/secure-aggregation.md specifies them, and Ed25519 signatures under the
RFC 8032 TEST 1 key. ``tests/secagg/test_secagg_vectors.py`` then checks privfed's functions
against the file, so a change of any label, layout or derivation shows up as a failed vector.

    python tests/secagg/generate_vectors.py > privfed/secagg/vectors/privfed_secagg_v3.json
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PREFIX = b"privfed/secagg/v3/"
RFC8032_TEST1_SEED = bytes.fromhex(
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
)


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def main() -> None:
    session = bytes(range(32))
    secret = bytes(range(100, 132))
    derive = []
    for label, length in (("pairwise-mask", 16), ("self-mask", 16), ("share-envelope", 32)):
        info = PREFIX + label.encode() + b"/" + session
        derive.append(
            {
                "label": label,
                "secret": secret.hex(),
                "session": session.hex(),
                "length": length,
                "key": hkdf(secret, session, info, length).hex(),
            }
        )
    model_hash = b"model-hash"
    context = hashlib.sha256(
        PREFIX
        + b"session-context\0"
        + struct.pack(">QIIQ", 7, len(model_hash), 32, 1000)
        + model_hash
        + b"malicious\0"
    ).digest()
    roster = {3: (bytes([1]) * 32, bytes([2]) * 32), 9: (bytes([3]) * 32, bytes([4]) * 32)}
    body = b"".join(c.to_bytes(4, "big") + a + b for c, (a, b) in sorted(roster.items()))
    sid = hashlib.sha256(
        PREFIX
        + b"session\0"
        + context
        + struct.pack(">II", 1, 2)
        + b"complete\0"
        + struct.pack(">I", len(roster))
        + body
    ).digest()
    commitment = hashlib.sha256(
        PREFIX + b"self-mask-commitment\0" + session + struct.pack(">I", 5) + secret
    ).digest()
    advertise = (
        PREFIX
        + b"sign/advertise-keys\0"
        + context
        + struct.pack(">I", 3)
        + roster[3][0]
        + roster[3][1]
    )
    survivors = [9, 3, 12]
    consistency = (
        PREFIX
        + b"sign/consistency-check\0"
        + session
        + struct.pack(">QI", 7, len(survivors))
        + b"".join(struct.pack(">I", c) for c in sorted(survivors))
    )
    key = Ed25519PrivateKey.from_private_bytes(RFC8032_TEST1_SEED)
    out = {
        "provenance": (
            "privfed known answers for its own protocol steps (wire and label version 3), "
            "computed independently of privfed's code by tests/secagg/generate_vectors.py: "
            "HKDF-SHA256 per RFC 5869 written with hmac, SHA-256 commitments and signed-message "
            "layouts byte by byte as docs/secure-aggregation.md specifies them, Ed25519 "
            "signatures (RFC 8032, deterministic) under the RFC 8032 Sec. 7.1 TEST 1 key."
        ),
        "checked_through": (
            "privfed.secagg.keys.derive_key, session_context, session_id, seed_commitment; "
            "privfed.secagg.identity.advertise_message, consistency_message, "
            "identity_from_seed(...).sign"
        ),
        "derive_key": derive,
        "session_context": {
            "round_index": 7,
            "model_hash": model_hash.hex(),
            "security": "malicious",
            "bits": 32,
            "length": 1000,
            "context": context.hex(),
        },
        "session_id": {
            "context": context.hex(),
            "roster": {str(c): [a.hex(), b.hex()] for c, (a, b) in roster.items()},
            "graph": "complete",
            "degree": 1,
            "threshold": 2,
            "session": sid.hex(),
        },
        "seed_commitment": {
            "seed": secret.hex(),
            "session": session.hex(),
            "client_id": 5,
            "commitment": commitment.hex(),
        },
        "advertise_message": {
            "context": context.hex(),
            "client_id": 3,
            "enc_public": roster[3][0].hex(),
            "mask_public": roster[3][1].hex(),
            "message": advertise.hex(),
            "signer_seed": RFC8032_TEST1_SEED.hex(),
            "signature": key.sign(advertise).hex(),
        },
        "consistency_message": {
            "session": session.hex(),
            "round_index": 7,
            "survivors": survivors,
            "message": consistency.hex(),
            "signer_seed": RFC8032_TEST1_SEED.hex(),
            "signature": key.sign(consistency).hex(),
        },
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
