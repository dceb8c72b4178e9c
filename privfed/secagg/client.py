"""The client side of secure aggregation as an explicit state machine.

One :class:`SecAggClient` takes part in one session (one round). Its methods are the protocol
rounds of Bonawitz et al. 2017, Fig. 4, in order; each takes the server's message as bytes
and returns the client's reply as bytes:

1. :meth:`SecAggClient.advertise_keys` -> ``AdvertiseKeys``: two fresh X25519 key pairs
   (signed with the client's long-term Ed25519 identity in the malicious setting).
2. :meth:`SecAggClient.share_keys` (``KeyRoster``) -> ``ShareKeys``: after checking the roster
   (every signature under the key registry, ``min_clients``, ``min_neighbours``, the
   threshold's security margin; see :mod:`privfed.secagg.roster`), t-of-|N[u]| Shamir shares
   of the mask private key ``s^SK`` and the self-mask seed ``b`` sealed to each neighbour, and
   a commitment to ``b``.
3. :meth:`SecAggClient.masked_input` (``ForwardedShares``, x) -> ``MaskedInput``:
   ``y = x + PRG(b) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv)`` mod 2^bits over the
   neighbours whose envelopes arrived and authenticated, and *that set itself*, so the server
   never removes masks the client did not add.
4. Malicious setting only: :meth:`SecAggClient.consistency_check` (``ConsistencyRequest``) ->
   ``ConsistencySignature``: the client signs the survivor set it was told, once per session.
5. :meth:`SecAggClient.unmask` -> ``UnmaskResponse``: self-mask shares of survivors and
   mask-key shares of dropped neighbours, never both for one client. Semi-honest setting: the
   request (``UnmaskRequest``) names survivors and dropped clients, and the client refuses
   requests that name a client as both, list itself as dropped, or claim fewer than ``t``
   survivors. Malicious setting: the request is the list of signatures the server collected
   (``SignedSurvivors``); the client reveals nothing unless at least the consistency threshold
   of them verify over the survivor set *it* signed, and derives which share of whom to
   reveal from that set alone (Bonawitz et al. 2017, Fig. 4, rounds 3-4).

Every call checks the stage ("expected stage X, received Y"), the message type, round, session,
sender sets, duplicates and thresholds. Any error moves the client to ``ABORTED``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from privfed.errors import PrivfedError
from privfed.secagg import envelope as env
from privfed.secagg import shamir
from privfed.secagg.config import SecAggConfig
from privfed.secagg.errors import (
    ClientRefusal,
    EnvelopeError,
    ProtocolViolation,
    StageError,
    TooFewSurvivors,
)
from privfed.secagg.field import check_vector
from privfed.secagg.identity import (
    ClientIdentity,
    KeyRegistry,
    advertise_message,
    consistency_message,
)
from privfed.secagg.keys import (
    LABEL_PAIRWISE_MASK,
    LABEL_SELF_MASK,
    LABEL_SHARE_ENVELOPE,
    KeyPair,
    derive_key,
    generate_keypair,
    load_private,
    seed_commitment,
    x25519,
)
from privfed.secagg.messages import (
    SERVER_ID,
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    ForwardedShares,
    MaskedInput,
    ShareKeys,
    ShareKind,
    SignedSurvivors,
    Stage,
    UnmaskRequest,
    UnmaskResponse,
)
from privfed.secagg.prg import MASK_KEY_BYTES, apply_masks
from privfed.secagg.roster import RosterCache, RosterView

_T = TypeVar("_T")


class SecAggClient:
    """One client's view of one secure-aggregation session.

    Args:
        client_id: the client's id (``0 <= id < 2**32 - 1``).
        config: protocol parameters (must equal the server's).
        round_index: the federated round, bound into the session id.
        model_hash: hash of the model this client received, bound into the session id.
        length: vector length.
        random_bytes: source of key material, self-mask seeds, Shamir coefficients and nonces:
            ``os.urandom`` except in the documented test mode
            (:class:`~privfed.secagg.prg.DeterministicRandom`).
        clock: timer for :attr:`masking_seconds`.
        identity: the client's long-term signing identity (malicious setting; required there).
        registry: the key registry the client trusts (malicious setting; required there).
        rosters: a roster cache shared with the other clients of the same session and party
            (optional; each client then derives the same view from the same bytes once).
    """

    def __init__(
        self,
        client_id: int,
        *,
        config: SecAggConfig,
        round_index: int,
        model_hash: bytes,
        length: int,
        random_bytes: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], float] = time.perf_counter,
        identity: ClientIdentity | None = None,
        registry: KeyRegistry | None = None,
        rosters: RosterCache | None = None,
    ) -> None:
        if not 0 <= client_id < SERVER_ID:
            raise ValueError(f"client ids must be in [0, 2**32 - 1), got {client_id}")
        if config.security == "malicious":
            if identity is None or registry is None:
                raise ValueError(
                    f"client {client_id}: security = 'malicious' needs the client's identity "
                    "and the key registry (see privfed.secagg.identity.make_pki)"
                )
            if identity.client_id != client_id or registry.keys.get(client_id) != identity.public:
                raise ValueError(
                    f"client {client_id}: its identity is not the one the registry holds for it"
                )
        self.client_id = client_id
        self.config = config
        self.round_index = round_index
        self.model_hash = model_hash
        self.length = length
        self._random = random_bytes
        self._clock = clock
        self._identity = identity
        self._registry = registry
        if rosters is None or not rosters.matches(
            config=config,
            round_index=round_index,
            model_hash=model_hash,
            length=length,
            registry=registry,
        ):
            rosters = RosterCache(
                config=config,
                round_index=round_index,
                model_hash=model_hash,
                length=length,
                registry=registry,
            )
        self._rosters = rosters
        self.stage = Stage.ADVERTISE_KEYS
        self._enc: KeyPair | None = None
        self._mask: KeyPair | None = None
        self._view: RosterView | None = None
        self.session = b""
        self.threshold = 0
        self.neighbours: frozenset[int] = frozenset()
        self._env_keys: dict[int, bytes] = {}
        self._pair_keys: dict[int, bytes] = {}
        self._self_key = b""
        self._held: dict[int, env.SharePair] = {}
        self.accepted: frozenset[int] = frozenset()
        self.rejected: frozenset[int] = frozenset()
        #: the survivor set this client signed (malicious setting), once per session.
        self.signed_survivors: frozenset[int] | None = None
        #: seconds spent expanding and adding masks in :meth:`masked_input`.
        self.masking_seconds = 0.0

    # -- helpers -----------------------------------------------------------------------------

    @property
    def malicious(self) -> bool:
        """Whether this session runs the active-adversary variant."""
        return self.config.security == "malicious"

    def _expect(self, stage: Stage, received: Stage) -> None:
        if self.stage is not stage:
            raise StageError(
                expected=self.stage.value, received=received.value, party=f"client {self.client_id}"
            )

    def _guard(self, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except PrivfedError:
            self.stage = Stage.ABORTED
            raise

    def _check_common(self, round_index: int, session: bytes | None) -> None:
        if round_index != self.round_index:
            raise ProtocolViolation(
                f"client {self.client_id}: message for round {round_index}, this is round "
                f"{self.round_index}",
                sender=SERVER_ID,
            )
        if session is not None and session != self.session:
            raise ProtocolViolation(
                f"client {self.client_id}: message for another session", sender=SERVER_ID
            )

    # -- round 0 -----------------------------------------------------------------------------

    def advertise_keys(self) -> bytes:
        """Generate fresh key pairs and advertise the public keys (signed if malicious)."""
        self._expect(Stage.ADVERTISE_KEYS, Stage.ADVERTISE_KEYS)
        self._enc = generate_keypair(self._random)
        self._mask = generate_keypair(self._random)
        signature = b""
        if self._identity is not None and self.malicious:
            signature = self._identity.sign(
                advertise_message(
                    context=self._rosters.context,
                    client_id=self.client_id,
                    enc_public=self._enc.public,
                    mask_public=self._mask.public,
                )
            )
        self.stage = Stage.SHARE_KEYS
        return AdvertiseKeys(
            self.round_index, self.client_id, self._enc.public, self._mask.public, signature
        ).encode()

    # -- round 1 -----------------------------------------------------------------------------

    def share_keys(self, roster_message: bytes) -> bytes:
        """Check the roster, derive the session, and seal shares to every neighbour."""
        self._expect(Stage.SHARE_KEYS, Stage.SHARE_KEYS)
        return self._guard(lambda: self._share_keys(roster_message))

    def _share_keys(self, data: bytes) -> bytes:
        assert self._enc is not None and self._mask is not None
        view = self._rosters.view(data)
        me = view.keys.get(self.client_id)
        if me != (self._enc.public, self._mask.public):
            raise ProtocolViolation(
                f"client {self.client_id}: roster does not carry my advertised keys",
                sender=SERVER_ID,
            )
        self._view = view
        self.threshold = view.params.threshold
        self.session = view.session
        self.neighbours = view.graph[self.client_id]
        if len(self.neighbours) < self.config.neighbour_floor:
            raise ClientRefusal(
                Stage.SHARE_KEYS.value,
                f"client {self.client_id} has {len(self.neighbours)} neighbour(s), below "
                f"secagg.min_neighbours = {self.config.neighbour_floor}; refusing",
            )
        if len(self.neighbours) + 1 < self.threshold:
            raise TooFewSurvivors(
                Stage.SHARE_KEYS.value,
                needed=self.threshold,
                alive=len(self.neighbours) + 1,
                where=f"the neighbourhood of client {self.client_id}",
            )
        enc_key, mask_key = load_private(self._enc.private), load_private(self._mask.private)
        for v in self.neighbours:
            c_pk, s_pk = view.keys[v]
            try:
                self._env_keys[v] = derive_key(
                    x25519(enc_key, c_pk),
                    label=LABEL_SHARE_ENVELOPE,
                    session=self.session,
                )
                self._pair_keys[v] = derive_key(
                    x25519(mask_key, s_pk),
                    label=LABEL_PAIRWISE_MASK,
                    session=self.session,
                    length=MASK_KEY_BYTES,
                )
            except ValueError:
                raise ProtocolViolation(
                    f"client {self.client_id}: client {v} advertised an invalid public key",
                    sender=v,
                ) from None
        seed = self._random(32)
        self._self_key = derive_key(
            seed, label=LABEL_SELF_MASK, session=self.session, length=MASK_KEY_BYTES
        )
        commitment = seed_commitment(seed, session=self.session, client_id=self.client_id)
        holders = sorted(self.neighbours | {self.client_id})
        xs = [shamir.evaluation_point(v) for v in holders]
        s_shares = shamir.share_secret(
            self._mask.private, threshold=self.threshold, xs=xs, random_bytes=self._random
        )
        b_shares = shamir.share_secret(
            seed, threshold=self.threshold, xs=xs, random_bytes=self._random
        )
        envelopes = []
        for v in holders:
            x = shamir.evaluation_point(v)
            pair = env.SharePair(shamir.encode_share(s_shares[x]), shamir.encode_share(b_shares[x]))
            if v == self.client_id:
                self._held[v] = pair
                continue
            envelopes.append(
                (
                    v,
                    env.seal_random(
                        self._env_keys[v],
                        pair,
                        session=self.session,
                        round_index=self.round_index,
                        sender=self.client_id,
                        receiver=v,
                        random_bytes=self._random,
                    ),
                )
            )
        self.stage = Stage.MASKED_INPUT
        return ShareKeys(
            self.round_index, self.client_id, self.session, commitment, tuple(envelopes)
        ).encode()

    # -- round 2 -----------------------------------------------------------------------------

    def masked_input(self, forwarded_message: bytes, x: np.ndarray) -> bytes:
        """Open the envelopes addressed to this client and send the masked vector.

        Args:
            forwarded_message: the server's ``ForwardedShares``.
            x: integer vector with values in ``[0, 2**bits)``.
        """
        self._expect(Stage.MASKED_INPUT, Stage.MASKED_INPUT)
        return self._guard(lambda: self._masked_input(forwarded_message, x))

    def _masked_input(self, data: bytes, x: np.ndarray) -> bytes:
        msg = ForwardedShares.decode(data)
        self._check_common(msg.round_index, msg.session)
        bits = self.config.bits
        vec = check_vector(x, bits=bits, length=self.length)
        accepted, rejected = set(), set()
        for sender, sealed in msg.envelopes:
            if sender not in self.neighbours:
                raise ProtocolViolation(
                    f"client {self.client_id}: envelope from non-neighbour {sender}",
                    sender=SERVER_ID,
                )
            try:
                self._held[sender] = env.open_envelope(
                    self._env_keys[sender],
                    sealed,
                    session=self.session,
                    round_index=self.round_index,
                    sender=sender,
                    receiver=self.client_id,
                )
                accepted.add(sender)
            except EnvelopeError:
                rejected.add(sender)
        if len(accepted) + 1 < self.threshold:
            raise TooFewSurvivors(
                Stage.MASKED_INPUT.value,
                needed=self.threshold,
                alive=len(accepted) + 1,
                where=f"the neighbourhood of client {self.client_id}",
            )
        self.accepted, self.rejected = frozenset(accepted), frozenset(rejected)
        start = self._clock()
        jobs = [(self._self_key, True)]
        jobs += [(self._pair_keys[v], self.client_id < v) for v in sorted(accepted)]
        y = apply_masks([vec], jobs, length=self.length, bits=bits)
        self.masking_seconds = self._clock() - start
        self._pair_keys.clear()
        self.stage = Stage.CONSISTENCY_CHECK if self.malicious else Stage.UNMASK
        return MaskedInput(
            self.round_index,
            self.client_id,
            self.session,
            bits,
            tuple(sorted(accepted)),
            tuple(sorted(rejected)),
            y,
        ).encode()

    # -- round 3 (malicious setting): consistency check ----------------------------------------

    def consistency_check(self, request_message: bytes) -> bytes:
        """Sign the survivor set the server announces (once per session).

        Raises:
            ClientRefusal: the set omits this client or names clients outside the roster.
            TooFewSurvivors: fewer than ``t`` of the clients whose shares this client holds
                (and itself) are in the set.
        """
        self._expect(Stage.CONSISTENCY_CHECK, Stage.CONSISTENCY_CHECK)
        return self._guard(lambda: self._consistency_check(request_message))

    def _consistency_check(self, data: bytes) -> bytes:
        assert self._view is not None and self._identity is not None
        msg = ConsistencyRequest.decode(data)
        self._check_common(msg.round_index, msg.session)
        stage = Stage.CONSISTENCY_CHECK.value
        survivors = frozenset(msg.survivors)
        if self.client_id not in survivors:
            raise ClientRefusal(stage, f"server lists client {self.client_id} as not surviving")
        outside = survivors - set(self._view.keys)
        if outside:
            raise ClientRefusal(
                stage,
                f"survivor set names clients {sorted(outside)[:5]} that are not in the roster",
            )
        mine = survivors & (self.accepted | {self.client_id})
        if len(mine) < self.threshold:
            raise TooFewSurvivors(
                stage,
                needed=self.threshold,
                alive=len(mine),
                where=f"the neighbourhood of client {self.client_id} (as claimed by the server)",
            )
        signature = self._identity.sign(
            consistency_message(
                session=self.session, round_index=self.round_index, survivors=survivors
            )
        )
        self.signed_survivors = survivors
        self.stage = Stage.UNMASK
        return ConsistencySignature(
            self.round_index, self.client_id, self.session, signature
        ).encode()

    # -- round 4: unmask ---------------------------------------------------------------------

    def unmask(self, request_message: bytes) -> bytes:
        """Reveal self-mask shares of survivors and mask-key shares of dropped neighbours.

        Raises:
            ClientRefusal: (semi-honest) the server asked for both shares of one client, listed
                this client as dropped, or named a client whose shares this client does not
                hold; (malicious) fewer than the consistency threshold of valid signatures
                over the survivor set this client signed.
            TooFewSurvivors: the server claims fewer than ``t`` survivors.
        """
        self._expect(Stage.UNMASK, Stage.UNMASK)
        if self.malicious:
            return self._guard(lambda: self._unmask_signed(request_message))
        return self._guard(lambda: self._unmask(request_message))

    def _respond(self, survivors: set[int], dropped: set[int]) -> bytes:
        shares: list[tuple[int, ShareKind, bytes]] = []
        for w in sorted(survivors):
            shares.append((w, ShareKind.SELF_MASK, self._held[w].self_mask_share))
        for w in sorted(dropped):
            shares.append((w, ShareKind.MASK_KEY, self._held[w].mask_key_share))
        self._held.clear()
        self.stage = Stage.DONE
        return UnmaskResponse(
            self.round_index, self.client_id, self.session, tuple(shares)
        ).encode()

    def _unmask_signed(self, data: bytes) -> bytes:
        assert self._view is not None and self._registry is not None
        assert self.signed_survivors is not None
        msg = SignedSurvivors.decode(data)
        self._check_common(msg.round_index, msg.session)
        stage = Stage.UNMASK.value
        survivors = self.signed_survivors
        needed = self._view.params.signatures
        signed = consistency_message(
            session=self.session, round_index=self.round_index, survivors=survivors
        )
        valid = self._rosters.valid_signatures(
            msg.signatures, key=data, signed=signed, survivors=survivors, needed=needed
        )
        if valid < needed:
            raise ClientRefusal(
                stage,
                f"consistency check: only {valid} valid signature(s) over the survivor set "
                f"client {self.client_id} signed, {needed} needed; the server may be showing "
                "different survivor sets to different clients",
            )
        holds = self.accepted | {self.client_id}
        return self._respond(set(survivors & holds), set(self.accepted - survivors))

    def _unmask(self, data: bytes) -> bytes:
        msg = UnmaskRequest.decode(data)
        self._check_common(msg.round_index, msg.session)
        survivors, dropped = set(msg.survivors), set(msg.dropped)
        stage = Stage.UNMASK.value
        both = survivors & dropped
        if both:
            raise ClientRefusal(
                stage,
                f"server asked client {self.client_id} for both shares of client(s) "
                f"{sorted(both)}; refusing",
            )
        if self.client_id not in survivors:
            raise ClientRefusal(stage, f"server lists client {self.client_id} as not surviving")
        unknown = (survivors | dropped) - self.accepted - {self.client_id}
        if unknown:
            raise ClientRefusal(
                stage, f"client {self.client_id} holds no shares of client(s) {sorted(unknown)}"
            )
        if len(survivors) < self.threshold:
            raise TooFewSurvivors(
                stage,
                needed=self.threshold,
                alive=len(survivors),
                where=f"the neighbourhood of client {self.client_id} (as claimed by the server)",
            )
        return self._respond(survivors, dropped)
