"""End-to-end protocol tests: correctness under dropouts and adversarial behaviour."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privfed.errors import PrivfedError
from privfed.secagg import (
    PHASES,
    ClientRefusal,
    SecAggAbort,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    StageError,
    TooFewSurvivors,
    secure_sum,
)
from privfed.secagg.messages import (
    ForwardedShares,
    MaskedInput,
    ShareKeys,
    ShareKind,
    UnmaskRequest,
    UnmaskResponse,
)
from privfed.secagg.prg import DeterministicRandom


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


@pytest.mark.parametrize("graph", ["complete", "harary"])
@pytest.mark.parametrize("bits", [8, 20, 32, 33, 62])
def test_sum_without_dropouts(graph: str, bits: int) -> None:
    inputs = make_inputs(12, 37, bits)
    res = secure_sum(inputs, config=SecAggConfig(graph=graph, bits=bits, scale_bits=0))
    assert res.included == tuple(range(12))
    assert as_ints(res.total) == plain_sum(inputs, range(12), bits)


def test_inputs_really_are_masked_and_masks_cancel() -> None:
    inputs = {c: np.zeros(64, dtype=np.uint32) for c in range(6)}
    res = secure_sum(inputs, config=SecAggConfig(), keep_observed=True)
    assert not res.total.any()
    assert set(res.observed) == set(range(6))
    for y in res.observed.values():
        assert np.count_nonzero(y) > 50  # each masked zero vector looks random


def test_dropout_before_masking_does_not_fail_the_round() -> None:
    inputs = make_inputs(10, 20, 32)
    for phase in PHASES:
        res = secure_sum(inputs, config=SecAggConfig(), dropouts={phase: [2, 5]})
        expected = [c for c in range(10) if phase == "unmask" or c not in (2, 5)]
        assert list(res.included) == expected
        assert as_ints(res.total) == plain_sum(inputs, expected, 32)


def _complete_should_succeed(n: int, drops: dict[str, set[int]]) -> bool:
    alive = set(range(n))
    sizes = []
    for phase in PHASES:
        alive -= drops.get(phase, set())
        sizes.append(len(alive))
    u1 = sizes[0]
    if u1 < 2:
        return False
    t = min(u1, max(2, (2 * u1) // 3 + 1))
    return all(s >= t for s in sizes)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 9),
    bits=st.sampled_from([8, 16, 32, 40]),
    length=st.integers(1, 40),
    data=st.data(),
)
def test_protocol_sum_equals_plain_sum_under_random_dropouts(
    n: int, bits: int, length: int, data: st.DataObject
) -> None:
    drops = {
        phase: set(data.draw(st.lists(st.integers(0, n - 1), max_size=2), label=phase))
        for phase in PHASES
    }
    inputs = make_inputs(n, length, bits, seed=data.draw(st.integers(0, 1000)))
    ok = _complete_should_succeed(n, drops)
    try:
        res = secure_sum(inputs, config=SecAggConfig(bits=bits, scale_bits=0), dropouts=drops)
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
@given(n=st.integers(12, 30), data=st.data())
def test_harary_sum_under_random_dropouts(n: int, data: st.DataObject) -> None:
    drops = {
        phase: set(data.draw(st.lists(st.integers(0, n - 1), max_size=1), label=phase))
        for phase in PHASES
    }
    inputs = make_inputs(n, 16, 32)
    try:
        res = secure_sum(inputs, config=SecAggConfig(graph="harary", degree=6), dropouts=drops)
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
        self.clients = {
            c: SecAggClient(c, config=self.cfg, round_index=1, model_hash=b"m", length=length)
            for c in range(n)
        }
        self.server = SecAggServer(
            config=self.cfg,
            round_index=1,
            model_hash=b"m",
            length=length,
            client_ids=frozenset(range(n)),
        )
        self.share_msgs: dict[int, bytes] = {}

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


def test_client_refuses_request_for_both_shares_of_one_client() -> None:
    s = Session()
    s.to_unmask()
    everyone = tuple(range(6))
    bad = UnmaskRequest(1, s.clients[0].session, everyone, (3,)).encode()
    with pytest.raises(ClientRefusal, match="both shares"):
        s.clients[0].unmask(bad)
    # The refusal is final: the client does not answer a second, honest-looking request.
    with pytest.raises(StageError, match="expected stage 'aborted', received 'unmask'"):
        s.clients[0].unmask(UnmaskRequest(1, s.clients[0].session, everyone, ()).encode())


def test_server_claiming_all_but_one_dropped_cannot_pass_threshold() -> None:
    s = Session()
    s.to_unmask()
    for c in range(6):
        others = tuple(v for v in range(6) if v != c)
        req = UnmaskRequest(1, s.clients[c].session, (c,), others).encode()
        with pytest.raises(TooFewSurvivors, match="threshold is 5"):
            s.clients[c].unmask(req)


def test_client_refuses_to_be_listed_as_dropped() -> None:
    s = Session()
    s.to_unmask()
    req = UnmaskRequest(1, s.clients[0].session, (1, 2, 3, 4, 5), (0,)).encode()
    with pytest.raises(ClientRefusal):
        s.clients[0].unmask(req)


def test_stage_order_is_enforced() -> None:
    c = SecAggClient(0, config=SecAggConfig(), round_index=0, model_hash=b"", length=4)
    expected = "expected stage 'advertise_keys', received 'masked_input'"
    with pytest.raises(StageError, match=expected):
        c.masked_input(b"", np.zeros(4, dtype=np.uint32))
    server = SecAggServer(
        config=SecAggConfig(), round_index=0, model_hash=b"", length=4, client_ids=frozenset({0, 1})
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


@pytest.mark.parametrize("phase", ["advertise_keys", "share_keys", "masked_input"])
def test_replayed_message_drops_its_sender(phase: str) -> None:
    def transport(p: str, sender: int, receiver: int, data: bytes) -> list[bytes]:
        return [data, data] if (p == phase and sender == 3) else [data]

    inputs = make_inputs(8, 10, 32)
    res = secure_sum(inputs, config=SecAggConfig(), transport=transport)
    assert 3 not in res.included and "replay" in res.violations[3]
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
    if phase != "unmask":
        assert 5 not in res.included
    assert as_ints(res.total) == plain_sum(inputs, res.included, 32)


def test_client_with_another_model_is_excluded() -> None:
    s = Session()
    s.clients[2] = SecAggClient(2, config=s.cfg, round_index=1, model_hash=b"other", length=8)
    s.to_masked_input()
    assert 2 not in s.server.u2 and "another session" in s.server.violations[2]


def test_corrupt_mask_key_share_is_caught_by_public_key_check() -> None:
    def transport(p: str, sender: int, receiver: int, data: bytes) -> list[bytes]:
        if p == "unmask" and sender == 1:
            msg = UnmaskResponse.decode(data)
            shares = tuple(
                (
                    o,
                    k,
                    (int.from_bytes(s, "big") ^ 1).to_bytes(33, "big")
                    if k is ShareKind.MASK_KEY
                    else s,
                )
                for o, k, s in msg.shares
            )
            return [UnmaskResponse(msg.round_index, msg.sender, msg.session, shares).encode()]
        return [data]

    inputs = make_inputs(8, 10, 32)
    with pytest.raises(SecAggAbort, match="does not match its advertised public key"):
        secure_sum(
            inputs, config=SecAggConfig(), dropouts={"masked_input": [6]}, transport=transport
        )


def test_masked_input_with_wrong_length_drops_sender() -> None:
    def transport(p: str, sender: int, receiver: int, data: bytes) -> list[bytes]:
        if p == "masked_input" and sender == 2:
            m = MaskedInput.decode(data)
            return [
                MaskedInput(
                    m.round_index, m.sender, m.session, m.bits, m.rejected, m.vector[:-1]
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
