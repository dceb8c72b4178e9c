"""Attacks on the secure-aggregation protocol by a server that deviates from it.

A malicious server plays the public state machines of :mod:`privfed.secagg`: it runs the real
:class:`~privfed.secagg.server.SecAggServer` for the honest phases and then sends the honest
clients whatever it likes. The honest clients live in a :class:`HonestCohort`, which holds their
secret inputs and their long-term identities and answers only wire messages; the attacking code
never reads the inputs. The secrets go to the metric step alone (``outputs["secret"]``), like any
ground truth. Each result names the client-side check that stopped it in ``meta["stopped_by"]``
(``"none"`` when the input was recovered):

* :class:`FakeDropoutServer` (``secagg-fake-dropout``) -- the dropout lie: different unmask
  requests to different clients, each passing every client-side check, that together yield the
  target's self-mask seed ``b_u`` (from clients told that ``u`` survived) and the mask key of
  every peer ``u`` masked with (from clients told that peer dropped), so the target's input can
  be unmasked alone. The requests come from a max-flow plan over the real graph (each client may
  name at most ``|its peers| + 1 - t`` clients as dropped and still see ``t`` survivors). It
  succeeds whenever a plan exists: on the complete graph exactly when ``t <= n/2``, and on the
  Harary graph with a simple-majority threshold (found for n = 20, 40, 100 at degree 4). Stopped
  by ``"threshold"`` (no plan passes the clients' survivor checks, e.g. the two-thirds rule on
  the complete graph) or ``"consistency-check"`` (the malicious setting: each client signs the
  one survivor set it was told and reveals nothing without enough signatures over that same
  set; Bonawitz et al. 2017, Fig. 4, rounds 3-4).
* :class:`BothSharesServer` (``secagg-both-shares``) -- asks each client for both shares of
  the target. Semi-honest setting: refused by every client (``"client-refuses-both-shares"``).
  Malicious setting: a request cannot even name shares; the server then tries a second survivor
  set without the target and is refused (``"one-survivor-set-per-session"``).
* :class:`SybilServer` (``secagg-sybil``) -- surrounds one honest client with clients the server
  fabricates. Succeeds in the semi-honest setting (no client authentication); stopped in the
  malicious setting by ``"pki"``: the fabricated clients are not in the key registry the honest
  client trusts (a server colluding with *registered* clients is the bounded-collusion
  assumption, not this attack).
* :class:`RosterIsolationServer` (``secagg-roster-isolation``) -- sends the target a roster of
  itself alone, or of itself and ``colluders`` clients the server controls: with the threshold
  derived from the roster the target's own share (plus the colluders') unmasks it. Stopped by
  ``"min-clients"``: a client refuses any roster below ``secagg.min_clients`` whatever the server
  sends (and, for a fixed threshold, any roster where it has no margin).
"""

from __future__ import annotations

from abc import abstractmethod
from collections import deque
from collections.abc import Callable, Mapping, Sequence
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
from privfed.secagg.identity import PKI, KeyRegistry, make_pki
from privfed.secagg.keys import (
    LABEL_PAIRWISE_MASK,
    LABEL_SELF_MASK,
    derive_key,
    keypair_from_private,
    load_private,
    x25519,
)
from privfed.secagg.messages import (
    ConsistencyRequest,
    ConsistencySignature,
    MaskedInput,
    ShareKind,
    SignedSurvivors,
    UnmaskRequest,
    UnmaskResponse,
)
from privfed.secagg.parties import LocalParties, RoutedParties
from privfed.secagg.prg import MASK_KEY_BYTES, apply_masks
from privfed.secagg.server import SecAggServer
from privfed.secagg.simulate import run_session, secure_sum

_THREAT = ThreatModel(
    adversary=Adversary.MALICIOUS_SERVER,
    observes=frozenset({View.SERVER_INBOX, View.AGGREGATE}),
    summary="",
)
_MODEL = b"attack"


class HonestCohort:
    """Honest clients with secret inputs that answer only protocol messages.

    Args:
        config: protocol parameters (the clients' own configuration: their checks use it).
        inputs: client id -> integer vector (the secrets; never exposed to the server code).
        pki: the clients' identities and the registry they trust (malicious setting; fresh ones
            if ``None``). The server side gets only ``pki.registry``.
        round_index: round bound into the session.
    """

    def __init__(
        self,
        config: SecAggConfig,
        inputs: Mapping[int, np.ndarray],
        *,
        pki: PKI | None = None,
        round_index: int = 0,
    ) -> None:
        self.length = len(next(iter(inputs.values())))
        self._inputs = {c: np.asarray(v).copy() for c, v in inputs.items()}
        malicious = config.security == "malicious"
        self._pki = pki if pki is not None else make_pki(inputs)
        self.registry: KeyRegistry = self._pki.registry
        self.clients = {
            c: SecAggClient(
                c,
                config=config,
                round_index=round_index,
                model_hash=_MODEL,
                length=self.length,
                identity=self._pki.identities[c] if malicious else None,
                registry=self.registry if malicious else None,
            )
            for c in sorted(inputs)
        }
        #: client -> why it refused or stopped.
        self.refusals: dict[int, str] = {}

    @property
    def ids(self) -> list[int]:
        """The honest clients' ids."""
        return sorted(self.clients)

    def _answer(self, c: int, call: Callable[[], bytes]) -> bytes | None:
        try:
            return call()
        except PrivfedError as exc:
            self.refusals.setdefault(c, str(exc))
            return None

    def advertise(self) -> dict[int, bytes]:
        """Round 0 messages."""
        return {c: cl.advertise_keys() for c, cl in self.clients.items()}

    def share_keys(self, c: int, msg: bytes) -> bytes | None:
        """Round 1 reply of client ``c``, or None if it refused."""
        return self._answer(c, lambda: self.clients[c].share_keys(msg))

    def masked_input(self, c: int, msg: bytes) -> bytes | None:
        """Round 2 reply of client ``c`` (it masks its own secret input)."""
        return self._answer(c, lambda: self.clients[c].masked_input(msg, self._inputs[c]))

    def consistency_check(self, c: int, msg: bytes) -> bytes | None:
        """Consistency-check reply of client ``c`` (malicious setting), or None if it refused."""
        return self._answer(c, lambda: self.clients[c].consistency_check(msg))

    def unmask(self, c: int, msg: bytes) -> bytes | None:
        """Unmask reply of client ``c``, or None if it refused (reason in :attr:`refusals`)."""
        return self._answer(c, lambda: self.clients[c].unmask(msg))

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
        model_hash=_MODEL,
        length=cohort.length,
        client_ids=frozenset(cohort.ids),
        registry=cohort.registry if config.security == "malicious" else None,
    )
    for c, data in cohort.advertise().items():
        server.receive_advertise_keys(c, data)
    for c, data in server.close_advertise_keys().items():
        if (reply := cohort.share_keys(c, data)) is not None:
            server.receive_share_keys(c, reply)
    for c, data in server.close_share_keys().items():
        if (reply := cohort.masked_input(c, data)) is not None:
            server.receive_masked_input(c, reply)
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


def pairwise_key(own_private: bytes, peer_public: bytes, session: bytes) -> bytes:
    """The AES key of the pairwise mask between two clients, from either one's mask key."""
    return derive_key(
        x25519(load_private(own_private), peer_public),
        label=LABEL_PAIRWISE_MASK,
        session=session,
        length=MASK_KEY_BYTES,
    )


def unmask_one(
    masked: MaskedInput,
    target: int,
    self_seed: bytes,
    pair_keys: Mapping[int, bytes],
    *,
    session: bytes,
    length: int,
    bits: int,
) -> np.ndarray:
    """Remove the target's self mask and its pairwise masks (one AES key per peer)."""
    self_key = derive_key(self_seed, label=LABEL_SELF_MASK, session=session, length=MASK_KEY_BYTES)
    jobs = [(self_key, False)]
    for v in sorted(masked.masked_with):
        jobs.append((pair_keys[v], target > v))  # the target added PRG(s) iff target < v
    return apply_masks([masked.vector], jobs, length=length, bits=bits)


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


def _stopped_by(refusals: Mapping[int, str], default: str) -> str:
    """Name the client-side check behind the refusals (most specific first)."""
    text = " ".join(refusals.values())
    for marker, name in (
        ("min_clients", "min-clients"),
        ("min_neighbours", "min-neighbours"),
        ("no security margin", "threshold-margin"),
        ("at most half", "threshold-margin"),
        ("consistency check", "consistency-check"),
        ("both shares", "client-refuses-both-shares"),
        ("received 'consistency_check'", "one-survivor-set-per-session"),
        ("key registry", "pki"),
        ("threshold is", "threshold"),
    ):
        if marker in text:
            return name
    return default


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


def dropout_lie_plan(
    peers: Mapping[int, frozenset[int]], target: int, threshold: int
) -> dict[int, frozenset[int]]:
    """Which clients to tell that which of the target's peers dropped (max flow).

    ``peers[w]`` is the set of clients whose shares ``w`` holds (the peers it masked with).
    Every client ``w`` must still see ``t`` survivors among ``peers[w] | {w}``, so it can be told
    that at most ``|peers[w]| + 1 - t`` of them dropped, and never the target or itself. Each
    peer ``v`` of the target needs ``t`` holders told that ``v`` dropped. Edmonds-Karp on
    source -> client (capacity) -> peer (1) -> sink (t).

    Returns:
        client -> the peers of the target it is told dropped (the best plan; it is complete iff
        every peer got ``t``).
    """
    want = sorted(peers[target])
    Node = tuple[str, int]
    source: Node = ("s", 0)
    sink: Node = ("t", 0)
    cap: dict[tuple[Node, Node], int] = {}
    adj: dict[Node, list[Node]] = {}

    def edge(a: Node, b: Node, c: int) -> None:
        cap[(a, b)] = cap.get((a, b), 0) + c
        cap.setdefault((b, a), 0)
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)

    for w, held in peers.items():
        room = len(held) + 1 - threshold
        options = [v for v in want if v in held and v != w]
        if room > 0 and options:
            edge(source, ("c", w), room)
            for v in options:
                edge(("c", w), ("p", v), 1)
    for v in want:
        edge(("p", v), sink, threshold)
    while True:
        parent: dict[Node, Node] = {source: source}
        queue: deque[Node] = deque([source])
        while queue and sink not in parent:
            a = queue.popleft()
            for b in adj.get(a, []):
                if b not in parent and cap[(a, b)] > 0:
                    parent[b] = a
                    queue.append(b)
        if sink not in parent:
            break
        node = sink
        while node != source:
            prev = parent[node]
            cap[(prev, node)] -= 1
            cap[(node, prev)] += 1
            node = prev
    plan: dict[int, set[int]] = {w: set() for w in peers}
    for (a, b), c in cap.items():
        if a[0] == "p" and b[0] == "c" and c > 0:  # residual back edge = flow client -> peer
            plan[b[1]].add(a[1])
    return {w: frozenset(d) for w, d in plan.items()}


class FakeDropoutServer(_ProtocolAttack):
    """The dropout lie: tell some clients the target survived and others its peers dropped.

    Args:
        target: the client to isolate.
        length: input length of the simulated session.
    """

    name: ClassVar[str] = "secagg-fake-dropout"
    threat_model: ClassVar[ThreatModel] = ThreatModel(
        adversary=Adversary.MALICIOUS_SERVER,
        observes=_THREAT.observes,
        summary="server lies about dropouts to collect the target's self-mask seed from some "
        "clients and its peers' mask keys from others (Bonawitz et al. 2017, Sec. 4); must be "
        "stopped by the threshold (complete graph, t > n/2) or the consistency check",
    )

    def play(self, config: SecAggConfig, n: int, *, rng: np.random.Generator) -> AttackResult:
        """The attack against ``n`` honest clients under ``config``."""
        cohort = HonestCohort(config, _inputs(n, self.length, config.bits, rng))
        server = honest_phases(cohort, config)
        return self.attack(cohort, server, config)

    def attack(
        self, cohort: HonestCohort, server: SecAggServer, config: SecAggConfig
    ) -> AttackResult:
        """Run the lie against a cohort whose masked inputs ``server`` holds."""
        t, u3, target = server.threshold, sorted(server.u3), self.target
        peers = {w: server.mask_peers(w) for w in u3}
        plan = dropout_lie_plan(peers, target, t)
        need = len(peers[target]) * t
        got = sum(len(d) for d in plan.values())
        requests = {w: (frozenset(peers[w] | {w}) - plan[w], plan[w]) for w in u3}
        responses: dict[int, bytes] = {}
        if config.security == "malicious":
            # Each client is shown its own survivor set; it signs it, and the server forwards to
            # each client the signatures it holds over *that* set.
            sets = {w: frozenset(u3) - plan[w] for w in u3}
            sigs: dict[frozenset[int], list[tuple[int, bytes]]] = {}
            for w in u3:
                req = ConsistencyRequest(0, server.session, tuple(sorted(sets[w]))).encode()
                if (r := cohort.consistency_check(w, req)) is not None:
                    sigs.setdefault(sets[w], []).append(
                        (w, ConsistencySignature.decode(r).signature)
                    )
            for w in u3:
                if w in cohort.refusals:
                    continue
                listed = tuple(sigs.get(sets[w], []))
                if r := cohort.unmask(w, SignedSurvivors(0, server.session, listed).encode()):
                    responses[w] = r
        else:
            for w in u3:
                surv, drop = requests[w]
                ask = UnmaskRequest(0, server.session, tuple(sorted(surv)), tuple(sorted(drop)))
                if (r := cohort.unmask(w, ask.encode())) is not None:
                    responses[w] = r
        b_shares = _collect(responses, target, ShareKind.SELF_MASK)
        mask_keys: dict[int, dict[int, int]] = {
            v: _collect(responses, v, ShareKind.MASK_KEY) for v in peers[target]
        }
        notes = [
            f"n={len(u3)}, t={t}, target masked with {len(peers[target])} peers: plan names "
            f"{got} of the {need} (peer, holder) dropouts needed; obtained {len(b_shares)} "
            f"self-mask shares of the target and "
            f"{min((len(s) for s in mask_keys.values()), default=0)} mask-key shares of its "
            "least covered peer (each needs t)"
        ]
        recovered = np.zeros(0, dtype=np.uint64)
        stopped_by = _stopped_by(cohort.refusals, "threshold")
        try:
            seed = shamir.reconstruct(b_shares, threshold=t)
            pair: dict[int, bytes] = {}
            for v, shares in mask_keys.items():
                sk = shamir.reconstruct(shares, threshold=t)
                if keypair_from_private(sk).public != server.roster[v][1]:
                    raise ValueError(f"reconstructed mask key of {v} does not match")
                pair[v] = pairwise_key(sk, server.roster[target][1], server.session)
            recovered = unmask_one(
                server.received_masked_input(target),
                target,
                seed,
                pair,
                session=server.session,
                length=server.length,
                bits=config.bits,
            )
            stopped_by = "none"
            notes.append("the server unmasked the target's input alone")
        except ValueError as exc:
            notes.append(f"stopped ({stopped_by}): {exc}")
        if cohort.refusals:
            first = sorted(cohort.refusals.items())[:3]
            notes.append(f"{len(cohort.refusals)} refusal(s), e.g. {first}")
        return AttackResult(
            attack=self.name,
            outputs={"recovered": recovered, "secret": cohort.secret(target)},
            metrics={
                "threshold": float(t),
                "clients": float(len(u3)),
                "refusals": float(len(cohort.refusals)),
                "plan_coverage": float(got / need) if need else 1.0,
            },
            notes=tuple(notes),
            meta={"stopped_by": stopped_by},
        )


class BothSharesServer(_ProtocolAttack):
    """A server that asks every client for both shares of the target.

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
        others = [c for c in u3 if c != target]
        responses = {}
        if config.security == "malicious":
            # A request cannot name shares: they follow from the one signed survivor set. Try
            # the honest set (shares of b) and then a second set without the target (shares of
            # its mask key) on the same clients.
            honest = ConsistencyRequest(0, server.session, tuple(u3)).encode()
            lied = ConsistencyRequest(0, server.session, tuple(others)).encode()
            sigs = []
            for c in others:
                if (r := cohort.consistency_check(c, honest)) is not None:
                    sigs.append((c, ConsistencySignature.decode(r).signature))
                cohort.consistency_check(c, lied)
            listed = SignedSurvivors(0, server.session, tuple(sigs)).encode()
            for c in others:
                if (r := cohort.unmask(c, listed)) is not None:
                    responses[c] = r
        else:
            for c in others:
                req = UnmaskRequest(0, server.session, tuple(u3), (target,)).encode()
                if (r := cohort.unmask(c, req)) is not None:
                    responses[c] = r
        b_shares = _collect(responses, target, ShareKind.SELF_MASK)
        s_shares = _collect(responses, target, ShareKind.MASK_KEY)
        refused = len(cohort.refusals)
        recovered = np.zeros(0, dtype=np.uint64)
        stopped_by = _stopped_by(cohort.refusals, "none")
        if len(b_shares) >= server.threshold and len(s_shares) >= server.threshold:
            seed = shamir.reconstruct(b_shares, threshold=server.threshold)
            key = shamir.reconstruct(s_shares, threshold=server.threshold)
            masked = server.received_masked_input(target)
            pair = {
                v: pairwise_key(key, server.roster[v][1], server.session)
                for v in masked.masked_with
            }
            recovered = unmask_one(
                masked,
                target,
                seed,
                pair,
                session=server.session,
                length=server.length,
                bits=config.bits,
            )
            stopped_by = "none"
        return AttackResult(
            attack=self.name,
            outputs={"recovered": recovered, "secret": cohort.secret(target)},
            metrics={
                "refused": float(refused),
                "asked": float(len(others)),
                "shares_obtained": float(len(b_shares) + len(s_shares)),
                "mask_key_shares": float(len(s_shares)),
            },
            notes=(
                f"{refused} of {len(others)} clients refused ({stopped_by}); "
                f"{len(b_shares)} self-mask and {len(s_shares)} mask-key shares of client "
                f"{target} obtained",
            ),
            meta={"stopped_by": stopped_by},
        )


class SybilServer(_ProtocolAttack):
    """A server that surrounds one honest client with clients it fabricates (Sybils).

    Args:
        target: the honest client's id (the sybils take the other ids).
        length: input length of the simulated session.
    """

    name: ClassVar[str] = "secagg-sybil"
    threat_model: ClassVar[ThreatModel] = ThreatModel(
        adversary=Adversary.MALICIOUS_SERVER,
        observes=_THREAT.observes,
        summary="server fabricates sybil clients around one honest client; stopped only by "
        "the PKI of the malicious setting (Bonawitz et al. 2017, Sec. 6)",
    )

    def play(self, config: SecAggConfig, n: int, *, rng: np.random.Generator) -> AttackResult:
        """One honest target and ``n - 1`` sybils with inputs the server chose (zeros).

        In the malicious setting the honest target trusts the real key registry; the server
        gives its sybils identities of its own making, which that registry does not hold.
        """
        secret = _inputs(1, self.length, config.bits, rng)[0]
        dt = secret.dtype
        ids = list(range(n))
        sybils = {c: np.zeros(self.length, dtype=dt) for c in ids if c != self.target}
        inputs = {self.target: secret, **sybils}
        note = (
            f"{len(sybils)} sybils and one honest client: the sum minus the sybils' known inputs "
            "is the honest input"
        )
        if config.security == "malicious":
            real = make_pki(ids)  # the registry the honest client trusts
            forged = make_pki(ids)  # the identities the server can make up
            server_registry = forged.registry.with_keys(
                {self.target: real.identities[self.target].public}
            )
            # The honest target and the server's sybils run the same client code; the target
            # checks every roster entry against the registry *it* trusts.
            target_party = LocalParties(
                {self.target: secret},
                config=config,
                round_index=0,
                model_hash=_MODEL,
                identities={self.target: real.identities[self.target]},
                registry=real.registry,
            )
            sybil_party = LocalParties(
                sybils,
                config=config,
                round_index=0,
                model_hash=_MODEL,
                identities={c: forged.identities[c] for c in sybils},
                registry=server_registry,
            )
            parties = RoutedParties(
                {c: target_party if c == self.target else sybil_party for c in ids}
            )
            result = run_session(
                parties,
                ids,
                config=config,
                round_index=0,
                model_hash=_MODEL,
                length=self.length,
                registry=server_registry,
            )
            if self.target not in result.included:
                why = result.client_errors.get(self.target, "the target dropped out")
                return AttackResult(
                    attack=self.name,
                    outputs={"recovered": np.zeros(0, dtype=np.uint64), "secret": secret},
                    metrics={"sybils": float(len(sybils))},
                    notes=(f"{note}; but the honest client refused: {why}",),
                    meta={"stopped_by": _stopped_by({self.target: why}, "pki")},
                )
            total = result.total
        else:
            total = secure_sum(inputs, config=config).total
        known = np.zeros(self.length, dtype=np.uint64)
        for v in sybils.values():
            known = (known + v.astype(np.uint64)) % np.uint64(2**config.bits)
        recovered = ((total.astype(np.uint64) - known) % np.uint64(2**config.bits)).astype(dt)
        return AttackResult(
            attack=self.name,
            outputs={"recovered": recovered, "secret": secret},
            metrics={"sybils": float(len(sybils))},
            notes=(
                f"{note}. The semi-honest protocol has no client authentication; the malicious "
                "setting's PKI stops fabricated identities (a bound on colluding registered "
                "clients is still assumed)",
            ),
            meta={"stopped_by": "none"},
        )


class RosterIsolationServer(_ProtocolAttack):
    """A server that shows the target a roster of itself alone, or with ``colluders``.

    Args:
        target: the honest client to isolate.
        colluders: clients the server controls that it puts in the roster (0: roster of one).
        length: input length of the simulated session.
    """

    name: ClassVar[str] = "secagg-roster-isolation"
    threat_model: ClassVar[ThreatModel] = ThreatModel(
        adversary=Adversary.MALICIOUS_SERVER,
        observes=_THREAT.observes,
        summary="server sends the target a roster of one (or of itself and colluding clients) "
        "so the threshold derived from the roster unmasks it; must be refused by the client's "
        "min_clients check",
    )

    def __init__(self, *, target: int = 0, colluders: int = 0, length: int = 16) -> None:
        super().__init__(target=target, length=length)
        self.colluders = int(colluders)

    def play(self, config: SecAggConfig, n: int, *, rng: np.random.Generator) -> AttackResult:
        """The attack against an honest target under ``config``.

        ``n`` is not used: the server picks the roster size.
        """
        del n
        target = self.target
        colluding = [c for c in range(target + 1, target + 1 + self.colluders)]
        ids = [target, *colluding]
        secret = _inputs(1, self.length, config.bits, rng)[0]
        pki = make_pki(ids)
        cohort = HonestCohort(config, {target: secret}, pki=pki)
        # The server's own clients run the same code (it knows their inputs and secrets).
        own = (
            HonestCohort(config, {c: np.zeros_like(secret) for c in colluding}, pki=pki)
            if colluding
            else None
        )
        server = _LaxServer.for_(config, ids, cohort.length, pki.registry)
        server.receive_advertise_keys(target, cohort.advertise()[target])
        if own is not None:
            for c, data in own.advertise().items():
                server.receive_advertise_keys(c, data)
        rosters = server.close_advertise_keys()

        def fail(reason: str) -> AttackResult:
            return AttackResult(
                attack=self.name,
                outputs={"recovered": np.zeros(0, dtype=np.uint64), "secret": secret},
                metrics={"roster_size": float(len(ids)), "colluders": float(len(colluding))},
                notes=(f"roster of {len(ids)}: {reason}",),
                meta={"stopped_by": _stopped_by(cohort.refusals, "protocol")},
            )

        if (reply := cohort.share_keys(target, rosters[target])) is None:
            return fail(cohort.refusals[target])
        server.receive_share_keys(target, reply)
        for c in colluding:
            assert own is not None
            server.receive_share_keys(c, own.share_keys(c, rosters[c]) or b"")
        forwarded = server.close_share_keys()
        if (reply := cohort.masked_input(target, forwarded[target])) is None:
            return fail(cohort.refusals[target])
        server.receive_masked_input(target, reply)
        for c in colluding:
            assert own is not None
            server.receive_masked_input(c, own.masked_input(c, forwarded[c]) or b"")
        nxt = server.close_masked_input()
        parties: list[tuple[HonestCohort, int]] = [(cohort, target)]
        parties += [(own, c) for c in colluding if own is not None]
        if config.security == "malicious":
            for who, c in parties:
                if (r := who.consistency_check(c, nxt[c])) is None:
                    return fail(who.refusals[c])
                server.receive_consistency_check(c, r)
            nxt = server.close_consistency_check()
        responses = {}
        for who, c in parties:
            if (r := who.unmask(c, nxt[c])) is None:
                return fail(who.refusals.get(c, "refused"))
            responses[c] = r
        t = server.threshold
        seed = shamir.reconstruct(_collect(responses, target, ShareKind.SELF_MASK), threshold=t)
        pair = {}
        for c in colluding:
            own_client = own.clients[c] if own is not None else None
            assert own_client is not None and own_client._mask is not None  # noqa: SLF001
            pair[c] = pairwise_key(
                own_client._mask.private,  # noqa: SLF001 - the colluder's own secret
                server.roster[target][1],
                server.session,
            )
        recovered = unmask_one(
            server.received_masked_input(target),
            target,
            seed,
            pair,
            session=server.session,
            length=server.length,
            bits=config.bits,
        )
        return AttackResult(
            attack=self.name,
            outputs={"recovered": recovered, "secret": secret},
            metrics={"roster_size": float(len(ids)), "colluders": float(len(colluding))},
            notes=(
                f"roster of {len(ids)}: threshold t = {t} from the roster; the target's own "
                f"share{' and the colluders' if colluding else ''} gave its self-mask seed",
            ),
            meta={"stopped_by": "none"},
        )


class _LaxServer(SecAggServer):
    """A server that sends rosters the honest server would refuse to send (small ones)."""

    @classmethod
    def for_(
        cls, config: SecAggConfig, ids: Sequence[int], length: int, registry: KeyRegistry
    ) -> _LaxServer:
        import warnings
        from dataclasses import replace

        from privfed.secagg.config import InsecureThresholdWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureThresholdWarning)
            lax = replace(config, min_clients=1, min_neighbours=0, allow_insecure_threshold=True)
        return cls(
            config=lax,
            round_index=0,
            model_hash=_MODEL,
            length=length,
            client_ids=frozenset(ids),
            registry=registry if config.security == "malicious" else None,
        )
