"""Where the client state machines of a session live, seen from the server's driver.

The driver (:func:`~privfed.secagg.simulate.run_session`) holds the server state machine and
talks to the clients only through a :class:`ClientParties`: it hands over the server's message
for a stage, per client, and gets each client's reply back as bytes (or a
:class:`PartyFailure`). The clients may run in this process (:class:`LocalParties`), in worker
processes or on Ray actors; nothing but bytes crosses the seam. A client's inputs and its
long-term signing identity stay with the party that runs it; the driver holds only the public
key registry.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from privfed.errors import PrivfedError
from privfed.secagg.client import SecAggClient
from privfed.secagg.config import SecAggConfig
from privfed.secagg.field import check_vector
from privfed.secagg.identity import ClientIdentity, KeyRegistry
from privfed.secagg.messages import Stage
from privfed.secagg.roster import RosterCache


@dataclass(frozen=True)
class PartyFailure:
    """A client stopped instead of replying (it refused, aborted or got a bad message).

    Attributes:
        reason: the client's error message (what went wrong and what to change).
    """

    reason: str


class ClientParties(Protocol):
    """The client side of one secure-aggregation session, wherever it runs."""

    def step(self, stage: Stage, messages: Mapping[int, bytes]) -> dict[int, bytes | PartyFailure]:
        """Deliver the server's message for ``stage`` to each named client.

        ``messages`` maps client id -> the server's message (empty bytes for
        ``ADVERTISE_KEYS``). Returns each named client's reply, or :class:`PartyFailure` if that
        client stopped (refusal, abort, bad message). Clients not named are not called.
        """
        ...


@dataclass(frozen=True)
class PartyCosts:
    """What running the clients cost, as measured by the party that runs them.

    Attributes:
        seconds: stage name -> seconds summed over the clients called at that stage.
        masking_seconds: client -> seconds spent expanding and adding masks.
    """

    seconds: Mapping[str, float]
    masking_seconds: Mapping[int, float]


@runtime_checkable
class MeasuredParties(Protocol):
    """A :class:`ClientParties` that also reports its clients' costs."""

    def costs(self) -> PartyCosts:
        """Seconds per stage and masking seconds per client so far."""
        ...


class LocalParties:
    """The clients of a session as :class:`~privfed.secagg.client.SecAggClient` objects here.

    Holds one client per input and that client's (secret) input vector. The clients share one
    :class:`~privfed.secagg.roster.RosterCache`, so the key roster is decoded, its signatures
    verified and the session and graph derived once per distinct roster message rather than
    once per client; every client still checks its own keys and neighbourhood.

    Args:
        inputs: client id -> integer vector in ``[0, 2**config.bits)``, all the same length.
        config: protocol parameters.
        round_index: the federated round.
        model_hash: hash of the model the clients trained on.
        random_bytes: cryptographic randomness of the clients (``os.urandom``; a
            :class:`~privfed.secagg.prg.DeterministicRandom` only in test mode).
        identities: client id -> long-term signing identity (malicious setting: one for every
            client here).
        registry: the key registry the clients trust (malicious setting); ``None`` builds it
            from ``identities`` (right when this party runs the whole cohort).
        clock: timer for the per-stage costs (``time.process_time`` for CPU time).
        share_rosters: derive each roster once for all clients (default). ``False`` makes
            every client derive its own, as separate devices would (the benchmark's client
            figures).

    Raises:
        ValueError: inputs are empty, of different lengths or out of range, or identities
            are missing in the malicious setting.
    """

    def __init__(
        self,
        inputs: Mapping[int, np.ndarray],
        *,
        config: SecAggConfig,
        round_index: int,
        model_hash: bytes,
        random_bytes: Callable[[int], bytes] = os.urandom,
        identities: Mapping[int, ClientIdentity] | None = None,
        registry: KeyRegistry | None = None,
        clock: Callable[[], float] = time.perf_counter,
        share_rosters: bool = True,
    ) -> None:
        if not inputs:
            raise ValueError("LocalParties needs at least one input")
        ids = sorted(inputs)
        self.length = len(next(iter(inputs.values())))
        self._inputs = {
            c: check_vector(inputs[c], bits=config.bits, length=self.length) for c in ids
        }
        malicious = config.security == "malicious"
        if malicious:
            if identities is None or set(ids) - set(identities):
                missing = sorted(set(ids) - set(identities or {}))
                raise ValueError(
                    f"security = 'malicious' needs every client's identity; missing for "
                    f"{missing[:5]} (see privfed.secagg.identity.make_pki)"
                )
            if registry is None:
                registry = KeyRegistry({c: identities[c].public for c in identities})
        self.config = config
        self.registry = registry
        self._clock = clock
        shared = (
            RosterCache(
                config=config,
                round_index=round_index,
                model_hash=model_hash,
                length=self.length,
                registry=registry if malicious else None,
            )
            if share_rosters
            else None
        )
        self.clients = {
            c: SecAggClient(
                c,
                config=config,
                round_index=round_index,
                model_hash=model_hash,
                length=self.length,
                random_bytes=random_bytes,
                clock=clock,
                identity=identities[c] if (malicious and identities is not None) else None,
                registry=registry if malicious else None,
                rosters=shared,
            )
            for c in ids
        }
        self._seconds: dict[str, float] = {}
        #: client -> seconds spent in its protocol steps so far.
        self.seconds: dict[int, float] = dict.fromkeys(ids, 0.0)

    def step(self, stage: Stage, messages: Mapping[int, bytes]) -> dict[int, bytes | PartyFailure]:
        """Run each named client's step for ``stage`` (see :class:`ClientParties`)."""
        out: dict[int, bytes | PartyFailure] = {}
        spent = 0.0
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
                elif stage is Stage.CONSISTENCY_CHECK:
                    out[c] = client.consistency_check(data)
                elif stage is Stage.UNMASK:
                    out[c] = client.unmask(data)
                else:
                    out[c] = PartyFailure(f"stage {stage.value!r} has no client step")
            except PrivfedError as exc:
                out[c] = PartyFailure(str(exc))
            took = self._clock() - t0
            self.seconds[c] += took
            spent += took
        self._seconds[stage.value] = self._seconds.get(stage.value, 0.0) + spent
        return out

    def costs(self) -> PartyCosts:
        """Seconds per stage (summed over clients) and each client's masking seconds."""
        return PartyCosts(
            dict(self._seconds),
            {c: cl.masking_seconds for c, cl in self.clients.items() if cl.masking_seconds > 0},
        )


class RoutedParties:
    """Several :class:`ClientParties` (workers) behind one seam: messages go to each client's.

    Args:
        routes: client id -> the party that runs it.
    """

    def __init__(self, routes: Mapping[int, ClientParties]) -> None:
        self.routes = dict(routes)

    def step(self, stage: Stage, messages: Mapping[int, bytes]) -> dict[int, bytes | PartyFailure]:
        """Hand each party its clients' messages in one call; merge the replies."""
        batches: dict[int, tuple[ClientParties, dict[int, bytes]]] = {}
        out: dict[int, bytes | PartyFailure] = {}
        for c, data in messages.items():
            party = self.routes.get(c)
            if party is None:
                out[c] = PartyFailure(f"no party runs client {c}")
                continue
            batches.setdefault(id(party), (party, {}))[1][c] = data
        for party, batch in batches.values():
            out.update(party.step(stage, batch))
        return out

    def costs(self) -> PartyCosts:
        """The summed costs of the parties that measure theirs."""
        seconds: dict[str, float] = {}
        masking: dict[int, float] = {}
        for party in {id(p): p for p in self.routes.values()}.values():
            if isinstance(party, MeasuredParties):
                got = party.costs()
                for stage, s in got.seconds.items():
                    seconds[stage] = seconds.get(stage, 0.0) + s
                masking.update(got.masking_seconds)
        return PartyCosts(seconds, masking)
