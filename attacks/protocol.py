"""Attacks on the secure-aggregation protocol by a server that deviates from it.

A malicious server plays the public state machines of :mod:`privfed.secagg`: it runs the real
:class:`~privfed.secagg.server.SecAggServer` for the honest phases and then sends the honest
clients whatever it likes. The honest clients live in a :class:`HonestCohort`, which holds their
secret inputs and answers only wire messages; the attacking code never reads the inputs. The
secrets go to the metric step alone (``outputs["secret"]``), like any ground truth.

* :class:`FakeDropoutServer` -- tells some clients that the target survived (to collect shares
  of its self-mask seed ``b``) and the others that it dropped (to collect shares of its mask key
  ``s^SK``), then unmasks the target's masked input alone. Stopped by the threshold: each client
  reveals at most one kind of share per owner, so the server needs two *disjoint* sets of ``t``
  clients, impossible when ``t > n / 2`` (Bonawitz et al., "Practical Secure Aggregation for
  Privacy-Preserving Machine Learning", CCS 2017, Sec. 4 and Thm. A.2; privfed's default ``t``
  is the two-thirds rule of Sec. 6). With a configured ``t <= n / 2`` the same code recovers the
  input exactly.
* :class:`BothSharesServer` -- asks every client for both shares of the target in one request.
  Stopped by the clients' check in :meth:`~privfed.secagg.client.SecAggClient.unmask`: a
  request naming one client as survivor *and* dropped is refused (``ClientRefusal``, "both
  shares"), and the refusal is final.
* :class:`SybilServer` -- fills the cohort with clients it controls around one honest target.
  The honest-but-curious protocol has no client authentication, so nothing stops it and the
  "sum" is the target's input plus known values (Bonawitz et al. 2017, Sec. 1 and 6: security
  holds only against a bounded fraction of corrupted clients; the active variant with signed
  keys and a PKI stops the server from minting identities, though not from colluding with real
  clients). This is a limit of the protocol as built, not a bug.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from attacks.base import (
    Adversary,
    Attack,
    AttackResult,
    GroundTruth,
    Observation,
    ThreatModel,
    View,
)
from privfed.errors import PrivfedError
from privfed.secagg import shamir
from privfed.secagg.client import SecAggClient
from privfed.secagg.config import SecAggConfig
from privfed.secagg.keys import (
    LABEL_PAIRWISE_MASK,
    LABEL_SELF_MASK,
    derive_key,
    keypair_from_private,
    load_private,
    x25519,
)
from privfed.secagg.messages import MaskedInput, ShareKind, UnmaskRequest, UnmaskResponse
from privfed.secagg.prg import MASK_KEY_BYTES, apply_masks
from privfed.secagg.server import SecAggServer
from privfed.secagg.simulate import secure_sum

_THREAT = ThreatModel(
    adversary=Adversary.MALICIOUS_SERVER,
    observes=frozenset({View.SERVER_INBOX, View.AGGREGATE}),
    summary="",
)


class HonestCohort:
    """Honest clients with secret inputs that answer only protocol messages.

    Args:
        config: protocol parameters.
        inputs: client id -> integer vector (the secrets; never exposed to the server code).
        round_index: round bound into the session.
    """

    def __init__(
        self, config: SecAggConfig, inputs: Mapping[int, np.ndarray], *, round_index: int = 0
    ) -> None:
        self.length = len(next(iter(inputs.values())))
        self._inputs = {c: np.asarray(v).copy() for c, v in inputs.items()}
        self.clients = {
            c: SecAggClient(
                c, config=config, round_index=round_index, model_hash=b"attack", length=self.length
            )
            for c in sorted(inputs)
        }
        #: client -> why it refused or stopped.
        self.refusals: dict[int, str] = {}

    @property
    def ids(self) -> list[int]:
        """The honest clients' ids."""
        return sorted(self.clients)

    def advertise(self) -> dict[int, bytes]:
        """Round 0 messages."""
        return {c: cl.advertise_keys() for c, cl in self.clients.items()}

    def share_keys(self, c: int, msg: bytes) -> bytes:
        """Round 1 reply of client ``c``."""
        return self.clients[c].share_keys(msg)

    def masked_input(self, c: int, msg: bytes) -> bytes:
        """Round 2 reply of client ``c`` (it masks its own secret input)."""
        return self.clients[c].masked_input(msg, self._inputs[c])

    def unmask(self, c: int, msg: bytes) -> bytes | None:
        """Round 3 reply of client ``c``, or None if it refused (reason in :attr:`refusals`)."""
        try:
            return self.clients[c].unmask(msg)
        except PrivfedError as exc:
            self.refusals[c] = str(exc)
            return None

    def secret(self, c: int) -> np.ndarray:
        """For the metric step only: client ``c``'s true input."""
        return self._inputs[c].copy()


def honest_phases(
    cohort: HonestCohort, config: SecAggConfig, *, round_index: int = 0
) -> SecAggServer:
    """Run the real server through key advertisement, key sharing and masked input."""
    server = SecAggServer(
        config=config,
        round_index=round_index,
        model_hash=b"attack",
        length=cohort.length,
        client_ids=frozenset(cohort.ids),
    )
    for c, data in cohort.advertise().items():
        server.receive_advertise_keys(c, data)
    for c, data in server.close_advertise_keys().items():
        server.receive_share_keys(c, cohort.share_keys(c, data))
    for c, data in server.close_share_keys().items():
        server.receive_masked_input(c, cohort.masked_input(c, data))
    server.close_masked_input()
    return server


def _collect(responses: Mapping[int, bytes], owner: int, kind: ShareKind) -> dict[int, int]:
    shares = {}
    for responder, data in responses.items():
        msg = UnmaskResponse.decode(data)
        for o, k, share in msg.shares:
            if o == owner and k is kind:
                shares[shamir.evaluation_point(responder)] = shamir.decode_share(share)
    return shares


def unmask_one(
    server: SecAggServer, target: int, self_seed: bytes, mask_key: bytes, config: SecAggConfig
) -> np.ndarray:
    """Remove the target's self mask and all its pairwise masks from its masked input."""
    masked: MaskedInput = server.received_masked_input(target)
    sk = load_private(mask_key)
    session = server.session
    self_key = derive_key(self_seed, label=LABEL_SELF_MASK, session=session, length=MASK_KEY_BYTES)
    jobs = [(self_key, False)]
    for v in sorted(server.mask_peers(target)):
        key = derive_key(
            x25519(sk, server.roster[v][1]),
            label=LABEL_PAIRWISE_MASK,
            session=session,
            length=MASK_KEY_BYTES,
        )
        jobs.append((key, target > v))  # the target added PRG(s) iff target < v: undo it
    return apply_masks([masked.vector], jobs, length=server.length, bits=config.bits)


def _inputs(n: int, length: int, bits: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    from privfed.secagg.field import dtype_for_bits

    dt = dtype_for_bits(bits)
    return {c: rng.integers(0, 2**bits, size=length, dtype=np.uint64).astype(dt) for c in range(n)}


def _config(obs: Observation) -> SecAggConfig:
    if obs.secagg is None:
        raise ValueError(
            "this run used aggregator = 'plain': there is no secure-aggregation protocol to "
            "attack; run it against a run with federation.aggregator = 'secagg'"
        )
    return obs.secagg


def _exact_metrics(result: AttackResult) -> dict[str, float]:
    rec = result.outputs.get("recovered")
    secret = result.outputs["secret"]
    if rec is None or len(rec) == 0:
        return {"recovered": 0.0, "recovered_fraction": 0.0}
    frac = float(np.mean(np.asarray(rec) == np.asarray(secret)))
    return {"recovered": float(frac == 1.0), "recovered_fraction": frac}


class _ProtocolAttack(Attack):
    def __init__(self, *, target: int = 0, length: int = 16) -> None:
        self.target = int(target)
        self.length = int(length)

    def run(self, observation: Observation, *, rng: np.random.Generator) -> AttackResult:
        """Play the attack in a session of the run's cohort size and protocol parameters."""
        return self.play(_config(observation), observation.num_clients, rng=rng)

    @abstractmethod
    def play(self, config: SecAggConfig, n: int, *, rng: np.random.Generator) -> AttackResult:
        """The attack in a session of ``n`` clients under ``config``."""

    def evaluate(self, result: AttackResult, truth: GroundTruth) -> AttackResult:
        """Did the server obtain the target's exact input?"""
        del truth  # the protocol secrets are the cohort's inputs, kept in outputs["secret"]
        return result.with_metrics(_exact_metrics(result))


class FakeDropoutServer(_ProtocolAttack):
    """A server that reports the target as dropped to some clients and alive to others.

    Args:
        target: the client to isolate.
        length: input length of the simulated session.
    """

    name: ClassVar[str] = "secagg-fake-dropout"
    threat_model: ClassVar[ThreatModel] = ThreatModel(
        adversary=Adversary.MALICIOUS_SERVER,
        observes=_THREAT.observes,
        summary="server fakes the target's dropout to some clients to unmask it alone "
        "(Bonawitz et al. 2017, Sec. 4); must be stopped by the t > n/2 threshold",
    )

    def play(self, config: SecAggConfig, n: int, *, rng: np.random.Generator) -> AttackResult:
        """The attack against ``n`` honest clients under ``config``."""
        cohort = HonestCohort(config, _inputs(n, self.length, config.bits, rng))
        server = honest_phases(cohort, config)
        t, u3, target = server.threshold, sorted(server.u3), self.target
        others = [c for c in u3 if c != target]
        # A (incl. the target) is told the target survived, B that it dropped.
        a_size = max(0, min(len(others), (len(u3) + 1) // 2 - 1))
        group_a, group_b = [target, *others[:a_size]], others[a_size:]
        responses_a: dict[int, bytes] = {}
        responses_b: dict[int, bytes] = {}
        for c in group_a:
            req = UnmaskRequest(0, server.session, tuple(u3), ()).encode()
            if (r := cohort.unmask(c, req)) is not None:
                responses_a[c] = r
        for c in group_b:
            surv = tuple(v for v in u3 if v != target)
            req = UnmaskRequest(0, server.session, surv, (target,)).encode()
            if (r := cohort.unmask(c, req)) is not None:
                responses_b[c] = r
        b_shares = _collect(responses_a, target, ShareKind.SELF_MASK)
        s_shares = _collect(responses_b, target, ShareKind.MASK_KEY)
        notes = [
            f"n={len(u3)}, t={t}: {len(b_shares)} self-mask shares and {len(s_shares)} "
            f"mask-key shares of client {target} obtained (each needs t)"
        ]
        recovered = np.zeros(0, dtype=np.uint64)
        stopped_by = "threshold"
        try:
            seed = shamir.reconstruct(b_shares, threshold=t)
            mask_key = shamir.reconstruct(s_shares, threshold=t)
            if keypair_from_private(mask_key).public != server.roster[target][1]:
                raise ValueError("reconstructed mask key does not match")
            recovered = unmask_one(server, target, seed, mask_key, config)
            stopped_by = "none"
            notes.append("the server unmasked the target's input alone: t <= n/2 is unsafe")
        except ValueError as exc:
            notes.append(
                f"stopped: {exc}; every client reveals one kind of share per owner, and two "
                f"disjoint sets of t={t} clients do not fit in n={len(u3)} (t > n/2)"
            )
        if cohort.refusals:
            notes.append(f"refusals: {cohort.refusals}")
        return AttackResult(
            attack=self.name,
            outputs={"recovered": recovered, "secret": cohort.secret(target)},
            metrics={
                "threshold": float(t),
                "clients": float(len(u3)),
                "refusals": float(len(cohort.refusals)),
            },
            notes=tuple(notes),
            meta={"stopped_by": stopped_by},
        )


class BothSharesServer(_ProtocolAttack):
    """A server that asks every client for both shares of the target in one request.

    Args:
        target: the client whose secrets are requested.
        length: input length of the simulated session.
    """

    name: ClassVar[str] = "secagg-both-shares"
    threat_model: ClassVar[ThreatModel] = ThreatModel(
        adversary=Adversary.MALICIOUS_SERVER,
        observes=_THREAT.observes,
        summary="server asks for both shares of one client (Bonawitz et al. 2017, Sec. 4); "
        "must be refused by every client",
    )

    def play(self, config: SecAggConfig, n: int, *, rng: np.random.Generator) -> AttackResult:
        """The attack against ``n`` honest clients under ``config``."""
        cohort = HonestCohort(config, _inputs(n, self.length, config.bits, rng))
        server = honest_phases(cohort, config)
        u3, target = sorted(server.u3), self.target
        responses = {}
        for c in u3:
            if c == target:
                continue
            req = UnmaskRequest(0, server.session, tuple(u3), (target,)).encode()
            if (r := cohort.unmask(c, req)) is not None:
                responses[c] = r
        b_shares = _collect(responses, target, ShareKind.SELF_MASK)
        s_shares = _collect(responses, target, ShareKind.MASK_KEY)
        refused = sum("both shares" in why for why in cohort.refusals.values())
        recovered = np.zeros(0, dtype=np.uint64)
        stopped_by = "client-refuses-both-shares" if refused else "none"
        if len(b_shares) >= server.threshold and len(s_shares) >= server.threshold:
            seed = shamir.reconstruct(b_shares, threshold=server.threshold)
            key = shamir.reconstruct(s_shares, threshold=server.threshold)
            recovered = unmask_one(server, target, seed, key, config)
        return AttackResult(
            attack=self.name,
            outputs={"recovered": recovered, "secret": cohort.secret(target)},
            metrics={
                "refused": float(refused),
                "asked": float(len(u3) - 1),
                "shares_obtained": float(len(b_shares) + len(s_shares)),
            },
            notes=(
                f"{refused} of {len(u3) - 1} clients refused: SecAggClient.unmask rejects a "
                "request naming one client as survivor and dropped",
            ),
            meta={"stopped_by": stopped_by},
        )


class SybilServer(_ProtocolAttack):
    """A server that surrounds one honest client with clients it controls (sybils).

    Args:
        target: the honest client's id (the sybils take the other ids).
        length: input length of the simulated session.
    """

    name: ClassVar[str] = "secagg-sybil"
    threat_model: ClassVar[ThreatModel] = ThreatModel(
        adversary=Adversary.MALICIOUS_SERVER,
        observes=_THREAT.observes,
        summary="server injects sybil clients around one honest client; a limit of the "
        "unauthenticated protocol (Bonawitz et al. 2017, Sec. 6)",
    )

    def play(self, config: SecAggConfig, n: int, *, rng: np.random.Generator) -> AttackResult:
        """One honest target and ``n - 1`` sybils with inputs the server chose (zeros)."""
        secret = _inputs(1, self.length, config.bits, rng)[0]
        dt = secret.dtype
        sybils = {c: np.zeros(self.length, dtype=dt) for c in range(n) if c != self.target}
        # The sybils run honest client code; the server knows their inputs because it chose them.
        result = secure_sum({self.target: secret, **sybils}, config=config)
        known = np.zeros(self.length, dtype=np.uint64)
        for v in sybils.values():
            known = (known + v.astype(np.uint64)) % np.uint64(2**config.bits)
        total = result.total.astype(np.uint64)
        recovered = ((total - known) % np.uint64(2**config.bits)).astype(dt)
        return AttackResult(
            attack=self.name,
            outputs={"recovered": recovered, "secret": secret},
            metrics={"sybils": float(len(sybils))},
            notes=(
                f"{len(sybils)} sybils and one honest client: the sum minus the sybils' known "
                "inputs is the honest input. Signed client keys with a PKI (the active variant "
                "of Bonawitz et al. 2017) stop the server from minting identities; a bound on "
                "the fraction of colluding real clients is still assumed",
            ),
            meta={"stopped_by": "none (limit of the honest-but-curious protocol)"},
        )
