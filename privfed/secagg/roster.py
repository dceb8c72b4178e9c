"""The key roster as a client sees it: decoded, checked and turned into a session, once.

Every client of a session receives the same ``KeyRoster`` bytes and derives the same things
from them: the entries, the roster-level checks (duplicate keys, signatures under the key
registry in the malicious setting, ``min_clients``, ``min_neighbours``, the threshold's
security margin), the session id and the graph. All of that is a pure function of the bytes
and the session's public parameters, so a party that runs many clients (a worker, or the
in-process :class:`~privfed.secagg.parties.LocalParties`) computes it once per distinct roster
through a :class:`RosterCache` and hands the same immutable :class:`RosterView` to each client.
Nothing is skipped: a client still checks that its own keys are in the roster and its own
neighbourhood, and a roster that fails a check fails for every client that receives it (the
error is cached too and raised again for each). The same holds for the signatures of the
consistency check (:meth:`RosterCache.valid_signatures`): the clients of a party that signed
the same survivor set and receive the same signature list count the valid signatures once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from privfed.secagg.config import SecAggConfig, SessionParameters, parameter_problem
from privfed.secagg.config import session_parameters as derive_parameters
from privfed.secagg.errors import (
    ClientRefusal,
    ProtocolViolation,
    SecAggError,
    SignatureError,
    TooFewSurvivors,
)
from privfed.secagg.graph import build_graph
from privfed.secagg.identity import KeyRegistry, advertise_message
from privfed.secagg.keys import session_context, session_id
from privfed.secagg.messages import SERVER_ID, KeyRoster, Stage


@dataclass(frozen=True)
class RosterView:
    """Everything the clients of a session derive from one roster message.

    Attributes:
        keys: client id -> (encryption public key, mask public key).
        params: roster size, degree, threshold and consistency threshold.
        session: the session id.
        graph: client id -> its neighbours.
    """

    keys: Mapping[int, tuple[bytes, bytes]]
    params: SessionParameters
    session: bytes
    graph: Mapping[int, frozenset[int]]


class RosterCache:
    """Decodes and checks each distinct roster once for all clients of one session.

    Args:
        config: the protocol parameters of the session.
        round_index: the federated round.
        model_hash: the model hash bound into the session.
        length: vector length.
        registry: the key registry (malicious setting).
    """

    def __init__(
        self,
        *,
        config: SecAggConfig,
        round_index: int,
        model_hash: bytes,
        length: int,
        registry: KeyRegistry | None,
    ) -> None:
        self.config = config
        self.round_index = round_index
        self.model_hash = model_hash
        self.length = length
        self.registry = registry
        self.context = session_context(
            round_index=round_index,
            model_hash=model_hash,
            security=config.security,
            bits=config.bits,
            length=length,
        )
        self._views: dict[bytes, RosterView | SecAggError] = {}
        self._tallies: dict[tuple[bytes, bytes, frozenset[int]], int] = {}

    def matches(
        self,
        *,
        config: SecAggConfig,
        round_index: int,
        model_hash: bytes,
        length: int,
        registry: KeyRegistry | None,
    ) -> bool:
        """Whether this cache derives views for exactly these session parameters."""
        return (
            self.config == config
            and self.round_index == round_index
            and self.model_hash == model_hash
            and self.length == length
            and self.registry is registry
        )

    def view(self, data: bytes) -> RosterView:
        """The checked view of the roster message ``data`` (computed once per distinct bytes).

        Raises:
            MessageError: the bytes are not a well-formed ``KEY_ROSTER``.
            ProtocolViolation: duplicate keys, an unregistered client or a bad signature.
            ClientRefusal: the roster is below ``min_clients``, a neighbourhood below
                ``min_neighbours``, or the threshold has no security margin.
            TooFewSurvivors: the threshold exceeds the neighbourhood.
        """
        got = self._views.get(data)
        if got is None:
            try:
                got = self._compute(data)
            except SecAggError as exc:
                got = exc
            if len(self._views) > 64:  # a session sees one roster; bound hostile variety
                self._views.clear()
            self._views[bytes(data)] = got
        if isinstance(got, SecAggError):
            raise got
        return got

    def valid_signatures(
        self,
        signatures: Sequence[tuple[int, bytes]],
        *,
        key: bytes,
        signed: bytes,
        survivors: frozenset[int],
        needed: int,
    ) -> int:
        """How many of ``signatures`` by members of ``survivors`` verify over ``signed``.

        Counting stops at ``needed``. The tally is a pure function of the signature list (the
        message bytes ``key``), the signed bytes and the set, so clients of one party that
        receive the same list over the same set share it (computed once, like the roster).
        """
        if self.registry is None:
            return 0
        memo = (key, signed, survivors)
        got = self._tallies.get(memo)
        if got is None:
            got = 0
            for signer, sig in signatures:
                if signer not in survivors:
                    continue  # a signer outside the set it signed is no evidence for it
                try:
                    self.registry.verify(signer, signed, sig)
                except SignatureError:
                    continue
                got += 1
                if got >= needed:
                    break
            if len(self._tallies) > 64:
                self._tallies.clear()
            self._tallies[memo] = got
        return got

    def _compute(self, data: bytes) -> RosterView:
        config = self.config
        msg = KeyRoster.decode(data)
        stage = Stage.SHARE_KEYS.value
        if msg.round_index != self.round_index:
            raise ProtocolViolation(
                f"roster for round {msg.round_index}, this is round {self.round_index}",
                sender=SERVER_ID,
            )
        malicious = config.security == "malicious"
        if msg.signed != malicious:
            raise ProtocolViolation(
                f"roster {'carries' if msg.signed else 'lacks'} signatures but security = "
                f"{config.security!r}",
                sender=SERVER_ID,
            )
        keys = {cid: (c_pk, s_pk) for cid, c_pk, s_pk, _ in msg.entries}
        all_keys = [k for pair in keys.values() for k in pair]
        if len(set(all_keys)) != len(all_keys):
            raise ProtocolViolation("roster repeats a public key", sender=SERVER_ID)
        if malicious:
            registry = self.registry
            assert registry is not None
            for cid, c_pk, s_pk, sig in msg.entries:
                signed = advertise_message(
                    context=self.context, client_id=cid, enc_public=c_pk, mask_public=s_pk
                )
                try:
                    registry.verify(cid, signed, sig)
                except SignatureError:
                    raise ProtocolViolation(
                        f"roster entry of client {cid} carries no valid signature under the key "
                        "registry (an unregistered or substituted client)",
                        sender=SERVER_ID,
                    ) from None
        params = derive_parameters(config, len(keys))
        problem = parameter_problem(config, params)
        if problem is not None:
            raise ClientRefusal(stage, problem)
        if params.degree + 1 < params.threshold:
            where = "the cohort" if config.graph == "complete" else "each neighbourhood"
            raise TooFewSurvivors(
                stage, needed=params.threshold, alive=params.degree + 1, where=where
            )
        session = session_id(
            context=self.context,
            roster=keys,
            graph=config.graph,
            degree=params.degree,
            threshold=params.threshold,
        )
        graph = build_graph(keys, kind=config.graph, degree=params.degree, session=session)
        return RosterView(MappingProxyType(keys), params, session, graph)
