"""Membership inference on the released per-task models (an outsider's attack).

The adversary holds the released global models and a set of challenge records and asks, for
each record, "did some client train on it?". Members are clients' training records, non-members
their held-out test records (drawn by :func:`privfed.attack_runner.observe_run`); only the metric
step knows which is which.

* :class:`LossThreshold` -- Yeom, Giacomelli, Fredrikson, Jha, "Privacy Risk in Machine
  Learning: Analyzing the Connection to Overfitting", CSF 2018, Sec. 3.2: a record is a member
  when its loss is low. The score is the negative loss; AUC and TPR at low FPR sweep the
  threshold.
* :class:`LiRAOffline` -- Carlini, Chien, Nasr, Song, Terzis, Tramer, "Membership Inference
  Attacks From First Principles", S&P 2022, Sec. IV-C (offline variant): shadow models trained
  on data that excludes the challenge records give, per record, the distribution of its
  logit-scaled confidence ``phi = log(p_y / (1 - p_y))`` when it is OUT; the score is how far the
  target model's ``phi`` lies above that Gaussian (one-sided test). With few shadow models the
  variance is pooled over records (Sec. IV-C, "fixed variance").

  Public split: the shadow models train on random halves of the population's *validation*
  records (every client's ``val`` split). The federation never trains on them, they are disjoint
  from the challenge records, and they come from the same distribution -- the "population data"
  LiRA assumes. Each shadow imitates the public recipe: ``rounds * local_steps`` SGD steps of
  ``batch_size`` records at the clients' learning rate, from a fresh initialization.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from attacks.metrics import roc_auc, tpr_at_fpr
from privfed.attack_api import (
    Adversary,
    Attack,
    AttackResult,
    GroundTruth,
    Observation,
    Records,
    ThreatModel,
    View,
)
from privfed.unit import UnitSpec

if TYPE_CHECKING:  # torch is imported when an attack runs, not when it is listed
    import torch
    from torch import nn

#: False-positive rates at which TPR is reported (Carlini et al. 2022, Sec. III).
FPRS: tuple[float, ...] = (0.001, 0.01)


def _logits(model: nn.Module, x: np.ndarray, task: str) -> torch.Tensor:
    import torch

    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))[task]


def per_record_loss(model: nn.Module, records: Records, task: str) -> np.ndarray:
    """Cross-entropy of each record under ``model``'s ``task`` head."""
    import torch
    import torch.nn.functional as F

    logits = _logits(model, records.x, task)
    y = torch.from_numpy(np.asarray(records.labels[task], dtype=np.int64))
    return F.cross_entropy(logits, y, reduction="none").numpy().astype(np.float64)


def logit_confidence(model: nn.Module, records: Records, task: str) -> np.ndarray:
    """``phi = log p_y - log(1 - p_y)`` per record, computed stably from the logits."""
    import torch

    logits = _logits(model, records.x, task).double()
    y = torch.from_numpy(np.asarray(records.labels[task], dtype=np.int64))
    correct = logits.gather(1, y[:, None])[:, 0]
    others = logits.clone()
    others.scatter_(1, y[:, None], float("-inf"))
    return (correct - torch.logsumexp(others, dim=1)).numpy()


def _key(unit: UnitSpec, task: str) -> str:
    """``group:group.task``: the group (to find the truth) and the task's full name."""
    return f"{unit.group}:{unit.group}.{task}"


def _released_model(obs: Observation, unit: UnitSpec) -> nn.Module:
    if obs.released is None:
        raise ValueError("this attack needs the released models (View.RELEASED_MODELS)")
    from privfed.models import load_flat_parameters

    model = unit.build()
    load_flat_parameters(model, obs.released[unit.name])
    return model


def _membership_metrics(outputs: dict[str, np.ndarray], truth: GroundTruth) -> dict[str, float]:
    metrics: dict[str, float] = {}
    aucs = []
    for key, scores in sorted(outputs.items()):
        group = key.split(":", 1)[0]
        labels = truth.membership[group]
        tag = key.split(":", 1)[1]
        auc = roc_auc(scores, labels)
        aucs.append(auc)
        metrics[f"auc.{tag}"] = auc
        for f in FPRS:
            metrics[f"tpr@{f:g}fpr.{tag}"] = tpr_at_fpr(scores, labels, fpr=f)
        metrics[f"challenge.{tag}"] = float(len(labels))
    if aucs:
        metrics["auc.max"] = max(aucs)
    return metrics


class _MembershipAttack(Attack):
    """Shared metric step: per (unit, task) AUC and TPR at 0.1% and 1% FPR."""

    def evaluate(self, result: AttackResult, truth: GroundTruth) -> AttackResult:
        """AUC and TPR at :data:`FPRS` of every score vector against the true membership."""
        return result.with_metrics(_membership_metrics(dict(result.outputs), truth))


class LossThreshold(_MembershipAttack):
    """Loss-threshold membership inference on the released models (Yeom et al. 2018)."""

    name: ClassVar[str] = "mia-loss"
    threat_model: ClassVar[ThreatModel] = ThreatModel(
        adversary=Adversary.OUTSIDER,
        observes=frozenset({View.RELEASED_MODELS}),
        summary="loss-threshold membership inference on released models (Yeom et al. 2018)",
    )

    def run(self, observation: Observation, *, rng: np.random.Generator) -> AttackResult:
        """Score every challenge record by its negative loss under each released model."""
        del rng  # deterministic
        if observation.challenge is None:
            raise ValueError("membership inference needs challenge records")
        outputs: dict[str, np.ndarray] = {}
        for unit in observation.units:
            records = observation.challenge[unit.group]
            model = _released_model(observation, unit)
            for task in unit.tasks:
                outputs[_key(unit, task)] = -per_record_loss(model, records, task)
        return AttackResult(attack=self.name, outputs=outputs)


def init_model(unit: UnitSpec, generator: torch.Generator) -> nn.Module:
    """A fresh model of ``unit`` initialized like the engine does, from ``generator`` only."""
    import torch

    model = unit.build()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                bound = 1.0 / float(np.sqrt(p.shape[1]))
                p.uniform_(-bound, bound, generator=generator)
            else:
                p.zero_()
    return model


def train_shadow(
    unit: UnitSpec,
    data: Records,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
) -> nn.Module:
    """Train one shadow model of ``unit`` on ``data`` with plain minibatch SGD.

    Args:
        unit: the architecture to imitate.
        data: the shadow's training records (all heads' labels).
        steps: SGD steps.
        batch_size: records per step (sampled with replacement across steps).
        lr: learning rate.
        generator: initialization and batch sampling.
    """
    import torch
    import torch.nn.functional as F

    model = init_model(unit, generator)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    x = torch.from_numpy(np.ascontiguousarray(data.x, dtype=np.float32))
    ys = {t: torch.from_numpy(np.asarray(data.labels[t], dtype=np.int64)) for t in unit.tasks}
    n = len(x)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=generator)
        out = model(x[idx])
        loss = sum(F.cross_entropy(out[t], ys[t][idx]) for t in unit.tasks)
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
    return model


class LiRAOffline(_MembershipAttack):
    """Offline LiRA with shadow models on the public split (Carlini et al. 2022).

    Args:
        shadows: number of shadow models per unit (OUT models only: offline variant).
        steps: SGD steps per shadow; 0 means ``rounds * local_steps`` from the public recipe.
        fraction: fraction of the public split each shadow trains on.
    """

    name: ClassVar[str] = "mia-lira"
    threat_model: ClassVar[ThreatModel] = ThreatModel(
        adversary=Adversary.OUTSIDER,
        observes=frozenset({View.RELEASED_MODELS, View.PUBLIC_DATA}),
        summary="offline LiRA membership inference, shadow models on the public (validation) "
        "split (Carlini et al. 2022)",
    )

    def __init__(self, *, shadows: int = 8, steps: int = 0, fraction: float = 0.5) -> None:
        if shadows < 2:
            raise ValueError(f"shadows must be >= 2 to estimate a variance, got {shadows}")
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.shadows = int(shadows)
        self.steps = int(steps)
        self.fraction = float(fraction)

    def run(self, observation: Observation, *, rng: np.random.Generator) -> AttackResult:
        """Score each challenge record by its confidence's z-score against OUT shadows."""
        obs = observation
        if obs.challenge is None or obs.public is None:
            raise ValueError("LiRA needs challenge records and the public split")
        recipe = obs.recipe
        steps = self.steps or int(recipe.get("rounds", 1) * recipe.get("local_steps", 1))
        batch = int(recipe.get("batch_size", 16))
        lr = float(recipe.get("lr", 0.1))
        import torch

        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        outputs: dict[str, np.ndarray] = {}
        notes = []
        for unit in obs.units:
            if unit.group not in obs.public or len(obs.public[unit.group]) < 4:
                notes.append(f"{unit.name}: no public split, skipped")
                continue
            pub = obs.public[unit.group]
            records = obs.challenge[unit.group]
            target = _released_model(obs, unit)
            phis: dict[str, list[np.ndarray]] = {t: [] for t in unit.tasks}
            for _ in range(self.shadows):
                k = max(2, int(round(self.fraction * len(pub))))
                idx = rng.choice(len(pub), size=k, replace=False)
                sub = Records(pub.x[idx], {t: v[idx] for t, v in pub.labels.items()})
                shadow = train_shadow(
                    unit, sub, steps=steps, batch_size=batch, lr=lr, generator=gen
                )
                for t in unit.tasks:
                    phis[t].append(logit_confidence(shadow, records, t))
            for t in unit.tasks:
                out = np.stack(phis[t])  # shadows x records
                mu = out.mean(axis=0)
                sigma = float(out.std(axis=0, ddof=1).mean()) + 1e-6  # pooled ("fixed") variance
                phi = logit_confidence(target, records, t)
                outputs[_key(unit, t)] = (phi - mu) / sigma
        notes.append(
            f"{self.shadows} OUT shadow models per unit, {steps} SGD steps each, on "
            f"{self.fraction:.0%} of the public (validation) split"
        )
        return AttackResult(
            attack=self.name,
            outputs=outputs,
            notes=tuple(notes),
            metrics={"shadows": float(self.shadows)},
        )
