"""Everything a run derives from its config and seed: data, partitions, clients, model units.

A :class:`Federation` loads each task group's data source, partitions it over the clients,
splits every client's records into train / validation / test, inserts the audit's canaries and
lays out the model units and the joint update vector.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from privfed.config import ExperimentConfig
from privfed.data.inputs import input_spec, model_inputs
from privfed.data.partition import (
    PARTITIONERS,
    assign_groups,
    partition_hash,
    run_partitioner,
    split_client,
)
from privfed.data.sources import SourceData, load_source
from privfed.errors import ConfigError
from privfed.models import flat_parameters
from privfed.models.check import model_problems
from privfed.rng import int_seed, numpy_rng, torch_generator
from privfed.unit import UnitSpec


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
    """The data source's name: every group on one source shares its clients' ledgers."""
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
    params.update(pc.params)  # a partitioner's own parameters (checked when loaded)
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
        # A data source is partitioned once (by the first group that names it): its records
        # belong to one client whatever the group, so the client's (client, source) ledger
        # covers every training on them. Later groups on the source reuse the partition and
        # each client's train/val/test split (the config loader requires equal settings).
        shared: dict[str, tuple[str, SourceData, list[np.ndarray]]] = {}
        splits: dict[tuple[str, int], ClientGroupData | None] = {}
        for gname, g in cfg.groups.items():
            if g.source not in shared:
                try:
                    loaded = load_source(g.source, seed=cfg.seed, **dict(g.source_params))
                except ConfigError as exc:
                    raise ConfigError(
                        [f"groups.{gname}.source_params.{p}" for p in exc.problems]
                    ) from None
                shared[g.source] = (gname, loaded, _partition(cfg, gname, loaded))
            first, src, parts = shared[g.source]
            clients: dict[int, ClientGroupData] = {}
            for c, idx in enumerate(parts):
                if gname not in held[c] or len(idx) == 0:
                    continue
                if (g.source, c) not in splits:
                    s = split_client(
                        idx,
                        rng=numpy_rng(cfg.seed, f"split:{first}", c),
                        fractions=(g.split[0], g.split[1], g.split[2]),
                        ordered=g.split_order == "ordered",
                    )
                    ok = len(s.train) > 0 and len(s.test) > 0
                    splits[(g.source, c)] = ClientGroupData(s.train, s.val, s.test) if ok else None
                cg = splits[(g.source, c)]
                if cg is not None:
                    clients[c] = cg
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
                ledger_key=g.source,
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

    def labels(self, group: str, split: str, client: int) -> dict[str, torch.Tensor]:
        """Label columns of one client's split as int64 tensors (no features built)."""
        gs = self.groups[group]
        idx = getattr(gs.clients[client], split)
        return {
            t: torch.from_numpy(np.asarray(gs.source.labels[t][idx], dtype=np.int64))
            for t in gs.source.labels
        }

    def clients_of(self, unit: UnitSpec) -> list[int]:
        """Clients that hold the unit's task group."""
        return sorted(self.unit_group[unit.name].clients)
