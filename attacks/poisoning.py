"""Poisoning by a malicious client: backdoor with model replacement (Bagdasaryan et al. 2020).

Bagdasaryan, Veit, Hua, Estrin, Shmatikov, "How To Backdoor Federated Learning", AISTATS 2020,
Sec. 4: the attacker trains a model ``X`` on its own records plus copies carrying a trigger and
the attacker's target label, starting from the broadcast global model ``G``, and submits
``gamma * (X - G)`` so that averaging with the honest updates still lands near ``X``; with
``gamma = n / eta`` (cohort size over server learning rate) the global model is replaced
(Sec. 4.1, Eq. 3).

This is an *active* attack: it changes what one client sends, so it cannot be a passive
:class:`~privfed.attack_api.Attack` on a finished run. A malicious client is a different
participate function (:class:`BackdoorClient`, in place of
:func:`privfed.participation.participate`): it takes part honestly (its DP steps are spent as
usual) and then replaces its message -- what a malicious client controls, under secure
aggregation too, where its vector is clamped to ``secagg.clip`` by the encoding.
:func:`replay_with_backdoor` replays the run's first rounds from the common initialization
twice, once honest and once with the malicious client, and reports main-task and backdoor
accuracy of both. Nothing is written to the run directory.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from privfed.attack_runner import load_run
from privfed.client import UnitSpec
from privfed.engine import Engine, RunState
from privfed.federation import Federation
from privfed.models import flat_parameters, load_flat_parameters
from privfed.participation import ClientRuntime, participate
from privfed.round import ClientTask, Participation

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


class BackdoorClient:
    """A malicious client's participation: honest training, then a model-replacement message.

    Called like :func:`privfed.participation.participate`. It trains honestly (the DP steps it
    takes are recorded as usual), then trains ``X`` on its own records plus triggered copies
    from the broadcast global model ``G`` of the attacked unit and sends ``gamma * (X - G)`` in
    that unit's slice (participation counter 1), encoded as any client's message.

    Args:
        unit_index: the attacked unit's place in the joint vector.
        task: the attacked head.
        target: the label triggered inputs should get.
        trigger: feature indices set to 1 by the trigger.
        gamma: the boost of the malicious update.
        steps: the attacker's local SGD steps.
        generator: the attacker's randomness (advances over rounds).
    """

    def __init__(
        self,
        *,
        unit_index: int,
        task: str,
        target: int,
        trigger: tuple[int, ...],
        gamma: float,
        steps: int,
        generator: torch.Generator,
    ) -> None:
        self.unit_index = unit_index
        self.task = task
        self.target = target
        self.trigger = trigger
        self.gamma = gamma
        self.steps = steps
        self.generator = generator

    def __call__(self, runtime: ClientRuntime, task: ClientTask) -> Participation:
        """Take part honestly, then send the boosted backdoored model instead."""
        honest = participate(runtime, task)
        setup = runtime.setup
        unit = setup.fed.units[self.unit_index]
        work = {w.unit: w for w in task.units}.get(unit.name)
        if honest.update is None or work is None:
            return honest  # nothing sent this round (or the unit's budget is spent)
        g = work.global_vector
        x, ys = setup.fed.tensors(unit.group, "train", task.client)
        train = setup.cfg.train
        bad = backdoored_model(
            unit,
            g,
            x.numpy(),
            {t: y.numpy() for t, y in ys.items()},
            task=self.task,
            target=self.target,
            trigger=self.trigger,
            steps=self.steps,
            batch_size=train.batch_size,
            lr=train.lr,
            generator=self.generator,
        )
        out = np.array(honest.update, copy=True)
        layout = setup.layout
        lo, hi = layout.offsets[self.unit_index], layout.offsets[self.unit_index + 1]
        out[lo:hi] = (self.gamma * (bad - g)).astype(np.float32)
        out[layout.counter_base + self.unit_index] = 1.0
        upload = setup.encoding.encode(out, round_index=task.round_index, client=task.client)
        return dataclasses.replace(honest, upload=upload, update=out)


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
    fed: Federation,
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
    for c in fed.clients_of(unit):
        xc, yc = fed.tensors(unit.group, "test", c)
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
    cfg, engine, _ = load_run(run_dir)
    fed = engine.fed
    names = [u.name for u in fed.units]
    ui = 0 if unit is None else names.index(unit) if unit in names else -1
    if ui < 0:
        raise ValueError(f"unknown unit {unit!r}; the run has {', '.join(names)}")
    spec = fed.units[ui]
    task = task or spec.tasks[0]
    if attacker not in fed.unit_group[spec.name].clients:
        raise ValueError(f"client {attacker} does not hold group {spec.group!r}; pick another")
    n = cfg.federation.num_clients * cfg.federation.cohort_fraction
    boost = gamma if gamma is not None else n / cfg.federation.server_lr

    def replay(eng: Engine) -> RunState:
        state = eng.fresh_state()
        with eng:
            for r in range(rounds):
                eng.run_round(r, state)
        return state

    # trainers are re-seeded per call, so the honest clients behave the same in both replays
    clean = replay(engine)
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    malicious = BackdoorClient(
        unit_index=ui,
        task=task,
        target=target,
        trigger=tuple(trigger),
        gamma=boost,
        steps=steps,
        generator=gen,
    )
    with tempfile.TemporaryDirectory() as scratch:
        poisoned_engine = Engine(
            cfg,
            Path(scratch),
            progress=False,
            echo=lambda _msg: None,
            behaviours={attacker: malicious},
        )
        poisoned = replay(poisoned_engine)
    mc, bc = _accuracies(fed, spec, clean.globals[spec.name], task, target, tuple(trigger))
    mp, bp = _accuracies(fed, spec, poisoned.globals[spec.name], task, target, tuple(trigger))
    return BackdoorReport(spec.name, task, target, rounds, float(boost), mc, mp, bc, bp)
