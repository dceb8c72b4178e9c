"""Poisoning by a malicious client: backdoor with model replacement (Bagdasaryan et al. 2020).

Bagdasaryan, Veit, Hua, Estrin, Shmatikov, "How To Backdoor Federated Learning", AISTATS 2020,
Sec. 4: the attacker trains a model ``X`` on its own records plus copies carrying a trigger and
the attacker's target label, starting from the broadcast global model ``G``, and submits
``gamma * (X - G)`` so that averaging with the honest updates still lands near ``X``; with
``gamma = n / eta`` (cohort size over server learning rate) the global model is replaced
(Sec. 4.1, Eq. 3).

This is an *active* attack: it changes what one client sends, so it cannot be a passive
:class:`~attacks.base.Attack` on a finished run. :func:`replay_with_backdoor` replays the run's
first rounds from the common initialization twice -- once honest, once with the attacker's
message substituted at the aggregation boundary (what a malicious client controls, under
secure aggregation too, where its vector is clamped to ``secagg.clip`` by the encoding) -- and
reports main-task and backdoor accuracy of both. Nothing is written to the run directory.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attacks.observe import load_run
from privfed.aggregation import AggregateResult, Aggregator
from privfed.client import UnitSpec
from privfed.engine import Engine, RunState
from privfed.models import flat_parameters, load_flat_parameters

#: Bottom-right 2x2 pixels of an 8x8 digit (flattened indices), set to 1 as the trigger.
DIGITS_TRIGGER: tuple[int, ...] = (54, 55, 62, 63)


def add_trigger(x: np.ndarray, trigger: Collection[int]) -> np.ndarray:
    """A copy of ``x`` (records in [0, 1], any shape) with the trigger pixels set to 1.

    ``trigger`` holds indices into each record's flattened pixels.
    """
    out = np.array(x, dtype=np.float32, copy=True)
    out.reshape(len(out), -1)[:, list(trigger)] = 1.0
    return out


def backdoored_model(
    unit: UnitSpec,
    start: np.ndarray,
    x: np.ndarray,
    labels: Mapping[str, np.ndarray],
    *,
    task: str,
    target: int,
    trigger: Collection[int],
    steps: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
) -> np.ndarray:
    """Train from ``start`` on clean records plus triggered copies labelled ``target``."""
    model = unit.build()
    load_flat_parameters(model, start)
    xt = np.concatenate([x, add_trigger(x, trigger)])
    ys = {}
    for t in unit.tasks:
        y = np.asarray(labels[t], dtype=np.int64)
        poisoned = np.full_like(y, target) if t == task else y
        ys[t] = torch.from_numpy(np.concatenate([y, poisoned]))
    xs = torch.from_numpy(xt)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, len(xs), (min(batch_size, len(xs)),), generator=generator)
        out = model(xs[idx])
        loss = sum(F.cross_entropy(out[t], ys[t][idx]) for t in unit.tasks)
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
    return flat_parameters(model)


class _PoisoningAggregator:
    """Substitutes the attacker's vector before the real aggregator sees the round."""

    def __init__(self, inner: Aggregator, poison: _Poison) -> None:
        self.inner = inner
        self.poison = poison
        self.name = inner.name

    def aggregate(
        self,
        updates: Mapping[int, np.ndarray],
        *,
        round_index: int,
        model_hash: bytes,
        seed: int,
        dropouts: Mapping[str, Collection[int]] | None = None,
        keep_observed: bool = False,
    ) -> AggregateResult:
        changed = dict(updates)
        if self.poison.attacker in changed:
            changed[self.poison.attacker] = self.poison.message(changed[self.poison.attacker])
        return self.inner.aggregate(
            changed,
            round_index=round_index,
            model_hash=model_hash,
            seed=seed,
            dropouts=dropouts,
            keep_observed=keep_observed,
        )


@dataclass
class _Poison:
    engine: Engine
    state: RunState
    attacker: int
    unit_index: int
    task: str
    target: int
    trigger: tuple[int, ...]
    gamma: float
    steps: int
    generator: torch.Generator

    def message(self, honest: np.ndarray) -> np.ndarray:
        fed = self.engine.fed
        unit = fed.units[self.unit_index]
        g = self.state.globals[unit.name]
        x, ys = fed.tensors(unit.group, "train", self.attacker)
        cfg = self.engine.cfg.train
        bad = backdoored_model(
            unit,
            g,
            x.numpy(),
            {t: y.numpy() for t, y in ys.items()},
            task=self.task,
            target=self.target,
            trigger=self.trigger,
            steps=self.steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            generator=self.generator,
        )
        out = np.array(honest, copy=True)
        lo, hi = fed.offsets[self.unit_index], fed.offsets[self.unit_index + 1]
        out[lo:hi] = (self.gamma * (bad - g)).astype(np.float32)
        out[fed.counter_base + self.unit_index] = 1.0
        return out


@dataclass(frozen=True)
class BackdoorReport:
    """Main-task and backdoor accuracy after an honest and a poisoned replay.

    Attributes:
        unit: attacked model unit; task: attacked head; target: the backdoor label.
        rounds: rounds replayed; gamma: the attacker's boost.
        main_acc_clean / main_acc_poisoned: accuracy on every client's test records.
        backdoor_acc_clean / backdoor_acc_poisoned: fraction of triggered test records whose
            true label is not ``target`` that the model labels ``target``.
    """

    unit: str
    task: str
    target: int
    rounds: int
    gamma: float
    main_acc_clean: float
    main_acc_poisoned: float
    backdoor_acc_clean: float
    backdoor_acc_poisoned: float


def _accuracies(
    engine: Engine,
    unit: UnitSpec,
    vec: np.ndarray,
    task: str,
    target: int,
    trigger: tuple[int, ...],
) -> tuple[float, float]:
    model = unit.build()
    load_flat_parameters(model, vec)
    model.eval()
    feats: list[np.ndarray] = []
    golds: list[np.ndarray] = []
    for c in engine.fed.clients_of(unit):
        xc, yc = engine.fed.tensors(unit.group, "test", c)
        feats.append(xc.numpy())
        golds.append(yc[task].numpy())
    x = np.concatenate(feats)
    y = np.concatenate(golds)
    with torch.no_grad():
        main = model(torch.from_numpy(x))[task].argmax(1).numpy()
        keep = y != target
        trig = model(torch.from_numpy(add_trigger(x[keep], trigger)))[task].argmax(1).numpy()
    return float((main == y).mean()), float((trig == target).mean())


def replay_with_backdoor(
    run_dir: str | Path,
    *,
    attacker: int = 0,
    rounds: int = 3,
    unit: str | None = None,
    task: str | None = None,
    target: int = 0,
    gamma: float | None = None,
    steps: int = 50,
    trigger: tuple[int, ...] = DIGITS_TRIGGER,
    rng: np.random.Generator,
) -> BackdoorReport:
    """Replay the run's first ``rounds`` rounds honestly and with a backdooring client.

    Args:
        run_dir: a finished run directory.
        attacker: the malicious client (must hold the unit's group).
        rounds: rounds to replay from the common initialization.
        unit: the model unit to backdoor (default: the first).
        task: the head to backdoor (default: the unit's first task).
        target: the label triggered inputs should get.
        gamma: boost of the malicious update; None is model replacement, ``n / server_lr``.
        steps: the attacker's local SGD steps on its poisoned data.
        trigger: feature indices set to 1 by the trigger.
        rng: the attacker's randomness.
    """
    _, engine, _ = load_run(run_dir)
    fed = engine.fed
    names = [u.name for u in fed.units]
    ui = 0 if unit is None else names.index(unit) if unit in names else -1
    if ui < 0:
        raise ValueError(f"unknown unit {unit!r}; the run has {', '.join(names)}")
    spec = fed.units[ui]
    task = task or spec.tasks[0]
    if attacker not in fed.unit_group[spec.name].clients:
        raise ValueError(f"client {attacker} does not hold group {spec.group!r}; pick another")
    n = engine.cfg.federation.num_clients * engine.cfg.federation.cohort_fraction
    boost = gamma if gamma is not None else n / engine.cfg.federation.server_lr
    honest_agg = engine.aggregator

    def replay(poison: bool) -> RunState:
        state = engine.fresh_state()
        if poison:
            gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
            p = _Poison(
                engine, state, attacker, ui, task, target, tuple(trigger), boost, steps, gen
            )
            engine.aggregator = _PoisoningAggregator(honest_agg, p)
        try:
            for r in range(rounds):
                engine.run_round(r, state)
        finally:
            engine.aggregator = honest_agg
        return state

    clean = replay(False)
    # trainers are re-seeded per call, so the honest clients behave the same in both replays
    poisoned = replay(True)
    mc, bc = _accuracies(engine, spec, clean.globals[spec.name], task, target, tuple(trigger))
    mp, bp = _accuracies(engine, spec, poisoned.globals[spec.name], task, target, tuple(trigger))
    return BackdoorReport(spec.name, task, target, rounds, float(boost), mc, mp, bc, bp)
