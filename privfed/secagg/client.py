"""The client side of secure aggregation as an explicit state machine.

One :class:`SecAggClient` takes part in one session (one round). Its methods are the protocol
rounds of Bonawitz et al. 2017, Fig. 4 (semi-honest variant), in order; each takes the server's
message as bytes and returns the client's reply as bytes:

1. :meth:`SecAggClient.advertise_keys` -> ``AdvertiseKeys`` (two fresh X25519 key pairs).
2. :meth:`SecAggClient.share_keys` (``KeyRoster``) -> ``ShareKeys``: t-of-|N[u]| Shamir shares
   of the mask private key ``s^SK`` and the self-mask seed ``b``, sealed to each neighbour.
3. :meth:`SecAggClient.masked_input` (``ForwardedShares``, x) -> ``MaskedInput``:
   ``y = x + PRG(b) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv)`` mod 2^bits over the
   neighbours whose envelopes arrived and authenticated.
4. :meth:`SecAggClient.unmask` (``UnmaskRequest``) -> ``UnmaskResponse``: self-mask shares of
   survivors and mask-key shares of dropped neighbours, never both for one client, and only if
   at least ``t`` survivors are claimed (Bonawitz et al. 2017, Sec. 4, round 4; Bell et al. 2020,
   Sec. 4 for the neighbourhood version).

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
from privfed.secagg.config import SecAggConfig, resolve_degree, resolve_threshold
from privfed.secagg.errors import (
    ClientRefusal,
    EnvelopeError,
    ProtocolViolation,
    StageError,
    TooFewSurvivors,
)
from privfed.secagg.field import check_vector
from privfed.secagg.graph import build_graph
from privfed.secagg.keys import (
    LABEL_PAIRWISE_MASK,
    LABEL_SELF_MASK,
    LABEL_SHARE_ENVELOPE,
    KeyPair,
    derive_key,
    generate_keypair,
    load_private,
    session_id,
    x25519,
)
from privfed.secagg.messages import (
    SERVER_ID,
    AdvertiseKeys,
    ForwardedShares,
    KeyRoster,
    MaskedInput,
    ShareKeys,
    ShareKind,
    Stage,
    UnmaskRequest,
    UnmaskResponse,
)
from privfed.secagg.prg import MASK_KEY_BYTES, apply_masks

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
    ) -> None:
        if not 0 <= client_id < SERVER_ID:
            raise ValueError(f"client ids must be in [0, 2**32 - 1), got {client_id}")
        self.client_id = client_id
        self.config = config
        self.round_index = round_index
        self.model_hash = model_hash
        self.length = length
        self._random = random_bytes
        self._clock = clock
        self.stage = Stage.ADVERTISE_KEYS
        self._enc: KeyPair | None = None
        self._mask: KeyPair | None = None
        self.session = b""
        self.threshold = 0
        self.neighbours: frozenset[int] = frozenset()
        self._env_keys: dict[int, bytes] = {}
        self._pair_keys: dict[int, bytes] = {}
        self._self_key = b""
        self._held: dict[int, env.SharePair] = {}
        self.accepted: frozenset[int] = frozenset()
        self.rejected: frozenset[int] = frozenset()
        #: seconds spent expanding and adding masks in :meth:`masked_input`.
        self.masking_seconds = 0.0

    # -- helpers -----------------------------------------------------------------------------

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
        """Generate fresh key pairs and advertise the public keys."""
        self._expect(Stage.ADVERTISE_KEYS, Stage.ADVERTISE_KEYS)
        self._enc = generate_keypair(self._random)
        self._mask = generate_keypair(self._random)
        self.stage = Stage.SHARE_KEYS
        return AdvertiseKeys(
            self.round_index, self.client_id, self._enc.public, self._mask.public
        ).encode()

    # -- round 1 -----------------------------------------------------------------------------

    def share_keys(self, roster_message: bytes) -> bytes:
        """Check the roster, derive the session, and seal shares to every neighbour."""
        self._expect(Stage.SHARE_KEYS, Stage.SHARE_KEYS)
        return self._guard(lambda: self._share_keys(roster_message))

    def _share_keys(self, data: bytes) -> bytes:
        assert self._enc is not None and self._mask is not None
        msg = KeyRoster.decode(data)
        self._check_common(msg.round_index, None)
        roster = {cid: (c_pk, s_pk) for cid, c_pk, s_pk in msg.entries}
        me = roster.get(self.client_id)
        if me != (self._enc.public, self._mask.public):
            raise ProtocolViolation(
                f"client {self.client_id}: roster does not carry my advertised keys",
                sender=SERVER_ID,
            )
        all_keys = [k for pair in roster.values() for k in pair]
        if len(set(all_keys)) != len(all_keys):
            raise ProtocolViolation(
                f"client {self.client_id}: roster repeats a public key", sender=SERVER_ID
            )
        n = len(roster)
        degree = resolve_degree(self.config, n)
        self.threshold = resolve_threshold(self.config, num_clients=n, degree=degree)
        self.session = session_id(
            round_index=self.round_index,
            model_hash=self.model_hash,
            roster=roster,
            graph=self.config.graph,
            degree=degree,
            threshold=self.threshold,
            bits=self.config.bits,
            length=self.length,
        )
        graph = build_graph(roster, kind=self.config.graph, degree=degree, session=self.session)
        self.neighbours = graph[self.client_id]
        if len(self.neighbours) + 1 < self.threshold:
            raise TooFewSurvivors(
                Stage.SHARE_KEYS.value,
                needed=self.threshold,
                alive=len(self.neighbours) + 1,
                where=f"the neighbourhood of client {self.client_id}",
            )
        enc_key, mask_key = load_private(self._enc.private), load_private(self._mask.private)
        for v in self.neighbours:
            c_pk, s_pk = roster[v]
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
        return ShareKeys(self.round_index, self.client_id, self.session, tuple(envelopes)).encode()

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
        self.stage = Stage.UNMASK
        return MaskedInput(
            self.round_index, self.client_id, self.session, bits, tuple(sorted(rejected)), y
        ).encode()

    # -- round 3 -----------------------------------------------------------------------------

    def unmask(self, request_message: bytes) -> bytes:
        """Reveal self-mask shares of survivors and mask-key shares of dropped neighbours.

        Raises:
            ClientRefusal: the server asked for both shares of one client, listed this client as
                dropped, or named a client whose shares this client does not hold.
            TooFewSurvivors: the server claims fewer than ``t`` survivors.
        """
        self._expect(Stage.UNMASK, Stage.UNMASK)
        return self._guard(lambda: self._unmask(request_message))

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
