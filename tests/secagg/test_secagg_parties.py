"""The client-party seam: run_session moves only bytes; LocalParties shares roster work."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from privfed.secagg import (
    LocalParties,
    PartyFailure,
    RoutedParties,
    SecAggConfig,
    Stage,
    make_pki,
    run_session,
    secure_sum,
)
from privfed.secagg import messages as wire
from privfed.secagg.messages import KeyRoster


def make_inputs(n: int, length: int = 16, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 2**32, size=length, dtype=np.uint64) for c in range(n)}


def expected(inputs: Mapping[int, np.ndarray], ids: tuple[int, ...]) -> np.ndarray:
    return (sum(inputs[c].astype(np.uint64) for c in ids) % 2**32).astype(np.uint32)


class Recording:
    """Records every call that crosses the seam (stage and the clients named)."""

    def __init__(self, inner: RoutedParties) -> None:
        self.inner = inner
        self.calls: list[tuple[Stage, tuple[int, ...]]] = []

    def step(self, stage: Stage, messages: Mapping[int, bytes]) -> dict[int, bytes | PartyFailure]:
        self.calls.append((stage, tuple(sorted(messages))))
        return self.inner.step(stage, {c: bytes(m) for c, m in messages.items()})


@pytest.mark.parametrize("security", ["semi-honest", "malicious"])
@pytest.mark.parametrize("graph", ["complete", "harary"])
def test_run_session_against_clients_split_over_two_workers(security: str, graph: str) -> None:
    n = 12
    inputs = make_inputs(n)
    cfg = SecAggConfig(security=security, graph=graph, degree=6 if graph == "harary" else None)
    pki = make_pki(range(n))
    halves = [range(0, 6), range(6, 12)]
    workers = [
        LocalParties(
            {c: inputs[c] for c in half},
            config=cfg,
            round_index=3,
            model_hash=b"m",
            identities={c: pki.identities[c] for c in half},
            registry=pki.registry,
        )
        for half in halves
    ]
    parties = Recording(RoutedParties({c: workers[c // 6] for c in range(n)}))
    res = run_session(
        parties,
        range(n),
        config=cfg,
        round_index=3,
        model_hash=b"m",
        length=16,
        registry=pki.registry,
        dropouts={"masked_input": [5], "unmask": [7]},
    )
    assert 5 not in res.included and 7 in res.included
    assert np.array_equal(res.total, expected(inputs, res.included))
    # Clients that dropped out are never called again; the stages come in protocol order.
    stages = [s for s, _ in parties.calls]
    want = [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT]
    if security == "malicious":
        want.append(Stage.CONSISTENCY_CHECK)
    assert stages == [*want, Stage.UNMASK]
    for stage, called in parties.calls:
        if stage not in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT):
            assert 5 not in called
        if stage is Stage.UNMASK:
            assert 7 not in called


def test_routed_parties_report_unknown_clients_and_sum_costs() -> None:
    cfg = SecAggConfig(security="semi-honest")
    a = LocalParties(make_inputs(2), config=cfg, round_index=0, model_hash=b"")
    routed = RoutedParties({0: a, 1: a})
    out = routed.step(Stage.ADVERTISE_KEYS, {0: b"", 1: b"", 7: b""})
    assert isinstance(out[0], bytes) and isinstance(out[7], PartyFailure)
    assert "no party runs client 7" in out[7].reason
    assert set(routed.costs().seconds) == {"advertise_keys"}


def test_step_calls_only_the_named_clients_and_reports_failures() -> None:
    inputs = make_inputs(5)
    cfg = SecAggConfig(security="semi-honest")
    parties = LocalParties(inputs, config=cfg, round_index=0, model_hash=b"")
    out = parties.step(Stage.ADVERTISE_KEYS, {0: b"", 1: b""})
    assert set(out) == {0, 1} and all(isinstance(v, bytes) for v in out.values())
    assert parties.clients[2].stage is Stage.ADVERTISE_KEYS  # not named, not called
    bad = parties.step(Stage.SHARE_KEYS, {0: b"garbage", 9: b""})
    assert isinstance(bad[0], PartyFailure) and "shorter than its header" in bad[0].reason
    assert isinstance(bad[9], PartyFailure) and "no client 9" in bad[9].reason
    assert parties.clients[0].stage is Stage.ABORTED
    assert set(parties.costs().seconds) == {"advertise_keys", "share_keys"}


def test_malicious_parties_need_every_clients_identity() -> None:
    with pytest.raises(ValueError, match="needs every client's identity"):
        LocalParties(make_inputs(4), config=SecAggConfig(), round_index=0, model_hash=b"")


@pytest.mark.parametrize("share", [True, False])
def test_the_roster_is_decoded_once_per_party(share: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = KeyRoster.decode.__func__  # type: ignore[attr-defined]

    def counting(cls: type[KeyRoster], data: bytes) -> KeyRoster:
        calls.append(len(data))
        return real(cls, data)  # type: ignore[no-any-return]

    monkeypatch.setattr(wire.KeyRoster, "decode", classmethod(counting))
    inputs = make_inputs(9)
    res = secure_sum(inputs, config=SecAggConfig(), share_rosters=share)
    assert np.array_equal(res.total, expected(inputs, tuple(range(9))))
    assert len(calls) == (1 if share else 9)


def test_a_shared_roster_view_does_not_skip_a_clients_own_key_check() -> None:
    """Two clients get the same roster bytes; it carries client 0's keys but not client 1's
    current ones, so client 1 still refuses although the view is cached."""
    n = 5
    pki = make_pki(range(n))
    cfg = SecAggConfig()
    parties = LocalParties(
        make_inputs(n),
        config=cfg,
        round_index=0,
        model_hash=b"",
        identities=pki.identities,
        registry=pki.registry,
    )
    from privfed.secagg import SecAggServer

    server = SecAggServer(
        config=cfg,
        round_index=0,
        model_hash=b"",
        length=16,
        client_ids=frozenset(range(n)),
        registry=pki.registry,
    )
    adverts = parties.step(Stage.ADVERTISE_KEYS, dict.fromkeys(range(n), b""))
    for c, data in adverts.items():
        assert isinstance(data, bytes)
        server.receive_advertise_keys(c, data)
    roster = server.close_advertise_keys()[0]
    parties.clients[1]._enc = parties.clients[2]._enc  # noqa: SLF001 - client 1 "re-keyed"
    out = parties.step(Stage.SHARE_KEYS, {0: roster, 1: roster})
    assert isinstance(out[0], bytes)
    assert isinstance(out[1], PartyFailure) and "does not carry my advertised keys" in out[1].reason


def test_backend_enrolment_keeps_identities_on_the_workers() -> None:
    """The engine's backend is the PKI's enrolment: private keys stay on the worker, the driver
    gets public keys, and a client keeps its key across rounds."""
    from support import tiny

    from privfed.backends import BackendOptions, make_backend

    backend = make_backend(BackendOptions(backend="serial"))
    backend.start(tiny(federation={"aggregator": "secagg"}))
    try:
        first = backend.enrol([0, 1, 2])
        again = backend.enrol([1, 2, 3])
        worker = backend.worker  # type: ignore[attr-defined]
        assert set(again.keys) == {0, 1, 2, 3} and set(worker._identities) == {0, 1, 2, 3}
        assert all(first.keys[c] == again.keys[c] for c in (0, 1, 2))
        assert all(again.keys[c] == worker._identities[c].public for c in range(4))
        assert worker._registry_keys == dict(again.keys)  # what the clients check rosters by
    finally:
        backend.close()
