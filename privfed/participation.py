"""The client side of a round: :func:`participate`, a pure function of task and runtime.

A client's participation depends on two things only: what the server sent this round (a
:class:`~privfed.round.ClientTask`) and what the client holds (its :class:`ClientRuntime`: its
records, its persistent DP-SGD trainers, and the run's client code and settings, fixed before
the first round). It never reads server state, so it can run anywhere -- in the driver, in a
worker process, on a Ray actor -- and give the same numbers: every random draw is named by
(purpose, round, client, unit).

:func:`participate` is written to be read top to bottom and forked: local DP-SGD per unit (the
algorithm says where training starts, its local phases and what is shared), the DP events for
the ledger, the personal state kept, then the client-side encoding (client-level clipping and
the adaptive-clipping bit, fixed point or distributed noise). Secure-aggregation masking happens
afterwards, in the protocol, by the party that holds this client (:mod:`privfed.backends`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from privfed.aggregation import (
    DistributedDPEncoding,
    FixedPointEncoding,
    PlainEncoding,
    UpdateEncoding,
)
from privfed.algorithms import Algorithm, make_algorithm
from privfed.client import UnitTrainer
from privfed.config import ExperimentConfig
from privfed.errors import PrivfedError
from privfed.federation import Federation
from privfed.privacy import client_dp
from privfed.round import ClientTask, DPEvent, Participation, UnitWork

__all__ = [
    "ClientRuntime",
    "ClientSetup",
    "Layout",
    "Participate",
    "TrainerCache",
    "make_encoding",
    "participate",
]

#: What a participation is: the honest :func:`participate` or any replacement (a malicious
#: client is a different function of the same arguments).
Participate = Callable[["ClientRuntime", ClientTask], Participation]


@dataclass(frozen=True)
class Layout:
    """The joint vector a client sends: every unit's update, counters, the clip bit.

    Attributes:
        units: unit names in vector order.
        offsets: unit ``i`` occupies ``offsets[i]:offsets[i + 1]``.
        counters: whether each unit's participation counter (1.0 if the client trained it)
            is sent; not under client-level DP, where the denominator is fixed.
        clip_bit: whether the last coordinate carries adaptive clipping's centred bit.
    """

    units: tuple[str, ...]
    offsets: tuple[int, ...]
    counters: bool
    clip_bit: bool

    @property
    def counter_base(self) -> int:
        """Index of the first participation counter (= the length of the update part)."""
        return self.offsets[-1]

    @property
    def bit_index(self) -> int:
        """Index of the adaptive-clipping bit (when :attr:`clip_bit`)."""
        return self.counter_base + len(self.units)

    @property
    def length(self) -> int:
        """Length of the joint vector."""
        return self.bit_index + (1 if self.clip_bit else 0)

    def index(self, unit: str) -> int:
        """Position of ``unit`` in the layout."""
        return self.units.index(unit)


def make_encoding(cfg: ExperimentConfig, layout: Layout, ddg: Any) -> UpdateEncoding:
    """The run's update encoding: distributed DP, fixed point for secure aggregation, or plain."""
    if ddg is not None:
        return DistributedDPEncoding(ddg, length=layout.length, root_seed=cfg.seed)
    if cfg.federation.aggregator == "secagg":
        return FixedPointEncoding(cfg.secagg, root_seed=cfg.seed)
    return PlainEncoding()


class ClientSetup:
    """The client code and settings of a run: what every client holds before any round.

    Derived from the config alone (the same on every worker): the federation's data and
    layout, the algorithm's client-side hooks, the update encoding.

    Args:
        cfg: the experiment.
        fed: its federation (data, partitions, units).
        ddg: the distributed-DP parameters (None unless ``client_dp.mode = "distributed"``).
    """

    def __init__(self, cfg: ExperimentConfig, fed: Federation, *, ddg: Any = None) -> None:
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
        self.layout = Layout(
            units=tuple(u.name for u in fed.units),
            offsets=tuple(int(o) for o in fed.offsets),
            counters=cfg.client_dp.mode == "off",
            clip_bit=cfg.client_dp.adaptive,
        )
        self.encoding = make_encoding(cfg, self.layout, ddg)


class TrainerCache:
    """At most ``capacity`` trainers, least recently used evicted first.

    A trainer is rebuilt identically after eviction (its random streams are re-seeded at
    every call and SGD keeps no state between calls), so the cache bounds memory without
    changing a number.
    """

    def __init__(self, capacity: int = 512) -> None:
        if capacity < 1:
            raise ValueError(f"trainer cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[Hashable, UnitTrainer] = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], UnitTrainer]) -> UnitTrainer:
        """The trainer under ``key``, built by ``build`` if absent."""
        tr = self._items.get(key)
        if tr is None:
            tr = build()
            self._items[key] = tr
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(key)
        return tr

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[Hashable, UnitTrainer]]:
        """The cached trainers (oldest first)."""
        return list(self._items.items())


class ClientRuntime:
    """What one client holds: its records and trainers, and the run's client setup.

    Args:
        client: the client's id.
        setup: the run's client code and settings.
        trainers: the cache the client's trainers live in (shared by the clients of a worker).
    """

    def __init__(self, client: int, setup: ClientSetup, trainers: TrainerCache) -> None:
        self.client = client
        self.setup = setup
        self._trainers = trainers

    def trainer(self, unit_index: int, work: UnitWork, *, personal: bool = False) -> UnitTrainer:
        """The client's persistent (Opacus-wrapped) trainer of a unit, as the task sets it up.

        ``personal=True`` gives the second trainer of algorithms that train a separate
        personal model (Ditto): same records, same ledger, its own random streams.

        Raises:
            PrivfedError: the trainer would not sample at the rate the server's privacy plan
                accounts for (a bug).
        """
        fed, cfg = self.setup.fed, self.setup.cfg
        unit = fed.units[unit_index]
        sigma = work.noise_multiplier
        public = work.public_batch_size > 0

        def build() -> UnitTrainer:
            x, ys = fed.tensors(unit.group, "train", self.client)
            return UnitTrainer(
                unit,
                x=x,
                y=ys,
                batch_size=cfg.train.batch_size,
                lr=cfg.train.lr,
                noise_multiplier=sigma,
                max_grad_norm=cfg.dp.max_grad_norm,
                seed=cfg.seed,
                stream=(self.client, unit_index, 1) if personal else (self.client, unit_index),
                public_sample_rate=work.sample_rate if public else None,
                public_batch_size=work.public_batch_size if public else None,
            )

        key = (self.client, unit_index, personal)
        tr = self._trainers.get(key, build)
        if tr.noise_multiplier != float(sigma or 0.0) or tr.private != (sigma is not None):
            raise PrivfedError(
                f"client {self.client}, unit {unit.name}: the task's noise multiplier {sigma} "
                f"differs from the trainer's {tr.noise_multiplier}; this is a bug in privfed "
                "(please report it)"
            )
        if tr.private and tr.sample_rate != work.sample_rate:
            raise PrivfedError(
                f"client {self.client}, unit {unit.name}: the trainer samples at rate "
                f"{tr.sample_rate} but the privacy plan assumed {work.sample_rate}; this is a "
                "bug in privfed (please report it)"
            )
        return tr

    def source(self, unit: str) -> str:
        """The ledger key of the data source ``unit`` trains on."""
        return self.setup.fed.unit_group[unit].ledger_key


def _release(trainer: UnitTrainer) -> None:
    """Drop the per-sample gradients Opacus leaves after a step (most of a trainer's memory)."""
    trainer.release()


def participate(runtime: ClientRuntime, task: ClientTask) -> Participation:
    """One client's round: local DP-SGD per unit, DP events, kept state, encoded update.

    Args:
        runtime: what the client holds.
        task: what the server sent it this round.

    Returns:
        What the client sends, keeps and spent.
    """
    start_time = time.thread_time()
    setup = runtime.setup
    alg, layout = setup.algorithm, setup.layout
    vec = np.zeros(layout.length, dtype=np.float32) if alg.aggregates else None
    events: list[DPEvent] = []
    kept: dict[str, np.ndarray] = {}
    trained = diverged = 0

    for work in task.units:
        ui = layout.index(work.unit)
        source = runtime.source(work.unit)
        personal = task.personal.get(work.unit)
        global_vec = work.global_vector
        # 1. Where training starts and what pulls it (FedProx's term, or the server's for MOCHA).
        start = alg.start_vector(unit=work.unit, global_vec=global_vec, personal=personal)
        prox = (
            (work.prox_centre, work.prox_weight)
            if work.prox_centre is not None
            else alg.client_prox(unit=work.unit, start=start)
        )
        # 2. DP-SGD, one call per local phase (FedRep freezes heads, then the trunk).
        tr = runtime.trainer(ui, work)
        current = start
        for phase, frozen in enumerate(alg.local_phases(work.unit)):
            res = tr.train(
                current,
                steps=task.local_steps,
                round_index=task.round_index,
                prox_center=prox[0] if prox else None,
                prox_mu=prox[1] if prox else 0.0,
                frozen=frozen,
                phase=phase,
            )
            events.append(
                DPEvent(
                    source=source,
                    task=work.unit,
                    noise_multiplier=res.noise_multiplier,
                    sample_rate=res.sample_rate,
                    steps=res.steps,
                )
            )
            current = res.vector
        _release(tr)
        # 3. Ditto's personal model: trained on the same records, so the same ledger.
        if alg.personal_mu is not None:
            ptr = runtime.trainer(ui, work, personal=True)
            pres = ptr.train(
                global_vec if personal is None else personal,
                steps=task.local_steps,
                round_index=task.round_index,
                prox_center=global_vec,
                prox_mu=alg.personal_mu,
            )
            events.append(
                DPEvent(
                    source=source,
                    task=f"{work.unit}:personal",
                    noise_multiplier=pres.noise_multiplier,
                    sample_rate=pres.sample_rate,
                    steps=pres.steps,
                )
            )
            _release(ptr)
            personal = pres.vector
        # 4. Diverged training (e.g. a huge learning rate against DP noise): the steps stay on
        #    the ledger; nothing is sent for this unit and the personal state is not replaced.
        if not (np.isfinite(current).all() and (personal is None or np.isfinite(personal).all())):
            diverged += 1
            continue
        # 5. What is shared and what stays on the client.
        outcome = alg.after_training(
            unit=work.unit, start=start, trained=current, personal=personal
        )
        if outcome.personal is not None:
            kept[work.unit] = outcome.personal
        if vec is not None and outcome.update is not None:
            vec[layout.offsets[ui] : layout.offsets[ui + 1]] = outcome.update
            if layout.counters:
                vec[layout.counter_base + ui] = 1.0
        trained += 1

    # 6. Client-side encoding. A client with nothing to send (every budget spent) still sends
    #    zeros, so the server cannot tell it apart from one that trained.
    upload = None
    if vec is not None:
        if task.client_clip > 0:
            clipped, within = client_dp.clip_update(
                vec[: layout.counter_base], clip=task.client_clip
            )
            vec[: layout.counter_base] = clipped
            if layout.clip_bit:
                vec[layout.bit_index] = (1.0 if within else 0.0) - 0.5
        upload = setup.encoding.encode(vec, round_index=task.round_index, client=task.client)
    return Participation(
        client=task.client,
        round_index=task.round_index,
        upload=upload,
        personal=kept,
        events=tuple(events),
        trained=trained,
        diverged=diverged,
        compute_seconds=time.thread_time() - start_time,
        update=vec,
    )
