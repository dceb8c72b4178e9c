"""The server side of a round: plan the tasks, then apply the sum (select -> aggregate -> optimize).

:meth:`Server.plan_tasks` reads the run state and nothing else changes: it samples the cohort
(Poisson rate q), draws the simulated dropouts, checks every client's privacy budget *before*
dispatch and builds one :class:`~privfed.round.ClientTask` per selected client, with everything
that client may know this round (the global vectors of its units, its noise multiplier, the
client-level clip bound, a proximal term the server computed, the RNG root).

:meth:`Server.apply_round` takes what the server received -- the (securely) summed encodings,
or each client's vector for algorithms that need them -- and updates the state: decode, central
noise and the client-level ledger, adaptive clipping, the server optimizer, the algorithm's own
server state (MOCHA's Omega).

The server never runs client code and never reads a client's records or trainers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from privfed.aggregation import PHASES
from privfed.algorithms import Algorithm, make_algorithm
from privfed.algorithms.server import ServerAdam, ServerOptimizer
from privfed.checkpoint import TreeReader, is_int, is_number
from privfed.config import ExperimentConfig, config_hash
from privfed.errors import CheckpointError
from privfed.federation import Federation
from privfed.participation import Layout, make_encoding
from privfed.privacy import client_dp, planning
from privfed.privacy.distributed import DistributedPlan, NoiseShares
from privfed.privacy.ledger import (
    DistributedLedger,
    DistributedRound,
    PrivacyLedger,
    SourceLedger,
)
from privfed.rng import numpy_rng
from privfed.round import ClientTask, UnitWork

#: The kind and version of the run-state tree inside the checkpoint container.
STATE_KIND = "privfed-run-state"
STATE_VERSION = 1

__all__ = [
    "STATE_KIND",
    "STATE_VERSION",
    "Inbox",
    "RoundPlan",
    "RunState",
    "Server",
    "configure_distributed_dp",
    "make_server_optimizer",
    "model_hash",
    "plan_record_privacy",
]


@dataclass
class RunState:
    """What a checkpoint holds: everything that is not re-derived from config and seed.

    The server's part (global models, ledgers, clip bound, algorithm and optimizer state live
    with the server objects) and the clients' kept state, which the orchestrator stores for
    them between rounds (``personal``).
    """

    next_round: int
    globals: dict[str, np.ndarray]
    personal: dict[tuple[int, str], np.ndarray]
    ledger: PrivacyLedger
    aborted_rounds: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    client_ledger: SourceLedger | None = None
    client_clip: float = 0.0
    ddg_ledger: DistributedLedger | None = None
    client_refused_rounds: list[int] = field(default_factory=list)


def model_hash(vectors: Mapping[str, np.ndarray]) -> bytes:
    """SHA-256 of the global model (every unit's vector, by name), bound into secure aggregation."""
    h = hashlib.sha256()
    for name in sorted(vectors):
        h.update(name.encode())
        h.update(np.ascontiguousarray(vectors[name], dtype=np.float32).tobytes())
    return h.digest()


def make_server_optimizer(cfg: ExperimentConfig) -> ServerOptimizer:
    """The configured server optimizer (``sgd`` with lr 1 is FedAvg; ``adam`` is FedAdam)."""
    f = cfg.federation
    if f.server_optimizer == "adam":
        return ServerAdam(
            lr=f.server_lr, beta1=f.server_beta1, beta2=f.server_beta2, tau=f.server_tau
        )
    return ServerOptimizer(lr=f.server_lr)


def configure_distributed_dp(cfg: ExperimentConfig, *, dimension: int) -> DistributedPlan:
    """The distributed-DP plan of the run (:func:`privfed.privacy.distributed.plan_distributed`).

    Noise is calibrated for the worst round secure aggregation admits with the planned cohort
    (``ceil(cohort_fraction * num_clients)``): ``t`` survivors, ``client_dp.max_colluders`` of
    them colluding, the protected client's own share excluded.
    """
    from privfed.privacy.distributed import plan_distributed

    cdp, fed = cfg.client_dp, cfg.federation
    return plan_distributed(
        dimension=dimension,
        clip=cdp.clip,
        secagg=cfg.secagg,
        num_clients=fed.num_clients,
        cohort=max(1, math.ceil(fed.cohort_fraction * fed.num_clients)),
        max_colluders=cdp.max_colluders,
        target_epsilon=cdp.target_epsilon,
        delta=cdp.delta,
        rounds=cfg.rounds,
    )


def plan_record_privacy(
    cfg: ExperimentConfig, fed: Federation, algorithm: Algorithm
) -> planning.RecordPlan:
    """The record-level noise plan of every (client, data source), checked before training.

    Lists, per (client, source), the units the client trains on those records (in the order
    the client trains them) and hands them to :func:`privfed.privacy.planning.plan_record_level`.

    Raises:
        ConfigError: an impossible budget or a delta too large for some client's records.
    """
    units: dict[tuple[int, str], list[tuple[str, int]]] = {}
    records: dict[tuple[int, str], np.ndarray] = {}
    by_source: dict[str, list[tuple[str, int]]] = {}
    tpp = algorithm.trainings_per_participation
    for unit in fed.units:
        gs = fed.unit_group[unit.name]
        by_source.setdefault(gs.ledger_key, []).append((unit.name, tpp))
        for c, cg in gs.clients.items():
            key = (c, gs.ledger_key)
            units.setdefault(key, []).append((unit.name, len(cg.train)))
            records[key] = np.union1d(records.get(key, cg.train[:0]), cg.train)
    dp = cfg.dp
    return planning.plan_record_level(
        target_epsilon=dp.target_epsilon,
        delta=dp.delta,
        noise_multiplier=dp.noise_multiplier,
        planned_participation=dp.planned_participation,
        public_sampling=dp.public_sampling,
        nominal_records=dp.nominal_records,
        rounds=cfg.rounds,
        local_steps=cfg.train.local_steps,
        batch_size=cfg.train.batch_size,
        trainings_per_participation=tpp,
        holdings={
            key: planning.SourceHolding(records=len(records[key]), units=tuple(us))
            for key, us in sorted(units.items())
        },
        units_by_source=by_source,
    )


@dataclass(frozen=True)
class RoundPlan:
    """The server's plan of one round.

    Attributes:
        round_index: the round.
        cohort: the selected clients, sorted.
        tasks: one task per selected client, in cohort order.
        budget_skips: (client, unit) trainings left out because the budget would be exceeded.
        dropouts: protocol phase -> selected clients that vanish before it (simulated).
        model_hash: hash of the broadcast global model.
        refused: why the whole round is refused before dispatch ("" if it is not): releasing
            it could exceed the client-level budget.
        shares: the honest noise shares this round guarantees (distributed DP), else None.
    """

    round_index: int
    cohort: tuple[int, ...]
    tasks: tuple[ClientTask, ...]
    budget_skips: int
    dropouts: Mapping[str, tuple[int, ...]]
    model_hash: bytes
    refused: str = ""
    shares: NoiseShares | None = None


@dataclass(frozen=True)
class Inbox:
    """What the server received in one round.

    Attributes:
        total: the sum of the included clients' encoded updates (integers modulo ``2**bits``
            under secure aggregation, float64 in the clear); None if nothing was summed.
        included: clients whose update is in ``total``.
        individual: client -> its own float vector (algorithms that need individual updates).
    """

    total: np.ndarray | None
    included: tuple[int, ...]
    individual: Mapping[int, np.ndarray] = field(default_factory=dict)


class Server:
    """The server of one run: its algorithm state, optimizer and privacy parameters.

    Args:
        cfg: the experiment.
        fed: the federation (the server uses its layout, holders and partition sizes only).
    """

    def __init__(self, cfg: ExperimentConfig, fed: Federation) -> None:
        self.cfg = cfg
        self.fed = fed
        self.algorithm: Algorithm = make_algorithm(
            cfg.federation.algorithm, cfg.federation.algorithm_params
        )
        self.algorithm.setup(
            fed.units,
            holders={u.name: fed.clients_of(u) for u in fed.units},
            lr=cfg.train.lr,
        )
        self.optimizer = make_server_optimizer(cfg)
        self.record_plan: planning.RecordPlan | None = (
            plan_record_privacy(cfg, fed, self.algorithm) if cfg.dp.private else None
        )
        #: Privacy problems accepted with a warning (each names the field and the fix).
        self.warnings: list[str] = list(self.record_plan.warnings if self.record_plan else ())
        self._plans_of: dict[int, list[planning.SourcePlan]] = {}
        for plan in self.record_plan.sources.values() if self.record_plan else ():
            self._plans_of.setdefault(plan.client, []).append(plan)
        cdp = cfg.client_dp
        q = cfg.federation.cohort_fraction
        self.expected_cohort = {u.name: q * len(fed.unit_group[u.name].clients) for u in fed.units}
        self.client_dp: client_dp.ClientDPParams | None = None
        if cdp.mode == "central":
            self.client_dp = client_dp.resolve_params(
                target_epsilon=cdp.target_epsilon,
                delta=cdp.delta,
                noise_multiplier=cdp.noise_multiplier,
                sample_rate=q,
                rounds=cfg.rounds,
                adaptive=cdp.adaptive,
                count_noise_multiplier=cdp.count_noise_multiplier,
                expected_cohort=q * cfg.federation.num_clients,
            )
        if cdp.mode != "off":
            check = planning.check_delta(
                delta=cdp.delta,
                n=cfg.federation.num_clients,
                field_name="client_dp.delta",
                unit="clients of the population (federation.num_clients)",
            )
            if check.warn:
                self.warnings.append(check.message)
        self.ddg_plan: DistributedPlan | None = (
            configure_distributed_dp(cfg, dimension=fed.counter_base)
            if cdp.mode == "distributed"
            else None
        )
        self.ddg: Any = self.ddg_plan.params if self.ddg_plan is not None else None
        self.layout = Layout(
            units=tuple(u.name for u in fed.units),
            offsets=tuple(int(o) for o in fed.offsets),
            counters=cdp.mode == "off",
            clip_bit=cdp.adaptive,
        )
        self.encoding = make_encoding(cfg, self.layout, self.ddg)

    # ------------------------------------------------------------------ state
    def fresh_state(self) -> RunState:
        """Round-0 state: common initialization, empty ledgers."""
        cfg = self.cfg
        return RunState(
            next_round=0,
            globals=self.fed.initial_vectors(),
            personal={},
            ledger=PrivacyLedger(delta=cfg.dp.delta, target_epsilon=cfg.dp.target_epsilon),
            client_ledger=(
                client_dp.new_client_ledger(
                    delta=cfg.client_dp.delta, target_epsilon=cfg.client_dp.target_epsilon
                )
                if self.client_dp is not None
                else None
            ),
            client_clip=cfg.client_dp.clip,
            ddg_ledger=(
                DistributedLedger(
                    self.ddg,
                    delta=cfg.client_dp.delta,
                    target_epsilon=cfg.client_dp.target_epsilon,
                )
                if self.ddg is not None
                else None
            ),
        )

    # ------------------------------------------------------------------ privacy
    def noise_multiplier(self, client: int, group: str) -> float | None:
        """The client's noise multiplier on ``group``'s data source (None: no DP).

        One sigma per (client, source), calibrated at start for every training on the source's
        records (:func:`plan_record_privacy`).
        """
        if self.record_plan is None:
            return None
        return self.record_plan.noise_multiplier(client, self.fed.groups[group].ledger_key)

    def _admitted(self, client: int, state: RunState) -> dict[str, bool]:
        """Which of the client's units may train this round without exceeding a budget.

        The pre-dispatch budget check: per data source, the client's planned trainings
        (:meth:`privfed.privacy.planning.SourcePlan.events`) are admitted greedily against its
        ledger (:meth:`privfed.privacy.ledger.SourceLedger.admit`, which records nothing).
        """
        cfg = self.cfg
        out: dict[str, bool] = {}
        for plan in self._plans_of.get(client, ()):
            key = (client, plan.source)
            ledger = (
                state.ledger[key]
                if key in state.ledger
                else SourceLedger(
                    client, plan.source, delta=cfg.dp.delta, target_epsilon=cfg.dp.target_epsilon
                )
            )
            flags = ledger.admit(plan.events())
            out.update({t.unit: ok for t, ok in zip(plan.trainings, flags, strict=True)})
        return out

    def _planned_rate(self, client: int, unit: str, source: str) -> float:
        """The sampling rate the privacy plan assumed for ``client``'s training of ``unit``."""
        if self.record_plan is None:
            return 0.0
        plan = self.record_plan.sources[(client, source)]
        return next(t.sample_rate for t in plan.trainings if t.unit == unit)

    def client_level_gate(
        self, round_index: int, cohort: list[int], state: RunState
    ) -> tuple[str, NoiseShares | None]:
        """The pre-dispatch client-level budget check of a round.

        Central mode: the round is one more subsampled Gaussian release on the population's
        ledger. Distributed mode: the round guarantees ``t - 1 - colluders`` honest noise
        shares for this cohort (:func:`privfed.privacy.distributed.noise_shares`). A round that
        could push the guaranteed client-level epsilon above the target is refused before any
        client trains (the run stops at its budget, as record-level ledgers do per client).

        Returns:
            Why the round is refused ("" if it is not), and the round's noise shares
            (distributed mode).
        """
        refused = False
        shares: NoiseShares | None = None
        if self.ddg_plan is not None and state.ddg_ledger is not None:
            from privfed.privacy.distributed import noise_shares

            shares = noise_shares(
                self.cfg.secagg, cohort=len(cohort), colluders=self.ddg_plan.colluders
            )
            refused = bool(cohort) and state.ddg_ledger.would_exceed(shares.worst)
        elif self.client_dp is not None and state.client_ledger is not None:
            refused = state.client_ledger.would_exceed(
                noise_multiplier=self.client_dp.noise_multiplier,
                sample_rate=self.client_dp.sample_rate,
                steps=1,
            )
        if not refused:
            return "", shares
        from privfed.privacy.report import client_epsilon

        return (
            f"round {round_index + 1}: refused: releasing it could exceed "
            f"client_dp.target_epsilon = {self.cfg.client_dp.target_epsilon:g} (client-level "
            f"epsilon so far {client_epsilon(self, state) or 0.0:.4g}); rounds that do not fit "
            "are skipped",
            shares,
        )

    # ------------------------------------------------------------------ plan
    def select_cohort(self, round_index: int) -> list[int]:
        """Poisson-sample the round's cohort (every client when cohort_fraction is 1)."""
        n = self.cfg.federation.num_clients
        q = self.cfg.federation.cohort_fraction
        if q >= 1.0:
            return list(range(n))
        draws = numpy_rng(self.cfg.seed, "cohort", round_index).random(n)
        return [c for c in range(n) if draws[c] < q]

    def draw_dropouts(self, round_index: int, cohort: list[int]) -> dict[str, tuple[int, ...]]:
        """Which selected clients vanish, and before which protocol phase."""
        p = self.cfg.federation.dropout
        out: dict[str, list[int]] = {ph: [] for ph in PHASES}
        if p > 0:
            rng = numpy_rng(self.cfg.seed, "dropout", round_index)
            drop = rng.random(len(cohort)) < p
            phase = rng.integers(0, len(PHASES), size=len(cohort))
            for c, d, ph in zip(cohort, drop, phase, strict=True):
                if d:
                    out[PHASES[int(ph)]].append(c)
        return {ph: tuple(ids) for ph, ids in out.items()}

    def plan_tasks(self, round_index: int, state: RunState) -> RoundPlan:
        """Select the cohort, check budgets and build every selected client's task.

        Reads ``state`` only. A round the client-level budget cannot afford is refused whole
        (no task; :attr:`RoundPlan.refused` says why).
        """
        cfg, fed, alg = self.cfg, self.fed, self.algorithm
        cohort = self.select_cohort(round_index)
        mhash = model_hash(state.globals)
        refused, shares = self.client_level_gate(round_index, cohort, state)
        if refused:
            return RoundPlan(
                round_index=round_index,
                cohort=tuple(cohort),
                tasks=(),
                budget_skips=0,
                dropouts={},
                model_hash=mhash,
                refused=refused,
                shares=shares,
            )
        public = self.record_plan.public_batch_size if self.record_plan else None
        tasks: list[ClientTask] = []
        skipped = 0
        for c in cohort:
            admitted = self._admitted(c, state)
            units: list[UnitWork] = []
            for unit in fed.units:
                gs = fed.unit_group[unit.name]
                if c not in gs.clients:
                    continue  # the client does not hold this unit's task group
                if not admitted.get(unit.name, True):
                    skipped += 1
                    continue
                global_vec = state.globals[unit.name]
                prox = alg.server_prox(unit=unit.name, client=c, global_vec=global_vec)
                units.append(
                    UnitWork(
                        unit=unit.name,
                        global_vector=global_vec,
                        noise_multiplier=self.noise_multiplier(c, unit.group),
                        sample_rate=self._planned_rate(c, unit.name, gs.ledger_key),
                        public_batch_size=int(public or 0),
                        prox_centre=prox[0] if prox else None,
                        prox_weight=prox[1] if prox else 0.0,
                    )
                )
            tasks.append(
                ClientTask(
                    round_index=round_index,
                    client=c,
                    units=tuple(units),
                    local_steps=cfg.train.local_steps,
                    client_clip=state.client_clip if cfg.client_dp.mode != "off" else 0.0,
                    model_hash=mhash,
                    seed=cfg.seed,
                    personal={
                        u.unit: state.personal[(c, u.unit)]
                        for u in units
                        if (c, u.unit) in state.personal
                    },
                )
            )
        senders = cohort if alg.aggregates and not alg.needs_individual_updates else []
        return RoundPlan(
            round_index=round_index,
            cohort=tuple(cohort),
            tasks=tuple(tasks),
            budget_skips=skipped,
            dropouts=self.draw_dropouts(round_index, senders) if senders else {},
            model_hash=mhash,
            shares=shares,
        )

    # ------------------------------------------------------------------ apply
    def apply_round(self, plan: RoundPlan, state: RunState, inbox: Inbox) -> np.ndarray | None:
        """Update the state from what the server received; return the decoded sum (if any).

        Under client-level DP the decoded sum is noised (central mode) and divided by the
        expected cohort (fixed denominator); otherwise by the participation counters.
        """
        cfg, fed, layout = self.cfg, self.fed, self.layout
        round_index = plan.round_index
        if self.algorithm.needs_individual_updates:
            for ui, unit in enumerate(fed.units):
                lo, hi = layout.offsets[ui], layout.offsets[ui + 1]
                sent = {
                    c: v[lo:hi]
                    for c, v in sorted(inbox.individual.items())
                    if v[layout.counter_base + ui] == 1
                }
                if sent:
                    self.algorithm.server_individual(unit=unit.name, vectors=sent)
            return None
        if inbox.total is None:
            return None
        decoded = self.encoding.decode(
            inbox.total, round_index=round_index, included=len(inbox.included)
        )
        total = decoded
        if self.client_dp is not None:
            rng = numpy_rng(cfg.seed, "client-dp-noise", round_index)
            total = total.copy()
            total[: layout.counter_base] = client_dp.add_noise(
                total[: layout.counter_base],
                params=self.client_dp,
                clip=state.client_clip,
                rng=rng,
            )
            assert state.client_ledger is not None
            state.client_ledger.record(
                noise_multiplier=self.client_dp.noise_multiplier,
                sample_rate=self.client_dp.sample_rate,
                steps=1,
                task="round",
            )
            if cfg.client_dp.adaptive:
                state.client_clip = client_dp.next_clip(
                    state.client_clip,
                    centred_bit_sum=float(total[layout.bit_index]),
                    params=self.client_dp,
                    expected_cohort=cfg.federation.cohort_fraction * cfg.federation.num_clients,
                    target_quantile=cfg.client_dp.target_quantile,
                    lr=cfg.client_dp.clip_lr,
                    rng=rng,
                )
        client_level = cfg.client_dp.mode != "off"
        for ui, unit in enumerate(fed.units):
            if client_level:
                count = self.expected_cohort[unit.name]  # fixed denominator (McMahan et al.)
            else:
                count = round(float(total[layout.counter_base + ui]))
            if count <= 0:
                continue
            lo, hi = layout.offsets[ui], layout.offsets[ui + 1]
            mean = (total[lo:hi] / count).astype(np.float32)
            state.globals[unit.name] = self.optimizer.step(
                unit=unit.name, global_vec=state.globals[unit.name], mean_update=mean
            )
        if state.ddg_ledger is not None and plan.shares is not None:
            survivors = len(inbox.included)
            state.ddg_ledger.record(
                DistributedRound(
                    round=round_index,
                    cohort=plan.shares.cohort,
                    threshold=plan.shares.threshold,
                    survivors=survivors,
                    colluders=plan.shares.colluders,
                    honest_worst=plan.shares.worst,
                    honest_realized=plan.shares.realized(survivors),
                )
            )
        return decoded

    # ------------------------------------------------------------------ checkpoints
    def state_tree(self, state: RunState) -> dict[str, Any]:
        """The checkpoint tree of ``state`` plus the server optimizer's and algorithm's state.

        The tree holds only what :func:`privfed.checkpoint.write_state` stores (no pickle). To
        checkpoint a new :class:`RunState` field, add an entry here and read it back in
        :meth:`state_from_tree`, with a default when the entry is absent.
        """
        return {
            "kind": STATE_KIND,
            "version": STATE_VERSION,
            "config_hash": config_hash(self.cfg),
            "next_round": state.next_round,
            "globals": dict(state.globals),
            "personal": [
                {"client": c, "unit": u, "vector": v}
                for (c, u), v in sorted(state.personal.items())
            ],
            "ledger": state.ledger.to_dict(),
            "aborted_rounds": list(state.aborted_rounds),
            "timings": dict(state.timings),
            "client_ledger": state.client_ledger.to_dict() if state.client_ledger else None,
            "client_clip": state.client_clip,
            "ddg_ledger": state.ddg_ledger.to_dict() if state.ddg_ledger else None,
            "client_refused_rounds": list(state.client_refused_rounds),
            "server_optimizer": self.optimizer.state_dict(),
            "algorithm": self.algorithm.state_dict(),
        }

    def state_from_tree(self, tree: Mapping[str, Any], *, source: str | Path) -> RunState:
        """The :class:`RunState` of a checkpoint tree; restores optimizer and algorithm state.

        Every field is checked against this run (unit names and vector lengths, client ids,
        round numbers) before it is used.

        Raises:
            CheckpointError: naming ``source`` and the field at fault.
        """
        t = TreeReader(tree, source)
        if not (t.equals("kind", STATE_KIND) and t.equals("version", STATE_VERSION)):
            raise CheckpointError(
                f"{source} is not a {STATE_KIND!r} tree of version {STATE_VERSION}; it was "
                "written by another privfed version: use that version, or start the run afresh "
                "in a new --out"
            )
        if not t.equals("config_hash", config_hash(self.cfg)):
            raise CheckpointError(
                f"{source} was written by a different config; resume with the run's own "
                f"config.toml or pick a new --out directory"
            )
        sizes = {u.name: n for u, n in zip(self.fed.units, self.fed.sizes, strict=True)}
        next_round = t.integer("next_round", low=0, high=self.cfg.rounds)
        glob = t.mapping("globals")
        t.check(set(glob) == set(sizes), "globals", f"must hold the units {sorted(sizes)}")
        globals_ = {u: t.vector(f"globals.{u}", glob[u], sizes[u]) for u in sizes}
        personal: dict[tuple[int, str], np.ndarray] = {}
        for i, entry in enumerate(t.sequence("personal")):
            where = f"personal[{i}]"
            t.check(
                isinstance(entry, Mapping) and set(entry) == {"client", "unit", "vector"},
                where,
                "must be an object with keys client, unit, vector",
            )
            c, u = entry["client"], entry["unit"]
            t.check(
                is_int(c)
                and 0 <= c < self.cfg.federation.num_clients
                and isinstance(u, str)
                and u in sizes,
                where,
                f"names client {c!r} and unit {u!r}, not a client and unit of this run",
            )
            t.check((c, u) not in personal, where, "repeats an earlier (client, unit)")
            personal[(c, u)] = t.vector(f"{where}.vector", entry["vector"], sizes[u])
        aborted = t.integers("aborted_rounds", low=0, high=self.cfg.rounds)
        timings = t.mapping("timings")
        for k, v in timings.items():
            t.check(is_number(v), f"timings.{k}", "must be a number")
        ledger = t.build("ledger", PrivacyLedger.from_dict, t.mapping("ledger"))
        raw_client = tree.get("client_ledger")
        client_ledger = (
            None
            if raw_client is None
            else t.build("client_ledger", SourceLedger.from_dict, t.mapping("client_ledger"))
        )
        clip = tree.get("client_clip", self.cfg.client_dp.clip)
        t.check(
            is_number(clip) and math.isfinite(clip) and clip >= 0,
            "client_clip",
            "must be a finite number >= 0",
        )
        raw_ddg = tree.get("ddg_ledger")
        t.check(
            (raw_ddg is None) == (self.ddg is None),
            "ddg_ledger",
            "must be present exactly when client_dp.mode is 'distributed'",
        )
        ddg_ledger = (
            None
            if raw_ddg is None
            else t.build(
                "ddg_ledger",
                lambda d: DistributedLedger.from_dict(d, params=self.ddg),
                t.mapping("ddg_ledger"),
            )
        )
        refused = t.integers("client_refused_rounds", low=0, high=self.cfg.rounds)
        opt = t.mapping("server_optimizer")
        for moment in ("m", "v"):
            if moment in opt:
                t.check(
                    isinstance(opt[moment], Mapping) and set(opt[moment]) <= set(sizes),
                    f"server_optimizer.{moment}",
                    "must map unit names to vectors",
                )
                for u, vec in opt[moment].items():
                    t.vector(f"server_optimizer.{moment}.{u}", vec, sizes[u], dtype=None)
        t.build("server_optimizer", self.optimizer.load_state_dict, dict(opt))
        t.build("algorithm", self.algorithm.load_state_dict, t.mapping("algorithm"))
        return RunState(
            next_round=next_round,
            globals=globals_,
            personal=personal,
            ledger=ledger,
            aborted_rounds=aborted,
            timings={str(k): float(v) for k, v in timings.items()},
            client_ledger=client_ledger,
            client_clip=float(clip),
            ddg_ledger=ddg_ledger,
            client_refused_rounds=refused,
        )
