"""Run attacks against a finished run: build each adversary's view, run, then score.

The framework, not the attack, reads the run: it loads ``config.toml`` and
``checkpoint/state.ckpt`` (verified against the sha256 in ``manifest.json``; never unpickled),
rebuilds the federation from config and seed, and fills only the views
the threat model allows (:func:`observe_run`). For server and client views it replays one
observed round with :meth:`privfed.engine.Engine.play_round` on a copy of a state, never
touching the run directory, and reads the round's :class:`~privfed.round.RoundRecord`:

* ``observed_round="first"`` (default) replays round 1 from the common initialization. Every
  simulation draw is named by (purpose, round, client), so the clients' updates are exactly the
  ones of the run's first round (secure-aggregation masks are fresh cryptographic randomness, as
  in the run). This works with DP: no budget has been spent yet.
* ``observed_round="next"`` runs one more round from the final checkpoint (the released models).
  Under DP a client whose budget would be exceeded is skipped by the engine; if nobody trains,
  :class:`AttackSetupError` says so.

The ground truth (true updates, membership of challenge records, each client's training records)
goes into a separate :class:`~privfed.attack_api.GroundTruth` for the metric step only: the true
updates come from the replay's separate channel (:attr:`privfed.engine.PlayedRound.updates`),
never from the record.

:func:`run_attack` is the glue behind ``privfed attack``: it looks the attack up (entry points
of the group ``privfed.attacks``), builds the observation, runs
:meth:`~privfed.attack_api.Attack.run` **in a process of its own** that receives only the
observation (:func:`privfed.attack_sandbox.run_isolated`: no ground truth, no run directory, an
empty working directory), and only when the guesses are back assembles the
:class:`~privfed.attack_api.GroundTruth` and hands both to
:meth:`~privfed.attack_api.Attack.evaluate`. A ``nan`` metric without a note that names it gets
one saying so. A missing seed is drawn, and returned with the result so it can be written next
to the metrics (as breaching does). :func:`run_configured_attacks` runs a config's
``[[attacks]]``.
"""

from __future__ import annotations

import copy
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from privfed.attack_api import (
    ATTACKS,
    Attack,
    AttackParameterError,
    AttackResult,
    Encoding,
    GroundTruth,
    Observation,
    Records,
    ThreatModel,
    View,
)
from privfed.attack_sandbox import instantiate, run_isolated
from privfed.config import ExperimentConfig, load_config
from privfed.engine import Engine, RunState
from privfed.errors import CheckpointError, PrivfedError
from privfed.rng import int_seed, numpy_rng
from privfed.round import RoundRecord
from privfed.rundir import CHECKPOINT, LEGACY_CHECKPOINT

__all__ = [
    "AttackParameterError",
    "AttackRun",
    "AttackSetupError",
    "Prepared",
    "load_run",
    "make_attack",
    "observe_run",
    "run_attack",
    "run_configured_attacks",
]


class AttackSetupError(PrivfedError):
    """An attack cannot be run against this run directory (missing file, nothing observed)."""


@dataclass(frozen=True)
class Prepared:
    """An observation with its ground truth (kept apart; only the framework holds both)."""

    observation: Observation
    truth: GroundTruth


def _records(engine: Engine, group: str, split: str, client: int) -> Records:
    x, ys = engine.fed.tensors(group, split, client)
    return Records(x.numpy(), {t: y.numpy() for t, y in ys.items()})


def _concat(parts: list[Records]) -> Records:
    return Records(
        np.concatenate([p.x for p in parts]),
        {t: np.concatenate([p.labels[t] for p in parts]) for t in parts[0].labels},
    )


def load_run(run_dir: str | Path) -> tuple[ExperimentConfig, Engine, RunState]:
    """Config, engine and final state of a finished run directory.

    Raises:
        AttackSetupError: ``config.toml`` or the checkpoint is missing, or the checkpoint is
            damaged or not the one the run's manifest records.
    """
    run = Path(run_dir)
    if not (run / "config.toml").is_file():
        raise AttackSetupError(
            f"{run / 'config.toml'} does not exist; pass --run the directory of a finished "
            "`privfed run`"
        )
    if not (run / CHECKPOINT).is_file() and not (run / LEGACY_CHECKPOINT).is_file():
        raise AttackSetupError(
            f"{run / CHECKPOINT} does not exist; the run has not finished a round yet"
        )
    cfg = load_config(run / "config.toml")
    engine = Engine(cfg, run, progress=False, echo=lambda _msg: None)
    try:
        state = engine.load_checkpoint()
    except CheckpointError as exc:
        raise AttackSetupError(str(exc)) from None
    return cfg, engine, state


def observe_run(
    run_dir: str | Path,
    threat_model: ThreatModel,
    *,
    rng: np.random.Generator,
    observed_round: Literal["first", "next"] = "first",
    challenge_per_group: int = 400,
    adversary_clients: tuple[int, ...] = (0,),
) -> Prepared:
    """Build the observation for ``threat_model`` from ``run_dir``, and the ground truth.

    This is the framework's view of both (for tests and analysis code); :func:`run_attack`
    hands the observation to the attack in a process of its own and assembles the ground truth
    only after the attack's guesses are back.

    Args:
        run_dir: a finished ``privfed run`` directory.
        threat_model: what the attack may see.
        rng: draws the challenge records (which members and non-members are asked about).
        observed_round: which round server/client views come from (see the module docstring).
        challenge_per_group: at most this many members and as many non-members per group.
        adversary_clients: the clients a ``malicious-clients`` adversary controls (their own
            data and updates are all it sees of the clients).

    Raises:
        AttackSetupError: the run directory is incomplete or the observed round trained nobody.
    """
    observation, truth = _observe(
        run_dir,
        threat_model,
        rng=rng,
        observed_round=observed_round,
        challenge_per_group=challenge_per_group,
        adversary_clients=adversary_clients,
    )
    return Prepared(observation, truth())


def _untrained_reason(record: RoundRecord, run_dir: str | Path, r: int) -> str:
    """Why replaying round ``r`` gave the server no trained update (``""`` if it did)."""
    if record.trained > 0 and record.included and (record.aggregate is not None or record.observed):
        return ""
    if record.refused:
        why = f"the server refused the round: {record.refused}"
    elif record.aborted:
        why = f"secure aggregation aborted: {record.aborted}"
    elif record.trained > 0:
        why = "the clients trained but the algorithm sends the server nothing (e.g. local)"
    elif record.budget_skips:
        why = (
            f"every client's privacy budget is spent ({record.budget_skips} (client, unit) "
            "trainings skipped; clients with nothing to train send zeros)"
        )
    elif record.diverged:
        why = f"every training diverged ({record.diverged} non-finite results, not sent)"
    else:
        why = "no client of the cohort trained a unit"
    return (
        f"{run_dir}: replaying round {r + 1} trained no client: {why}; an attack on it would "
        "only see zeros. Observe the first round instead (--round first, or observed_round = "
        '"first" in [[attacks]])'
    )


def _observe(
    run_dir: str | Path,
    threat_model: ThreatModel,
    *,
    rng: np.random.Generator,
    observed_round: Literal["first", "next"],
    challenge_per_group: int,
    adversary_clients: tuple[int, ...],
) -> tuple[Observation, Callable[[], GroundTruth]]:
    """The observation, and a function that assembles the ground truth when called."""
    cfg, engine, state = load_run(run_dir)
    fed = engine.fed
    views = threat_model.observes
    layout, ddg = engine.server.layout, engine.server.ddg
    if ddg is not None:
        enc = Encoding("secagg+ddg", int(ddg.bits), 0, float(ddg.clip))
    elif cfg.federation.aggregator == "secagg":
        enc = Encoding("secagg", cfg.secagg.bits, cfg.secagg.scale_bits, cfg.secagg.clip)
    else:
        enc = Encoding("plain")
    kwargs: dict[str, object] = {}
    if View.RELEASED_MODELS in views:
        kwargs["released"] = {k: v.copy() for k, v in state.globals.items()}

    # Membership challenge: members are training records, non-members held-out test records.
    challenge: dict[str, Records] = {}
    membership: dict[str, np.ndarray] = {}
    train: dict[int, dict[str, Records]] = {}
    mean_image: dict[str, np.ndarray] = {}
    public: dict[str, Records] = {}
    for g, gs in fed.groups.items():
        clients = sorted(gs.clients)
        tr = [_records(engine, g, "train", c) for c in clients]
        te = [_records(engine, g, "test", c) for c in clients]
        va = [_records(engine, g, "val", c) for c in clients if len(gs.clients[c].val)]
        for c, rec in zip(clients, tr, strict=True):
            train.setdefault(c, {})[g] = rec
        members, non = _concat(tr), _concat(te)
        k = min(challenge_per_group, len(members), len(non))
        mi = rng.choice(len(members), size=k, replace=False)
        ni = rng.choice(len(non), size=k, replace=False)
        both = _concat(
            [
                Records(members.x[mi], {t: v[mi] for t, v in members.labels.items()}),
                Records(non.x[ni], {t: v[ni] for t, v in non.labels.items()}),
            ]
        )
        is_member = np.concatenate([np.ones(k, bool), np.zeros(k, bool)])
        order = rng.permutation(2 * k)
        challenge[g] = Records(both.x[order], {t: v[order] for t, v in both.labels.items()})
        membership[g] = is_member[order]
        mean_image[g] = (
            np.asarray(gs.source.x, dtype=np.float64).reshape(len(gs.source.x), -1).mean(axis=0)
        )
        if va:
            public[g] = _concat(va)
    kwargs["challenge"] = challenge
    if View.PUBLIC_DATA in views:
        kwargs["public"] = public

    updates: dict[int, np.ndarray] = {}
    needs_round = views & {View.AGGREGATE, View.SERVER_INBOX, View.OWN_CLIENT}
    if needs_round:
        if observed_round == "first":
            start = engine.fresh_state()
            r = 0
        else:
            start = copy.deepcopy(state)
            r = state.next_round
        broadcast = {k: v.copy() for k, v in start.globals.items()}
        with engine:
            played = engine.play_round(r, start, keep_updates=True)
        record = played.record
        reason = _untrained_reason(record, run_dir, r)
        if reason:
            raise AttackSetupError(reason)
        kwargs.update(round_index=r, broadcast=broadcast, included=tuple(record.included))
        if View.AGGREGATE in views:
            if record.aggregate is None:
                raise AttackSetupError(
                    f"{run_dir}: algorithm {cfg.federation.algorithm!r} sends the server each "
                    "client's model, never a sum: there is no aggregate to observe; use an "
                    "attack on the server inbox"
                )
            kwargs["aggregate"] = np.asarray(record.aggregate).copy()
        if View.SERVER_INBOX in views:
            kwargs["inbox"] = {c: np.asarray(v).copy() for c, v in record.observed.items()}
        if View.OWN_CLIENT in views:
            kwargs["own"] = {c: train[c] for c in adversary_clients if c in train}
            kwargs["own_updates"] = {
                c: v.copy() for c, v in played.updates.items() if c in adversary_clients
            }
        updates = {c: v.copy() for c, v in played.updates.items()}

    obs = Observation(
        threat_model=threat_model,
        units=tuple(fed.units),
        offsets=tuple(int(o) for o in fed.offsets),
        counter_base=int(layout.counter_base),
        counters=bool(layout.counters),
        clip_bit=bool(layout.clip_bit),
        encoding=enc,
        num_clients=cfg.federation.num_clients,
        secagg=cfg.secagg if cfg.federation.aggregator == "secagg" else None,
        recipe={
            "rounds": float(cfg.rounds),
            "local_steps": float(cfg.train.local_steps),
            "batch_size": float(cfg.train.batch_size),
            "lr": float(cfg.train.lr),
            "clients": float(cfg.federation.num_clients),
        },
        **kwargs,  # type: ignore[arg-type]
    )

    def truth() -> GroundTruth:
        return GroundTruth(
            membership=membership, updates=updates, train=train, mean_image=mean_image
        )

    return obs, truth


@dataclass(frozen=True)
class AttackRun:
    """One attack run: its result, the seed used and where it ran.

    Attributes:
        result: the evaluated result.
        seed: the seed of every random draw of the attack and the challenge.
        run_dir: the attacked run directory.
        threat_model: ``ThreatModel.describe()`` of the attack.
    """

    result: AttackResult
    seed: int
    run_dir: Path
    threat_model: str


def make_attack(name: str, params: Mapping[str, str] | None = None) -> Attack:
    """Instantiate the registered attack ``name`` with string ``params`` (``key=value``).

    Each value is converted to the type of the keyword's default in ``__init__``.

    Raises:
        RegistryError: unknown attack (the message lists the registered ones).
        AttackParameterError: unknown parameter or a value of the wrong type.
    """
    return instantiate(ATTACKS.get(name), name, params)


def explain_nans(result: AttackResult) -> AttackResult:
    """``result`` with a note for every ``nan`` metric that no note names.

    An attack should say why a metric is undefined (see the built-in inversions); this makes
    sure a reader never meets a bare ``nan``.
    """
    silent = [
        k
        for k, v in sorted(result.metrics.items())
        if math.isnan(float(v)) and not any(k in note for note in result.notes)
    ]
    if not silent:
        return result
    return result.with_metrics(
        {},
        f"{', '.join(silent)}: nan, and the attack {result.attack!r} gave no reason; the "
        "metric is undefined for this run (ask the attack's authors to say why in a note)",
    )


def run_attack(
    name: str,
    run_dir: str | Path,
    *,
    seed: int | None = None,
    params: Mapping[str, str] | None = None,
    observed_round: Literal["first", "next"] = "first",
    echo: Callable[[str], None] = print,
) -> AttackRun:
    """Run the attack ``name`` against ``run_dir`` and evaluate it.

    The attack's :meth:`~privfed.attack_api.Attack.run` runs in a process of its own that
    receives only the observation (:mod:`privfed.attack_sandbox`); the ground truth is put
    together after its guesses are back, and :meth:`~privfed.attack_api.Attack.evaluate` runs
    here on a fresh instance.

    Args:
        name: registered attack name.
        run_dir: a finished run directory.
        seed: root seed of the attack's randomness; None draws one (returned in the result).
        params: ``key -> value`` strings for the attack's keyword arguments.
        observed_round: which round server/client views replay (see the module docstring).
        echo: where the attack's own printed output goes.

    Raises:
        RegistryError: unknown or broken attack plug-in.
        AttackParameterError: a parameter is unknown or of the wrong type.
        AttackSetupError: the run directory cannot be attacked (incomplete, or the observed
            round trained nobody).
        AttackFailed: the attack refused the run (its message), crashed, or returned a
            malformed result.
    """
    cls = ATTACKS.get(name)
    attack = make_attack(name, params)  # refuses bad parameters before any work
    if seed is None:
        seed = secrets.randbits(62)
    observation, truth = _observe(
        run_dir,
        cls.threat_model,
        rng=numpy_rng(seed, "attack-challenge"),
        observed_round=observed_round,
        challenge_per_group=400,
        adversary_clients=(0,),
    )
    raw = run_isolated(cls, name=name, params=params, observation=observation, seed=seed, echo=echo)
    del observation
    try:
        result = attack.evaluate(raw, truth())
    except ValueError as exc:
        raise PrivfedError(f"attack {name!r} on {run_dir}: scoring failed: {exc}") from None
    return AttackRun(
        result=explain_nans(result),
        seed=seed,
        run_dir=Path(run_dir),
        threat_model=cls.threat_model.describe(),
    )


def run_configured_attacks(
    cfg: ExperimentConfig, run_dir: Path, *, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run ``cfg``'s ``[[attacks]]`` against its finished run directory (``attacks.json``).

    A repeated attack is reported as ``NAME#i`` (``i`` its place in the list).
    """
    out: dict[str, Any] = {}
    for i, a in enumerate(cfg.attacks):
        seed = a.seed if a.seed >= 0 else int_seed(cfg.seed, f"attack:{a.name}", i)
        t0 = time.perf_counter()
        res = run_attack(
            a.name,
            run_dir,
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
        echo(
            f"attack {key}: "
            + ", ".join(f"{k}={v:.4g}" for k, v in sorted(res.result.metrics.items()))
        )
    return out
