"""End-to-end protocol tests: correctness under dropouts and adversarial behaviour."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privfed.errors import PrivfedError
from privfed.secagg import (
    PHASES,
    ClientRefusal,
    ProtocolViolation,
    SecAggAbort,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    StageError,
    TooFewSurvivors,
    secure_sum,
)
from privfed.secagg.config import InsecureThresholdWarning, two_thirds
from privfed.secagg.identity import make_pki
from privfed.secagg.messages import (
    ConsistencyRequest,
    ForwardedShares,
    KeyRoster,
    MaskedInput,
    ShareKeys,
    ShareKind,
    SignedSurvivors,
    UnmaskRequest,
    UnmaskResponse,
)
from privfed.secagg.prg import DeterministicRandom

SEMI = SecAggConfig(security="semi-honest")
MODES = ["semi-honest", "malicious"]


def make_inputs(n: int, length: int, bits: int, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 2**bits, size=length, dtype=np.uint64) for c in range(n)}


def plain_sum(inputs: dict[int, np.ndarray], ids: Sequence[int], bits: int) -> list[int]:
    length = len(next(iter(inputs.values())))
    out = [0] * length
    for c in ids:
        for j, v in enumerate(inputs[c]):
            out[j] += int(v)
    return [v % 2**bits for v in out]


def as_ints(a: np.ndarray) -> list[int]:
    return [int(v) for v in a]


# -- correctness ---------------------------------------------------------------------------------


@pytest.mark.parametrize("security", MODES)
@pytest.mark.parametrize("graph", ["complete", "harary"])
@pytest.mark.parametrize("bits", [8, 20, 32, 33, 62])
def test_sum_without_dropouts(graph: str, bits: int, security: str) -> None:
    inputs = make_inputs(12, 37, bits)
    cfg = SecAggConfig(graph=graph, bits=bits, scale_bits=0, security=security)
    res = secure_sum(inputs, config=cfg)
    assert res.included == tuple(range(12)) and res.security == security
    assert as_ints(res.total) == plain_sum(inputs, range(12), bits)
    assert (res.survivors.get("consistency_check") is not None) == (security == "malicious")


def test_inputs_really_are_masked_and_masks_cancel() -> None:
    inputs = {c: np.zeros(64, dtype=np.uint32) for c in range(6)}
    res = secure_sum(inputs, config=SecAggConfig(), keep_observed=True)
    assert not res.total.any()
    assert set(res.observed) == set(range(6))
    for y in res.observed.values():
        assert np.count_nonzero(y) > 50  # each masked zero vector looks random


@pytest.mark.parametrize("security", MODES)
def test_dropout_before_masking_does_not_fail_the_round(security: str) -> None:
    inputs = make_inputs(10, 20, 32)
    for phase in PHASES:
        cfg = SecAggConfig(security=security)
        res = secure_sum(inputs, config=cfg, dropouts={phase: [2, 5]})
        late = phase in ("consistency_check", "unmask")
        expected = [c for c in range(10) if late or c not in (2, 5)]
        assert list(res.included) == expected
        assert as_ints(res.total) == plain_sum(inputs, expected, 32)


def _complete_should_succeed(n: int, drops: dict[str, set[int]], min_clients: int = 4) -> bool:
    """Model of the complete graph: every phase keeps t = two thirds of the roster."""
    alive = set(range(n))
    sizes = []
    for phase in PHASES:
        alive -= drops.get(phase, set())
        sizes.append(len(alive))
    u1 = sizes[0]
    if u1 < min_clients:
        return False
    return all(s >= two_thirds(u1) for s in sizes)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 9),
    bits=st.sampled_from([8, 16, 32, 40]),
    length=st.integers(1, 40),
    security=st.sampled_from(MODES),
    data=st.data(),
)
def test_protocol_sum_equals_plain_sum_under_random_dropouts(
    n: int, bits: int, length: int, security: str, data: st.DataObject
) -> None:
    drops = {
        phase: set(data.draw(st.lists(st.integers(0, n - 1), max_size=2), label=phase))
        for phase in PHASES
    }
    inputs = make_inputs(n, length, bits, seed=data.draw(st.integers(0, 1000)))
    ok = _complete_should_succeed(n, drops)
    cfg = SecAggConfig(bits=bits, scale_bits=0, security=security)
    try:
        res = secure_sum(inputs, config=cfg, dropouts=drops)
    except TooFewSurvivors as exc:
        assert not ok, f"unexpected abort: {exc}"
        assert exc.stage in PHASES
        return
    assert ok
    gone = drops["advertise_keys"] | drops["share_keys"] | drops["masked_input"]
    expected = [c for c in range(n) if c not in gone]
    assert list(res.included) == expected
    assert as_ints(res.total) == plain_sum(inputs, expected, bits)


@settings(max_examples=10, deadline=None)
@given(n=st.integers(12, 30), security=st.sampled_from(MODES), data=st.data())
def test_harary_sum_under_random_dropouts(n: int, security: str, data: st.DataObject) -> None:
    drops = {
        phase: set(data.draw(st.lists(st.integers(0, n - 1), max_size=1), label=phase))
        for phase in PHASES
    }
    inputs = make_inputs(n, 16, 32)
    cfg = SecAggConfig(graph="harary", degree=6, security=security)
    try:
        res = secure_sum(inputs, config=cfg, dropouts=drops)
    except TooFewSurvivors:
        return
    assert as_ints(res.total) == plain_sum(inputs, res.included, 32)
    gone = drops["advertise_keys"] | drops["share_keys"] | drops["masked_input"]
    assert set(res.included) == set(range(n)) - gone


def test_deterministic_test_mode_reproduces_bytes() -> None:
    inputs = make_inputs(5, 8, 32)
    cfg = SecAggConfig()
    a = secure_sum(inputs, config=cfg, random_bytes=DeterministicRandom(b"s"), keep_observed=True)
    b = secure_sum(inputs, config=cfg, random_bytes=DeterministicRandom(b"s"), keep_observed=True)
    assert all(np.array_equal(a.observed[c], b.observed[c]) for c in range(5))


def test_bytes_are_counted_per_phase_and_vectors_travel_packed() -> None:
    inputs = make_inputs(6, 1000, 16)
    res = secure_sum(inputs, config=SecAggConfig(bits=16, scale_bits=4))
    for c in range(6):
        assert all(res.bytes_sent[c][p] > 0 for p in PHASES)
        assert 2000 < res.bytes_sent[c]["masked_input"] < 2200  # uint16 on the wire
    assert (
        res.bytes_per_phase["masked_input"]
        == sum(res.bytes_sent[c]["masked_input"] for c in range(6))
        + res.server_bytes_sent["masked_input"]
    )


# -- aborts --------------------------------------------------------------------------------------


def test_too_few_survivors_names_the_stage() -> None:
    inputs = make_inputs(9, 4, 32)  # t = 7
    with pytest.raises(TooFewSurvivors) as info:
        secure_sum(inputs, config=SecAggConfig(), dropouts={"masked_input": [0, 1, 2]})
    assert info.value.stage == "masked_input" and info.value.needed == 7
    assert isinstance(info.value, SecAggAbort) and isinstance(info.value, PrivfedError)
    with pytest.raises(TooFewSurvivors) as info:
        secure_sum(inputs, config=SecAggConfig(threshold=9), dropouts={"advertise_keys": [4]})
    assert info.value.stage == "advertise_keys"
    with pytest.raises(TooFewSurvivors) as info:
        secure_sum(inputs, config=SecAggConfig(), dropouts={"unmask": [0, 1, 2]})
    assert info.value.stage == "unmask"


@pytest.mark.parametrize("graph", ["complete", "harary"])
def test_no_sum_of_fewer_than_t_inputs_is_released(graph: str) -> None:
    inputs = make_inputs(12, 4, 32)
    for gone in ([*range(12)], [*range(11)]):
        with pytest.raises(TooFewSurvivors) as info:
            secure_sum(inputs, config=SecAggConfig(graph=graph), dropouts={"masked_input": gone})
        assert info.value.stage == "masked_input"


# -- state machines and adversaries --------------------------------------------------------------


class Session:
    """A cohort and a server driven by hand, so tests can play a dishonest party."""

    def __init__(self, n: int = 6, length: int = 8, config: SecAggConfig | None = None) -> None:
        self.cfg = config or SecAggConfig()
        self.inputs = make_inputs(n, length, self.cfg.bits)
        self.pki = make_pki(range(n))
        self.clients = {c: self.client(c) for c in range(n)}
        self.server = SecAggServer(
            config=self.cfg,
            round_index=1,
            model_hash=b"m",
            length=length,
            client_ids=frozenset(range(n)),
            registry=self.pki.registry,
        )
        self.share_msgs: dict[int, bytes] = {}

    def client(self, c: int, model_hash: bytes = b"m") -> SecAggClient:
        return SecAggClient(
            c,
            config=self.cfg,
            round_index=1,
            model_hash=model_hash,
            length=len(self.inputs[0]),
            identity=self.pki.identities[c],
            registry=self.pki.registry,
        )

    def to_masked_input(self) -> dict[int, bytes]:
        for c, cl in self.clients.items():
            self.server.receive_advertise_keys(c, cl.advertise_keys())
        for c, d in self.server.close_advertise_keys().items():
            self.share_msgs[c] = self.clients[c].share_keys(d)
            self.server.receive_share_keys(c, self.share_msgs[c])
        return self.server.close_share_keys()

    def to_unmask(self) -> dict[int, bytes]:
        for c, d in self.to_masked_input().items():
            self.server.receive_masked_input(c, self.clients[c].masked_input(d, self.inputs[c]))
        return self.server.close_masked_input()

    def to_signed(self) -> dict[int, bytes]:
        """Malicious setting: through the consistency check to the signed survivor lists."""
        for c, d in self.to_unmask().items():
            self.server.receive_consistency_check(c, self.clients[c].consistency_check(d))
        return self.server.close_consistency_check()


def test_client_refuses_request_for_both_shares_of_one_client() -> None:
    s = Session(config=SEMI)
    s.to_unmask()
    everyone = tuple(range(6))
    bad = UnmaskRequest(1, s.clients[0].session, everyone, (3,)).encode()
    with pytest.raises(ClientRefusal, match="both shares"):
        s.clients[0].unmask(bad)
    # The refusal is final: the client does not answer a second, honest-looking request.
    with pytest.raises(StageError, match="expected stage 'aborted', received 'unmask'"):
        s.clients[0].unmask(UnmaskRequest(1, s.clients[0].session, everyone, ()).encode())


def test_server_claiming_all_but_one_dropped_cannot_pass_threshold() -> None:
    s = Session(config=SEMI)
    s.to_unmask()
    for c in range(6):
        others = tuple(v for v in range(6) if v != c)
        req = UnmaskRequest(1, s.clients[c].session, (c,), others).encode()
        with pytest.raises(TooFewSurvivors, match="threshold is 5"):
            s.clients[c].unmask(req)


def test_client_refuses_to_be_listed_as_dropped() -> None:
    s = Session(config=SEMI)
    s.to_unmask()
    req = UnmaskRequest(1, s.clients[0].session, (1, 2, 3, 4, 5), (0,)).encode()
    with pytest.raises(ClientRefusal):
        s.clients[0].unmask(req)


def test_stage_order_is_enforced() -> None:
    c = SecAggClient(0, config=SEMI, round_index=0, model_hash=b"", length=4)
    expected = "expected stage 'advertise_keys', received 'masked_input'"
    with pytest.raises(StageError, match=expected):
        c.masked_input(b"", np.zeros(4, dtype=np.uint32))
    with pytest.raises(StageError, match="received 'consistency_check'"):
        c.consistency_check(b"")
    server = SecAggServer(
        config=SEMI, round_index=0, model_hash=b"", length=4, client_ids=frozenset({0, 1})
    )
    with pytest.raises(StageError, match="expected stage 'advertise_keys', received 'unmask'"):
        server.finish()


def test_share_forwarded_to_wrong_recipient_fails_and_drops_its_sender() -> None:
    captured: dict[int, ShareKeys] = {}

    def transport(phase: str, sender: int, receiver: int, data: bytes) -> list[bytes]:
        if phase == "share_keys" and sender == 0:
            captured[0] = ShareKeys.decode(data)
        if phase == "masked_input" and receiver == 2:
            msg = ForwardedShares.decode(data)
            meant_for_1 = dict(captured[0].envelopes)[1]
            envs = tuple((s, meant_for_1 if s == 0 else e) for s, e in msg.envelopes)
            return [ForwardedShares(msg.round_index, msg.session, envs).encode()]
        return [data]

    inputs = make_inputs(8, 10, 32)
    res = secure_sum(inputs, config=SecAggConfig(), transport=transport)
    assert 0 not in res.included and "rejected its envelope" in res.violations[0]
    assert as_ints(res.total) == plain_sum(inputs, res.included, 32)
    assert list(res.included) == list(range(1, 8))


@pytest.mark.parametrize(
    "phase", ["advertise_keys", "share_keys", "masked_input", "consistency_check"]
)
def test_replayed_message_drops_its_sender(phase: str) -> None:
    def transport(p: str, sender: int, receiver: int, data: bytes) -> list[bytes]:
        return [data, data] if (p == phase and sender == 3) else [data]

    inputs = make_inputs(8, 10, 32)
    res = secure_sum(inputs, config=SecAggConfig(), transport=transport)
    assert "replay" in res.violations[3]
    # a survivor that only fails to sign the survivor set stays in the sum
    assert (3 in res.included) == (phase == "consistency_check")
    assert as_ints(res.total) == plain_sum(inputs, res.included, 32)


def test_replayed_unmask_response_drops_responder_not_round() -> None:
    def transport(p: str, sender: int, receiver: int, data: bytes) -> list[bytes]:
        return [data, data] if (p == "unmask" and sender == 3) else [data]

    inputs = make_inputs(8, 10, 32)
    res = secure_sum(inputs, config=SecAggConfig(), transport=transport)
    assert "replay" in res.violations[3]
    assert 3 in res.included  # its input arrived; its self mask comes from the others' shares
    assert as_ints(res.total) == plain_sum(inputs, res.included, 32)


def test_message_from_another_session_drops_its_sender() -> None:
    old: dict[int, bytes] = {}

    def record(p: str, sender: int, receiver: int, data: bytes) -> list[bytes]:
        if p == "masked_input" and sender == 4:
            old[4] = data
        return [data]

    inputs = make_inputs(8, 10, 32)
    secure_sum(inputs, config=SecAggConfig(), transport=record)

    def replay(p: str, sender: int, receiver: int, data: bytes) -> list[bytes]:
        return [old[4]] if (p == "masked_input" and sender == 4) else [data]

    res = secure_sum(inputs, config=SecAggConfig(), transport=replay)
    assert 4 not in res.included and "another session" in res.violations[4]
    assert as_ints(res.total) == plain_sum(inputs, res.included, 32)


@pytest.mark.parametrize("phase", PHASES)
def test_truncated_message_drops_its_sender(phase: str) -> None:
    def transport(p: str, sender: int, receiver: int, data: bytes) -> list[bytes]:
        return [data[:-3]] if (p == phase and sender == 5) else [data]

    inputs = make_inputs(8, 10, 32)
    res = secure_sum(inputs, config=SecAggConfig(), transport=transport)
    assert 5 in res.violations
    if phase not in ("consistency_check", "unmask"):
        assert 5 not in res.included
    assert as_ints(res.total) == plain_sum(inputs, res.included, 32)


def test_client_with_another_model_is_excluded() -> None:
    s = Session(config=SEMI)
    s.clients[2] = s.client(2, model_hash=b"other")
    s.to_masked_input()
    assert 2 not in s.server.u2 and "another session" in s.server.violations[2]


def test_client_with_another_model_cannot_even_advertise_when_signed() -> None:
    """Malicious setting: the signature binds the model hash, so the server drops it at once."""
    s = Session()
    s.clients[2] = s.client(2, model_hash=b"other")
    s.to_masked_input()
    assert 2 not in s.server.u1 and "signature" in s.server.violations[2]


def _corrupting(
    kind: ShareKind, senders: set[int]
) -> Callable[[str, int, int, bytes], list[bytes]]:
    """A transport that flips the low bit of every ``kind`` share in ``senders``' responses."""

    def transport(p: str, sender: int, receiver: int, data: bytes) -> list[bytes]:
        if p == "unmask" and sender in senders:
            msg = UnmaskResponse.decode(data)
            shares = tuple(
                (o, k, (int.from_bytes(s, "big") ^ 1).to_bytes(33, "big") if k is kind else s)
                for o, k, s in msg.shares
            )
            return [UnmaskResponse(msg.round_index, msg.sender, msg.session, shares).encode()]
        return [data]

    return transport


@pytest.mark.parametrize("security", MODES)
def test_corrupt_mask_key_share_is_caught_by_public_key_check(security: str) -> None:
    inputs = make_inputs(8, 10, 32)
    cfg = SecAggConfig(security=security)
    # One corrupt share among more than t: the server leaves each share out in turn, finds
    # the one whose omission gives the advertised public key, and drops its sender.
    one = _corrupting(ShareKind.MASK_KEY, {1})
    res = secure_sum(inputs, config=cfg, dropouts={"masked_input": [6]}, transport=one)
    assert "corrupt" in res.violations[1] and 1 in res.included
    assert as_ints(res.total) == plain_sum(inputs, res.included, 32)
    two = _corrupting(ShareKind.MASK_KEY, {0, 1})
    with pytest.raises(SecAggAbort, match="does not match its advertised public key"):
        secure_sum(inputs, config=cfg, dropouts={"masked_input": [6]}, transport=two)


@pytest.mark.parametrize("security", MODES)
def test_corrupt_self_mask_share_is_caught_by_the_seed_commitment(security: str) -> None:
    """A corrupted share of b that is still a field element: recovered or aborted, never a wrong
    sum (the server checks every reconstructed seed against the client's commitment)."""
    inputs = make_inputs(8, 10, 32)
    cfg = SecAggConfig(security=security)
    res = secure_sum(inputs, config=cfg, transport=_corrupting(ShareKind.SELF_MASK, {2}))
    assert "corrupt" in res.violations[2]
    assert as_ints(res.total) == plain_sum(inputs, res.included, 32)
    with pytest.raises(SecAggAbort, match="does not match its commitment"):
        secure_sum(inputs, config=cfg, transport=_corrupting(ShareKind.SELF_MASK, {2, 3}))


def _rewriting(
    senders: set[int], rewrite: Callable[[tuple[tuple[int, ShareKind, bytes], ...]], tuple]
) -> Callable[[str, int, int, bytes], list[bytes]]:
    """A transport that rewrites the share list of ``senders``' unmask responses."""

    def transport(p: str, sender: int, receiver: int, data: bytes) -> list[bytes]:
        if p == "unmask" and sender in senders:
            msg = UnmaskResponse.decode(data)
            out = UnmaskResponse(msg.round_index, msg.sender, msg.session, rewrite(msg.shares))
            return [out.encode()]
        return [data]

    return transport


@pytest.mark.parametrize("security", MODES)
def test_unmask_response_in_any_order_is_accepted(security: str) -> None:
    """The server compares a response with its request as a set, whatever the share order."""
    inputs = make_inputs(8, 10, 32)
    cfg = SecAggConfig(security=security)
    shuffled = _rewriting({1, 4}, lambda shares: tuple(reversed(shares)))
    res = secure_sum(inputs, config=cfg, dropouts={"masked_input": [6]}, transport=shuffled)
    assert not res.violations and res.included == (0, 1, 2, 3, 4, 5, 7)
    assert as_ints(res.total) == plain_sum(inputs, res.included, 32)


@pytest.mark.parametrize("security", MODES)
def test_unmask_response_that_differs_from_the_request_drops_its_sender(security: str) -> None:
    inputs = make_inputs(8, 10, 32)
    cfg = SecAggConfig(security=security)
    cases = {
        "one share short": lambda shares: shares[1:],
        "a kind swapped": lambda shares: (
            (shares[0][0], ShareKind(1 - shares[0][1]), shares[0][2]),
            *shares[1:],
        ),
    }
    for rewrite in cases.values():
        res = secure_sum(
            inputs, config=cfg, dropouts={"masked_input": [6]}, transport=_rewriting({2}, rewrite)
        )
        assert "does not match the request" in res.violations[2]
        assert as_ints(res.total) == plain_sum(inputs, res.included, 32)


@pytest.mark.parametrize("security", MODES)
@pytest.mark.parametrize("value", [(1 << 256) + 297, (1 << 264) - 1])
def test_share_outside_the_field_drops_its_sender(security: str, value: int) -> None:
    inputs = make_inputs(8, 10, 32)
    cfg = SecAggConfig(security=security)

    def rewrite(shares: tuple[tuple[int, ShareKind, bytes], ...]) -> tuple:
        return ((shares[0][0], shares[0][1], value.to_bytes(33, "big")), *shares[1:])

    res = secure_sum(inputs, config=cfg, transport=_rewriting({3}, rewrite))
    assert "not a field element" in res.violations[3]
    assert as_ints(res.total) == plain_sum(inputs, res.included, 32)


def test_masked_input_with_wrong_length_drops_sender() -> None:
    def transport(p: str, sender: int, receiver: int, data: bytes) -> list[bytes]:
        if p == "masked_input" and sender == 2:
            m = MaskedInput.decode(data)
            return [
                MaskedInput(
                    m.round_index,
                    m.sender,
                    m.session,
                    m.bits,
                    m.masked_with,
                    m.rejected,
                    m.vector[:-1],
                ).encode()
            ]
        return [data]

    inputs = make_inputs(8, 10, 32)
    res = secure_sum(inputs, config=SecAggConfig(), transport=transport)
    assert 2 not in res.included and "wrong bits or length" in res.violations[2]
    assert as_ints(res.total) == plain_sum(inputs, res.included, 32)


def test_server_exposes_what_it_holds_after_the_masked_input_round() -> None:
    s = Session()
    s.to_unmask()
    for c in range(6):
        got = s.server.received_masked_input(c)
        assert got.sender == c and got.vector.shape == (s.server.length,)
        assert not np.array_equal(got.vector, s.inputs[c])  # masked
        assert s.server.mask_peers(c) == frozenset(range(6)) - {c}
    with pytest.raises(KeyError, match="not in U3"):
        s.server.received_masked_input(99)
    with pytest.raises(KeyError, match="not in U3"):
        s.server.mask_peers(99)


# -- no silent wrong sum --------------------------------------------------------------------------


@pytest.mark.parametrize("security", MODES)
@pytest.mark.parametrize("graph", ["complete", "harary"])
def test_envelope_left_out_by_the_relay_drops_the_client_not_the_sum(
    security: str, graph: str
) -> None:
    """The relay omits one envelope: the receiver masks with one peer fewer and says so; the
    server sees the mismatch with what it relayed and drops that client (no wrong sum)."""

    def transport(p: str, sender: int, receiver: int, data: bytes) -> list[bytes]:
        if p == "masked_input" and receiver == 4:
            msg = ForwardedShares.decode(data)
            envs = tuple((s, e) for s, e in msg.envelopes if s != msg.envelopes[0][0])
            return [ForwardedShares(msg.round_index, msg.session, envs).encode()]
        return [data]

    inputs = make_inputs(10, 12, 32)
    cfg = SecAggConfig(security=security, graph=graph, degree=6 if graph == "harary" else None)
    res = secure_sum(inputs, config=cfg, transport=transport)
    assert 4 not in res.included
    assert "masked with a different set of peers" in res.violations[4]
    assert as_ints(res.total) == plain_sum(inputs, res.included, 32)


def test_masked_input_binds_the_peers_the_client_masked_with() -> None:
    """A masked input whose declared peer set is altered is refused (its sender dropped)."""

    def transport(p: str, sender: int, receiver: int, data: bytes) -> list[bytes]:
        if p == "masked_input" and sender == 3:
            m = MaskedInput.decode(data)
            fewer = m.masked_with[1:]
            return [
                MaskedInput(
                    m.round_index, m.sender, m.session, m.bits, fewer, m.rejected, m.vector
                ).encode()
            ]
        return [data]

    inputs = make_inputs(8, 10, 32)
    res = secure_sum(inputs, config=SecAggConfig(), transport=transport)
    assert 3 not in res.included and "different set of peers" in res.violations[3]
    assert as_ints(res.total) == plain_sum(inputs, res.included, 32)


# -- the malicious setting: signed rosters and the consistency check ------------------------------


def test_consistency_check_signs_one_survivor_set_per_session() -> None:
    s = Session()
    requests = s.to_unmask()
    c0 = s.clients[0]
    sig = c0.consistency_check(requests[0])
    assert sig and c0.signed_survivors == frozenset(range(6))
    other = ConsistencyRequest(1, c0.session, (0, 1, 2, 3, 4)).encode()
    with pytest.raises(StageError, match="expected stage 'unmask', received 'consistency_check'"):
        c0.consistency_check(other)  # a second set is never signed


def test_consistency_check_refusals() -> None:
    s = Session()
    s.to_unmask()
    sess = s.clients[0].session
    with pytest.raises(ClientRefusal, match="as not surviving"):
        s.clients[0].consistency_check(ConsistencyRequest(1, sess, (1, 2, 3, 4, 5)).encode())
    with pytest.raises(TooFewSurvivors, match="threshold is 5"):
        s.clients[1].consistency_check(ConsistencyRequest(1, sess, (1, 2, 3)).encode())
    with pytest.raises(ClientRefusal, match="not in the roster"):
        s.clients[2].consistency_check(ConsistencyRequest(1, sess, (0, 1, 2, 3, 4, 99)).encode())


def test_unmask_needs_enough_valid_signatures_over_the_set_the_client_signed() -> None:
    s = Session()
    signed = s.to_signed()
    msg = SignedSurvivors.decode(signed[0])
    sess = s.clients[0].session
    # too few signatures
    few = SignedSurvivors(1, sess, msg.signatures[:4]).encode()
    with pytest.raises(ClientRefusal, match="only 4 valid signature"):
        s.clients[0].unmask(few)
    # enough signatures, but some are forged (a flipped bit): they do not count
    forged = tuple(
        (v, bytes([sig[0] ^ 1]) + sig[1:]) if v in (1, 2) else (v, sig) for v, sig in msg.signatures
    )
    with pytest.raises(ClientRefusal, match="only 4 valid signature"):
        s.clients[1].unmask(SignedSurvivors(1, sess, forged).encode())
    # the honest list passes; the shares follow from the signed set alone
    out = UnmaskResponse.decode(s.clients[2].unmask(signed[2]))
    assert {o for o, k, _ in out.shares if k is ShareKind.SELF_MASK} == set(range(6))
    assert not [o for o, k, _ in out.shares if k is ShareKind.MASK_KEY]


def test_signatures_over_another_survivor_set_do_not_count() -> None:
    """Two groups told different survivor sets: each group's signatures are useless to the
    other, so neither group reaches the consistency threshold (t = 5 of 6)."""
    s = Session()
    s.to_unmask()
    sess = s.clients[0].session
    sets = {c: (0, 1, 2, 3, 4, 5) if c < 3 else (0, 1, 2, 3, 4) for c in range(5)}
    sigs = {}
    for c, survivors in sets.items():
        from privfed.secagg.messages import ConsistencySignature

        data = s.clients[c].consistency_check(ConsistencyRequest(1, sess, survivors).encode())
        sigs[c] = ConsistencySignature.decode(data).signature
    every = SignedSurvivors(1, sess, tuple(sorted(sigs.items()))).encode()
    for c in range(5):
        with pytest.raises(ClientRefusal, match="consistency check"):
            s.clients[c].unmask(every)


def test_unsigned_or_unregistered_roster_entries_are_refused() -> None:
    s = Session()
    for c, cl in s.clients.items():
        s.server.receive_advertise_keys(c, cl.advertise_keys())
    roster = KeyRoster.decode(s.server.close_advertise_keys()[0])
    entries = list(roster.entries)
    cid, c_pk, s_pk, sig = entries[3]
    entries[3] = (cid, c_pk, s_pk, bytes(64))
    forged = KeyRoster(1, True, tuple(entries)).encode()
    with pytest.raises(ProtocolViolation, match="no valid signature"):
        s.clients[0].share_keys(forged)
    sybil = (77, bytes(range(32)), bytes(range(1, 33)), bytes(64))
    padded = KeyRoster(1, True, (*roster.entries, sybil)).encode()
    with pytest.raises(ProtocolViolation, match="client 77 carries no valid signature"):
        s.clients[1].share_keys(padded)
    unsigned = KeyRoster(1, False, tuple((c, a, b, b"") for c, a, b, _ in roster.entries))
    with pytest.raises(ProtocolViolation, match="lacks signatures"):
        s.clients[2].share_keys(unsigned.encode())


# -- client-side minimums -------------------------------------------------------------------------


@pytest.mark.parametrize("security", MODES)
@pytest.mark.parametrize("keep", [(0,), (0, 1), (0, 1, 2)])
def test_clients_refuse_small_rosters(security: str, keep: tuple[int, ...]) -> None:
    """A server that shows client 0 a roster of one, two or three clients is refused."""
    s = Session(config=SecAggConfig(security=security))
    for c, cl in s.clients.items():
        s.server.receive_advertise_keys(c, cl.advertise_keys())
    roster = KeyRoster.decode(s.server.close_advertise_keys()[0])
    small = KeyRoster(1, roster.signed, tuple(e for e in roster.entries if e[0] in keep))
    with pytest.raises(ClientRefusal, match="below secagg.min_clients = 4"):
        s.clients[0].share_keys(small.encode())


@pytest.mark.parametrize("security", MODES)
def test_thresholds_without_margin_are_refused(security: str) -> None:
    """A fixed threshold at most half of this roster (t = 3 of 6) is refused by the clients;
    the honest server does not even send such a roster."""
    loose = SecAggConfig(security=security, threshold=3)
    s = Session(config=loose)
    for c, cl in s.clients.items():
        s.server.receive_advertise_keys(c, cl.advertise_keys())
    with pytest.raises(SecAggAbort, match="at most half"):
        s.server.close_advertise_keys()
    # A server that sends it anyway (it allows itself the insecure threshold) is refused by
    # every client, which derives t from its own configuration.
    with pytest.warns(InsecureThresholdWarning):
        lax = SecAggConfig(security=security, threshold=3, allow_insecure_threshold=True)
    server = SecAggServer(
        config=lax,
        round_index=1,
        model_hash=b"m",
        length=len(s.inputs[0]),
        client_ids=frozenset(range(6)),
        registry=s.pki.registry,
    )
    fresh = {c: s.client(c) for c in range(6)}
    for c, cl in fresh.items():
        server.receive_advertise_keys(c, cl.advertise_keys())
    for c, data in server.close_advertise_keys().items():
        with pytest.raises(ClientRefusal, match="t = 3 is at most half of the roster"):
            fresh[c].share_keys(data)


def test_server_refuses_to_start_below_min_clients() -> None:
    inputs = make_inputs(3, 4, 32)
    with pytest.raises(TooFewSurvivors, match="threshold is 4"):
        secure_sum(inputs, config=SecAggConfig())
    cfg = SecAggConfig(min_clients=3)
    assert as_ints(secure_sum(inputs, config=cfg).total) == plain_sum(inputs, range(3), 32)
