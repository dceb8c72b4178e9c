"""Known-answer tests of the primitives, through the exact functions the protocol calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import privfed.secagg
from privfed.secagg.envelope import aead_open, aead_seal
from privfed.secagg.errors import EnvelopeError, SignatureError
from privfed.secagg.identity import (
    KeyRegistry,
    advertise_message,
    consistency_message,
    identity_from_seed,
)
from privfed.secagg.keys import (
    derive_key,
    hkdf_sha256,
    keypair_from_private,
    seed_commitment,
    session_context,
    session_id,
    x25519,
)
from privfed.secagg.prg import keystream_into

VECTORS = Path(privfed.secagg.__file__).parent / "vectors"


def load(name: str) -> dict:
    data = json.loads((VECTORS / name).read_text())
    assert data["provenance"].startswith(("RFC", "NIST", "McGrew", "privfed known answers"))
    return data


def h(s: str) -> bytes:
    return bytes.fromhex(s)


def test_every_vector_file_names_its_source() -> None:
    files = sorted(VECTORS.glob("*.json"))
    assert len(files) >= 6
    for f in files:
        data = json.loads(f.read_text())
        assert "provenance" in data and "checked_through" in data


@pytest.mark.parametrize("case", load("rfc7748_x25519.json")["scalar_mult"])
def test_x25519_scalar_mult_rfc7748(case: dict) -> None:
    assert x25519(h(case["scalar"]), h(case["u"])) == h(case["output"])


def test_x25519_diffie_hellman_rfc7748() -> None:
    v = load("rfc7748_x25519.json")["diffie_hellman"]
    alice = keypair_from_private(h(v["alice_private"]))
    bob = keypair_from_private(h(v["bob_private"]))
    assert alice.public == h(v["alice_public"])
    assert bob.public == h(v["bob_public"])
    assert x25519(alice.private, bob.public) == h(v["shared"])
    assert x25519(bob.private, alice.public) == h(v["shared"])


@pytest.mark.parametrize("case", load("rfc5869_hkdf_sha256.json")["cases"])
def test_hkdf_sha256_rfc5869(case: dict) -> None:
    salt = h(case["salt"]) or None  # RFC 5869: an absent salt is HashLen zeros
    okm = hkdf_sha256(h(case["ikm"]), salt=salt, info=h(case["info"]), length=case["length"])
    assert okm == h(case["okm"])


@pytest.mark.parametrize("case", load("sp800_38a_aes_ctr.json")["cases"])
def test_aes_ctr_sp800_38a(case: dict) -> None:
    pt, ct = h(case["plaintext"]), h(case["ciphertext"])
    for n in (len(pt), 1, 15, 17, 33, 47):  # odd lengths are prefixes of the same stream
        ks = bytearray(n)
        keystream_into(h(case["key"]), ks, counter=h(case["initial_counter"]))
        assert bytes(a ^ b for a, b in zip(ks, pt[:n], strict=True)) == ct[:n]


@pytest.mark.parametrize("case", load("gcm_aes256.json")["cases"])
def test_aes256_gcm_known_answers(case: dict) -> None:
    key, iv, aad = h(case["key"]), h(case["iv"]), h(case["aad"])
    out = aead_seal(key, iv, h(case["plaintext"]), aad)
    assert out == h(case["ciphertext"]) + h(case["tag"])
    assert aead_open(key, iv, out, aad) == h(case["plaintext"])
    tampered = bytes([out[0] ^ 1]) + out[1:]
    with pytest.raises(EnvelopeError):
        aead_open(key, iv, tampered, aad)


@pytest.mark.parametrize("case", load("rfc8032_ed25519.json")["cases"])
def test_ed25519_rfc8032(case: dict) -> None:
    me = identity_from_seed(4, h(case["secret_key"]))
    assert me.public == h(case["public_key"])
    assert me.sign(h(case["message"])) == h(case["signature"])
    registry = KeyRegistry({4: me.public})
    registry.verify(4, h(case["message"]), h(case["signature"]))
    bad = bytes([h(case["signature"])[0] ^ 1]) + h(case["signature"])[1:]
    for client, sig in ((4, bad), (5, h(case["signature"]))):  # forged; unregistered signer
        with pytest.raises(SignatureError):
            registry.verify(client, h(case["message"]), sig)


PRIVFED = load("privfed_secagg_v3.json")


@pytest.mark.parametrize("case", PRIVFED["derive_key"])
def test_derive_key_labels_and_session_binding(case: dict) -> None:
    key = derive_key(
        h(case["secret"]), label=case["label"], session=h(case["session"]), length=case["length"]
    )
    assert key == h(case["key"])


def test_session_context_id_and_seed_commitment() -> None:
    c = PRIVFED["session_context"]
    context = session_context(
        round_index=c["round_index"],
        model_hash=h(c["model_hash"]),
        security=c["security"],
        bits=c["bits"],
        length=c["length"],
    )
    assert context == h(c["context"])
    s = PRIVFED["session_id"]
    roster = {int(k): (h(a), h(b)) for k, (a, b) in s["roster"].items()}
    sid = session_id(
        context=h(s["context"]),
        roster=roster,
        graph=s["graph"],
        degree=s["degree"],
        threshold=s["threshold"],
    )
    assert sid == h(s["session"])
    m = PRIVFED["seed_commitment"]
    got = seed_commitment(h(m["seed"]), session=h(m["session"]), client_id=m["client_id"])
    assert got == h(m["commitment"])


def test_signed_message_layouts_and_signatures() -> None:
    a = PRIVFED["advertise_message"]
    msg = advertise_message(
        context=h(a["context"]),
        client_id=a["client_id"],
        enc_public=h(a["enc_public"]),
        mask_public=h(a["mask_public"]),
    )
    assert msg == h(a["message"])
    assert identity_from_seed(a["client_id"], h(a["signer_seed"])).sign(msg) == h(a["signature"])
    c = PRIVFED["consistency_message"]
    msg = consistency_message(
        session=h(c["session"]), round_index=c["round_index"], survivors=c["survivors"]
    )
    assert msg == h(c["message"])
    assert identity_from_seed(0, h(c["signer_seed"])).sign(msg) == h(c["signature"])
