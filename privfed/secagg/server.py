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

import hmac
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

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
    keypair_from_private,
    load_private,
    seed_commitment,
    session_context,
    session_id,
    x25519,
)
from privfed.secagg.messages import (
    ENVELOPE_RECORD,
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
                try:
                    self.registry.verify(sender, signed, msg.signature)
                except SignatureError:
                    raise ProtocolViolation(
                        "advertised keys carry no valid signature under the key registry",
                        sender=sender,
                    ) from None
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
            if set(msg.records["party"].tolist()) != self.graph[sender]:
                raise ProtocolViolation(
                    "envelopes are not addressed to its neighbours", sender=sender
                )
            return msg

        self._accept(sender, self.u1, Stage.SHARE_KEYS, parse)

    def _check_holders(self, stage: Stage, owners: frozenset[int], alive: frozenset[int]) -> None:
        if len(alive) < self.threshold:  # never release a sum of fewer than t inputs
            raise self._abort(TooFewSurvivors(stage.value, needed=self.threshold, alive=len(alive)))
        for w in sorted(owners):
            holders = (self.graph[w] | {w}) & alive
            if len(holders) < self.threshold:
                raise self._abort(
                    TooFewSurvivors(
                        stage.value, needed=self.threshold, alive=len(holders), where=self._where(w)
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
        parts = []
        for sender in senders:
            msg = inbox[sender]
            assert isinstance(msg, EnvelopeRecords)
            parts.append(msg.records)
            self._commitments[sender] = msg.commitment
        records = np.concatenate(parts) if parts else np.zeros(0, dtype=ENVELOPE_RECORD)
        receivers = records["party"].astype(np.int64)
        origin = np.repeat(np.asarray(senders, dtype=np.int64), [len(p) for p in parts])
        if self.u2 != self.u1:  # envelopes to clients that left after advertising stay here
            keep = np.isin(receivers, np.fromiter(self.u2, dtype=np.int64))
            records, receivers, origin = records[keep], receivers[keep], origin[keep]
        order = np.argsort(receivers, kind="stable")  # senders stay sorted within a receiver
        relabelled = records[order]
        relabelled["party"] = origin[order]
        bounds = np.searchsorted(receivers[order], senders + [max(senders, default=0) + 1])
        self.stage = Stage.MASKED_INPUT
        return {
            c: encode_forwarded(
                self.round_index, self.session, relabelled[bounds[i] : bounds[i + 1]]
            )
            for i, c in enumerate(senders)
        }

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
            relayed = self.graph[sender] & self.u2
            if set(msg.masked_with) | set(msg.rejected) != relayed:
                raise ProtocolViolation(
                    "masked with a different set of peers than the envelopes relayed to it "
                    f"({len(msg.masked_with)} masked, {len(msg.rejected)} rejected, "
                    f"{len(relayed)} relayed)",
                    sender=sender,
                )
            return msg

        self._accept(sender, self.u2, Stage.MASKED_INPUT, parse)

    def _survivor_checks(self, stage: Stage, alive: frozenset[int]) -> None:
        """Every secret the server will need keeps ``t`` live holders that can reveal it."""
        self._check_holders(stage, frozenset(), alive)
        dropped = frozenset(w for v in self.u3 for w in self._maskset[v]) - self.u3
        for w in sorted(self.u3 | dropped):
            holders = {v for v in self.graph[w] & alive if w in self._maskset[v]}
            if w in alive:
                holders.add(w)
            if len(holders) < self.threshold:
                raise self._abort(
                    TooFewSurvivors(
                        stage.value, needed=self.threshold, alive=len(holders), where=self._where(w)
                    )
                )

    def _request(self, v: int, survivors: frozenset[int]) -> tuple[frozenset[int], frozenset[int]]:
        """Which self-mask and mask-key shares survivor ``v`` must reveal given ``survivors``."""
        return (
            frozenset((self._maskset[v] & survivors) | {v}),
            frozenset(self._maskset[v] - survivors),
        )

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
        for v in u3:
            msg = inbox[v]
            assert isinstance(msg, MaskedInput)
            self._masked[v] = msg
            self._maskset[v] = frozenset(msg.masked_with)
        self.u3 = u3
        self._survivor_checks(Stage.MASKED_INPUT, u3)
        if self.malicious:
            data = ConsistencyRequest(self.round_index, self.session, tuple(sorted(u3))).encode()
            self.stage = Stage.CONSISTENCY_CHECK
            return {v: data for v in sorted(u3)}
        out = {}
        for v in sorted(u3):
            surv, drop = self._request(v, u3)
            self._requests[v] = (surv, drop)
            out[v] = UnmaskRequest(
                self.round_index, self.session, tuple(sorted(surv)), tuple(sorted(drop))
            ).encode()
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
        data = SignedSurvivors(self.round_index, self.session, tuple(sigs)).encode()
        self.stage = Stage.UNMASK
        return {v: data for v in sorted(self.u4)}

    # -- round 4: unmask ---------------------------------------------------------------------

    def receive_unmask(self, sender: int, data: bytes) -> None:
        """File one client's ``UnmaskResponse`` (exactly the shares that were requested)."""
        self._expect(Stage.UNMASK, Stage.UNMASK)

        def parse() -> tuple[list[int], bytes, list[int]]:
            msg = UnmaskColumns.decode(data)
            self._check_header(msg.round_index, msg.sender, sender)
            self._check_session(msg.session, sender)
            surv, drop = self._requests[sender]
            want = dict.fromkeys(surv, int(ShareKind.SELF_MASK))
            want.update(dict.fromkeys(drop, int(ShareKind.MASK_KEY)))
            if dict(zip(msg.owners, msg.kinds, strict=True)) != want:  # owners are unique
                raise ProtocolViolation("response does not match the request", sender=sender)
            try:
                return msg.owners, msg.kinds, msg.values()
            except ValueError:
                raise ProtocolViolation("share is not a field element", sender=sender) from None

        self._accept(sender, frozenset(self._requests), Stage.UNMASK, parse)

    def _reconstruct(
        self, owner: int, shares: Mapping[int, int], check: Callable[[bytes], bool], what: str
    ) -> bytes:
        """Reconstruct ``owner``'s secret and check it; survive one corrupt share if possible.

        The ``t`` shares with the smallest evaluation points are interpolated and ``check``ed
        (the seed commitment, or the advertised public key). If the check fails and more than
        ``t`` shares arrived, each share is left out in turn; a unique culprit whose omission
        passes the check is recorded as a violation and the checked secret returned.

        Raises:
            TooFewSurvivors: fewer than ``t`` shares.
            SecAggAbort: no subset passes the check (a share or the commitment is corrupt).
        """
        t = self.threshold
        stage = Stage.UNMASK.value
        if len(shares) < t:
            raise self._abort(
                TooFewSurvivors(stage, needed=t, alive=len(shares), where=self._where(owner))
            )
        # Interpolation uses the t smallest points, so only leaving out one of those can help;
        # the leave-one-out subsets are built only after the first check failed.
        used = sorted(shares)[:t] if len(shares) > t else []
        subsets = itertools.chain(
            [(None, shares)],
            ((out, {x: v for x, v in shares.items() if x != out}) for out in used),
        )
        for left_out, subset in subsets:
            try:
                secret = shamir.reconstruct(subset, threshold=t)
            except ValueError:
                continue
            if check(secret):
                if left_out is not None:
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
        b_shares: dict[int, dict[int, int]] = {w: {} for w in self.u3}
        s_shares: dict[int, dict[int, int]] = {}
        self_kind = int(ShareKind.SELF_MASK)
        for responder in sorted(inbox):
            entry = inbox[responder]
            assert isinstance(entry, tuple)
            owners, kinds, values = entry
            x = shamir.evaluation_point(responder)
            for owner, kind, value in zip(owners, kinds, values, strict=True):
                target = b_shares if kind == self_kind else s_shares
                target.setdefault(owner, {})[x] = value
        jobs: list[tuple[bytes, bool]] = []  # (mask key, add?) applied to the sum of inputs
        session = self.session
        for w in sorted(self.u3):
            commitment = self._commitments[w]

            def matches(seed: bytes, w: int = w, commitment: bytes = commitment) -> bool:
                return hmac.compare_digest(
                    seed_commitment(seed, session=session, client_id=w), commitment
                )

            seed = self._reconstruct(w, b_shares[w], matches, "self-mask seed")
            key = derive_key(seed, label=LABEL_SELF_MASK, session=session, length=MASK_KEY_BYTES)
            jobs.append((key, False))
        dropped = sorted({w for v in self.u3 for w in self._maskset[v]} - self.u3)
        for w in dropped:
            public = self.roster[w][1]

            def owns(sk: bytes, public: bytes = public) -> bool:
                return keypair_from_private(sk).public == public

            sk = self._reconstruct(w, s_shares.get(w, {}), owns, "mask key")
            sk_obj = load_private(sk)
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
        vectors = [self._masked[v].vector for v in sorted(self.u3)]
        total = combine(
            vectors, jobs, length=self.length, bits=self.config.bits, workers=self.config.workers
        )
        self.stage = Stage.DONE
        return ServerOutput(total, tuple(sorted(self.u3)), tuple(dropped), len(jobs))


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
