"""Secure-aggregation parties for distributed backends (interface A of the project plan).

The driver runs the server state machine (:func:`run_session`) and reaches the clients only
through a :class:`ClientParties`: it hands over the server's message for a stage, per client,
and gets each client's reply back as bytes, or a :class:`PartyFailure`. :class:`LocalParties`
runs :class:`~privfed.secagg.client.SecAggClient` objects in this process; a backend's worker
holds one :class:`LocalParties` over the clients it runs, so a client's keys, shares and
masked input never leave its worker.

This module follows the interface agreed with :mod:`privfed.secagg` (``ClientParties``,
``LocalParties``, ``run_session``) for the semi-honest protocol of today's
:class:`~privfed.secagg.client.SecAggClient`; the secure-aggregation package's own
implementation (with the malicious-security variant) replaces it when it lands.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from privfed.aggregation import PHASES
from privfed.errors import PrivfedError
from privfed.secagg.client import SecAggClient
from privfed.secagg.config import SecAggConfig
from privfed.secagg.field import check_vector
from privfed.secagg.messages import MaskedInput, Stage
from privfed.secagg.server import SecAggServer

__all__ = ["ClientParties", "LocalParties", "PartyFailure", "SessionResult", "run_session"]


@dataclass(frozen=True)
class PartyFailure:
    """A client stopped instead of replying (it refused, aborted or got a bad message).

    Attributes:
        reason: the client's error message.
    """

    reason: str


class ClientParties(Protocol):
    """The client side of one secure-aggregation session, wherever it runs."""

    def step(self, stage: Stage, messages: Mapping[int, bytes]) -> dict[int, bytes | PartyFailure]:
        """Deliver the server's message for ``stage`` to each named client.

        ``messages`` maps client id -> the server's message (empty bytes for
        ``ADVERTISE_KEYS``). Returns each named client's reply, or :class:`PartyFailure` if that
        client stopped. Clients not named are not called.
        """
        ...


class LocalParties:
    """The clients of a session as :class:`~privfed.secagg.client.SecAggClient` objects here.

    Args:
        inputs: client id -> integer vector in ``[0, 2**config.bits)``, all the same length.
        config: protocol parameters.
        round_index: the federated round.
        model_hash: hash of the model the clients trained on.
        random_bytes: cryptographic randomness of the clients (``os.urandom``).
        clock: timer of :attr:`seconds` (``time.thread_time``: this thread's CPU time).
    """

    def __init__(
        self,
        inputs: Mapping[int, np.ndarray],
        *,
        config: SecAggConfig,
        round_index: int,
        model_hash: bytes,
        random_bytes: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], float] = time.thread_time,
    ) -> None:
        if not inputs:
            raise ValueError("LocalParties needs at least one input")
        ids = sorted(inputs)
        self.length = len(next(iter(inputs.values())))
        self._inputs = {
            c: check_vector(inputs[c], bits=config.bits, length=self.length) for c in ids
        }
        self._clock = clock
        self.clients = {
            c: SecAggClient(
                c,
                config=config,
                round_index=round_index,
                model_hash=model_hash,
                length=self.length,
                random_bytes=random_bytes,
                clock=clock,
            )
            for c in ids
        }
        #: client -> seconds spent in its protocol steps so far.
        self.seconds: dict[int, float] = dict.fromkeys(ids, 0.0)

    def step(self, stage: Stage, messages: Mapping[int, bytes]) -> dict[int, bytes | PartyFailure]:
        """Run each named client's step for ``stage`` (see :class:`ClientParties`)."""
        out: dict[int, bytes | PartyFailure] = {}
        for c in sorted(messages):
            client = self.clients.get(c)
            if client is None:
                out[c] = PartyFailure(f"no client {c} in this party")
                continue
            data = messages[c]
            t0 = self._clock()
            try:
                if stage is Stage.ADVERTISE_KEYS:
                    out[c] = client.advertise_keys()
                elif stage is Stage.SHARE_KEYS:
                    out[c] = client.share_keys(data)
                elif stage is Stage.MASKED_INPUT:
                    out[c] = client.masked_input(data, self._inputs[c])
                elif stage is Stage.UNMASK:
                    out[c] = client.unmask(data)
                else:
                    out[c] = PartyFailure(f"stage {stage.value!r} has no client step")
            except PrivfedError as exc:
                out[c] = PartyFailure(str(exc))
            self.seconds[c] += self._clock() - t0
        return out


@dataclass(frozen=True)
class SessionResult:
    """Outcome of :func:`run_session`.

    Attributes:
        total: sum modulo ``2**bits`` of the inputs of ``included``.
        included: clients whose masked input is in ``total``.
        dropped: the other clients.
        client_errors: client -> why the client itself stopped.
        violations: client -> why the server discarded its messages.
        bytes_sent: client -> phase -> bytes the client sent.
        bytes_received: client -> phase -> bytes the client received.
        observed: client -> masked vector as the server received it (if asked for).
    """

    total: np.ndarray
    included: tuple[int, ...]
    dropped: tuple[int, ...]
    client_errors: Mapping[int, str]
    violations: Mapping[int, str]
    bytes_sent: Mapping[int, Mapping[str, int]]
    bytes_received: Mapping[int, Mapping[str, int]]
    observed: Mapping[int, np.ndarray] = field(default_factory=dict)


def run_session(
    parties: ClientParties,
    clients: Sequence[int],
    *,
    config: SecAggConfig,
    round_index: int,
    model_hash: bytes,
    length: int,
    dropouts: Mapping[str, Collection[int]] | None = None,
    keep_observed: bool = False,
) -> SessionResult:
    """Run one session's server here against ``parties``; only bytes cross to the clients.

    Every stage delivers the server's messages to the surviving clients at once (one
    :meth:`ClientParties.step`), then hands their replies to the server in client order.

    Raises:
        TooFewSurvivors: fewer than ``t`` parties remain where the protocol needs ``t``.
        SecAggAbort: the round cannot complete for another reason.
    """
    drops = {p: {int(c) for c in ids} for p, ids in (dropouts or {}).items()}
    ids = sorted(int(c) for c in clients)
    known = set(ids)
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
    observed: dict[int, np.ndarray] = {}

    def exchange(
        stage: Stage, messages: Mapping[int, bytes], receive: Callable[[int, bytes], None]
    ) -> None:
        phase = stage.value
        gone.update(drops.get(phase, ()))
        named = {c: m for c, m in messages.items() if c in known and c not in gone}
        for c, m in named.items():
            recv[c][phase] += len(m)
        replies = parties.step(stage, named) if named else {}
        for c in sorted(replies):
            reply = replies[c]
            if isinstance(reply, PartyFailure):
                errors[c] = reply.reason
                gone.add(c)
                continue
            sent[c][phase] += len(reply)
            if keep_observed and stage is Stage.MASKED_INPUT:
                try:
                    observed[c] = MaskedInput.decode(reply).vector.copy()
                except PrivfedError:
                    pass
            receive(c, reply)

    exchange(Stage.ADVERTISE_KEYS, dict.fromkeys(ids, b""), server.receive_advertise_keys)
    exchange(Stage.SHARE_KEYS, server.close_advertise_keys(), server.receive_share_keys)
    exchange(Stage.MASKED_INPUT, server.close_share_keys(), server.receive_masked_input)
    exchange(Stage.UNMASK, server.close_masked_input(), server.receive_unmask)
    output = server.finish()
    included = tuple(output.included)
    inc = set(included)
    return SessionResult(
        total=output.total,
        included=included,
        dropped=tuple(c for c in ids if c not in inc),
        client_errors=errors,
        violations=dict(server.violations),
        bytes_sent=sent,
        bytes_received=recv,
        observed={c: v for c, v in observed.items() if c in inc},
    )
