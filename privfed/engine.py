"""The round loop: select -> broadcast -> local DP training -> encode -> (secure) sum -> update.

:func:`run_experiment` is the entry point behind ``privfed run``. It builds a
:class:`Federation` (data, partitions, clients, model units) from a config and a seed, then runs
the rounds, writing the run directory as it goes (see ``docs/concepts.md``):

* ``config.toml`` (resolved), ``manifest.json`` (seed, versions, commit, platform, timings),
* ``metrics.jsonl`` (one line per evaluation), ``privacy.json`` (the ledger),
* ``checkpoint/state.pt`` after every round, from which ``--resume`` continues.

Every random draw comes from a stream named by (purpose, round, client, unit), so the same config
and seed give the same numbers, resumed or not.
"""

from __future__ import annotations

import hashlib
import inspect
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
from privfed.algorithms import ALGORITHMS, Algorithm
from privfed.algorithms.server import ServerAdam, ServerOptimizer
from privfed.client import UnitSpec, UnitTrainer, sample_rate_for
from privfed.config import ExperimentConfig, config_hash, dump_config, load_config
from privfed.data.inputs import input_spec, model_inputs
from privfed.data.partition import (
    PARTITIONERS,
    assign_groups,
    partition_hash,
    run_partitioner,
    split_client,
)
from privfed.data.sources import SourceData, load_source
from privfed.errors import CheckpointError, ConfigError, PrivfedError
from privfed.evaluation.metrics import summarize
from privfed.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    rewrite_jsonl,
    to_json,
)
from privfed.models import flat_parameters, load_flat_parameters
from privfed.models.check import model_problems
from privfed.privacy import client_dp
from privfed.privacy.accounting import calibrate_noise
from privfed.privacy.ledger import PrivacyLedger, SourceLedger
from privfed.repro import build_manifest
from privfed.rng import int_seed, numpy_rng, torch_generator

CHECKPOINT = "checkpoint/state.pt"


@dataclass(frozen=True)
class ClientGroupData:
    """One client's records of one task group, split into train / validation / test."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class AuditPlan:
    """Where the audit's canaries are: record indices and which ones the client trains on."""

    group: str
    client: int
    canaries: np.ndarray
    included: np.ndarray


@dataclass
class GroupState:
    """A task group resolved against its data source."""

    name: str
    source: SourceData
    ledger_key: str
    units: list[UnitSpec]
    clients: dict[int, ClientGroupData]
    partition_hash: str


def _unit_specs(name: str, cfg: ExperimentConfig, src: SourceData) -> list[UnitSpec]:
    g = cfg.groups[name]
    for t in g.tasks:
        if t not in src.labels:
            raise ConfigError(
                f"groups.{name}.tasks: {t!r} is not a label column of source {g.source!r}; "
                f"it has {', '.join(src.labels)}"
            )
    inputs = input_spec(src)

    def unit(unit_name: str, tasks: tuple[str, ...]) -> UnitSpec:
        return UnitSpec(
            name=unit_name,
            group=name,
            tasks=tasks,
            in_features=inputs.size * max(inputs.vocab, 1),
            hidden=tuple(g.hidden),
            heads={t: int(src.num_classes[t]) for t in tasks},
            model=g.model,
            model_params=dict(g.model_params),
            inputs=inputs,
        )

    if g.architecture == "shared-trunk":
        specs = [unit(name, tuple(g.tasks))]
    else:
        specs = [unit(f"{name}.{t}", (t,)) for t in g.tasks]
    for spec in specs:
        _check_unit(spec, where=f"groups.{name}")
    return specs


def _check_unit(spec: UnitSpec, *, where: str) -> None:
    """Build the unit's model once and check it for DP-SGD; ConfigError before any round."""
    label = f"{where}.model ({spec.model!r}, unit {spec.name})"
    try:
        module = spec.build()
    except ConfigError as exc:
        raise ConfigError([f"{label}: {q}" for q in exc.problems]) from None
    problems = model_problems(module, spec.input_spec, spec.heads)
    if problems:
        raise ConfigError([f"{label}: {q}" for q in problems])


def _partition(cfg: ExperimentConfig, gname: str, src: SourceData) -> list[np.ndarray]:
    g = cfg.groups[gname]
    pc = g.partition
    label = pc.label or g.tasks[0]
    if label not in src.labels:
        raise ConfigError(
            f"groups.{gname}.partition.label: {label!r} is not a label column of {g.source!r}"
        )
    params: dict[str, Any] = {
        "alpha": pc.alpha,
        "shards_per_client": pc.shards_per_client,
        "min_size": pc.min_size,
    }
    # The partition table holds the built-in partitioners' parameters; pass each partitioner
    # the ones it declares.
    accepted = inspect.signature(PARTITIONERS.get(pc.kind)).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
        params = {k: v for k, v in params.items() if k in accepted}
    rng = numpy_rng(cfg.seed, f"partition:{gname}")
    try:
        return run_partitioner(
            pc.kind,
            src.labels[label],
            src.owner,
            num_clients=cfg.federation.num_clients,
            rng=rng,
            **params,
        )
    except ConfigError as exc:
        raise ConfigError(
            [
                f"groups.{gname}.{p}"
                if p.startswith("partition.")
                else f"groups.{gname}.partition: {p}"
                for p in exc.problems
            ]
        ) from None


class Federation:
    """Everything a run needs that is derived from config and seed (data, clients, units)."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        n = cfg.federation.num_clients
        group_names = list(cfg.groups)
        held = assign_groups(
            n,
            group_names,
            rng=numpy_rng(cfg.seed, "assign-groups"),
            groups_per_client=cfg.federation.groups_per_client or None,
        )
        self.groups: dict[str, GroupState] = {}
        self.audit: AuditPlan | None = None
        sources_used: dict[str, int] = {}
        for g in cfg.groups.values():
            sources_used[g.source] = sources_used.get(g.source, 0) + 1
        for gname, g in cfg.groups.items():
            try:
                src = load_source(g.source, seed=cfg.seed, **dict(g.source_params))
            except ConfigError as exc:
                raise ConfigError(
                    [f"groups.{gname}.source_params.{p}" for p in exc.problems]
                ) from None
            parts = _partition(cfg, gname, src)
            clients: dict[int, ClientGroupData] = {}
            for c, idx in enumerate(parts):
                if gname not in held[c] or len(idx) == 0:
                    continue
                s = split_client(
                    idx,
                    rng=numpy_rng(cfg.seed, f"split:{gname}", c),
                    fractions=(g.split[0], g.split[1], g.split[2]),
                    ordered=g.split_order == "ordered",
                )
                if len(s.train) == 0 or len(s.test) == 0:
                    continue
                clients[c] = ClientGroupData(s.train, s.val, s.test)
            audit_group = cfg.audit.group or next(iter(cfg.groups))
            if cfg.audit.canaries and gname == audit_group:
                src, clients = self._insert_canaries(gname, src, clients)
            if not clients:
                raise ConfigError(
                    f"groups.{gname}: no client holds any records; lower federation.num_clients "
                    "or change the partition"
                )
            self.groups[gname] = GroupState(
                name=gname,
                source=src,
                ledger_key=g.source if sources_used[g.source] == 1 else f"{gname}/{g.source}",
                units=_unit_specs(gname, cfg, src),
                clients=clients,
                partition_hash=partition_hash(parts),
            )
        self.units: list[UnitSpec] = [u for gs in self.groups.values() for u in gs.units]
        if cfg.audit.canaries and self.audit is None:
            raise ConfigError("audit: no canaries were inserted; check audit.group")
        self.unit_group = {u.name: self.groups[u.group] for u in self.units}
        self.sizes = [int(sum(p.numel() for p in u.build().parameters())) for u in self.units]
        # Joint layout: every unit's vector, then one participation counter per unit.
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        self.counter_base = int(self.offsets[-1])
        self.vector_length = self.counter_base + len(self.units)
        self._tensors: dict[tuple[str, str], tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}

    def _insert_canaries(
        self, gname: str, src: SourceData, clients: dict[int, ClientGroupData]
    ) -> tuple[SourceData, dict[int, ClientGroupData]]:
        """Append mislabeled canary copies of records no client trains on.

        Each canary goes into the audited client's training data with probability 1/2
        (Steinke et al. 2023, Sec. 4).
        """
        audit = self.cfg.audit
        c = audit.client
        if c not in clients:
            raise ConfigError(
                f"audit.client {c} holds no records of group {gname!r}; pick a client that does"
            )
        trained = np.concatenate([cg.train for cg in clients.values()])
        pool = np.setdiff1d(np.arange(len(src)), trained)
        if len(pool) < audit.canaries:
            raise ConfigError(
                f"audit.canaries = {audit.canaries} exceeds the {len(pool)} records of group "
                f"{gname!r} that no client trains on; lower audit.canaries"
            )
        rng = numpy_rng(self.cfg.seed, "audit")
        pick = rng.choice(pool, size=audit.canaries, replace=False)
        labels = {}
        for col, y in src.labels.items():
            k = int(src.num_classes[col])
            wrong = (y[pick] + rng.integers(1, max(k, 2), size=len(pick))) % max(k, 2)
            labels[col] = np.concatenate([y, wrong.astype(np.int64)])
        owner = None if src.owner is None else np.concatenate([src.owner, src.owner[pick]])
        new = SourceData(
            name=src.name,
            x=np.concatenate([src.x, src.x[pick]]),
            labels=labels,
            num_classes=dict(src.num_classes),
            owner=owner,
            meta=dict(src.meta),
        )
        canary_idx = np.arange(len(src), len(src) + len(pick))
        included = rng.random(len(pick)) < 0.5
        cg = clients[c]
        clients = dict(clients)
        clients[c] = ClientGroupData(
            np.concatenate([cg.train, canary_idx[included]]), cg.val, cg.test
        )
        self.audit = AuditPlan(group=gname, client=c, canaries=canary_idx, included=included)
        return new, clients

    def initial_vectors(self) -> dict[str, np.ndarray]:
        """The common initialization of every unit, drawn from the run seed.

        Unit ``i``'s module is built with torch's global generator seeded from the run's
        ``init`` stream of ``i`` (scoped: the caller's generator state is restored), so every
        layer's own initialization is reproducible; a module with an
        ``init_parameters(generator)`` method (the mlp) then draws its own from that stream.
        """
        out = {}
        for i, u in enumerate(self.units):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int_seed(self.cfg.seed, "init", i))
                model = u.build()
            init = getattr(model, "init_parameters", None)
            if callable(init):
                init(torch_generator(self.cfg.seed, "init", i))
            out[u.name] = flat_parameters(model)
        return out

    def tensors(
        self, group: str, split: str, client: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Model inputs and label columns of one client's split as tensors.

        Inputs keep their shape: float32 ``[n, *shape]`` (images ``[n, C, H, W]``) or int64
        token ids ``[n, length]``; encoding them is the model's business.
        """
        gs = self.groups[group]
        idx = getattr(gs.clients[client], split)
        x = torch.from_numpy(model_inputs(gs.source, idx))
        ys = {
            t: torch.from_numpy(np.asarray(gs.source.labels[t][idx], dtype=np.int64))
            for t in gs.source.labels
        }
        return x, ys

    def clients_of(self, unit: UnitSpec) -> list[int]:
        """Clients that hold the unit's task group."""
        return sorted(self.unit_group[unit.name].clients)


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
    ddg_survivors: list[int] = field(default_factory=list)


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


def make_server_optimizer(cfg: ExperimentConfig) -> ServerOptimizer:
    """The configured server optimizer (``sgd`` with lr 1 is FedAvg; ``adam`` is FedAdam)."""
    f = cfg.federation
    if f.server_optimizer == "adam":
        return ServerAdam(
            lr=f.server_lr, beta1=f.server_beta1, beta2=f.server_beta2, tau=f.server_tau
        )
    return ServerOptimizer(lr=f.server_lr)


def configure_distributed_dp(cfg: ExperimentConfig, *, dimension: int) -> Any:
    """DDG parameters for the run: noise calibrated for the cohort expected to survive."""
    from privfed.privacy.distributed import DDGError, ddg_configure

    cdp, fed = cfg.client_dp, cfg.federation
    cohort = max(1, math.ceil(fed.cohort_fraction * fed.num_clients))
    survivors = max(1, math.floor(fed.cohort_fraction * fed.num_clients * (1.0 - fed.dropout)))
    try:
        return ddg_configure(
            dimension=dimension,
            clip=cdp.clip,
            bits=cfg.secagg.bits,
            cohort_size=fed.num_clients,
            expected_survivors=min(survivors, cohort),
            target_epsilon=cdp.target_epsilon,
            delta=cdp.delta,
            steps=cfg.rounds,
        )
    except DDGError as exc:
        raise ConfigError(
            f"client_dp (distributed): {exc}; raise secagg.bits or client_dp.target_epsilon"
        ) from None


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
        self.algorithm: Algorithm = ALGORITHMS.get(cfg.federation.algorithm)(mu=cfg.federation.mu)
        self.algorithm.setup(
            self.fed.units,
            holders={u.name: self.fed.clients_of(u) for u in self.fed.units},
            lr=cfg.train.lr,
        )
        self.server_opt = make_server_optimizer(cfg)
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
        # Under client-level DP (either mode) each client's joint update is clipped, no
        # participation counters are sent and each unit is divided by its expected count.
        self.client_level = cdp.mode != "off"
        # Joint vector: every unit's update, one participation counter per unit, and the
        # centred clip bit of adaptive clipping.
        self.bit_index = self.fed.vector_length
        self.vector_length = self.fed.vector_length + (1 if cdp.adaptive else 0)
        self.aggregator = make_aggregator(cfg)
        self.ddg: Any = None
        if cdp.mode == "distributed":
            self.ddg = configure_distributed_dp(cfg, dimension=self.fed.counter_base)
            self.aggregator = client_dp.DistributedDPAggregator(
                self.ddg, cfg.secagg, root_seed=cfg.seed
            )
        self.trainers: dict[tuple[int, str], UnitTrainer] = {}
        self._eval_models = {u.name: u.build() for u in self.fed.units}
        self._sigma: dict[tuple[int, str], float] = {}
        self.last_aggregate: AggregateResult | None = None
        self.last_updates: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ privacy
    def noise_multiplier(self, client: int, group: str) -> float | None:
        """The client's noise multiplier on ``group``'s records (None: no DP)."""
        dp = self.cfg.dp
        if not dp.private:
            return None
        key = (client, group)
        if key not in self._sigma:
            if dp.noise_multiplier > 0:
                self._sigma[key] = dp.noise_multiplier
            else:
                gs = self.fed.groups[group]
                q = sample_rate_for(len(gs.clients[client].train), self.cfg.train.batch_size)
                participations = math.ceil(self.cfg.rounds * dp.planned_participation)
                steps = (
                    participations
                    * self.cfg.train.local_steps
                    * len(gs.units)
                    * self.algorithm.trainings_per_participation
                )
                self._sigma[key] = calibrate_noise(
                    target_epsilon=dp.target_epsilon, delta=dp.delta, sample_rate=q, steps=steps
                )
        return self._sigma[key]

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
        )

    def save_checkpoint(self, state: RunState) -> None:
        """Write the checkpoint atomically."""
        import io

        buf = io.BytesIO()
        torch.save(
            {
                "format": 1,
                "config_hash": config_hash(self.cfg),
                "next_round": state.next_round,
                "globals": state.globals,
                "personal": {f"{c}|{u}": v for (c, u), v in state.personal.items()},
                "ledger": state.ledger.to_dict(),
                "aborted_rounds": state.aborted_rounds,
                "timings": state.timings,
                "server_optimizer": self.server_opt.state_dict(),
                "algorithm": self.algorithm.state_dict(),
                "client_ledger": state.client_ledger.to_dict() if state.client_ledger else None,
                "client_clip": state.client_clip,
                "ddg_survivors": state.ddg_survivors,
            },
            buf,
        )
        atomic_write_bytes(self.out / CHECKPOINT, buf.getvalue())

    def load_checkpoint(self) -> RunState:
        """Read the checkpoint of this run directory, refusing one from another config."""
        path = self.out / CHECKPOINT
        if not path.exists():
            raise CheckpointError(f"{path} does not exist; run without --resume to start afresh")
        try:
            data = torch.load(path, weights_only=False, map_location="cpu")
        except Exception as exc:
            raise CheckpointError(
                f"{path} is unreadable ({exc}); delete it and start afresh"
            ) from None
        if data.get("config_hash") != config_hash(self.cfg):
            raise CheckpointError(
                f"{path} was written by a different config; resume with the run's own "
                f"config.toml or pick a new --out directory"
            )
        self.server_opt.load_state_dict(data.get("server_optimizer", {}))
        self.algorithm.load_state_dict(data.get("algorithm", {}))
        personal = {}
        for k, v in data["personal"].items():
            c, u = k.split("|", 1)
            personal[(int(c), u)] = v
        return RunState(
            next_round=int(data["next_round"]),
            globals=data["globals"],
            personal=personal,
            ledger=PrivacyLedger.from_dict(data["ledger"]),
            aborted_rounds=list(data["aborted_rounds"]),
            timings=dict(data["timings"]),
            client_ledger=(
                SourceLedger.from_dict(data["client_ledger"]) if data.get("client_ledger") else None
            ),
            client_clip=float(data.get("client_clip", self.cfg.client_dp.clip)),
            ddg_survivors=list(data.get("ddg_survivors", [])),
        )

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
            for ui, unit in enumerate(fed.units):
                gs = fed.unit_group[unit.name]
                if c not in gs.clients:
                    continue
                tr = self.trainer(c, ui)
                ledger = state.ledger.get(c, gs.ledger_key)
                alg = self.algorithm
                if tr.private and ledger.would_exceed(
                    noise_multiplier=tr.noise_multiplier,
                    sample_rate=tr.sample_rate,
                    steps=cfg.train.local_steps * alg.trainings_per_participation,
                ):
                    skipped_budget += 1
                    continue
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
        if self.ddg is not None:
            state.ddg_survivors.append(len(result.included))
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
                x, ys = self.fed.tensors(unit.group, "test", c)
                xv, yv = self.fed.tensors(unit.group, "val", c)
                _, ytr = self.fed.tensors(unit.group, "train", c)
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
        """Run (or resume) every round, writing the run directory."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        metrics_path = self.out / "metrics.jsonl"
        if resume:
            if not (self.out / "config.toml").exists():
                raise CheckpointError(
                    f"{self.out} holds no run (no config.toml); run without --resume to start one"
                )
            on_disk = load_config(self.out / "config.toml")
            if config_hash(on_disk) != config_hash(cfg):
                raise CheckpointError(
                    f"{self.out / 'config.toml'} differs from the config given; resume with "
                    "the run directory's own config"
                )
            if (self.out / CHECKPOINT).exists():
                state = self.load_checkpoint()
            else:
                # Stopped before the first checkpoint: nothing to keep, start from round 0.
                self.echo(f"{self.out}: no checkpoint yet; starting from the first round")
                state = self.fresh_state()
            rows = [m for m in read_jsonl(metrics_path) if m["round"] <= state.next_round]
            rewrite_jsonl(metrics_path, rows)
        else:
            if (self.out / CHECKPOINT).exists() or metrics_path.exists():
                raise CheckpointError(
                    f"{self.out} already holds a run; pass --resume to continue it or choose "
                    "another --out"
                )
            state = self.fresh_state()
            atomic_write_text(self.out / "config.toml", dump_config(cfg))
            rows = []
        self._write_manifest(state, finished=False)
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
                    with open(metrics_path, "a", encoding="utf-8") as fh:
                        fh.write(to_json(last_eval) + "\n")
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
        self._write_manifest(state, finished=True)
        assert last_eval is not None
        return RunSummary(
            out_dir=self.out,
            rounds=cfg.rounds,
            tasks=last_eval["tasks"],
            epsilon=report["summary"],
            delta=cfg.dp.delta,
            accountant=report["accountant"],
            attacks=attack_results,
            audit=audit,
        )

    def run_audit(self, state: RunState) -> dict[str, Any]:
        """Score the canaries under the audited client's model; write audit.json.

        The auditor guesses "in" for the ``k`` canaries of lowest loss (summed over the
        group's tasks, with their wrong labels) and "out" for the ``k`` of highest loss; the
        correct guesses give a pure-DP epsilon lower bound (Steinke et al. 2023, Thm. 3.1),
        compared with the accountant's epsilon of the client's ledger for that data source.
        """
        from attacks.audit import one_run_epsilon_lower_bound

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
        order = np.argsort(loss)  # lowest loss first: most likely trained on
        guess_in, guess_out = order[:k], order[-k:]
        correct = int(plan.included[guess_in].sum() + (~plan.included[guess_out]).sum())
        lower = one_run_epsilon_lower_bound(
            guesses=2 * k, correct=correct, confidence=self.cfg.audit.confidence
        )
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
            "summary": summary,
            "ledgers": ledgers,
            "client_level": self._client_level_report(state, accountant),
        }

    def expected_survivors(self) -> int:
        """Clients per round the distributed noise was calibrated for."""
        f = self.cfg.federation
        return max(1, math.floor(f.cohort_fraction * f.num_clients * (1.0 - f.dropout)))

    def client_epsilon(self, state: RunState) -> float | None:
        """Client-level epsilon spent so far (None without client-level DP)."""
        if self.ddg is not None:
            if not state.ddg_survivors:
                return 0.0
            from privfed.privacy.distributed import realized_epsilon

            return realized_epsilon(
                params=self.ddg,
                survivors_per_round=state.ddg_survivors,
                delta=self.cfg.client_dp.delta,
            )
        if state.client_ledger is not None:
            return state.client_ledger.epsilon() if state.client_ledger.steps else 0.0
        return None

    def _client_level_report(self, state: RunState, accountant: str) -> dict[str, Any]:
        cdp = self.cfg.client_dp
        if self.ddg is not None:
            from privfed.privacy.distributed import wrap_probability

            n = max(state.ddg_survivors) if state.ddg_survivors else 0
            return {
                "mode": "distributed",
                "unit": "client (everything one client contributes over the whole run)",
                "mechanism": "distributed discrete Gaussian (Kairouz, Liu, Steinke 2021): "
                "clip, randomized Hadamard, conditional randomized rounding, discrete Gaussian "
                "noise added by each client, secure aggregation modulo 2^bits; no amplification "
                "by client sampling is claimed",
                "delta": cdp.delta,
                "target_epsilon": cdp.target_epsilon,
                "accountant": "rdp (sum of discrete Gaussians, Kairouz et al. 2021)",
                "params": {
                    "dimension": self.ddg.dimension,
                    "clip": self.ddg.clip,
                    "bits": self.ddg.bits,
                    "gamma": self.ddg.gamma,
                    "sigma_per_client": self.ddg.sigma,
                    "beta": self.ddg.beta,
                },
                "expected_survivors": self.expected_survivors(),
                "survivors_per_round": state.ddg_survivors,
                "epsilon": self.client_epsilon(state),
                "wrap_probability_bound": wrap_probability(params=self.ddg, n_clients=n)
                if n
                else 0.0,
                "norm_inflation_bound": self.ddg.norm_inflation,
            }
        if self.client_dp is None or state.client_ledger is None:
            return {"mode": "off"}
        lg = state.client_ledger
        return {
            "mode": cdp.mode,
            "unit": "client (everything one client contributes over the whole run)",
            "mechanism": "DP-FedAvg: per-client L2 clipping, Gaussian noise on the sum added by "
            "the server (trusted), fixed denominator, Poisson client sampling"
            + (", adaptive clipping" if cdp.adaptive else ""),
            "delta": cdp.delta,
            "target_epsilon": cdp.target_epsilon,
            "noise_multiplier": self.client_dp.noise_multiplier,
            "update_noise_multiplier": self.client_dp.update_noise_multiplier,
            "count_noise_std": self.client_dp.count_noise_std,
            "sample_rate": self.client_dp.sample_rate,
            "clip": state.client_clip,
            "accountant": accountant,
            "epsilon": lg.epsilon(accountant) if lg.steps else 0.0,
            "ledger": lg.to_dict(),
        }

    def _write_manifest(self, state: RunState, *, finished: bool) -> None:
        manifest = build_manifest(self.cfg)
        manifest.update(
            {
                "finished": finished,
                "rounds_done": state.next_round,
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
