"""The round loop: select -> broadcast -> local DP training -> encode -> (secure) sum -> update.

:func:`run_experiment` is the entry point behind ``privfed run``. It builds a
:class:`Federation` (data, partitions, clients, model units) from a config and a seed, then runs
the rounds, writing the run directory as it goes (see ``docs/concepts.md``):

* ``config.toml`` (resolved), ``manifest.json`` (seed, versions, commit, platform, timings),
* ``metrics.jsonl`` (one line per evaluation), ``privacy.json`` (the ledger),
* ``checkpoint/state.ckpt`` after every round (:mod:`privfed.checkpoint`, no pickle; its sha256
  is recorded in the manifest), from which ``--resume`` continues.

Every random draw comes from a stream named by (purpose, round, client, unit), so the same config
and seed give the same numbers, resumed or not.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from privfed.aggregation import PHASES, AggregateResult, Aggregator, PlainSumAggregator
from privfed.algorithms import Algorithm, make_algorithm
from privfed.algorithms.server import ServerAdam, ServerOptimizer
from privfed.checkpoint import TreeReader, encode_state, is_int, is_number
from privfed.client import UnitTrainer
from privfed.config import ExperimentConfig, config_hash, dump_config, load_config
from privfed.data.inputs import model_inputs
from privfed.errors import CheckpointError, PrivfedError, StorageError
from privfed.evaluation.metrics import summarize
from privfed.federation import Federation
from privfed.io import (
    append_text,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    rewrite_jsonl,
    to_json,
)
from privfed.models import load_flat_parameters
from privfed.privacy import client_dp, planning
from privfed.privacy.distributed import DistributedPlan, NoiseShares
from privfed.privacy.ledger import DistributedLedger, DistributedRound, PrivacyLedger, SourceLedger
from privfed.repro import build_manifest, timestamp
from privfed.rng import int_seed, numpy_rng
from privfed.rundir import (
    CHECKPOINT,
    LEGACY_CHECKPOINT,
    checkpoint_record,
    prepare_out_dir,
    read_manifest,
    verify_checkpoint,
)

STATE_KIND = "privfed-run-state"
STATE_VERSION = 1
"""Version of the run-state tree inside the checkpoint container (see Engine.state_tree)."""


def _model_hash(vectors: Mapping[str, np.ndarray]) -> bytes:
    h = hashlib.sha256()
    for name in sorted(vectors):
        h.update(name.encode())
        h.update(np.ascontiguousarray(vectors[name], dtype=np.float32).tobytes())
    return h.digest()


@dataclass
class RunState:
    """What a checkpoint holds: everything that is not re-derived from config and seed."""

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


@dataclass(frozen=True)
class RunSummary:
    """The final evaluation of a run."""

    out_dir: Path
    rounds: int
    tasks: Mapping[str, Mapping[str, Any]]
    epsilon: Mapping[str, Mapping[str, float]]
    delta: float
    accountant: str
    attacks: Mapping[str, Any] = field(default_factory=dict)
    audit: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    client_level: Mapping[str, Any] = field(default_factory=dict)


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
    :meth:`Engine.run_round` trains them) and hands them to
    :func:`privfed.privacy.planning.plan_record_level`.

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


def make_aggregator(cfg: ExperimentConfig) -> Aggregator:
    """The configured aggregator (secure aggregation by default)."""
    if cfg.federation.aggregator == "plain":
        return PlainSumAggregator()
    from privfed.secagg.aggregator import SecAggAggregator

    return SecAggAggregator(cfg.secagg)


class Engine:
    """Runs the rounds of one experiment into one run directory."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        out_dir: Path,
        *,
        progress: bool = True,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.progress = progress
        self.echo = echo
        torch.set_num_threads(cfg.threads)
        t0 = time.perf_counter()
        self.fed = Federation(cfg)
        self.setup_seconds = time.perf_counter() - t0
        self.algorithm: Algorithm = make_algorithm(
            cfg.federation.algorithm, cfg.federation.algorithm_params
        )
        self.algorithm.setup(
            self.fed.units,
            holders={u.name: self.fed.clients_of(u) for u in self.fed.units},
            lr=cfg.train.lr,
        )
        self.server_opt = make_server_optimizer(cfg)
        self.record_plan: planning.RecordPlan | None = (
            plan_record_privacy(cfg, self.fed, self.algorithm) if cfg.dp.private else None
        )
        self.warnings: list[str] = list(self.record_plan.warnings if self.record_plan else ())
        self._plans_of: dict[int, list[planning.SourcePlan]] = {}
        for plan in self.record_plan.sources.values() if self.record_plan else ():
            self._plans_of.setdefault(plan.client, []).append(plan)
        cdp = cfg.client_dp
        q = cfg.federation.cohort_fraction
        self.expected_cohort = {
            u.name: q * len(self.fed.unit_group[u.name].clients) for u in self.fed.units
        }
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
        # Under client-level DP (either mode) each client's joint update is clipped, no
        # participation counters are sent and each unit is divided by its expected count.
        self.client_level = cdp.mode != "off"
        # Joint vector: every unit's update, one participation counter per unit, and the
        # centred clip bit of adaptive clipping.
        self.bit_index = self.fed.vector_length
        self.vector_length = self.fed.vector_length + (1 if cdp.adaptive else 0)
        self.aggregator = make_aggregator(cfg)
        self.ddg: Any = None
        self.ddg_plan: DistributedPlan | None = None
        if cdp.mode == "distributed":
            self.ddg_plan = configure_distributed_dp(cfg, dimension=self.fed.counter_base)
            self.ddg = self.ddg_plan.params
            self.aggregator = client_dp.DistributedDPAggregator(
                self.ddg, cfg.secagg, root_seed=cfg.seed
            )
        self.trainers: dict[tuple[int, str], UnitTrainer] = {}
        self._eval_models = {u.name: u.build() for u in self.fed.units}
        self.last_aggregate: AggregateResult | None = None
        self.last_updates: dict[int, np.ndarray] = {}
        # (sha256, rounds) of the checkpoint file on disk, as the manifest records it
        self._checkpoint: tuple[str | None, int] = (None, 0)
        self._manifest_base: dict[str, Any] | None = None

    # ------------------------------------------------------------------ privacy
    def noise_multiplier(self, client: int, group: str) -> float | None:
        """The client's noise multiplier on ``group``'s data source (None: no DP).

        One sigma per (client, source), calibrated at start for every training on the source's
        records (:func:`plan_record_privacy`).
        """
        if self.record_plan is None:
            return None
        return self.record_plan.noise_multiplier(client, self.fed.groups[group].ledger_key)

    def admitted_units(self, client: int, state: RunState) -> dict[str, bool]:
        """Which of the client's units may train this round without exceeding a budget.

        The pre-dispatch budget check: per data source, the client's planned trainings
        (:meth:`privfed.privacy.planning.SourcePlan.events`) are admitted greedily against its
        ledger (:meth:`privfed.privacy.ledger.SourceLedger.admit`).
        """
        out: dict[str, bool] = {}
        for plan in self._plans_of.get(client, ()):
            flags = state.ledger.get(client, plan.source).admit(plan.events())
            out.update({t.unit: ok for t, ok in zip(plan.trainings, flags, strict=True)})
        return out

    def client_level_gate(
        self, r: int, cohort: list[int], state: RunState
    ) -> NoiseShares | bool | None:
        """The pre-dispatch client-level budget check of round ``r``.

        Central mode: the round is one more subsampled Gaussian release on the population's
        ledger. Distributed mode: the round guarantees ``t - 1 - colluders`` honest noise
        shares for this cohort (:func:`privfed.privacy.distributed.noise_shares`). A round that
        could push the guaranteed client-level epsilon above the target is refused before any
        client trains (the run stops at its budget, as record-level ledgers do per client).

        Returns:
            None if the round is refused; the round's noise shares in distributed mode; True
            otherwise.
        """
        refused = False
        shares: NoiseShares | bool = True
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
            return shares
        if not state.client_refused_rounds:
            self.echo(
                f"round {r + 1}: refused: releasing it could exceed client_dp.target_epsilon = "
                f"{self.cfg.client_dp.target_epsilon:g} (client-level epsilon so far "
                f"{self.client_epsilon(state) or 0.0:.4g}); rounds that do not fit are skipped"
            )
        state.client_refused_rounds.append(r)
        return None

    def trainer(self, client: int, unit_index: int, *, personal: bool = False) -> UnitTrainer:
        """The persistent (Opacus-wrapped) trainer of (client, unit).

        ``personal=True`` gives the second trainer of algorithms that train a separate personal
        model (Ditto): same records, same ledger, its own random streams.
        """
        unit = self.fed.units[unit_index]
        key = (client, unit.name + ("#personal" if personal else ""))
        tr = self.trainers.get(key)
        if tr is None:
            x, ys = self.fed.tensors(unit.group, "train", client)
            plan = self.record_plan
            tr = UnitTrainer(
                unit,
                x=x,
                y=ys,
                batch_size=self.cfg.train.batch_size,
                lr=self.cfg.train.lr,
                noise_multiplier=self.noise_multiplier(client, unit.group),
                max_grad_norm=self.cfg.dp.max_grad_norm,
                seed=self.cfg.seed,
                stream=(client, unit_index, 1) if personal else (client, unit_index),
                public_sample_rate=plan.public_sample_rate if plan else None,
                public_batch_size=plan.public_batch_size if plan else None,
            )
            if plan is not None:
                source = self.fed.unit_group[unit.name].ledger_key
                planned = {t.unit: t.sample_rate for t in plan.sources[(client, source)].trainings}
                if planned[unit.name] != tr.sample_rate:
                    raise PrivfedError(
                        f"client {client}, unit {unit.name}: the trainer samples at rate "
                        f"{tr.sample_rate} but the privacy plan assumed {planned[unit.name]}; "
                        "this is a bug in privfed (please report it)"
                    )
            self.trainers[key] = tr
        return tr

    # ------------------------------------------------------------------ state
    def fresh_state(self) -> RunState:
        """Round-0 state: common initialization, empty ledgers."""
        return RunState(
            next_round=0,
            globals=self.fed.initial_vectors(),
            personal={},
            ledger=PrivacyLedger(
                delta=self.cfg.dp.delta, target_epsilon=self.cfg.dp.target_epsilon
            ),
            client_ledger=(
                client_dp.new_client_ledger(
                    delta=self.cfg.client_dp.delta, target_epsilon=self.cfg.client_dp.target_epsilon
                )
                if self.client_dp is not None
                else None
            ),
            client_clip=self.cfg.client_dp.clip,
            ddg_ledger=(
                DistributedLedger(
                    self.ddg,
                    delta=self.cfg.client_dp.delta,
                    target_epsilon=self.cfg.client_dp.target_epsilon,
                )
                if self.ddg is not None
                else None
            ),
        )

    # ------------------------------------------------------------------ checkpoint
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
            "server_optimizer": self.server_opt.state_dict(),
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
        t.build("server_optimizer", self.server_opt.load_state_dict, dict(opt))
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

    def save_checkpoint(self, state: RunState) -> None:
        """Write the checkpoint atomically and record its sha256 in the manifest.

        The manifest first lists the new digest as pending, then the file is replaced, then
        the manifest lists the new digest alone (:mod:`privfed.rundir`): a run killed at any
        point leaves a checkpoint its manifest accepts.

        Raises:
            StorageError: a file cannot be written; the previous checkpoint is intact.
        """
        enc = encode_state(self.state_tree(state))
        self._write_manifest(state, finished=False, pending=enc.sha256)
        enc.write(self.out / CHECKPOINT)
        self._checkpoint = (enc.sha256, state.next_round)
        self._write_manifest(state, finished=False)

    def load_checkpoint(self) -> RunState:
        """Read this run directory's checkpoint, verified against the manifest's sha256.

        Raises:
            CheckpointError: the checkpoint is missing, damaged, not the one the manifest
                records, from another config, or inconsistent with this run.
        """
        path = self.out / CHECKPOINT
        if not path.exists() and not (self.out / LEGACY_CHECKPOINT).exists():
            raise CheckpointError(f"{path} does not exist; run without --resume to start afresh")
        checked = verify_checkpoint(self.out)
        state = self.state_from_tree(checked.tree, source=path)
        self._checkpoint = (checked.sha256, state.next_round)
        return state

    # ------------------------------------------------------------------ round
    def select_cohort(self, round_index: int) -> list[int]:
        """Poisson-sample the round's cohort (every client when cohort_fraction is 1)."""
        n = self.cfg.federation.num_clients
        q = self.cfg.federation.cohort_fraction
        if q >= 1.0:
            return list(range(n))
        draws = numpy_rng(self.cfg.seed, "cohort", round_index).random(n)
        return [c for c in range(n) if draws[c] < q]

    def draw_dropouts(self, round_index: int, cohort: list[int]) -> dict[str, list[int]]:
        """Which selected clients vanish, and before which protocol phase."""
        p = self.cfg.federation.dropout
        out: dict[str, list[int]] = {ph: [] for ph in PHASES}
        if p <= 0:
            return out
        rng = numpy_rng(self.cfg.seed, "dropout", round_index)
        drop = rng.random(len(cohort)) < p
        phase = rng.integers(0, len(PHASES), size=len(cohort))
        for c, d, ph in zip(cohort, drop, phase, strict=True):
            if d:
                out[PHASES[int(ph)]].append(c)
        return out

    def run_round(self, r: int, state: RunState, *, observe: bool = False) -> dict[str, float]:
        """One federated round; returns figures for the progress bar.

        Args:
            r: round index (0-based).
            state: the run state, updated in place.
            observe: keep what the server saw (``self.last_aggregate.observed``: masked vectors
                under secure aggregation) and, for evaluating attacks only, the clients' true
                joint vectors (``self.last_updates``). Off in normal runs.
        """
        cfg = self.cfg
        fed = self.fed
        cohort = self.select_cohort(r)
        shares = self.client_level_gate(r, cohort, state)
        if shares is None:
            return {"trained": 0.0, "budget_skips": 0.0, "diverged": 0.0, "client_refused": 1.0}
        updates: dict[int, np.ndarray] = {}
        trained = 0
        skipped_budget = 0
        diverged = 0
        for c in cohort:
            vec = (
                np.zeros(self.vector_length, dtype=np.float32)
                if self.algorithm.aggregates
                else None
            )
            admitted = self.admitted_units(c, state)
            for ui, unit in enumerate(fed.units):
                gs = fed.unit_group[unit.name]
                if c not in gs.clients:
                    continue
                if not admitted.get(unit.name, True):
                    skipped_budget += 1
                    continue
                tr = self.trainer(c, ui)
                ledger = state.ledger.get(c, gs.ledger_key)
                alg = self.algorithm
                global_vec = state.globals[unit.name]
                personal = state.personal.get((c, unit.name))
                start = alg.start_vector(unit=unit.name, global_vec=global_vec, personal=personal)
                prox = alg.local_prox(unit=unit.name, client=c, start=start, global_vec=global_vec)
                current = start
                for phase, frozen in enumerate(alg.local_phases(unit.name)):
                    res = tr.train(
                        current,
                        steps=cfg.train.local_steps,
                        round_index=r,
                        prox_center=prox[0] if prox else None,
                        prox_mu=prox[1] if prox else 0.0,
                        frozen=frozen,
                        phase=phase,
                    )
                    ledger.record(
                        noise_multiplier=res.noise_multiplier,
                        sample_rate=res.sample_rate,
                        steps=res.steps,
                        task=unit.name,
                    )
                    current = res.vector
                if alg.personal_mu is not None:
                    # Ditto: the personal model is trained on the same records: same ledger.
                    ptr = self.trainer(c, ui, personal=True)
                    pres = ptr.train(
                        global_vec if personal is None else personal,
                        steps=cfg.train.local_steps,
                        round_index=r,
                        prox_center=global_vec,
                        prox_mu=alg.personal_mu,
                    )
                    ledger.record(
                        noise_multiplier=pres.noise_multiplier,
                        sample_rate=pres.sample_rate,
                        steps=pres.steps,
                        task=f"{unit.name}:personal",
                    )
                    personal = pres.vector
                if not (
                    np.isfinite(current).all() and (personal is None or np.isfinite(personal).all())
                ):
                    # Diverged local training (e.g. a huge learning rate against DP noise): the
                    # steps were taken and stay on the ledger; the client sends nothing for this
                    # unit and keeps its previous personal state.
                    diverged += 1
                    continue
                outcome = alg.after_training(
                    unit=unit.name, start=start, trained=current, personal=personal
                )
                if outcome.personal is not None:
                    state.personal[(c, unit.name)] = outcome.personal
                if vec is not None and outcome.update is not None:
                    vec[fed.offsets[ui] : fed.offsets[ui + 1]] = outcome.update
                    if not self.client_level:
                        # Under client-level DP counts are not released (fixed denominator).
                        vec[fed.counter_base + ui] = 1.0
                trained += 1
            if vec is not None:
                if self.client_level:
                    clipped, within = client_dp.clip_update(
                        vec[: fed.counter_base], clip=state.client_clip
                    )
                    vec[: fed.counter_base] = clipped
                    if cfg.client_dp.adaptive:
                        vec[self.bit_index] = (1.0 if within else 0.0) - 0.5
                # A client with nothing to send (every budget spent) still sends zeros, so the
                # server cannot tell it apart from one that trained.
                updates[c] = vec
        info = {
            "trained": float(trained),
            "budget_skips": float(skipped_budget),
            "diverged": float(diverged),
        }
        if diverged:
            self.echo(
                f"round {r + 1}: {diverged} local trainings diverged (non-finite weights) and "
                "were not sent; lower train.lr or raise train.batch_size"
            )
        if self.algorithm.needs_individual_updates:
            for ui, unit in enumerate(fed.units):
                lo, hi = fed.offsets[ui], fed.offsets[ui + 1]
                sent = {c: v[lo:hi] for c, v in updates.items() if v[fed.counter_base + ui] == 1}
                if sent:
                    self.algorithm.server_individual(unit=unit.name, vectors=sent)
            if observe:
                self.last_updates = updates
            return info
        if not self.algorithm.aggregates or not updates:
            return info
        try:
            result = self.aggregator.aggregate(
                updates,
                round_index=r,
                model_hash=_model_hash(state.globals),
                seed=int(numpy_rng(cfg.seed, "aggregate", r).integers(0, 2**62)),
                dropouts=self.draw_dropouts(r, sorted(updates)),
                keep_observed=observe,
            )
        except PrivfedError as exc:
            # Too few survivors (or another protocol abort): the round is lost, the run is not.
            state.aborted_rounds.append(r)
            self.echo(f"round {r + 1}: aggregation aborted ({exc}); global models unchanged")
            return info
        total = result.total
        if self.client_dp is not None:
            rng = numpy_rng(cfg.seed, "client-dp-noise", r)
            total = total.copy()
            total[: fed.counter_base] = client_dp.add_noise(
                total[: fed.counter_base], params=self.client_dp, clip=state.client_clip, rng=rng
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
                    centred_bit_sum=float(total[self.bit_index]),
                    params=self.client_dp,
                    expected_cohort=cfg.federation.cohort_fraction * cfg.federation.num_clients,
                    target_quantile=cfg.client_dp.target_quantile,
                    lr=cfg.client_dp.clip_lr,
                    rng=rng,
                )
        for ui, unit in enumerate(fed.units):
            if self.client_level:
                count = self.expected_cohort[unit.name]  # fixed denominator (McMahan et al.)
            else:
                count = round(float(total[fed.counter_base + ui]))
            if count <= 0:
                continue
            mean = (total[fed.offsets[ui] : fed.offsets[ui + 1]] / count).astype(np.float32)
            state.globals[unit.name] = self.server_opt.step(
                unit=unit.name, global_vec=state.globals[unit.name], mean_update=mean
            )
        if state.ddg_ledger is not None and isinstance(shares, NoiseShares):
            state.ddg_ledger.record(
                DistributedRound(
                    round=r,
                    cohort=shares.cohort,
                    threshold=shares.threshold,
                    survivors=len(result.included),
                    colluders=shares.colluders,
                    honest_worst=shares.worst,
                    honest_realized=shares.realized(len(result.included)),
                )
            )
        info["included"] = float(len(result.included))
        info["dropped"] = float(len(result.dropped))
        if observe:
            self.last_aggregate = result
            self.last_updates = updates
        return info

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, r: int, state: RunState) -> dict[str, Any]:
        """Per-task metrics over clients with the model each client would use."""
        cfg = self.cfg
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        tasks: dict[str, Any] = {}
        per_client: dict[str, dict[str, float]] = {}
        # A client's test and validation features (and training labels, for the majority
        # baseline) are built once per evaluation and shared by the units of its group.
        data: dict[tuple[str, int], Any] = {}
        for unit in self.fed.units:
            gs = self.fed.unit_group[unit.name]
            model = self._eval_models[unit.name]
            model.eval()
            loaded: bytes | None = None
            accs: dict[str, dict[int, float]] = {t: {} for t in unit.tasks}
            val_accs: dict[str, list[float]] = {t: [] for t in unit.tasks}
            losses: dict[str, list[float]] = {t: [] for t in unit.tasks}
            base: dict[str, list[float]] = {t: [] for t in unit.tasks}
            for c in self.fed.clients_of(unit):
                vec = self.algorithm.eval_vector(
                    unit=unit.name,
                    global_vec=state.globals[unit.name],
                    personal=state.personal.get((c, unit.name)),
                )
                key = vec.tobytes() if vec is not state.globals[unit.name] else b"global"
                if key != loaded:
                    load_flat_parameters(model, vec)
                    loaded = key
                if (unit.group, c) not in data:
                    data = {k: v for k, v in data.items() if k[0] == unit.group}
                    data[(unit.group, c)] = (
                        *self.fed.tensors(unit.group, "test", c),
                        *self.fed.tensors(unit.group, "val", c),
                        self.fed.labels(unit.group, "train", c),
                    )
                x, ys, xv, yv, ytr = data[(unit.group, c)]
                with torch.no_grad():
                    out = model(x)
                    outv = model(xv) if len(xv) else None
                for t in unit.tasks:
                    y = ys[t]
                    accs[t][c] = float((out[t].argmax(1) == y).float().mean())
                    losses[t].append(float(loss_fn(out[t], y)) / len(y))
                    if outv is not None:
                        val_accs[t].append(float((outv[t].argmax(1) == yv[t]).float().mean()))
                    majority = int(torch.bincount(ytr[t]).argmax())
                    base[t].append(float((y == majority).float().mean()))
            for t in unit.tasks:
                full = f"{unit.group}.{t}"
                ledgers = [
                    state.ledger[(c, gs.ledger_key)]
                    for c in self.fed.clients_of(unit)
                    if (c, gs.ledger_key) in state.ledger
                ]
                eps = [lg.epsilon() for lg in ledgers if lg.steps > 0]
                s = summarize(list(accs[t].values()), worst_fraction=cfg.eval.worst_fraction)
                tasks[full] = {
                    "mean_acc": s.mean,
                    "median_acc": s.median,
                    "worst_acc": s.worst,
                    "std_acc": s.std,
                    "mean_loss": float(np.mean(losses[t])),
                    "val_mean_acc": float(np.mean(val_accs[t])) if val_accs[t] else float("nan"),
                    "majority_acc": float(np.mean(base[t])),
                    "clients": s.n,
                    "epsilon_max": max(eps) if eps else 0.0,
                    "epsilon_mean": float(np.mean(eps)) if eps else 0.0,
                    "client_epsilon": self.client_epsilon(state),
                    "source": gs.ledger_key,
                }
                bayes = gs.source.meta.get("bayes_accuracy", {}).get(t)
                if bayes:
                    # Bayes-optimal accuracy of a perfect pooled / personal model (generated data)
                    tasks[full]["bayes_pooled_acc"] = float(bayes["pooled"])
                    tasks[full]["bayes_personal_acc"] = float(bayes["personal"])
                per_client[full] = {str(c): a for c, a in accs[t].items()}
        return {"round": r + 1, "tasks": tasks, "per_client": per_client}

    # ------------------------------------------------------------------ run
    def run(self, *, resume: bool = False) -> RunSummary:
        """Run (or resume) every round, writing the run directory.

        Raises:
            CheckpointError: ``--out`` cannot be used (see :func:`privfed.rundir.prepare_out_dir`)
                or the run cannot be resumed.
            StorageError: a file cannot be written; everything up to the last checkpoint is
                kept and the message says how to continue.
        """
        try:
            return self._run(resume=resume)
        except StorageError as exc:
            raise StorageError(
                f"{exc}. Nothing computed is lost: {self.out} holds the run up to round "
                f"{self._checkpoint[1]}; once the problem is fixed, continue it with "
                f"`privfed run --resume --out {self.out}`",
                path=exc.path,
                errno=exc.errno,
            ) from None

    def open_run_dir(self, *, resume: bool) -> tuple[RunState, list[dict[str, Any]]]:
        """Check ``--out``, then start the run directory or load its checkpoint.

        Returns:
            The state to continue from and the metrics rows already written (up to it).
        """
        cfg = self.cfg
        prepare_out_dir(self.out, resume=resume)
        metrics_path = self.out / "metrics.jsonl"
        if not resume:
            state = self.fresh_state()
            # The manifest first: it marks the directory as a privfed run.
            self._write_manifest(state, finished=False)
            atomic_write_text(self.out / "config.toml", dump_config(cfg))
            for stale in ("metrics.jsonl", "privacy.json", "attacks.json", "audit.json"):
                (self.out / stale).unlink(missing_ok=True)
            return state, []
        on_disk = load_config(self.out / "config.toml")
        if config_hash(on_disk) != config_hash(cfg):
            raise CheckpointError(
                f"{self.out / 'config.toml'} differs from the config given; resume with "
                "the run directory's own config"
            )
        if (self.out / CHECKPOINT).exists() or (self.out / LEGACY_CHECKPOINT).exists():
            state = self.load_checkpoint()
        else:
            recorded = read_manifest(self.out).get("checkpoint")
            if isinstance(recorded, dict) and recorded.get("sha256"):
                raise CheckpointError(
                    f"{self.out / CHECKPOINT} is missing, but manifest.json records a checkpoint "
                    f"after round {recorded.get('rounds_done')}; restore the file, or start the "
                    "run afresh in a new --out directory"
                )
            # Stopped before the first checkpoint: nothing to keep, start from round 0.
            self.echo(f"{self.out}: no checkpoint yet; starting from the first round")
            state = self.fresh_state()
        try:
            rows = read_jsonl(metrics_path)
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"{metrics_path} cannot be read ({exc}); restore it or delete it (it is "
                "rebuilt only from later rounds)"
            ) from None
        rows = [
            m
            for m in rows
            if is_int(m.get("round"))
            and isinstance(m.get("tasks"), dict)
            and m["round"] <= state.next_round
        ]
        rewrite_jsonl(metrics_path, rows)
        return state, rows

    def _run(self, *, resume: bool) -> RunSummary:
        cfg = self.cfg
        metrics_path = self.out / "metrics.jsonl"
        state, rows = self.open_run_dir(resume=resume)
        self._write_manifest(state, finished=False)
        for w in self.warnings:
            self.echo(f"WARNING (privacy): {w}")
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=cfg.rounds,
                initial=state.next_round,
                desc=cfg.name,
                unit="round",
                leave=True,
                dynamic_ncols=True,
            )
        t_run = time.perf_counter()
        last_eval: dict[str, Any] | None = rows[-1] if rows else None
        try:
            for r in range(state.next_round, cfg.rounds):
                t0 = time.perf_counter()
                info = self.run_round(r, state)
                state.timings["train_aggregate_s"] = state.timings.get("train_aggregate_s", 0.0) + (
                    time.perf_counter() - t0
                )
                if (r + 1) % cfg.eval.every == 0 or r + 1 == cfg.rounds:
                    t1 = time.perf_counter()
                    last_eval = self.evaluate(r, state)
                    rows.append(last_eval)
                    append_text(metrics_path, to_json(last_eval) + "\n")
                    state.timings["eval_s"] = state.timings.get("eval_s", 0.0) + (
                        time.perf_counter() - t1
                    )
                state.next_round = r + 1
                self.save_checkpoint(state)
                atomic_write_json(self.out / "privacy.json", self.privacy_report(state))
                if bar is not None:
                    post: dict[str, float] = {"trained": int(info["trained"])}
                    if last_eval:
                        accs = [v["mean_acc"] for v in last_eval["tasks"].values()]
                        post["acc"] = round(float(np.mean(accs)), 3)
                        post["eps"] = round(
                            max(v["epsilon_max"] for v in last_eval["tasks"].values()), 2
                        )
                    bar.set_postfix(post)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        state.timings["run_s"] = state.timings.get("run_s", 0.0) + time.perf_counter() - t_run
        report = self.privacy_report(state, final=True)
        atomic_write_json(self.out / "privacy.json", report)
        attack_results = self.run_attacks() if cfg.attacks else {}
        audit = self.run_audit(state) if self.fed.audit is not None else {}
        if last_eval is None:  # resumed a complete run whose metrics were removed
            last_eval = self.evaluate(cfg.rounds - 1, state)
            append_text(metrics_path, to_json(last_eval) + "\n")
        self._write_manifest(state, finished=True)
        return RunSummary(
            out_dir=self.out,
            rounds=cfg.rounds,
            tasks=last_eval["tasks"],
            epsilon=report["summary"],
            delta=cfg.dp.delta,
            accountant=report["accountant"],
            attacks=attack_results,
            audit=audit,
            warnings=tuple(self.warnings),
            client_level=report["client_level"],
        )

    def run_audit(self, state: RunState) -> dict[str, Any]:
        """Score the canaries under the audited client's model; write audit.json.

        The auditor guesses "in" for the ``k`` canaries of lowest loss (summed over the
        group's tasks, with their wrong labels) and "out" for the ``k`` of highest loss; the
        correct guesses give a pure-DP epsilon lower bound (Steinke et al. 2023, Thm. 3.1),
        compared with the accountant's epsilon of the client's ledger for that data source.
        """
        from privfed.evaluation.audit import guess_canaries

        plan = self.fed.audit
        assert plan is not None
        gs = self.fed.groups[plan.group]
        x = torch.from_numpy(model_inputs(gs.source, plan.canaries))
        loss = np.zeros(len(plan.canaries))
        ce = nn.CrossEntropyLoss(reduction="none")
        for unit in gs.units:
            model = self._eval_models[unit.name]
            load_flat_parameters(
                model,
                self.algorithm.eval_vector(
                    unit=unit.name,
                    global_vec=state.globals[unit.name],
                    personal=state.personal.get((plan.client, unit.name)),
                ),
            )
            model.eval()
            with torch.no_grad():
                out = model(x)
            for t in unit.tasks:
                y = torch.from_numpy(gs.source.labels[t][plan.canaries])
                loss += ce(out[t], y).double().numpy()
        k = self.cfg.audit.guesses or len(plan.canaries) // 4
        guessed = guess_canaries(loss, plan.included, k=k, confidence=self.cfg.audit.confidence)
        correct, lower = guessed.correct, guessed.epsilon_lower_bound
        ledger = state.ledger.get(plan.client, gs.ledger_key)
        eps = ledger.epsilon() if ledger.steps else 0.0
        result = {
            "method": "one-run audit (Steinke, Nasr, Jagielski 2023), mislabeled canaries",
            "client": plan.client,
            "group": plan.group,
            "source": gs.ledger_key,
            "canaries": len(plan.canaries),
            "canaries_included": int(plan.included.sum()),
            "guesses": 2 * k,
            "correct": correct,
            "confidence": self.cfg.audit.confidence,
            "epsilon_lower_bound": lower,
            "epsilon_accountant": eps,
            "delta": self.cfg.dp.delta,
            "flagged": bool(lower > eps),
            "note": "pure-DP bound; with delta > 0 the true lower bound is slightly smaller",
        }
        atomic_write_json(self.out / "audit.json", result)
        verdict = " -- ABOVE the accountant's epsilon: a privacy bug" if result["flagged"] else ""
        self.echo(
            f"audit (client {plan.client}, {gs.ledger_key}): epsilon >= {lower:.3f} at "
            f"{self.cfg.audit.confidence:.0%} confidence ({correct}/{2 * k} guesses right); "
            f"accountant epsilon {eps:.3f}{verdict}"
        )
        return result

    def run_attacks(self) -> dict[str, Any]:
        """Run the configured ``[[attacks]]`` against this finished run; write attacks.json.

        The run directory is complete (config, checkpoint, privacy.json) but the manifest is
        not yet marked finished, so a run stopped during its attacks resumes and re-runs them.
        """
        from attacks.runner import run_attack

        out: dict[str, Any] = {}
        for i, a in enumerate(self.cfg.attacks):
            seed = a.seed if a.seed >= 0 else int_seed(self.cfg.seed, f"attack:{a.name}", i)
            t0 = time.perf_counter()
            res = run_attack(
                a.name,
                self.out,
                seed=seed,
                params={k: str(v) for k, v in a.params.items()},
                observed_round=a.observed_round,
            )
            key = a.name if a.name not in out else f"{a.name}#{i}"
            out[key] = {
                "seed": res.seed,
                "params": dict(a.params),
                "threat_model": res.threat_model,
                "metrics": dict(res.result.metrics),
                "notes": list(res.result.notes),
                "seconds": time.perf_counter() - t0,
            }
            self.echo(
                f"attack {key}: "
                + ", ".join(f"{k}={v:.4g}" for k, v in sorted(res.result.metrics.items()))
            )
        atomic_write_json(self.out / "attacks.json", out)
        return out

    def privacy_report(self, state: RunState, *, final: bool = False) -> dict[str, Any]:
        """The content of ``privacy.json``: every (client, source) ledger and a summary."""
        cfg = self.cfg
        accountant = cfg.dp.accountant if final else "rdp"
        ledgers = []
        for lg in state.ledger:
            d = lg.to_dict()
            if accountant != "rdp":
                d["epsilon_rdp"] = d.get("epsilon")
                d["epsilon"] = lg.epsilon(accountant) if lg.steps else 0.0
            ledgers.append(d)
        summary = {}
        for src in sorted({lg.source for lg in state.ledger}):
            eps = [
                lg.epsilon(accountant) if accountant != "rdp" else lg.epsilon()
                for lg in state.ledger
                if lg.source == src and lg.steps > 0
            ]
            summary[src] = {
                "max": max(eps) if eps else 0.0,
                "mean": float(np.mean(eps)) if eps else 0.0,
                "clients": len(eps),
            }
        return {
            "unit": "record (one training example of one client's data source)",
            "mechanism": "DP-SGD (Opacus), Poisson sampling, per-sample clipping"
            if cfg.dp.private
            else "none (target_epsilon = inf)",
            "delta": cfg.dp.delta,
            "target_epsilon": cfg.dp.target_epsilon,
            "accountant": accountant,
            "complete": final,
            "assumptions": list(self.record_plan.assumptions) if self.record_plan else [],
            "warnings": list(self.warnings),
            "public_sampling": (
                {
                    "sample_rate": self.record_plan.public_sample_rate,
                    "batch_size": self.record_plan.public_batch_size,
                    "nominal_records": cfg.dp.nominal_records,
                }
                if self.record_plan is not None and self.record_plan.public_sample_rate
                else None
            ),
            "summary": summary,
            "ledgers": ledgers,
            "client_level": self._client_level_report(state, accountant),
        }

    def client_epsilon(self, state: RunState) -> float | None:
        """Client-level epsilon guaranteed so far (None without client-level DP).

        Distributed mode: every round composed at the honest noise shares the protocol
        guarantees (:class:`privfed.privacy.ledger.DistributedLedger`), never fewer.
        """
        if state.ddg_ledger is not None:
            return state.ddg_ledger.epsilon()
        if state.client_ledger is not None:
            return state.client_ledger.epsilon() if state.client_ledger.steps else 0.0
        return None

    def _client_level_report(self, state: RunState, accountant: str) -> dict[str, Any]:
        cdp = self.cfg.client_dp
        common = {
            "unit": "client (everything one client contributes over the whole run)",
            "delta": cdp.delta,
            "target_epsilon": cdp.target_epsilon,
            "refused_rounds": list(state.client_refused_rounds),
        }
        if self.ddg_plan is not None and state.ddg_ledger is not None:
            from privfed.privacy.distributed import wrap_probability

            plan, lg = self.ddg_plan, state.ddg_ledger
            n = max((e.survivors for e in lg.rounds), default=0)
            return {
                "mode": "distributed",
                **common,
                "mechanism": "distributed discrete Gaussian (Kairouz, Liu, Steinke 2021): "
                "clip, randomized Hadamard, conditional randomized rounding, discrete Gaussian "
                "noise added by each client, secure aggregation modulo 2^bits; no amplification "
                "by client sampling is claimed",
                "accountant": "rdp (sum of discrete Gaussians, Kairouz et al. 2021, Prop. 14)",
                "params": {
                    "dimension": self.ddg.dimension,
                    "padded_dimension": self.ddg.padded_dimension,
                    "clip": self.ddg.clip,
                    "bits": self.ddg.bits,
                    "gamma": self.ddg.gamma,
                    "sigma_per_client": self.ddg.sigma,
                    "beta": self.ddg.beta,
                    "l2_sensitivity": self.ddg.l2_sensitivity,
                    "l1_sensitivity": self.ddg.l1_sensitivity,
                },
                "max_colluders": plan.colluders,
                "max_colluders_derived": plan.colluders_derived,
                "planned": {
                    "cohort": plan.planned.cohort,
                    "threshold": plan.planned.threshold,
                    "honest_noise_shares": plan.planned.worst,
                },
                "epsilon": lg.epsilon(),
                "epsilon_realized": lg.epsilon(realized=True),
                "rounds": lg.history(),
                "assumptions": [
                    "epsilon counts, every round, only the noise of t - 1 - max_colluders "
                    "clients: t survivors (the fewest secure aggregation completes with), "
                    "max_colluders of them colluding with the server, the protected client's "
                    "own share excluded; epsilon_realized counts the survivors reported",
                    "noise is simulation randomness drawn from the run seed; deployed clients "
                    "must draw it from a cryptographically secure generator",
                ],
                "wrap_probability_bound": wrap_probability(params=self.ddg, n_clients=n)
                if n
                else 0.0,
                "norm_inflation_bound": self.ddg.norm_inflation,
            }
        if self.client_dp is None or state.client_ledger is None:
            return {"mode": "off"}
        central = state.client_ledger
        return {
            "mode": cdp.mode,
            **common,
            "mechanism": "DP-FedAvg: per-client L2 clipping, Gaussian noise on the sum added by "
            "the server (trusted), fixed denominator, Poisson client sampling"
            + (", adaptive clipping" if cdp.adaptive else ""),
            "noise_multiplier": self.client_dp.noise_multiplier,
            "update_noise_multiplier": self.client_dp.update_noise_multiplier,
            "count_noise_std": self.client_dp.count_noise_std,
            "sample_rate": self.client_dp.sample_rate,
            "clip": state.client_clip,
            "accountant": accountant,
            "epsilon": central.epsilon(accountant) if central.steps else 0.0,
            "ledger": central.to_dict(),
            "assumptions": [
                "the server adding the noise is trusted; the client sampling is hidden from "
                "the adversary (amplification by Poisson sampling)",
                "noise is simulation randomness drawn from the run seed",
            ],
        }

    def _write_manifest(
        self, state: RunState, *, finished: bool, pending: str | None = None
    ) -> None:
        """Write ``manifest.json``; ``rounds_done`` counts the rounds the checkpoint holds."""
        if self._manifest_base is None:
            self._manifest_base = build_manifest(self.cfg)
        manifest = dict(self._manifest_base)
        sha, rounds = self._checkpoint
        manifest.update(
            {
                "written_at": timestamp(),
                "finished": finished,
                "rounds_done": rounds,
                "checkpoint": checkpoint_record(
                    sha256=sha, rounds_done=rounds, pending_sha256=pending
                ),
                "aborted_rounds": state.aborted_rounds,
                "partition_hashes": {g: gs.partition_hash for g, gs in self.fed.groups.items()},
                "vector_length": self.fed.vector_length,
                "units": {u.name: n for u, n in zip(self.fed.units, self.fed.sizes, strict=True)},
                "timings": {"setup_s": self.setup_seconds, **state.timings},
                "aggregator": self.aggregator.name,
                "algorithm": self.cfg.federation.algorithm,
            }
        )
        atomic_write_json(self.out / "manifest.json", manifest)


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> RunSummary:
    """Run ``cfg`` into ``out_dir`` (or resume it) and return the final evaluation."""
    return Engine(cfg, Path(out_dir), progress=progress, echo=echo).run(resume=resume)
