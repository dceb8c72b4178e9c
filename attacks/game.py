"""The membership-inference game on a set of federated runs (Carlini et al. 2022, Sec. VI).

``R`` runs of one config differ only in their seed; the seed draws, among other things, each
client's train/validation/test split, so every record of the data source is a member of about
half of the runs (with ``split = [0.5, 0.25, 0.25]``). Each run in turn is the *target*; the
other ``R - 1`` runs are the adversary's shadow models: trained with the target's own recipe
(federated, with the same DP), on data whose membership the adversary knows. The attack sees
the target's released model, every record of the pool and the shadows
(:class:`~privfed.attack_api.Observation` with ``View.SHADOW_MODELS``); the target's true
membership goes only to the metrics. Scores of all targets are pooled, which gives
``R * N`` membership decisions (about half of them non-members): enough to read the true-positive
rate at 0.1% false positives.

Intervals are percentile intervals of a bootstrap over targets (a target's decisions share one
model, so targets, not records, are resampled). A *null control* scores each target against a
random permutation of its own membership: it shows the spread of the metrics when there is
nothing to find, which is what an AUC below 0.5 has to be read against. (Another run's
membership would not do: in the leave-one-out game every other run is one of the target's
shadows, so its membership is built into the scores.)

:func:`game_run` reads one run directory (the framework's job: config, checkpoint verified
against its manifest, the federation rebuilt from config and seed); :func:`play` plays an
attack; both are used by ``experiments/attacks_vs_privacy.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attacks.metrics import roc_auc, tpr_at_fpr
from privfed.attack_api import (
    Attack,
    Encoding,
    GroundTruth,
    Observation,
    Records,
    ShadowModel,
)
from privfed.client import UnitSpec

__all__ = ["GameMetric", "GameResult", "GameRun", "game_run", "play"]

#: False-positive rates at which the game reports the true-positive rate.
FPRS: tuple[float, ...] = (0.001, 0.01)


@dataclass(frozen=True)
class GameRun:
    """One run of the game, as the framework reads it.

    Attributes:
        run_dir: the run directory.
        seed: the run's seed.
        units: the run's model units.
        offsets: joint-vector offsets of the units.
        counter_base: index of the first participation counter.
        num_clients: population size.
        released: unit name -> final global model.
        members: group -> bool per record of the group's data source: in some client's
            training split.
        pool: group -> every record of the group's data source, in source order.
        canaries: group -> indices of the source's canaries (empty if it has none).
        accuracy: final mean client test accuracy per task.
        epsilon: largest record-level epsilon spent per data source.
    """

    run_dir: Path
    seed: int
    units: tuple[UnitSpec, ...]
    offsets: tuple[int, ...]
    counter_base: int
    num_clients: int
    released: dict[str, np.ndarray]
    members: dict[str, np.ndarray]
    pool: dict[str, Records]
    canaries: dict[str, np.ndarray]
    accuracy: dict[str, float]
    epsilon: dict[str, float]


def game_run(run_dir: str | Path) -> GameRun:
    """Read a finished run directory for the game.

    Raises:
        AttackSetupError: the directory is not a finished run (see
            :func:`privfed.attack_runner.load_run`).
    """
    from privfed.attack_runner import load_run
    from privfed.data.inputs import model_inputs
    from privfed.io import read_json, read_jsonl

    cfg, engine, state = load_run(run_dir)
    fed = engine.fed
    members: dict[str, np.ndarray] = {}
    pool: dict[str, Records] = {}
    canaries: dict[str, np.ndarray] = {}
    for g, gs in fed.groups.items():
        n = len(gs.source)
        mask = np.zeros(n, dtype=bool)
        for cg in gs.clients.values():
            mask[cg.train] = True
        members[g] = mask
        idx = np.arange(n)
        pool[g] = Records(
            model_inputs(gs.source, idx),
            {t: np.asarray(v, dtype=np.int64) for t, v in gs.source.labels.items()},
        )
        canaries[g] = np.asarray(gs.source.meta.get("canaries", []), dtype=np.int64)
    last = read_jsonl(Path(run_dir) / "metrics.jsonl")
    tasks = last[-1]["tasks"] if last else {}
    privacy = read_json(Path(run_dir) / "privacy.json")
    summary = privacy.get("summary", {}) if isinstance(privacy, dict) else {}
    return GameRun(
        run_dir=Path(run_dir),
        seed=cfg.seed,
        units=tuple(fed.units),
        offsets=tuple(int(o) for o in fed.offsets),
        counter_base=int(fed.counter_base),
        num_clients=cfg.federation.num_clients,
        released={k: v.copy() for k, v in state.globals.items()},
        members=members,
        pool=pool,
        canaries=canaries,
        accuracy={t: float(m["mean_acc"]) for t, m in tasks.items()},
        epsilon={s: float(v.get("max", math.nan)) for s, v in summary.items()},
    )


@dataclass(frozen=True)
class GameMetric:
    """A pooled metric with its bootstrap interval over targets.

    Attributes:
        value: the metric on all targets' decisions pooled.
        low: 2.5th percentile over bootstrap resamples of the targets.
        high: 97.5th percentile.
    """

    value: float
    low: float
    high: float

    def format(self, digits: int = 3) -> str:
        """``0.712 [0.690, 0.733]``."""
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class GameResult:
    """What :func:`play` measured for one attack on one set of runs.

    Attributes:
        attack: the attack's name.
        targets: runs played as targets.
        shadows: shadow models per target.
        decisions: pooled membership decisions (targets x records).
        non_members: pooled non-member decisions.
        canary_decisions: pooled decisions on canaries.
        metrics: ``SCORE/SUBSET/METRIC`` -> pooled value and interval; SCORE is the attack's
            output (``online``, ``offline``, ``threshold``), SUBSET ``all`` or ``canaries``,
            METRIC ``auc`` or ``tpr@0.001fpr`` / ``tpr@0.01fpr``; the null control under
            ``null/...``.
    """

    attack: str
    targets: int
    shadows: int
    decisions: int
    non_members: int
    canary_decisions: int
    metrics: dict[str, GameMetric]


def _score_name(key: str) -> str:
    return key.split(":", 1)[0] if key.count(":") >= 2 else "online"


def _pooled(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    out = {"auc": roc_auc(scores, labels)}
    for fpr in FPRS:
        out[f"tpr@{fpr:g}fpr"] = tpr_at_fpr(scores, labels, fpr=fpr)
    return out


def _with_bootstrap(
    per_target: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    rng: np.random.Generator,
    resamples: int,
) -> dict[str, GameMetric]:
    scores = np.concatenate([s for s, _ in per_target])
    labels = np.concatenate([y for _, y in per_target])
    point = _pooled(scores, labels)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(resamples):
        pick = rng.integers(0, len(per_target), size=len(per_target))
        s = np.concatenate([per_target[i][0] for i in pick])
        y = np.concatenate([per_target[i][1] for i in pick])
        if y.all() or not y.any():
            continue
        for k, v in _pooled(s, y).items():
            draws[k].append(v)
    return {
        k: GameMetric(
            point[k],
            float(np.percentile(draws[k], 2.5)) if draws[k] else math.nan,
            float(np.percentile(draws[k], 97.5)) if draws[k] else math.nan,
        )
        for k in point
    }


def play(
    runs: Sequence[GameRun],
    attack: Attack,
    *,
    group: str,
    rng: np.random.Generator,
    targets: int = 0,
    resamples: int = 200,
) -> GameResult:
    """Play ``attack`` against each of the first ``targets`` runs with all others as shadows.

    Args:
        runs: game runs of one config (different seeds).
        attack: an attack whose threat model observes the released models and shadow models.
        group: the task group whose records are the challenge.
        rng: the attack's randomness and the bootstrap's.
        targets: runs played as targets (0: every run).
        resamples: bootstrap resamples of the targets.

    Raises:
        ValueError: fewer than 3 runs, or the runs do not share one record pool.
    """
    if len(runs) < 3:
        raise ValueError(f"the game needs at least 3 runs (1 target, 2 shadows), got {len(runs)}")
    n = len(runs[0].pool[group])
    if any(len(r.pool[group]) != n for r in runs):
        raise ValueError(f"the runs do not share the record pool of group {group!r}")
    tasks = [t for u in runs[0].units if u.group == group for t in u.tasks]
    if len(tasks) != 1:
        raise ValueError(f"the game scores one task; group {group!r} has {tasks}: give it one task")
    chosen = list(range(len(runs) if targets <= 0 else min(targets, len(runs))))
    canaries = runs[0].canaries.get(group, np.zeros(0, dtype=np.int64))
    per_score: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    null: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for j in chosen:
        target = runs[j]
        shadows = tuple(
            ShadowModel(released=r.released, members={group: r.members[group]})
            for i, r in enumerate(runs)
            if i != j
        )
        obs = Observation(
            threat_model=type(attack).threat_model,
            units=target.units,
            offsets=target.offsets,
            counter_base=target.counter_base,
            encoding=Encoding("plain"),
            num_clients=target.num_clients,
            released=target.released,
            challenge={group: target.pool[group]},
            shadows=shadows,
        )
        result = attack.run(obs, rng=rng)
        truth = GroundTruth(membership={group: target.members[group]})
        other = rng.permutation(target.members[group])
        for key, scores in result.outputs.items():
            if key.split(":")[-2] != group:
                continue
            name = _score_name(key)
            y = truth.membership[group]
            per_score.setdefault(f"{name}/all", []).append((scores, y))
            null.setdefault(f"{name}/all", []).append((scores, other))
            if len(canaries):
                per_score.setdefault(f"{name}/canaries", []).append((scores[canaries], y[canaries]))
    metrics: dict[str, GameMetric] = {}
    for key, pt in sorted(per_score.items()):
        for m, v in _with_bootstrap(pt, rng=rng, resamples=resamples).items():
            metrics[f"{key}/{m}"] = v
    for key, pt in sorted(null.items()):
        for m, v in _with_bootstrap(pt, rng=rng, resamples=resamples).items():
            metrics[f"null/{key}/{m}"] = v
    labels = np.concatenate([runs[j].members[group] for j in chosen])
    return GameResult(
        attack=attack.name,
        targets=len(chosen),
        shadows=len(runs) - 1,
        decisions=int(labels.size),
        non_members=int((~labels).sum()),
        canary_decisions=len(chosen) * len(canaries),
        metrics=metrics,
    )
