"""Everything a run derives from its config and seed: data, partitions, clients, model units.

A :class:`Federation` loads each task group's data source, partitions it over the clients,
splits every client's records into train / validation / test, inserts the audit's canaries and
lays out the model units and the joint update vector.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from privfed.client import UnitSpec
from privfed.config import ExperimentConfig
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
from privfed.rng import numpy_rng, torch_generator


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


def _token_vocab(src: SourceData) -> int:
    """Vocabulary size of a token-id source (1 for float features)."""
    if src.meta.get("input_kind") != "token_ids":
        return 1
    vocab = src.meta.get("vocab")
    known = len(vocab) + 1 if isinstance(vocab, (str, list, tuple)) else 0  # + unknown id
    return max(known, int(src.x.max()) + 1)


def _features(src: SourceData, idx: np.ndarray) -> np.ndarray:
    """Model inputs of records ``idx``.

    Float features pass as they are; token ids are one-hot encoded, since the MLPs here take
    fixed-size float inputs (LEAF Shakespeare gives [N, 80] character ids).
    """
    x = src.x[idx]
    vocab = _token_vocab(src)
    if vocab == 1:
        return x
    out = np.zeros((len(idx), *x.shape[1:], vocab), dtype=np.float32)
    np.put_along_axis(out, x[..., None].astype(np.int64), 1.0, axis=-1)
    return out


def _unit_specs(name: str, cfg: ExperimentConfig, src: SourceData) -> list[UnitSpec]:
    g = cfg.groups[name]
    for t in g.tasks:
        if t not in src.labels:
            raise ConfigError(
                f"groups.{name}.tasks: {t!r} is not a label column of source {g.source!r}; "
                f"it has {', '.join(src.labels)}"
            )
    in_features = int(np.prod(src.input_shape)) * _token_vocab(src)
    hidden = tuple(g.hidden)
    if g.architecture == "shared-trunk":
        heads = {t: int(src.num_classes[t]) for t in g.tasks}
        return [UnitSpec(name, name, tuple(g.tasks), in_features, hidden, heads)]
    return [
        UnitSpec(f"{name}.{t}", name, (t,), in_features, hidden, {t: int(src.num_classes[t])})
        for t in g.tasks
    ]


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
        """The common initialization of every unit, drawn from the run seed."""
        out = {}
        for i, u in enumerate(self.units):
            gen = torch_generator(self.cfg.seed, "init", i)
            model = u.build()
            with torch.no_grad():
                for p in model.parameters():
                    if p.dim() > 1:
                        bound = 1.0 / math.sqrt(p.shape[1])
                        p.uniform_(-bound, bound, generator=gen)
                    else:
                        p.zero_()
            out[u.name] = flat_parameters(model)
        return out

    def tensors(
        self, group: str, split: str, client: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Features and label columns of one client's split as tensors."""
        gs = self.groups[group]
        idx = getattr(gs.clients[client], split)
        x = torch.from_numpy(np.ascontiguousarray(_features(gs.source, idx), dtype=np.float32))
        x = x.reshape(len(idx), -1)
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
