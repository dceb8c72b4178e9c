"""The server side of secure aggregation as an explicit state machine.

:class:`SecAggServer` collects each round's messages with ``receive_*`` and closes the round with
``close_*``, which checks thresholds and returns the messages for the next round. A message that
is malformed, replayed (a second message from one sender in a round), for another round or
session, or inconsistent with the graph drops its sender (recorded in
:attr:`SecAggServer.violations`); it does not fail the round. A round fails with
:class:`~privfed.secagg.errors.TooFewSurvivors` (a :class:`~privfed.secagg.errors.SecAggAbort`)
when fewer than ``t`` holders remain for some secret the server needs (Bonawitz et al. 2017,
Sec. 4; Bell et al. 2020, Sec. 4).

In the malicious setting (Bonawitz et al. 2017, Fig. 4) the server also checks each
advertisement's signature under the key registry, and runs the
ConsistencyCheck round between masked input and unmasking: it announces one survivor set
``U3``, collects the survivors' signatures over it and forwards them; each client derives from
that one set which shares to reveal.

The server's cost is in :meth:`SecAggServer.finish`: reconstructing the self-mask seeds of the
survivors and the mask keys of dropped clients (Lagrange coefficients cached per responder set),
checking each reconstructed seed against the client's commitment and each mask key against its
advertised public key, and removing the masks.
Mask removal streams the vector in cache-sized chunks (optionally split over ``config.workers``
forked processes); each mask chunk is one AES-CTR call into a preallocated buffer followed by a
wrapping uint add.
"""

from __future__ import annotations

import functools
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from privfed.secagg import shamir
from privfed.secagg.config import (
    SecAggConfig,
    SessionParameters,
    parameter_problem,
    session_parameters,
)
from privfed.secagg.errors import (
    ProtocolViolation,
    SecAggAbort,
    SignatureError,
    StageError,
    TooFewSurvivors,
)
from privfed.secagg.graph import build_graph
from privfed.secagg.identity import KeyRegistry, advertise_message
from privfed.secagg.keys import (
    LABEL_PAIRWISE_MASK,
    LABEL_SELF_MASK,
    derive_key,
    load_private,
    seed_commitment,
    session_context,
    session_id,
    x25519,
)
from privfed.secagg.messages import (
    ENVELOPE_RECORD,
    SHARE_RECORD_BYTES,
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    EnvelopeRecords,
    KeyRoster,
    MaskedInput,
    MsgType,
    ShareKind,
    SignedSurvivors,
    Stage,
    UnmaskColumns,
    UnmaskRequest,
    encode_forwarded,
)
from privfed.secagg.prg import CHUNK_ENTRIES, MASK_KEY_BYTES, apply_masks


@dataclass(frozen=True)
class ServerOutput:
    """What the server obtains from one session.

    Attributes:
        total: sum modulo ``2**bits`` of the inputs of ``included`` (packing dtype).
        included: clients whose masked input is in ``total`` (U3).
        dropped_with_masks: clients whose pairwise masks had to be reconstructed and removed.
        masks_removed: number of mask expansions the server performed.
    """

    total: np.ndarray
    included: tuple[int, ...]
    dropped_with_masks: tuple[int, ...]
    masks_removed: int


class SecAggServer:
    """The server of one secure-aggregation session.

    Args:
        config: protocol parameters (must equal the clients').
        round_index: the federated round.
        model_hash: hash of the model broadcast this round.
        length: vector length.
        client_ids: the selected cohort; messages from anyone else are violations.
        registry: the key registry (required in the malicious setting): the honest server
            drops a client whose advertisement does not verify, so one bad client cannot make
            every honest client refuse the roster.
        clock: timer behind :attr:`component_seconds` (``time.process_time`` for CPU time).
    """

    def __init__(
        self,
        *,
        config: SecAggConfig,
        round_index: int,
        model_hash: bytes,
        length: int,
        client_ids: frozenset[int] | set[int] | tuple[int, ...],
        registry: KeyRegistry | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if config.security == "malicious" and registry is None:
            raise ValueError(
                "security = 'malicious' needs the key registry of the clients' identities "
                "(see privfed.secagg.identity.make_pki)"
            )
        self.config = config
        self.round_index = round_index
        self.model_hash = model_hash
        self.length = length
        self.cohort = frozenset(client_ids)
        self.registry = registry
        self.context = session_context(
            round_index=round_index,
            model_hash=model_hash,
            security=config.security,
            bits=config.bits,
            length=length,
        )
        self.stage = Stage.ADVERTISE_KEYS
        #: sender -> why its messages were discarded.
        self.violations: dict[int, str] = {}
        self.roster: dict[int, tuple[bytes, bytes]] = {}
        self.params: SessionParameters | None = None
        self.session = b""
        self.threshold = 0
        self.degree = 0
        self.graph: Mapping[int, frozenset[int]] = {}
        self._inbox: dict[int, object] = {}
        self._duplicates: set[int] = set()
        self.u1: frozenset[int] = frozenset()
        self.u2: frozenset[int] = frozenset()
        self.u3: frozenset[int] = frozenset()
        self.u4: frozenset[int] = frozenset()
        self._commitments: dict[int, bytes] = {}
        self._masked: dict[int, MaskedInput] = {}
        self._maskset: dict[int, frozenset[int]] = {}
        self._requests: dict[int, tuple[frozenset[int], frozenset[int]]] = {}
        self._responders: frozenset[int] = frozenset()
        #: client -> the neighbours in U2 whose envelopes were relayed to it.
        self._relayed: dict[int, frozenset[int]] = {}
        #: owner -> members of U3 that rejected its envelope (they hold none of its shares).
        self._rejecters: dict[int, set[int]] = {}
        self._dropped: tuple[int, ...] = ()
        self._clock = clock
        #: Where the server's time goes besides message handling (seconds per component):
        #: ``signatures`` (verifying advertisements), ``secrets`` (Shamir reconstruction, the
        #: commitment and public-key checks, key agreement and derivation) and
        #: ``mask_removal`` (expanding and removing the masks, summing the inputs).
        self.component_seconds: dict[str, float] = dict.fromkeys(COMPONENTS, 0.0)

    # -- helpers -----------------------------------------------------------------------------

    @property
    def malicious(self) -> bool:
        """Whether this session runs the active-adversary variant."""
        return self.config.security == "malicious"

    def _expect(self, stage: Stage, received: Stage) -> None:
        if self.stage is not stage:
            raise StageError(expected=self.stage.value, received=received.value, party="server")

    def _abort(self, exc: SecAggAbort) -> SecAggAbort:
        self.stage = Stage.ABORTED
        return exc

    def _where(self, owner: int) -> str:
        return "the cohort" if self.config.graph == "complete" else f"the neighbourhood of {owner}"

    def _drop(self, sender: int, reason: str) -> None:
        self.violations.setdefault(sender, reason)
        self._inbox.pop(sender, None)

    def _accept(
        self, sender: int, allowed: frozenset[int], stage: Stage, parse: Callable[[], object]
    ) -> None:
        """Run ``parse`` for ``sender`` and file the result, dropping the sender on violations."""
        if sender in self.violations:
            return
        if sender not in allowed:
            self.violations[sender] = f"{stage.value}: message from a client not in this stage"
            return
        if sender in self._inbox or sender in self._duplicates:
            self._duplicates.add(sender)
            self._drop(sender, f"{stage.value}: second message from the same sender (replay)")
            return
        try:
            msg = parse()
        except ProtocolViolation as exc:
            self._drop(sender, f"{stage.value}: {exc}")
            return
        self._inbox[sender] = msg

    def _check_header(self, msg_round: int, msg_sender: int, sender: int) -> None:
        if msg_sender != sender:
            raise ProtocolViolation(f"header names sender {msg_sender}", sender=sender)
        if msg_round != self.round_index:
            raise ProtocolViolation(f"message for round {msg_round}", sender=sender)

    def _check_session(self, session: bytes, sender: int) -> None:
        if session != self.session:
            raise ProtocolViolation("message for another session", sender=sender)

    def _take_inbox(self) -> dict[int, object]:
        inbox, self._inbox, self._duplicates = self._inbox, {}, set()
        return inbox

    def received_masked_input(self, client: int) -> MaskedInput:
        """The ``MaskedInput`` the server accepted from ``client`` (a member of U3).

        What an honest-but-curious server holds after the masked-input round; read by the
        protocol attacks (``attacks.protocol``).
        """
        if client not in self._masked:
            raise KeyError(f"client {client} has no accepted masked input (not in U3)")
        return self._masked[client]

    def mask_peers(self, client: int) -> frozenset[int]:
        """The peers whose pairwise masks ``client`` applied (as its masked input declares)."""
        if client not in self._maskset:
            raise KeyError(f"client {client} has no accepted masked input (not in U3)")
        return self._maskset[client]

    @property
    def pending(self) -> frozenset[int]:
        """Clients whose message for the current stage has been accepted so far."""
        return frozenset(self._inbox)

    # -- round 0: advertise keys -------------------------------------------------------------

    def receive_advertise_keys(self, sender: int, data: bytes) -> None:
        """File one client's ``AdvertiseKeys`` (its signature checked in the malicious setting)."""
        self._expect(Stage.ADVERTISE_KEYS, Stage.ADVERTISE_KEYS)

        def parse() -> AdvertiseKeys:
            msg = AdvertiseKeys.decode(data)
            self._check_header(msg.round_index, msg.sender, sender)
            if self.registry is not None and self.malicious:
                signed = advertise_message(
                    context=self.context,
                    client_id=sender,
                    enc_public=msg.enc_public,
                    mask_public=msg.mask_public,
                )
                t0 = self._clock()
                try:
                    self.registry.verify(sender, signed, msg.signature)
                except SignatureError:
                    raise ProtocolViolation(
                        "advertised keys carry no valid signature under the key registry",
                        sender=sender,
                    ) from None
                finally:
                    self.component_seconds["signatures"] += self._clock() - t0
            elif msg.signature:
                raise ProtocolViolation(
                    "signed advertisement in a semi-honest session", sender=sender
                )
            return msg

        self._accept(sender, self.cohort, Stage.ADVERTISE_KEYS, parse)

    def close_advertise_keys(self) -> dict[int, bytes]:
        """Fix U1, the session and the graph; return the roster message for each client.

        Raises:
            TooFewSurvivors: fewer than ``min_clients`` (or ``t``) clients advertised keys.
            SecAggAbort: the clients would refuse the roster (e.g. a fixed threshold with no
                security margin for this many clients).
        """
        self._expect(Stage.ADVERTISE_KEYS, Stage.ADVERTISE_KEYS)
        inbox = self._take_inbox()
        seen: dict[bytes, int] = {}
        bad: set[int] = set()
        for cid in sorted(inbox):
            msg = inbox[cid]
            assert isinstance(msg, AdvertiseKeys)
            for key in (msg.enc_public, msg.mask_public):
                if key in seen:
                    bad.update({cid, seen[key]})
                seen[key] = cid
        for cid in bad:
            self.violations.setdefault(cid, "advertise_keys: public key used by another client")
        good = sorted(set(inbox) - bad)
        stage = Stage.ADVERTISE_KEYS.value
        n = len(good)
        if n < self.config.min_clients or n == 0:
            needed = max(1, self.config.min_clients)
            raise self._abort(TooFewSurvivors(stage, needed=needed, alive=n))
        params = session_parameters(self.config, n)
        problem = parameter_problem(self.config, params)
        if problem is not None:
            raise self._abort(SecAggAbort(stage, f"the clients would refuse the roster: {problem}"))
        if params.degree + 1 < params.threshold:
            where = "the cohort" if self.config.graph == "complete" else "each neighbourhood"
            raise self._abort(
                TooFewSurvivors(
                    stage, needed=params.threshold, alive=params.degree + 1, where=where
                )
            )
        entries = []
        roster = {}
        for cid in good:
            msg = inbox[cid]
            assert isinstance(msg, AdvertiseKeys)
            roster[cid] = (msg.enc_public, msg.mask_public)
            entries.append((cid, msg.enc_public, msg.mask_public, msg.signature))
        self.params = params
        self.degree, self.threshold = params.degree, params.threshold
        self.roster = roster
        self.u1 = frozenset(roster)
        self.session = session_id(
            context=self.context,
            roster=roster,
            graph=self.config.graph,
            degree=self.degree,
            threshold=self.threshold,
        )
        self.graph = build_graph(
            roster, kind=self.config.graph, degree=self.degree, session=self.session
        )
        data = KeyRoster(self.round_index, self.malicious, tuple(entries)).encode()
        self.stage = Stage.SHARE_KEYS
        return {c: data for c in good}

    # -- round 1: share keys -----------------------------------------------------------------

    def receive_share_keys(self, sender: int, data: bytes) -> None:
        """File one client's ``ShareKeys`` (one envelope per neighbour, no more, no less)."""
        self._expect(Stage.SHARE_KEYS, Stage.SHARE_KEYS)

        def parse() -> EnvelopeRecords:
            msg = EnvelopeRecords.decode(data, MsgType.SHARE_KEYS)
            self._check_header(msg.round_index, msg.sender, sender)
            self._check_session(msg.session, sender)
            if msg.parties != self.graph[sender]:
                raise ProtocolViolation(
                    "envelopes are not addressed to its neighbours", sender=sender
                )
            return msg

        self._accept(sender, self.u1, Stage.SHARE_KEYS, parse)

    def _check_holders(self, stage: Stage, owners: frozenset[int], alive: frozenset[int]) -> None:
        if len(alive) < self.threshold:  # never release a sum of fewer than t inputs
            raise self._abort(TooFewSurvivors(stage.value, needed=self.threshold, alive=len(alive)))
        for w in sorted(owners):
            holders = len(self.graph[w] & alive) + (w in alive)  # w is not its own neighbour
            if holders < self.threshold:
                raise self._abort(
                    TooFewSurvivors(
                        stage.value, needed=self.threshold, alive=holders, where=self._where(w)
                    )
                )

    def close_share_keys(self) -> dict[int, bytes]:
        """Fix U2 and return, for each member, the envelopes addressed to it.

        Raises:
            TooFewSurvivors: some member of U2 has fewer than ``t`` holders of its shares left.
        """
        self._expect(Stage.SHARE_KEYS, Stage.SHARE_KEYS)
        inbox = self._take_inbox()
        self.u2 = frozenset(inbox)
        self._check_holders(Stage.SHARE_KEYS, self.u2, self.u2)
        # Relay every envelope addressed to a member of U2, relabelled with its sender, grouped
        # by receiver and ordered by sender (vectorized: n * k envelopes per round).
        senders = sorted(self.u2)
        size = ENVELOPE_RECORD.itemsize
        parts = []
        for sender in senders:
            msg = inbox[sender]
            assert isinstance(msg, EnvelopeRecords)
            parts.append(msg.records.view(np.uint8).reshape(-1, size))  # wire bytes, no copy
            self._commitments[sender] = msg.commitment
        rows = np.concatenate(parts) if parts else np.zeros((0, size), dtype=np.uint8)
        receivers = np.ndarray((len(rows),), dtype=">u4", buffer=rows, strides=(size,))
        receivers = receivers.astype(np.int64)
        origin = np.repeat(np.asarray(senders, dtype=np.int64), [len(p) for p in parts])
        if self.u2 != self.u1:  # envelopes to clients that left after advertising stay here
            keep = np.isin(receivers, np.fromiter(self.u2, dtype=np.int64))
            rows, receivers, origin = rows[keep], receivers[keep], origin[keep]
        order = np.argsort(receivers, kind="stable")  # senders stay sorted within a receiver
        relabelled = rows[order]
        relabelled[:, :4] = origin[order].astype(">u4").view(np.uint8).reshape(-1, 4)
        bounds = np.searchsorted(receivers[order], senders + [max(senders, default=0) + 1])
        self.stage = Stage.MASKED_INPUT
        forwarded = {
            c: encode_forwarded(
                self.round_index, self.session, relabelled[bounds[i] : bounds[i + 1]]
            )
            for i, c in enumerate(senders)
        }
        u2 = self.u2
        self._relayed = {c: self.graph[c] if u2 == self.u1 else self.graph[c] & u2 for c in senders}
        return forwarded

    # -- round 2: masked input ---------------------------------------------------------------

    def receive_masked_input(self, sender: int, data: bytes) -> None:
        """File one client's ``MaskedInput``.

        The client's declared peers must be exactly the neighbours in U2 whose envelopes the
        server relayed to it, minus those it rejected: a client that masked with any other
        set (an envelope lost on the way, or a dishonest relay) is dropped, so the server never
        removes a mask the client did not add, or leaves one it did.
        """
        self._expect(Stage.MASKED_INPUT, Stage.MASKED_INPUT)

        def parse() -> MaskedInput:
            msg = MaskedInput.decode(data)
            self._check_header(msg.round_index, msg.sender, sender)
            self._check_session(msg.session, sender)
            if msg.bits != self.config.bits or msg.vector.shape[0] != self.length:
                raise ProtocolViolation("masked vector has the wrong bits or length", sender=sender)
            relayed = self._relayed[sender]
            # masked_with and rejected are disjoint and free of duplicates (checked when
            # decoding): their union equals ``relayed`` iff its size does and it lies inside.
            if (
                len(msg.masked_with) + len(msg.rejected) != len(relayed)
                or not relayed.issuperset(msg.masked_with)
                or not relayed.issuperset(msg.rejected)
            ):
                raise ProtocolViolation(
                    "masked with a different set of peers than the envelopes relayed to it "
                    f"({len(msg.masked_with)} masked, {len(msg.rejected)} rejected, "
                    f"{len(relayed)} relayed)",
                    sender=sender,
                )
            return msg

        self._accept(sender, self.u2, Stage.MASKED_INPUT, parse)

    def _survivor_checks(self, stage: Stage, alive: frozenset[int]) -> None:
        """Every secret the server will need keeps ``t`` live holders that can reveal it.

        The holders of ``w``'s shares that can reveal them are the live ``v`` that masked with
        ``w`` (``w`` in ``v``'s mask set), and ``w`` itself if alive. The graph is undirected
        and a mask set is the relayed neighbours in U2 minus the rejected ones, so for ``w`` in
        U2 these are the live neighbours of ``w`` minus those that rejected ``w``'s envelope.
        """
        self._check_holders(stage, frozenset(), alive)
        for w in sorted(self.u3.union(self._dropped)):
            holders = len(self.graph[w] & alive) + (w in alive)
            rejecters = self._rejecters.get(w)
            if rejecters:
                holders -= len(rejecters & alive)
            if holders < self.threshold:
                raise self._abort(
                    TooFewSurvivors(
                        stage.value, needed=self.threshold, alive=holders, where=self._where(w)
                    )
                )

    def _request(self, v: int, survivors: frozenset[int]) -> tuple[frozenset[int], frozenset[int]]:
        """Which self-mask and mask-key shares survivor ``v`` must reveal given ``survivors``."""
        peers = self._maskset[v]
        if peers <= survivors:  # nobody v masked with dropped out
            return peers | {v}, frozenset()
        return (peers & survivors) | {v}, peers - survivors

    def close_masked_input(self) -> dict[int, bytes]:
        """Fix U3 and return each survivor's next message.

        A client whose envelope some survivor rejected as unauthentic is treated as dropped: its
        masked input (if any) is discarded and its pairwise masks are removed via its mask key.
        In the malicious setting the next message is the ``ConsistencyRequest`` (the survivor
        set to sign), otherwise each survivor's ``UnmaskRequest``.

        Raises:
            TooFewSurvivors: some secret the server needs has fewer than ``t`` live holders.
        """
        self._expect(Stage.MASKED_INPUT, Stage.MASKED_INPUT)
        inbox = self._take_inbox()
        rejected_by: dict[int, int] = {}
        for v in sorted(inbox):
            msg = inbox[v]
            assert isinstance(msg, MaskedInput)
            for w in msg.rejected:
                rejected_by.setdefault(w, v)
        for w, v in rejected_by.items():
            self.violations.setdefault(w, f"share_keys: client {v} rejected its envelope")
        u3 = frozenset(inbox) - set(rejected_by)
        rejecters: dict[int, set[int]] = {}
        for v in u3:
            msg = inbox[v]
            assert isinstance(msg, MaskedInput)
            self._masked[v] = msg
            # masked_with = relayed - rejected (checked on receipt): no new set when complete
            self._maskset[v] = (
                self._relayed[v] - set(msg.rejected) if msg.rejected else (self._relayed[v])
            )
            for w in msg.rejected:
                rejecters.setdefault(w, set()).add(v)
        self.u3 = u3
        self._rejecters = rejecters
        # Clients outside U3 some survivor masked with (see _survivor_checks): their pairwise
        # masks must be removed through their reconstructed mask keys.
        self._dropped = tuple(
            w for w in sorted(self.u2 - u3) if len(self.graph[w] & u3) > len(rejecters.get(w, ()))
        )
        self._survivor_checks(Stage.MASKED_INPUT, u3)
        if self.malicious:
            data = ConsistencyRequest(self.round_index, self.session, tuple(sorted(u3))).encode()
            self.stage = Stage.CONSISTENCY_CHECK
            return {v: data for v in sorted(u3)}
        out = {}
        encoded: dict[tuple[frozenset[int], frozenset[int]], bytes] = {}
        for v in sorted(u3):
            request = self._request(v, u3)
            self._requests[v] = request
            if request not in encoded:  # one encoding per distinct request (complete graph: one)
                surv, drop = request
                encoded[request] = UnmaskRequest(
                    self.round_index, self.session, tuple(sorted(surv)), tuple(sorted(drop))
                ).encode()
            out[v] = encoded[request]
        self._responders = frozenset(self._requests)
        self.stage = Stage.UNMASK
        return out

    # -- round 3 (malicious setting): consistency check --------------------------------------

    def receive_consistency_check(self, sender: int, data: bytes) -> None:
        """File one client's signature over the survivor set.

        The server does not verify it: every client verifies the signatures it is sent over
        the set *it* signed and counts only valid ones (Bonawitz et al. 2017, Fig. 4, round 4),
        so a bad signature costs nothing but itself, and the server saves ``|U3|``
        verifications. (Advertisements, in contrast, are verified: one bad roster entry would
        make every honest client refuse the whole roster.)
        """
        self._expect(Stage.CONSISTENCY_CHECK, Stage.CONSISTENCY_CHECK)

        def parse() -> ConsistencySignature:
            msg = ConsistencySignature.decode(data)
            self._check_header(msg.round_index, msg.sender, sender)
            self._check_session(msg.session, sender)
            return msg

        self._accept(sender, self.u3, Stage.CONSISTENCY_CHECK, parse)

    def close_consistency_check(self) -> dict[int, bytes]:
        """Fix U4 (the signers) and send each of them every collected signature.

        Raises:
            TooFewSurvivors: fewer signatures than the consistency threshold, or some secret
                left with fewer than ``t`` holders among the signers.
        """
        self._expect(Stage.CONSISTENCY_CHECK, Stage.CONSISTENCY_CHECK)
        assert self.params is not None
        inbox = self._take_inbox()
        self.u4 = frozenset(inbox)
        needed = self.params.signatures
        if len(self.u4) < needed:
            raise self._abort(
                TooFewSurvivors(
                    Stage.CONSISTENCY_CHECK.value,
                    needed=needed,
                    alive=len(self.u4),
                    where="the signers of the survivor set",
                )
            )
        self._survivor_checks(Stage.CONSISTENCY_CHECK, self.u4)
        sigs = []
        for v in sorted(self.u4):
            msg = inbox[v]
            assert isinstance(msg, ConsistencySignature)
            sigs.append((v, msg.signature))
            self._requests[v] = self._request(v, self.u3)
        self._responders = frozenset(self._requests)
        data = SignedSurvivors(self.round_index, self.session, tuple(sigs)).encode()
        self.stage = Stage.UNMASK
        return {v: data for v in sorted(self.u4)}

    # -- round 4: unmask ---------------------------------------------------------------------

    def receive_unmask(self, sender: int, data: bytes) -> None:
        """File one client's ``UnmaskResponse`` (exactly the shares that were requested)."""
        self._expect(Stage.UNMASK, Stage.UNMASK)

        def parse() -> UnmaskColumns:
            msg = UnmaskColumns.decode(data)
            self._check_header(msg.round_index, msg.sender, sender)
            self._check_session(msg.session, sender)
            surv, drop = self._requests[sender]
            owners, kinds, n_self = msg.owners, msg.kinds, len(surv)
            # Honest clients list the self-mask shares first, then the mask-key shares. Owners
            # are distinct (checked when decoding), so with the right counts and kinds these
            # containment tests prove the response names exactly the requested shares; any
            # other order is compared as a mapping.
            in_order = (
                len(owners) == n_self + len(drop)
                and kinds == bytes(n_self) + b"\x01" * len(drop)
                and surv.issuperset(owners[:n_self])
                and drop.issuperset(owners[n_self:])
            )
            if not in_order:
                want = dict.fromkeys(surv, int(ShareKind.SELF_MASK))
                want.update(dict.fromkeys(drop, int(ShareKind.MASK_KEY)))
                if dict(zip(owners, kinds, strict=True)) != want:
                    raise ProtocolViolation("response does not match the request", sender=sender)
            if not msg.in_field():
                raise ProtocolViolation("share is not a field element", sender=sender)
            return msg

        self._accept(sender, self._responders, Stage.UNMASK, parse)

    def _reconstruct(
        self,
        owner: int,
        shares: Callable[[int], tuple[tuple[int, ...], list[int]]],
        count: int,
        first: bytes | None,
        check: Callable[[bytes], bool],
        what: str,
    ) -> bytes:
        """Reconstruct ``owner``'s secret and check it; survive one corrupt share if possible.

        The ``t`` shares with the smallest evaluation points are interpolated and ``check``ed
        (the seed commitment, or the advertised public key). If the check fails and more than
        ``t`` shares arrived, each of those ``t`` is left out in turn (the next smallest takes
        its place); a unique culprit whose omission passes the check is recorded as a
        violation and the checked secret returned.

        Args:
            owner: whose secret.
            shares: ``shares(k)`` -> the evaluation points and values of the ``k`` shares with
                the smallest points, in increasing order.
            count: how many shares arrived.
            first: the secret interpolated from the ``t`` shares with the smallest points
                (computed for all owners at once, :meth:`ShareTable.interpolate`), or ``None``
                if that is not a 32-byte secret.
            check: the commitment or public-key check.
            what: the secret's name in messages.

        Raises:
            TooFewSurvivors: fewer than ``t`` shares.
            SecAggAbort: no subset passes the check (a share or the commitment is corrupt).
        """
        t = self.threshold
        stage = Stage.UNMASK.value
        if count < t:
            raise self._abort(
                TooFewSurvivors(stage, needed=t, alive=count, where=self._where(owner))
            )
        if first is not None and check(first):
            return first
        # Interpolation uses the t smallest points, so only leaving out one of those can help.
        if count > t:
            xs, values = shares(t + 1)
            for i, left_out in enumerate(xs[:t]):
                try:
                    secret = shamir.interpolate(xs[:i] + xs[i + 1 :], values[:i] + values[i + 1 :])
                except ValueError:
                    continue
                if check(secret):
                    culprit = left_out - 1  # evaluation point -> client id
                    self.violations.setdefault(
                        culprit, f"unmask: its share of client {owner}'s {what} is corrupt"
                    )
                    return secret
        raise self._abort(
            SecAggAbort(
                stage,
                f"reconstructed {what} of client {owner} does not match its "
                f"{'commitment' if what == 'self-mask seed' else 'advertised public key'} "
                "(a share is corrupt)",
            )
        )

    def finish(self) -> ServerOutput:
        """Reconstruct the needed secrets, remove every mask and return the sum.

        Raises:
            TooFewSurvivors: fewer than ``t`` valid responses for some secret.
            SecAggAbort: a reconstructed self-mask seed does not match its commitment, or a
                reconstructed mask key its advertised public key, even leaving out any one
                share.
        """
        self._expect(Stage.UNMASK, Stage.UNMASK)
        inbox = self._take_inbox()
        t0 = self._clock()
        responses = {}
        for responder, msg in inbox.items():
            assert isinstance(msg, UnmaskColumns)
            responses[responder] = msg
        table = ShareTable(responses)
        jobs: list[tuple[bytes, bool]] = []  # (mask key, add?) applied to the sum of inputs
        session = self.session
        self_kind, key_kind = int(ShareKind.SELF_MASK), int(ShareKind.MASK_KEY)
        seeds = table.interpolate(self_kind, sorted(self.u3), self.threshold)
        mask_keys = table.interpolate(key_kind, self._dropped, self.threshold)
        for w in sorted(self.u3):
            commitment = self._commitments[w]

            def matches(seed: bytes, w: int = w, commitment: bytes = commitment) -> bool:
                return hmac.compare_digest(
                    seed_commitment(seed, session=session, client_id=w), commitment
                )

            seed = self._reconstruct(
                w,
                functools.partial(table.smallest, self_kind, w),
                table.count(self_kind, w),
                seeds.get(w),
                matches,
                "self-mask seed",
            )
            key = derive_key(seed, label=LABEL_SELF_MASK, session=session, length=MASK_KEY_BYTES)
            jobs.append((key, False))
        for w in self._dropped:
            public = self.roster[w][1]
            loaded: dict[bytes, X25519PrivateKey] = {}

            def owns(sk: bytes, public: bytes = public, loaded: dict = loaded) -> bool:
                key = load_private(sk)
                if key.public_key().public_bytes_raw() != public:
                    return False
                loaded[sk] = key
                return True

            sk = self._reconstruct(
                w,
                functools.partial(table.smallest, key_kind, w),
                table.count(key_kind, w),
                mask_keys.get(w),
                owns,
                "mask key",
            )
            sk_obj = loaded[sk]
            for v in sorted(self.graph[w] & self.u3):
                if w not in self._maskset[v]:
                    continue
                key = derive_key(
                    x25519(sk_obj, self.roster[v][1]),
                    label=LABEL_PAIRWISE_MASK,
                    session=session,
                    length=MASK_KEY_BYTES,
                )
                # v added PRG(s_vw) if v < w and subtracted it otherwise: undo that.
                jobs.append((key, v > w))
        t1 = self._clock()
        self.component_seconds["secrets"] += t1 - t0
        vectors = [self._masked[v].vector for v in sorted(self.u3)]
        total = combine(
            vectors, jobs, length=self.length, bits=self.config.bits, workers=self.config.workers
        )
        self.component_seconds["mask_removal"] += self._clock() - t1
        self.stage = Stage.DONE
        return ServerOutput(total, tuple(sorted(self.u3)), self._dropped, len(jobs))


#: Components of :attr:`SecAggServer.component_seconds`.
COMPONENTS: tuple[str, ...] = ("signatures", "secrets", "mask_removal")


class ShareTable:
    """Every share revealed in one unmask round, sorted by (kind, owner, evaluation point).

    Built column-wise from the responses' raw records (no Python object per share); a share
    becomes an integer only when a reconstruction uses it.

    Args:
        responses: responder id -> its decoded ``UnmaskResponse``.
    """

    def __init__(self, responses: Mapping[int, UnmaskColumns]) -> None:
        size = SHARE_RECORD_BYTES
        responders = sorted(responses)
        blob = b"".join(responses[r].raw for r in responders)
        count = len(blob) // size
        owners = np.ndarray((count,), dtype=">u4", buffer=blob, strides=(size,)).astype(np.int64)
        kinds = np.frombuffer(blob, dtype=np.uint8)[4::size].astype(np.int64)
        xs = np.repeat(
            np.fromiter((shamir.evaluation_point(r) for r in responders), dtype=np.int64),
            [len(responses[r].owners) for r in responders],
        )
        group = kinds << 32 | owners
        order = np.lexsort((xs, group))
        group = group[order]
        records = np.frombuffer(blob, dtype=np.uint8).reshape(count, size)
        self._values = records[order, size - shamir.SHARE_BYTES :]  # (count, 33), sorted
        self._xs = xs[order]
        starts = np.flatnonzero(np.diff(group, prepend=-1)) if count else np.zeros(0, np.int64)
        ends = np.append(starts[1:], count)
        bounds = zip(starts.tolist(), ends.tolist(), strict=True)
        self._groups = dict(zip(group[starts].tolist(), bounds, strict=True))

    def count(self, kind: int, owner: int) -> int:
        """How many shares of ``owner``'s secret of ``kind`` arrived."""
        lo, hi = self._groups.get(kind << 32 | owner, (0, 0))
        return hi - lo

    def smallest(self, kind: int, owner: int, k: int) -> tuple[tuple[int, ...], list[int]]:
        """Evaluation points and values of the (at most) ``k`` shares with the smallest points."""
        lo, hi = self._groups.get(kind << 32 | owner, (0, 0))
        hi = min(hi, lo + k)
        w = shamir.SHARE_BYTES
        values, from_bytes = self._values[lo:hi].tobytes(), int.from_bytes
        return (
            tuple(self._xs[lo:hi].tolist()),
            [from_bytes(values[i : i + w], "big") for i in range(0, len(values), w)],
        )

    def interpolate(self, kind: int, owners: Sequence[int], t: int) -> dict[int, bytes | None]:
        """Each owner's secret from its ``t`` shares with the smallest points, all at once.

        Owners with fewer than ``t`` shares are left out. A value that is not a 32-byte
        secret (a corrupt share) maps to ``None``.
        """
        spans = [(w, self._groups.get(kind << 32 | w, (0, 0))) for w in owners]
        spans = [(w, lo) for w, (lo, hi) in spans if hi - lo >= t]
        if not spans:
            return {}
        starts = np.fromiter((lo for _, lo in spans), dtype=np.int64, count=len(spans))
        rows = starts[:, None] + np.arange(t)
        points = [tuple(p) for p in self._xs[rows].tolist()]
        values = shamir.interpolate_many(points, self._values[rows])
        return {
            w: v.to_bytes(shamir.SECRET_BYTES, "big") if v >> 256 == 0 else None
            for (w, _), v in zip(spans, values, strict=True)
        }


def combine(
    vectors: list[np.ndarray],
    jobs: list[tuple[bytes, bool]],
    *,
    length: int,
    bits: int,
    workers: int = 1,
    chunk: int = CHUNK_ENTRIES,
) -> np.ndarray:
    """The server's mask removal: :func:`~privfed.secagg.prg.apply_masks` with its chunk size."""
    return apply_masks(vectors, jobs, length=length, bits=bits, workers=workers, chunk=chunk)
