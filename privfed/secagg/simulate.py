"""Drive a server and a set of client parties through the protocol, moving only bytes.

:func:`run_session` holds the :class:`~privfed.secagg.server.SecAggServer` and talks to the
clients through a :class:`~privfed.secagg.parties.ClientParties` (in this process, worker
processes or Ray actors), stage by stage, applying a dropout schedule, counting bytes per
message, party and phase, and timing the server. :func:`secure_sum` is the convenience wrapper:
every client in this process (:class:`~privfed.secagg.parties.LocalParties`), with a fresh
simulated PKI in the malicious setting.

Channels. Bonawitz et al. (2017, Sec. 2-3) assume authenticated, private channels between each
client and the server (TLS). The simulation models them explicitly: the server learns the
sender of a client's message from the channel it arrived on (never from the message), and a
client hears only what the server (or whatever sits on its channel) sends it. An optional
``transport`` hook sees every message and may alter, duplicate or lose it; a change to a
client's message on its own channel is, under this model, that client misbehaving (nobody else
can write there), and a change to a server message is the server misbehaving. See
docs/secure-aggregation.md, "What the network and the parties may do".
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from privfed.errors import PrivfedError
from privfed.secagg.config import SecAggConfig
from privfed.secagg.field import check_vector
from privfed.secagg.identity import ClientIdentity, KeyRegistry, make_pki
from privfed.secagg.messages import SERVER_ID, MaskedInput, Stage
from privfed.secagg.parties import ClientParties, LocalParties, MeasuredParties, PartyFailure
from privfed.secagg.server import SecAggServer

#: Protocol phases, in order. The first three and the last are
#: :data:`privfed.aggregation.PHASES` (shared with the engine); ``consistency_check`` runs in
#: the malicious setting only.
PHASES: tuple[str, ...] = (
    "advertise_keys",
    "share_keys",
    "masked_input",
    "consistency_check",
    "unmask",
)

#: transport(phase, sender, receiver, data) -> the messages actually delivered (possibly none).
Transport = Callable[[str, int, int, bytes], Sequence[bytes]]


@dataclass(frozen=True)
class SecureSumResult:
    """Outcome of :func:`run_session` / :func:`secure_sum`.

    Attributes:
        total: sum modulo ``2**bits`` of the inputs of ``included``.
        bits: the modulus exponent.
        included: clients whose masked input is in ``total``.
        dropped: the other clients.
        survivors: phase -> clients whose message for that phase the server accepted.
        violations: client -> why the server discarded its messages.
        client_errors: client -> why the client itself stopped (e.g. a refused request).
        bytes_sent: client -> phase -> bytes the client sent.
        bytes_received: client -> phase -> bytes the client received.
        server_bytes_sent: phase -> bytes the server sent.
        server_bytes_received: phase -> bytes the server received.
        bytes_per_phase: phase -> bytes on the wire (each message once).
        seconds_per_phase: phase -> wall time of the phase (all clients, then the server).
        client_seconds: phase -> client time summed over clients (as the parties measured it).
        server_seconds: phase -> server time.
        masking_seconds: client -> time spent expanding and adding masks.
        threshold: the threshold used.
        degree: neighbours per client.
        security: ``"semi-honest"`` or ``"malicious"``.
        masks_removed: mask expansions the server performed (self masks of the included
            clients plus the pairwise masks of dropped ones).
        observed: client -> masked vector as the server received it (if asked for).
        server_components: where part of the server's time went, by component
            (:attr:`~privfed.secagg.server.SecAggServer.component_seconds`: ``signatures``,
            ``secrets``, ``mask_removal``); the rest of ``server_seconds`` is message handling.
    """

    total: np.ndarray
    bits: int
    included: tuple[int, ...]
    dropped: tuple[int, ...]
    survivors: Mapping[str, tuple[int, ...]]
    violations: Mapping[int, str]
    client_errors: Mapping[int, str]
    bytes_sent: Mapping[int, Mapping[str, int]]
    bytes_received: Mapping[int, Mapping[str, int]]
    server_bytes_sent: Mapping[str, int]
    server_bytes_received: Mapping[str, int]
    bytes_per_phase: Mapping[str, int]
    seconds_per_phase: Mapping[str, float]
    client_seconds: Mapping[str, float]
    server_seconds: Mapping[str, float]
    masking_seconds: Mapping[int, float]
    threshold: int
    degree: int
    security: str = "semi-honest"
    masks_removed: int = 0
    observed: Mapping[int, np.ndarray] = field(default_factory=dict)
    server_components: Mapping[str, float] = field(default_factory=dict)


def _direct(phase: str, sender: int, receiver: int, data: bytes) -> Sequence[bytes]:
    return (data,)


def _check_dropouts(dropouts: Mapping[str, Collection[int]] | None) -> dict[str, set[int]]:
    out = {phase: {int(c) for c in ids} for phase, ids in (dropouts or {}).items()}
    unknown = set(out) - set(PHASES)
    if unknown:
        raise ValueError(f"unknown dropout phases {sorted(unknown)}; use {', '.join(PHASES)}")
    return out


def run_session(
    parties: ClientParties,
    clients: Sequence[int],
    *,
    config: SecAggConfig,
    round_index: int,
    model_hash: bytes,
    length: int,
    registry: KeyRegistry | None = None,
    dropouts: Mapping[str, Collection[int]] | None = None,
    transport: Transport | None = None,
    keep_observed: bool = False,
    clock: Callable[[], float] = time.perf_counter,
) -> SecureSumResult:
    """Run one session's server here against ``parties``; only bytes cross to the clients.

    Args:
        parties: where the client state machines live.
        clients: the selected cohort (ids the parties run).
        config: protocol parameters (the clients' must be equal).
        round_index: the federated round (bound into the session).
        model_hash: hash of the model broadcast this round (bound into the session).
        length: vector length.
        registry: the key registry of the clients' identities (malicious setting).
        dropouts: phase name -> ids of clients that vanish before sending that phase's message
            (they are not called from then on); in the semi-honest setting, which has no
            ``consistency_check`` phase, those clients vanish before the unmask round.
        transport: optional hook that delivers (or alters, duplicates, loses) each message.
        keep_observed: also return the masked vectors the server received.
        clock: the timer behind the server's durations (``time.process_time`` for CPU time).

    Returns:
        The sum and its accounting.

    Raises:
        TooFewSurvivors: fewer than ``t`` parties remain where the protocol needs ``t``.
        SecAggAbort: the round cannot complete for another reason (e.g. corrupt shares).
        ValueError: unknown dropout phases, or no registry in the malicious setting.
    """
    drops = _check_dropouts(dropouts)
    ids = sorted(int(c) for c in clients)
    deliver = transport or _direct
    server = SecAggServer(
        config=config,
        round_index=round_index,
        model_hash=model_hash,
        length=length,
        client_ids=frozenset(ids),
        registry=registry,
        clock=clock,
    )
    gone: set[int] = set()
    errors: dict[int, str] = {}
    sent = {c: dict.fromkeys(PHASES, 0) for c in ids}
    recv = {c: dict.fromkeys(PHASES, 0) for c in ids}
    s_sent = dict.fromkeys(PHASES, 0)
    s_recv = dict.fromkeys(PHASES, 0)
    wire = dict.fromkeys(PHASES, 0)
    s_time = dict.fromkeys(PHASES, 0.0)
    wall = dict.fromkeys(PHASES, 0.0)
    survivors: dict[str, tuple[int, ...]] = {}
    observed: dict[int, np.ndarray] = {}
    known = set(ids)

    def down(phase: str, messages: Mapping[int, bytes]) -> dict[int, list[bytes]]:
        inbox: dict[int, list[bytes]] = {}
        for c, data in messages.items():
            s_sent[phase] += len(data)
            wire[phase] += len(data)
            if c in gone or c not in known:
                continue
            for d in deliver(phase, SERVER_ID, c, data):
                recv[c][phase] += len(d)
                inbox.setdefault(c, []).append(d)
        return inbox

    def up(phase: str, c: int, data: bytes) -> list[tuple[int, bytes]]:
        sent[c][phase] += len(data)
        wire[phase] += len(data)
        arrived = []
        for d in deliver(phase, c, SERVER_ID, data):  # the channel names the sender: c
            s_recv[phase] += len(d)
            if keep_observed and phase == "masked_input":
                try:
                    observed[c] = MaskedInput.decode(d).vector.copy()
                except PrivfedError:
                    pass
            arrived.append((c, d))
        return arrived

    def exchange(
        stage: Stage, inbox: Mapping[int, list[bytes]], receive: Callable[[int, bytes], None]
    ) -> None:
        phase = stage.value
        for p in PHASES[: PHASES.index(phase) + 1]:  # a skipped phase's dropouts leave here
            gone.update(drops.get(p, ()))
        named = {c: msgs[0] for c, msgs in inbox.items() if c not in gone}
        replies = parties.step(stage, named) if named else {}
        # A duplicated server message reaches the client again after its reply; a client
        # refuses a message for a stage it has left (its reply stands, as on a real network).
        extra = {c: inbox[c][1:] for c in named if len(inbox[c]) > 1}
        while extra:
            batch = {c: msgs[0] for c, msgs in extra.items()}
            parties.step(stage, batch)
            extra = {c: msgs[1:] for c, msgs in extra.items() if len(msgs) > 1}
        # Every client computes its message first and the server then receives them in order,
        # as a server would receive messages from clients running elsewhere. The server's
        # receiving is timed as one stretch (a clock call per message would cost more than
        # some messages).
        arrived: list[tuple[int, bytes]] = []
        for c in sorted(replies):
            reply = replies[c]
            if isinstance(reply, PartyFailure):
                errors[c] = reply.reason
                gone.add(c)
                continue
            arrived.extend(up(phase, c, reply))
        t0 = clock()
        for c, d in arrived:
            receive(c, d)
        s_time[phase] += clock() - t0

    def timed(phase: str, close: Callable[[], dict[int, bytes]]) -> dict[int, bytes]:
        t0 = clock()
        try:
            return close()
        finally:
            s_time[phase] += clock() - t0

    stages: list[tuple[Stage, Callable[[int, bytes], None], Callable[[], dict[int, bytes]]]] = [
        (Stage.ADVERTISE_KEYS, server.receive_advertise_keys, server.close_advertise_keys),
        (Stage.SHARE_KEYS, server.receive_share_keys, server.close_share_keys),
        (Stage.MASKED_INPUT, server.receive_masked_input, server.close_masked_input),
    ]
    if config.security == "malicious":
        stages.append(
            (
                Stage.CONSISTENCY_CHECK,
                server.receive_consistency_check,
                server.close_consistency_check,
            )
        )
    members = {
        Stage.ADVERTISE_KEYS: lambda: server.u1,
        Stage.SHARE_KEYS: lambda: server.u2,
        Stage.MASKED_INPUT: lambda: server.u3,
        Stage.CONSISTENCY_CHECK: lambda: server.u4,
    }
    inbox: dict[int, list[bytes]] = {c: [b""] for c in ids}
    messages: dict[int, bytes] = {}
    for stage, receive, close in stages:
        t_phase = clock()
        if stage is not Stage.ADVERTISE_KEYS:
            inbox = down(stage.value, messages)
        exchange(stage, inbox, receive)
        messages = timed(stage.value, close)
        survivors[stage.value] = tuple(sorted(members[stage]()))
        wall[stage.value] = clock() - t_phase

    t_phase = clock()
    inbox = down("unmask", messages)
    exchange(Stage.UNMASK, inbox, server.receive_unmask)
    survivors["unmask"] = tuple(sorted(server.pending))
    t0 = clock()
    try:
        output = server.finish()
    finally:
        s_time["unmask"] += clock() - t0
    wall["unmask"] = clock() - t_phase

    costs = parties.costs() if isinstance(parties, MeasuredParties) else None
    included = output.included
    included_set = set(included)
    return SecureSumResult(
        total=output.total,
        bits=config.bits,
        included=included,
        dropped=tuple(c for c in ids if c not in included_set),
        survivors=survivors,
        violations=dict(server.violations),
        client_errors=errors,
        bytes_sent=sent,
        bytes_received=recv,
        server_bytes_sent=s_sent,
        server_bytes_received=s_recv,
        bytes_per_phase=wire,
        seconds_per_phase=wall,
        client_seconds={p: (costs.seconds.get(p, 0.0) if costs else 0.0) for p in PHASES},
        server_seconds=s_time,
        masking_seconds=dict(costs.masking_seconds) if costs else {},
        threshold=server.threshold,
        degree=server.degree,
        security=config.security,
        masks_removed=output.masks_removed,
        observed={c: v for c, v in observed.items() if c in included_set},
        server_components=dict(server.component_seconds),
    )


def secure_sum(
    inputs: Mapping[int, np.ndarray],
    *,
    config: SecAggConfig,
    dropouts: Mapping[str, Collection[int]] | None = None,
    round_index: int = 0,
    model_hash: bytes = b"",
    random_bytes: Callable[[int], bytes] = os.urandom,
    transport: Transport | None = None,
    keep_observed: bool = False,
    clock: Callable[[], float] = time.perf_counter,
    identities: Mapping[int, ClientIdentity] | None = None,
    registry: KeyRegistry | None = None,
    share_rosters: bool = True,
) -> SecureSumResult:
    """Securely sum integer vectors through the real protocol, every party in this process.

    :class:`~privfed.secagg.parties.LocalParties` plus :func:`run_session`.

    Args:
        inputs: client id -> integer vector with values in ``[0, 2**config.bits)``, all the same
            length.
        config: protocol parameters.
        dropouts: phase name -> ids of clients that vanish before sending that phase's message.
        round_index: round bound into the session id.
        model_hash: model hash bound into the session id.
        random_bytes: cryptographic randomness (``os.urandom``; a
            :class:`~privfed.secagg.prg.DeterministicRandom` only in test mode).
        transport: optional hook that delivers (or alters, duplicates, loses) each message.
        keep_observed: also return the masked vectors the server received.
        clock: the timer behind every reported duration; ``time.process_time`` measures CPU
            time, which is robust to other load on the machine (the benchmark's default).
        identities: the clients' long-term identities (malicious setting); ``None`` enrols
            fresh ones (:func:`~privfed.secagg.identity.make_pki`) for this call.
        registry: the key registry matching ``identities`` (built from them if ``None``).
        share_rosters: let the in-process clients derive each roster once (default); ``False``
            makes each client do it alone, as separate devices would.

    Returns:
        The sum and its accounting.

    Raises:
        TooFewSurvivors: fewer than ``t`` parties remain where the protocol needs ``t``.
        SecAggAbort: the round cannot complete for another reason (e.g. corrupt shares).
        ValueError: the inputs are empty, of different lengths or out of range.
    """
    if not inputs:
        raise ValueError("secure_sum needs at least one input")
    _check_dropouts(dropouts)
    ids = sorted(inputs)
    length = len(next(iter(inputs.values())))
    vecs = {c: check_vector(inputs[c], bits=config.bits, length=length) for c in ids}
    if config.security == "malicious":
        if identities is None:
            pki = make_pki(ids, random_bytes)
            identities, registry = pki.identities, pki.registry
        elif registry is None:
            registry = KeyRegistry({c: identities[c].public for c in identities})
    parties = LocalParties(
        vecs,
        config=config,
        round_index=round_index,
        model_hash=model_hash,
        random_bytes=random_bytes,
        identities=identities,
        registry=registry,
        clock=clock,
        share_rosters=share_rosters,
    )
    return run_session(
        parties,
        ids,
        config=config,
        round_index=round_index,
        model_hash=model_hash,
        length=length,
        registry=registry,
        dropouts=dropouts,
        transport=transport,
        keep_observed=keep_observed,
        clock=clock,
    )
