"""The server side of secure aggregation as an explicit state machine.

:class:`SecAggServer` collects each round's messages with ``receive_*`` and closes the round with
``close_*``, which checks thresholds and returns the messages for the next round. A message that
is malformed, replayed (a second message from one sender in a round), for another round or
session, or inconsistent with the graph drops its sender (recorded in
:attr:`SecAggServer.violations`); it does not fail the round. A round fails with
:class:`~privfed.secagg.errors.TooFewSurvivors` (a :class:`~privfed.secagg.errors.SecAggAbort`)
when fewer than ``t`` holders remain for some secret the server needs (Bonawitz et al. 2017,
Sec. 4; Bell et al. 2020, Sec. 4).

The server's cost is in :meth:`SecAggServer.finish`: reconstructing the self-mask seeds of the
survivors and the mask keys of dropped clients (Lagrange coefficients cached per responder set),
checking each reconstructed mask key against its advertised public key, and removing the masks.
Mask removal streams the vector in cache-sized chunks (optionally split over ``config.workers``
forked processes); each mask chunk is one AES-CTR call into a preallocated buffer followed by a
wrapping uint add.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from privfed.secagg import shamir
from privfed.secagg.config import SecAggConfig, resolve_degree, resolve_threshold
from privfed.secagg.errors import (
    ProtocolViolation,
    SecAggAbort,
    StageError,
    TooFewSurvivors,
)
from privfed.secagg.graph import build_graph
from privfed.secagg.keys import (
    LABEL_PAIRWISE_MASK,
    LABEL_SELF_MASK,
    derive_key,
    keypair_from_private,
    load_private,
    session_id,
    x25519,
)
from privfed.secagg.messages import (
    ENVELOPE_RECORD,
    AdvertiseKeys,
    EnvelopeRecords,
    KeyRoster,
    MaskedInput,
    MsgType,
    ShareKind,
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
    """

    def __init__(
        self,
        *,
        config: SecAggConfig,
        round_index: int,
        model_hash: bytes,
        length: int,
        client_ids: frozenset[int] | set[int] | tuple[int, ...],
    ) -> None:
        self.config = config
        self.round_index = round_index
        self.model_hash = model_hash
        self.length = length
        self.cohort = frozenset(client_ids)
        self.stage = Stage.ADVERTISE_KEYS
        #: sender -> why its messages were discarded.
        self.violations: dict[int, str] = {}
        self.roster: dict[int, tuple[bytes, bytes]] = {}
        self.session = b""
        self.threshold = 0
        self.degree = 0
        self.graph: Mapping[int, frozenset[int]] = {}
        self._inbox: dict[int, object] = {}
        self._duplicates: set[int] = set()
        self.u1: frozenset[int] = frozenset()
        self.u2: frozenset[int] = frozenset()
        self.u3: frozenset[int] = frozenset()
        self._masked: dict[int, MaskedInput] = {}
        self._maskset: dict[int, frozenset[int]] = {}
        self._requests: dict[int, tuple[frozenset[int], frozenset[int]]] = {}

    # -- helpers -----------------------------------------------------------------------------

    def _expect(self, stage: Stage, received: Stage) -> None:
        if self.stage is not stage:
            raise StageError(expected=self.stage.value, received=received.value, party="server")

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
        """The peers whose pairwise masks ``client`` applied (its accepted neighbours in U2)."""
        if client not in self._maskset:
            raise KeyError(f"client {client} has no accepted masked input (not in U3)")
        return self._maskset[client]

    @property
    def pending(self) -> frozenset[int]:
        """Clients whose message for the current stage has been accepted so far."""
        return frozenset(self._inbox)

    # -- round 0: advertise keys -------------------------------------------------------------

    def receive_advertise_keys(self, sender: int, data: bytes) -> None:
        """File one client's ``AdvertiseKeys``."""
        self._expect(Stage.ADVERTISE_KEYS, Stage.ADVERTISE_KEYS)

        def parse() -> AdvertiseKeys:
            msg = AdvertiseKeys.decode(data)
            self._check_header(msg.round_index, msg.sender, sender)
            return msg

        self._accept(sender, self.cohort, Stage.ADVERTISE_KEYS, parse)

    def close_advertise_keys(self) -> dict[int, bytes]:
        """Fix U1, the session and the graph; return the roster message for each client.

        Raises:
            TooFewSurvivors: fewer than ``t`` (or 2) clients advertised keys.
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
        roster = {}
        for cid in sorted(set(inbox) - bad):
            msg = inbox[cid]
            assert isinstance(msg, AdvertiseKeys)
            roster[cid] = (msg.enc_public, msg.mask_public)
        stage = Stage.ADVERTISE_KEYS.value
        n = len(roster)
        if n < 2:
            self.stage = Stage.ABORTED
            raise TooFewSurvivors(stage, needed=2, alive=n)
        self.degree = resolve_degree(self.config, n)
        self.threshold = resolve_threshold(self.config, num_clients=n, degree=self.degree)
        if self.degree + 1 < self.threshold:
            self.stage = Stage.ABORTED
            where = "the cohort" if self.config.graph == "complete" else "each neighbourhood"
            raise TooFewSurvivors(stage, needed=self.threshold, alive=self.degree + 1, where=where)
        self.roster = roster
        self.u1 = frozenset(roster)
        self.session = session_id(
            round_index=self.round_index,
            model_hash=self.model_hash,
            roster=roster,
            graph=self.config.graph,
            degree=self.degree,
            threshold=self.threshold,
            bits=self.config.bits,
            length=self.length,
        )
        self.graph = build_graph(
            roster, kind=self.config.graph, degree=self.degree, session=self.session
        )
        data = KeyRoster(self.round_index, tuple((c, *roster[c]) for c in sorted(roster))).encode()
        self.stage = Stage.SHARE_KEYS
        return {c: data for c in sorted(roster)}

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
            self.stage = Stage.ABORTED
            raise TooFewSurvivors(stage.value, needed=self.threshold, alive=len(alive))
        for w in sorted(owners):
            holders = (self.graph[w] | {w}) & alive
            if len(holders) < self.threshold:
                self.stage = Stage.ABORTED
                where = (
                    "the cohort"
                    if self.config.graph == "complete"
                    else (f"the neighbourhood of client {w}")
                )
                raise TooFewSurvivors(
                    stage.value, needed=self.threshold, alive=len(holders), where=where
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
        records = np.concatenate(parts) if parts else np.zeros(0, dtype=ENVELOPE_RECORD)
        receivers = records["party"].astype(np.int64)
        origin = np.repeat(np.asarray(senders, dtype=np.int64), [len(p) for p in parts])
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
        """File one client's ``MaskedInput``."""
        self._expect(Stage.MASKED_INPUT, Stage.MASKED_INPUT)

        def parse() -> MaskedInput:
            msg = MaskedInput.decode(data)
            self._check_header(msg.round_index, msg.sender, sender)
            self._check_session(msg.session, sender)
            if msg.bits != self.config.bits or msg.vector.shape[0] != self.length:
                raise ProtocolViolation("masked vector has the wrong bits or length", sender=sender)
            if not set(msg.rejected) <= self.graph[sender] & self.u2:
                raise ProtocolViolation("rejects envelopes it was never sent", sender=sender)
            return msg

        self._accept(sender, self.u2, Stage.MASKED_INPUT, parse)

    def close_masked_input(self) -> dict[int, bytes]:
        """Fix U3 and return each survivor's unmask request.

        A client whose envelope some survivor rejected as unauthentic is treated as dropped: its
        masked input (if any) is discarded and its pairwise masks are removed via its mask key.

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
            self._maskset[v] = (self.graph[v] & self.u2) - set(msg.rejected)
        self.u3 = u3
        dropped = frozenset(w for v in u3 for w in self._maskset[v]) - u3
        self._check_holders(Stage.MASKED_INPUT, frozenset(), u3)
        # Holders of w's shares that can still answer: survivors that accepted w (and w itself).
        for w in sorted(u3 | dropped):
            holders = {v for v in self.graph[w] & u3 if w in self._maskset[v]}
            if w in u3:
                holders.add(w)
            if len(holders) < self.threshold:
                self.stage = Stage.ABORTED
                where = (
                    "the cohort"
                    if self.config.graph == "complete"
                    else (f"the neighbourhood of client {w}")
                )
                raise TooFewSurvivors(
                    Stage.MASKED_INPUT.value, needed=self.threshold, alive=len(holders), where=where
                )
        out = {}
        for v in sorted(u3):
            surv = (self._maskset[v] & u3) | {v}
            drop = self._maskset[v] - u3
            self._requests[v] = (frozenset(surv), frozenset(drop))
            out[v] = UnmaskRequest(
                self.round_index, self.session, tuple(sorted(surv)), tuple(sorted(drop))
            ).encode()
        self.stage = Stage.UNMASK
        return out

    # -- round 3: unmask ---------------------------------------------------------------------

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

        self._accept(sender, self.u3, Stage.UNMASK, parse)

    def _reconstruct(self, owner: int, shares: Mapping[int, int]) -> bytes:
        if len(shares) < self.threshold:
            self.stage = Stage.ABORTED
            where = (
                "the cohort"
                if self.config.graph == "complete"
                else (f"the neighbourhood of client {owner}")
            )
            raise TooFewSurvivors(
                Stage.UNMASK.value, needed=self.threshold, alive=len(shares), where=where
            )
        try:
            return shamir.reconstruct(shares, threshold=self.threshold)
        except ValueError as exc:
            self.stage = Stage.ABORTED
            raise SecAggAbort(Stage.UNMASK.value, f"client {owner}: {exc}") from None

    def finish(self) -> ServerOutput:
        """Reconstruct the needed secrets, remove every mask and return the sum.

        Raises:
            TooFewSurvivors: fewer than ``t`` valid responses for some secret.
            SecAggAbort: a reconstructed mask key does not match its advertised public key.
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
        for w in sorted(self.u3):
            seed = self._reconstruct(w, b_shares[w])
            key = derive_key(
                seed, label=LABEL_SELF_MASK, session=self.session, length=MASK_KEY_BYTES
            )
            jobs.append((key, False))
        dropped = sorted({w for v in self.u3 for w in self._maskset[v]} - self.u3)
        for w in dropped:
            sk = self._reconstruct(w, s_shares.get(w, {}))
            if keypair_from_private(sk).public != self.roster[w][1]:
                self.stage = Stage.ABORTED
                raise SecAggAbort(
                    Stage.UNMASK.value,
                    f"reconstructed mask key of client {w} does not match its advertised public "
                    "key (a share is corrupt)",
                )
            sk_obj = load_private(sk)
            for v in sorted(self.graph[w] & self.u3):
                if w not in self._maskset[v]:
                    continue
                key = derive_key(
                    x25519(sk_obj, self.roster[v][1]),
                    label=LABEL_PAIRWISE_MASK,
                    session=self.session,
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
