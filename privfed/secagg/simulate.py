"""Run a whole cohort and a server through the protocol in one process.

:func:`secure_sum` creates one :class:`~privfed.secagg.client.SecAggClient` per input and one
:class:`~privfed.secagg.server.SecAggServer`, and moves real wire bytes between them phase by
phase, applying a dropout schedule, counting bytes per message, party and phase, and timing each
phase. An optional ``transport`` hook sees every message and may alter, duplicate or lose it,
which is how tests play a faulty network.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from privfed.aggregation import PHASES as ENGINE_PHASES
from privfed.errors import PrivfedError
from privfed.secagg.client import SecAggClient
from privfed.secagg.config import SecAggConfig
from privfed.secagg.field import check_vector
from privfed.secagg.messages import SERVER_ID, MaskedInput
from privfed.secagg.server import SecAggServer

#: Protocol phases, in order: :data:`privfed.aggregation.PHASES`, shared with the engine.
PHASES: tuple[str, ...] = ENGINE_PHASES

#: transport(phase, sender, receiver, data) -> the messages actually delivered (possibly none).
Transport = Callable[[str, int, int, bytes], Sequence[bytes]]


@dataclass(frozen=True)
class SecureSumResult:
    """Outcome of :func:`secure_sum`.

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
        client_seconds: phase -> client time summed over clients.
        server_seconds: phase -> server time.
        masking_seconds: client -> time spent expanding and adding masks.
        threshold: the threshold used.
        degree: neighbours per client.
        observed: client -> masked vector as the server received it (if asked for).
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
    observed: Mapping[int, np.ndarray] = field(default_factory=dict)


def _direct(phase: str, sender: int, receiver: int, data: bytes) -> Sequence[bytes]:
    return (data,)


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
) -> SecureSumResult:
    """Securely sum integer vectors through the real protocol.

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

    Returns:
        The sum and its accounting.

    Raises:
        TooFewSurvivors: fewer than ``t`` parties remain where the protocol needs ``t``.
        SecAggAbort: the round cannot complete for another reason (e.g. corrupt shares).
        ValueError: the inputs are empty, of different lengths or out of range.
    """
    if not inputs:
        raise ValueError("secure_sum needs at least one input")
    dropouts = dict(dropouts or {})
    unknown = set(dropouts) - set(PHASES)
    if unknown:
        raise ValueError(f"unknown dropout phases {sorted(unknown)}; use {', '.join(PHASES)}")
    ids = sorted(inputs)
    length = len(next(iter(inputs.values())))
    vecs = {c: check_vector(inputs[c], bits=config.bits, length=length) for c in ids}
    deliver = transport or _direct
    clients = {
        c: SecAggClient(
            c,
            config=config,
            round_index=round_index,
            model_hash=model_hash,
            length=length,
            random_bytes=random_bytes,
            clock=clock,
        )
        for c in ids
    }
    server = SecAggServer(
        config=config,
        round_index=round_index,
        model_hash=model_hash,
        length=length,
        client_ids=frozenset(ids),
    )
    gone: set[int] = set()
    errors: dict[int, str] = {}
    sent = {c: dict.fromkeys(PHASES, 0) for c in ids}
    recv = {c: dict.fromkeys(PHASES, 0) for c in ids}
    s_sent = dict.fromkeys(PHASES, 0)
    s_recv = dict.fromkeys(PHASES, 0)
    wire = dict.fromkeys(PHASES, 0)
    c_time = dict.fromkeys(PHASES, 0.0)
    s_time = dict.fromkeys(PHASES, 0.0)
    wall = dict.fromkeys(PHASES, 0.0)
    survivors: dict[str, tuple[int, ...]] = {}
    observed: dict[int, np.ndarray] = {}

    def down(phase: str, messages: Mapping[int, bytes]) -> dict[int, list[bytes]]:
        inbox: dict[int, list[bytes]] = {}
        for c, data in messages.items():
            s_sent[phase] += len(data)
            wire[phase] += len(data)
            if c in gone:
                continue
            for d in deliver(phase, SERVER_ID, c, data):
                recv[c][phase] += len(d)
                inbox.setdefault(c, []).append(d)
        return inbox

    def up(phase: str, c: int, data: bytes, receive: Callable[[int, bytes], None]) -> None:
        sent[c][phase] += len(data)
        wire[phase] += len(data)
        for d in deliver(phase, c, SERVER_ID, data):
            s_recv[phase] += len(d)
            if keep_observed and phase == "masked_input":
                try:
                    observed[c] = MaskedInput.decode(d).vector.copy()
                except PrivfedError:
                    pass
            t0 = clock()
            receive(c, d)
            s_time[phase] += clock() - t0

    def run_clients(
        phase: str,
        inbox: Mapping[int, list[bytes]] | None,
        step: Callable[..., bytes],
        receive: Callable[[int, bytes], None],
    ) -> None:
        gone.update(dropouts.get(phase, ()))
        # Every client computes its message first and the server then receives them in order,
        # as a server would receive messages from clients running elsewhere (interleaving each
        # client's work with the server's would charge the server for cold caches).
        outgoing: list[tuple[int, bytes]] = []
        for c in ids:
            if c in gone or (inbox is not None and c not in inbox):
                continue
            t0 = clock()
            try:
                if inbox is None:
                    out = step(c)
                else:
                    out = step(c, inbox[c][0])
                    for extra in inbox[c][1:]:  # a duplicated server message hits a later stage
                        step(c, extra)
            except PrivfedError as exc:
                errors[c] = str(exc)
                gone.add(c)
                c_time[phase] += clock() - t0
                continue
            c_time[phase] += clock() - t0
            outgoing.append((c, out))
        for c, out in outgoing:
            up(phase, c, out, receive)

    def timed_close(phase: str, close: Callable[[], dict[int, bytes]]) -> dict[int, bytes]:
        t0 = clock()
        try:
            return close()
        finally:
            s_time[phase] += clock() - t0

    t_phase = clock()
    run_clients(
        "advertise_keys", None, lambda c: clients[c].advertise_keys(), server.receive_advertise_keys
    )
    rosters = timed_close("advertise_keys", server.close_advertise_keys)
    survivors["advertise_keys"] = tuple(sorted(server.u1))
    wall["advertise_keys"] = clock() - t_phase

    t_phase = clock()
    inbox = down("share_keys", rosters)
    run_clients(
        "share_keys", inbox, lambda c, d: clients[c].share_keys(d), server.receive_share_keys
    )
    forwarded = timed_close("share_keys", server.close_share_keys)
    survivors["share_keys"] = tuple(sorted(server.u2))
    wall["share_keys"] = clock() - t_phase

    t_phase = clock()
    inbox = down("masked_input", forwarded)
    run_clients(
        "masked_input",
        inbox,
        lambda c, d: clients[c].masked_input(d, vecs[c]),
        server.receive_masked_input,
    )
    requests = timed_close("masked_input", server.close_masked_input)
    survivors["masked_input"] = tuple(sorted(server.u3))
    wall["masked_input"] = clock() - t_phase

    t_phase = clock()
    inbox = down("unmask", requests)
    run_clients("unmask", inbox, lambda c, d: clients[c].unmask(d), server.receive_unmask)
    survivors["unmask"] = tuple(sorted(server.pending))
    t0 = clock()
    try:
        output = server.finish()
    finally:
        s_time["unmask"] += clock() - t0
    wall["unmask"] = clock() - t_phase

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
        client_seconds=c_time,
        server_seconds=s_time,
        masking_seconds={
            c: clients[c].masking_seconds for c in ids if clients[c].masking_seconds > 0
        },
        threshold=server.threshold,
        degree=server.degree,
        observed={c: v for c, v in observed.items() if c in set(included)},
    )
