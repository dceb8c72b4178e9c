"""Record-level privacy planning: noise per (client, data source), admission, delta checks.

Pure functions the round planner calls *before* any training:

* :func:`plan_record_level` runs once at start. For every (client, data source) it lists the
  DP-SGD trainings the client takes on those records in one participation (every task group,
  model unit and algorithm phase that trains on the source, each with its own sampling rate),
  calibrates one noise multiplier so that the whole planned run meets ``dp.target_epsilon``
  (:func:`~privfed.privacy.accounting.calibrate_noise_composed`), and refuses budgets no client
  can meet and deltas that make the guarantee meaningless. It returns a :class:`RecordPlan`.
* before each dispatch, :meth:`privfed.privacy.ledger.SourceLedger.admit` takes a client's
  trainings on one source this round (:meth:`SourcePlan.events`) and says which ones fit in
  the remaining budget (greedy, in order), so a client never starts a training that would
  overspend.

**The unit of privacy** is one training record of one (client, data source). Records of a source
belong to one client whatever the number of task groups on it (the engine partitions a source
once), so every training on those records composes on one ledger. Groups on one source may
still train on different subsets (e.g. canaries inserted into one group only) with different
sampling rates; composing every event on the ledger is then conservative for each record.

**Public counts.** A client's sampling rate ``q = 1 / ceil(n / batch_size)`` and its calibrated
noise are functions of its record count ``n``, so the guarantee assumes ``n`` is public. With
``dp.public_sampling`` every client uses the rate of a configured nominal count
(:func:`public_sample_rate`) and a noise multiplier calibrated for every training the source
can receive, so nothing the mechanism does depends on a private count.

**delta.** A mechanism that publishes each record with probability delta satisfies (0,
delta)-DP; with ``delta >= 1 / n`` it exposes one of ``n`` records in expectation, and values
"on the order of 1/n are very dangerous" (Dwork and Roth 2014, Sec. 2.3). :func:`check_delta`
refuses ``delta * n >= 1`` and warns loudly for ``delta * n >= 0.1``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from privfed.errors import ConfigError, PrivacyBudgetError
from privfed.privacy.accounting import (
    DPEvent,
    calibrate_noise_composed,
    plan_epsilon,
    smallest_feasible_epsilon,
)

__all__ = [
    "DELTA_REFUSE",
    "DELTA_WARN",
    "DeltaCheck",
    "PlannedTraining",
    "RecordPlan",
    "SourceHolding",
    "SourcePlan",
    "check_delta",
    "plan_record_level",
    "public_sample_rate",
    "sample_rate_for",
]

DELTA_REFUSE = 1.0
"""``delta * n`` at or above which a guarantee is refused (one record exposed in expectation)."""

DELTA_WARN = 0.1
"""``delta * n`` at or above which a guarantee is accepted with a loud warning."""


def sample_rate_for(n_records: int, batch_size: int) -> float:
    """The Poisson rate of ``n_records`` at ``batch_size``: ``1 / ceil(n / batch_size)``.

    What Opacus derives from a data loader (``1 / len(loader)``); ``1.0`` for a client with at
    most one batch of records (no amplification).
    """
    batches = max(1, -(-int(n_records) // int(batch_size)))
    return 1.0 / batches


def public_sample_rate(*, nominal_records: int, batch_size: int) -> float:
    """The sampling rate every client uses under ``dp.public_sampling``.

    The rate of a client holding exactly ``nominal_records`` (:func:`sample_rate_for`), a
    public configuration value, so the rate reveals nothing about a client's real count.
    """
    if nominal_records < 1:
        raise ConfigError(
            f"dp.nominal_records must be >= 1 with dp.public_sampling, got {nominal_records}"
        )
    return sample_rate_for(nominal_records, batch_size)


@dataclass(frozen=True, kw_only=True)
class DeltaCheck:
    """Outcome of :func:`check_delta`.

    Attributes:
        refuse: whether the guarantee is meaningless and must be refused.
        message: why, naming the field and the largest acceptable delta; empty if fine.
    """

    refuse: bool
    message: str

    @property
    def warn(self) -> bool:
        """Whether the guarantee is accepted with a warning."""
        return bool(self.message) and not self.refuse


def check_delta(*, delta: float, n: int, field_name: str, unit: str) -> DeltaCheck:
    """Refuse ``delta >= 1/n``, warn for ``delta >= 0.1/n`` (see the module docstring).

    Args:
        delta: the delta of the guarantee.
        n: the number of protected units (records of the largest client's source, clients).
        field_name: the config field holding delta (for the message).
        unit: what ``n`` counts, e.g. ``"records of client 3 on 'digits'"``.

    Returns:
        A :class:`DeltaCheck`.
    """
    exposure = delta * n
    if exposure >= DELTA_REFUSE:
        return DeltaCheck(
            refuse=True,
            message=(
                f"{field_name} = {delta:g} is at least 1/n for the {n} {unit} (delta * n = "
                f"{exposure:.3g}): such a guarantee allows publishing one of them outright; "
                f"set {field_name} below {DELTA_WARN / n:.3g} (below {1.0 / n:.3g} is required)"
            ),
        )
    if exposure >= DELTA_WARN:
        return DeltaCheck(
            refuse=False,
            message=(
                f"{field_name} = {delta:g} is within a factor 10 of 1/n for the {n} {unit} "
                f"(delta * n = {exposure:.3g}); deltas of the order of 1/n are dangerous "
                f"(Dwork and Roth 2014, Sec. 2.3): use {field_name} < {DELTA_WARN / n:.3g}"
            ),
        )
    return DeltaCheck(refuse=False, message="")


@dataclass(frozen=True, kw_only=True)
class PlannedTraining:
    """One model unit's DP-SGD training on one client's records of one source, per participation.

    Attributes:
        unit: the unit's name.
        sample_rate: Poisson sampling rate q of its steps.
        steps: DP-SGD steps per participation (``local_steps`` times the algorithm's trainings
            per participation, e.g. FedRep's two phases or Ditto's personal model).
    """

    unit: str
    sample_rate: float
    steps: int


@dataclass(frozen=True, kw_only=True)
class SourceHolding:
    """What one client holds of one data source, as the planner needs it.

    Attributes:
        records: training records of the client on the source (the union over its groups).
        units: ``(unit name, training records of that unit's group)`` for every unit the
            client trains on the source, in training order.
    """

    records: int
    units: tuple[tuple[str, int], ...]


@dataclass(frozen=True, kw_only=True)
class SourcePlan:
    """The resolved plan of one (client, data source).

    Attributes:
        client: client id.
        source: data-source name (the ledger key).
        noise_multiplier: sigma of every DP-SGD step on the source.
        trainings: what one participation trains on the source, in order.
        participations: planned participations (``ceil(rounds * planned_participation)``).
        planned_epsilon: the composed spend of every planned step at ``noise_multiplier``
            (what calibration bounds by the target; above it only with a fixed noise
            multiplier, whose excess the budget check stops).
    """

    client: int
    source: str
    noise_multiplier: float
    trainings: tuple[PlannedTraining, ...]
    participations: int
    planned_epsilon: float

    def events(self) -> list[DPEvent]:
        """One participation's trainings as DP events at this plan's noise multiplier."""
        return [
            DPEvent(
                noise_multiplier=self.noise_multiplier, sample_rate=t.sample_rate, steps=t.steps
            )
            for t in self.trainings
        ]


@dataclass(frozen=True, kw_only=True)
class RecordPlan:
    """Noise and sampling of every (client, data source) for a whole run.

    Attributes:
        sources: the plan of each (client, source) key.
        public_sample_rate: the common sampling rate under ``dp.public_sampling``, else None.
        public_batch_size: the public normalizer of the averaged clipped gradient under
            ``dp.public_sampling`` (the expected batch of a nominal client), else None.
        warnings: problems accepted with a warning (each names the field and the fix).
        assumptions: what the guarantee assumes, in words (for ``privacy.json``).
    """

    sources: Mapping[tuple[int, str], SourcePlan]
    public_sample_rate: float | None
    public_batch_size: int | None
    warnings: tuple[str, ...] = ()
    assumptions: tuple[str, ...] = field(default_factory=tuple)

    def noise_multiplier(self, client: int, source: str) -> float:
        """The planned sigma of ``client`` on ``source``."""
        return self.sources[(client, source)].noise_multiplier


def plan_record_level(
    *,
    target_epsilon: float,
    delta: float,
    noise_multiplier: float,
    planned_participation: float,
    public_sampling: bool,
    nominal_records: int,
    rounds: int,
    local_steps: int,
    batch_size: int,
    trainings_per_participation: int,
    holdings: Mapping[tuple[int, str], SourceHolding],
    units_by_source: Mapping[str, Sequence[tuple[str, int]]],
) -> RecordPlan:
    """Calibrate (or check) the noise of every (client, data source) before any training.

    Args:
        target_epsilon: ``dp.target_epsilon`` (finite; record-level DP must be on).
        delta: ``dp.delta``.
        noise_multiplier: ``dp.noise_multiplier`` (0: calibrate).
        planned_participation: ``dp.planned_participation``.
        public_sampling: ``dp.public_sampling``.
        nominal_records: ``dp.nominal_records`` (used with ``public_sampling``).
        rounds: federated rounds.
        local_steps: ``train.local_steps``.
        batch_size: ``train.batch_size``.
        trainings_per_participation: the algorithm's DP trainings of a unit per participation.
        holdings: what each client holds of each source (:class:`SourceHolding`).
        units_by_source: every ``(unit, trainings per participation)`` that can train on each
            source, whoever holds it (the public plan under ``public_sampling``).

    Returns:
        The :class:`RecordPlan`.

    Raises:
        ConfigError: a budget no client can meet (naming the smallest feasible epsilon or
            noise multiplier), or a delta at or above ``1 / records`` of some client's source.
    """
    problems: list[str] = []
    warnings: list[str] = []
    participations = max(1, math.ceil(rounds * planned_participation))
    per_participation = local_steps * trainings_per_participation

    worst = max(holdings.items(), key=lambda kv: kv[1].records, default=None)
    if worst is not None:
        (c, s), h = worst
        check = check_delta(
            delta=delta,
            n=h.records,
            field_name="dp.delta",
            unit=f"training records of client {c} on {s!r} (the largest client)",
        )
        if check.refuse:
            problems.append(check.message)
        elif check.warn:
            warnings.append(check.message)

    q_pub: float | None = None
    b_pub: int | None = None
    if public_sampling:
        q_pub = public_sample_rate(nominal_records=nominal_records, batch_size=batch_size)
        b_pub = max(1, int(nominal_records * q_pub))

    def trainings_of(key: tuple[int, str], h: SourceHolding) -> tuple[PlannedTraining, ...]:
        if q_pub is not None:
            return tuple(
                PlannedTraining(unit=u, sample_rate=q_pub, steps=per_participation)
                for u, _ in h.units
            )
        return tuple(
            PlannedTraining(
                unit=u, sample_rate=sample_rate_for(n, batch_size), steps=per_participation
            )
            for u, n in h.units
        )

    def calibration_plan(key: tuple[int, str], own: tuple[PlannedTraining, ...]) -> list:
        if q_pub is not None:  # every training the source can receive, whoever holds it
            return [(q_pub, participations * local_steps * k) for _, k in units_by_source[key[1]]]
        return [(t.sample_rate, participations * t.steps) for t in own]

    sources: dict[tuple[int, str], SourcePlan] = {}
    infeasible: list[tuple[tuple[int, str], float]] = []
    cannot_train: list[tuple[tuple[int, str], float]] = []
    for key, h in holdings.items():
        own = trainings_of(key, h)
        plan = calibration_plan(key, own)
        if noise_multiplier > 0:
            sigma = float(noise_multiplier)
            cheapest = min(
                plan_epsilon([(t.sample_rate, t.steps)], noise_multiplier=sigma, delta=delta)
                for t in own
            )
            if cheapest > target_epsilon:
                cannot_train.append((key, cheapest))
        else:
            try:
                sigma = calibrate_noise_composed(
                    target_epsilon=target_epsilon, delta=delta, plan=plan
                )
            except PrivacyBudgetError:
                infeasible.append((key, smallest_feasible_epsilon(plan, delta=delta)))
                continue
        sources[key] = SourcePlan(
            client=key[0],
            source=key[1],
            noise_multiplier=sigma,
            trainings=own,
            participations=participations,
            planned_epsilon=plan_epsilon(plan, noise_multiplier=sigma, delta=delta),
        )
    if infeasible:
        floor = max(e for _, e in infeasible)
        (c, s), _ = infeasible[0]
        problems.append(
            f"dp.target_epsilon = {target_epsilon:g} cannot be met by {len(infeasible)} of "
            f"{len(holdings)} (client, source) pairs (e.g. client {c} on {s!r}) at dp.delta = "
            f"{delta:g}, whatever the noise: the smallest feasible epsilon is {floor:.4g}; "
            "raise dp.target_epsilon or dp.delta"
        )
    if cannot_train:
        (c, s), e = min(cannot_train, key=lambda kv: kv[1])
        needed = calibrate_noise_composed(
            target_epsilon=target_epsilon,
            delta=delta,
            plan=[(t.sample_rate, t.steps) for t in trainings_of((c, s), holdings[(c, s)])[:1]],
        )
        message = (
            f"dp.noise_multiplier = {noise_multiplier:g} cannot meet dp.target_epsilon = "
            f"{target_epsilon:g} for one participation of {len(cannot_train)} of "
            f"{len(holdings)} (client, source) pairs: one training of {local_steps} step(s) "
            f"costs at least {e:.4g}"
        )
        if len(cannot_train) == len(holdings):
            problems.append(
                message + f" for every client (the smallest feasible epsilon is {e:.4g}), so no "
                f"client would ever train; raise dp.noise_multiplier to >= {needed:.4g}, lower "
                "train.local_steps or raise dp.target_epsilon"
            )
        else:
            warnings.append(message + "; those clients never train on that source")
    if problems:
        raise ConfigError(problems)
    assumptions = [
        "unit: one training record of one client's data source; every training on a source's "
        "records (all task groups, model units and algorithm phases) composes on one ledger",
        "the partition of records into clients and groups is fixed (neighbouring data sets "
        "differ in one training record of one client's source)",
        "noise and sampling are simulation randomness drawn from the run seed; a deployment "
        "must draw them from a cryptographically secure generator (Opacus secure_mode)",
    ]
    if public_sampling:
        assumptions.append(
            f"public sampling: every client samples at rate {q_pub:.6g} (a nominal "
            f"{nominal_records} records) with noise calibrated for every training its source "
            "can receive, so no private record count enters the mechanism"
        )
    else:
        assumptions.append(
            "each client's record count is treated as public: its sampling rate and noise "
            "multiplier are derived from it (set dp.public_sampling to drop this assumption)"
        )
    return RecordPlan(
        sources=sources,
        public_sample_rate=q_pub,
        public_batch_size=b_pub,
        warnings=tuple(warnings),
        assumptions=tuple(assumptions),
    )
