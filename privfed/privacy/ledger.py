"""Per-client, per-data-source privacy ledgers: thin stateful objects over :mod:`.accounting`.

A :class:`SourceLedger` holds the DP events actually taken on one client's one data source.
Tasks that train on the same records (e.g. digit identity, parity and ">= 5" on the same
images) all record into the same ledger, so their steps compose (Mironov 2017, Prop. 1).

Each ledger keeps a running RDP total per order, so recording a step and asking for the RDP
epsilon cost O(number of orders), never a recomputation of the history as Opacus's accountants
do on every query. The PRV accountant (Gopi et al. 2021) is available for reports.

Serialized form (``SourceLedger.to_dict``), used for ``privacy.json`` and checkpoints::

    {"client": 3, "source": "digits", "delta": 1e-05, "accountant": "rdp",
     "target_epsilon": 8.0, "events": [{"noise_multiplier": 1.1, "sample_rate": 0.02,
     "steps": 40}], "steps_by_task": {"digit": 20, "parity": 20}, "epsilon": 1.234}

Infinite values (no-noise training, an unlimited target) are written as the string ``"inf"``
because JSON has no infinity.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

from privfed.errors import PrivacyBudgetError
from privfed.privacy.accounting import (
    DEFAULT_ORDERS,
    DPEvent,
    check_accountant,
    epsilon_from_rdp,
    prv_epsilon,
    rdp_vector,
)

__all__ = [
    "DistributedLedger",
    "DistributedRound",
    "PrivacyLedger",
    "SourceLedger",
    "SourceSummary",
]


def _float_to_json(value: float) -> float | str:
    return "inf" if math.isinf(value) and value > 0 else float(value)


def _float_from_json(value: float | str, *, name: str) -> float:
    if isinstance(value, str):
        if value == "inf":
            return math.inf
        raise PrivacyBudgetError(f"{name} must be a number or the string 'inf', got {value!r}")
    return float(value)


class SourceLedger:
    """The DP events taken on one client's one data source, with running RDP totals.

    Recording is what happened, not what is allowed: the engine asks :meth:`would_exceed`
    before training and calls :meth:`record` with the steps actually taken.

    Args:
        client: client id.
        source: data-source name (records shared by the tasks that train on it).
        delta: delta at which epsilon is reported.
        target_epsilon: the budget of this source; ``math.inf`` for no limit.
        accountant: ``"rdp"`` (running totals, cheap) or ``"prv"`` (tighter, slow, cached);
            the accountant :meth:`epsilon` uses by default and :meth:`would_exceed` enforces.
    """

    def __init__(
        self,
        client: int,
        source: str,
        *,
        delta: float,
        target_epsilon: float,
        accountant: str = "rdp",
    ) -> None:
        check_accountant(accountant)
        if not 0 < delta < 1:
            raise PrivacyBudgetError(f"delta must be in (0, 1), got {delta}")
        if math.isnan(target_epsilon) or target_epsilon <= 0:
            raise PrivacyBudgetError(
                f"target_epsilon must be > 0 (math.inf for no limit), got {target_epsilon}"
            )
        self.client = int(client)
        self.source = str(source)
        self.delta = float(delta)
        self.target_epsilon = float(target_epsilon)
        self.accountant = accountant
        self._events: list[DPEvent] = []
        self._steps_by_task: dict[str, int] = {}
        # Running total = _closed (events before the last one, summed left to right)
        # + rdp_vector(last event). Merging into the last event only recomputes its term,
        # so the total is bit-identical to a from-scratch left-to-right sum.
        self._closed = np.zeros(len(DEFAULT_ORDERS), dtype=np.float64)
        self._total = self._closed.copy()
        self._eps_cache: dict[str, float] = {}

    # ------------------------------------------------------------------ state
    @property
    def events(self) -> tuple[DPEvent, ...]:
        """The DP events in order; consecutive steps with equal (sigma, q) are merged."""
        return tuple(self._events)

    @property
    def steps_by_task(self) -> dict[str, int]:
        """Steps recorded per task (a copy)."""
        return dict(self._steps_by_task)

    @property
    def steps(self) -> int:
        """Total steps recorded on this source."""
        return sum(e.steps for e in self._events)

    @property
    def rdp(self) -> np.ndarray:
        """The running RDP total at :data:`DEFAULT_ORDERS` (a copy)."""
        return self._total.copy()

    def record(self, *, noise_multiplier: float, sample_rate: float, steps: int, task: str) -> None:
        """Append ``steps`` DP-SGD steps taken by ``task`` on this source.

        Merges into the previous event if sigma and q are identical (as Opacus's accountants
        do), and updates the running RDP total in O(number of orders).

        Args:
            noise_multiplier: sigma used for these steps.
            sample_rate: Poisson sampling rate q used for these steps.
            steps: number of steps taken; 0 records nothing.
            task: the task that took them (for per-task reporting).

        Raises:
            PrivacyBudgetError: if an argument is out of range.
        """
        event = DPEvent(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
        if steps == 0:
            return
        self._steps_by_task[task] = self._steps_by_task.get(task, 0) + int(steps)
        last = self._events[-1] if self._events else None
        if (
            last is not None
            and last.noise_multiplier == event.noise_multiplier
            and last.sample_rate == event.sample_rate
        ):
            event = DPEvent(
                noise_multiplier=last.noise_multiplier,
                sample_rate=last.sample_rate,
                steps=last.steps + event.steps,
            )
            self._events[-1] = event
        else:
            if last is not None:
                self._closed = self._closed + _event_rdp(last)
            self._events.append(event)
        self._total = self._closed + _event_rdp(event)
        self._eps_cache.clear()

    # ---------------------------------------------------------------- queries
    def epsilon(self, accountant: str | None = None) -> float:
        """Epsilon spent so far at this ledger's delta.

        Args:
            accountant: ``"rdp"`` reads the running total (Balle et al. 2020 conversion, equal to
                Opacus's RDP accountant); ``"prv"`` runs Opacus's PRV accountant on the events
                (slow, cached). ``None`` uses the ledger's accountant.

        Returns:
            Epsilon; ``0.0`` before any step, ``math.inf`` if any step had no noise.
        """
        name = self.accountant if accountant is None else accountant
        cached = self._eps_cache.get(name)
        if cached is not None:
            return cached
        check_accountant(name)
        if name == "rdp":
            eps = epsilon_from_rdp(self._total, delta=self.delta)
        else:
            eps = prv_epsilon(self._events, delta=self.delta)
        self._eps_cache[name] = eps
        return eps

    def would_exceed(self, *, noise_multiplier: float, sample_rate: float, steps: int) -> bool:
        """Whether recording these steps would push epsilon above ``target_epsilon``.

        With the PRV accountant the RDP bound is tried first: if RDP already certifies the
        budget, the slow PRV computation is skipped.

        Args:
            noise_multiplier: sigma of the planned steps.
            sample_rate: q of the planned steps.
            steps: number of planned steps.

        Returns:
            True if the budget would be exceeded (do not train), False otherwise.
        """
        if math.isinf(self.target_epsilon):
            return False
        planned = DPEvent(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
        rdp_eps = epsilon_from_rdp(self._total + _event_rdp(planned), delta=self.delta)
        if rdp_eps <= self.target_epsilon or self.accountant == "rdp":
            return rdp_eps > self.target_epsilon
        return prv_epsilon([*self._events, planned], delta=self.delta) > self.target_epsilon

    def admit(self, planned: Sequence[DPEvent]) -> tuple[bool, ...]:
        """Which of a participation's planned trainings fit in the remaining budget.

        Greedy in the given order: a training is admitted if the events recorded so far, the
        trainings admitted before it and itself stay within ``target_epsilon``; a training
        that does not fit is skipped and the next one is tried (a smaller one may still fit).
        Nothing is recorded. This is the pre-dispatch check: a client takes only admitted
        trainings, so the ledger never exceeds its target (with the RDP accountant; with PRV,
        a training RDP refuses is re-checked with PRV as :meth:`would_exceed` does).

        Args:
            planned: the trainings one participation would take on this source, in order.

        Returns:
            One flag per planned training.
        """
        if math.isinf(self.target_epsilon):
            return tuple(True for _ in planned)
        total = self._total.copy()
        history = list(self._events)
        out = []
        for event in planned:
            trial = total + _event_rdp(event)
            eps = epsilon_from_rdp(trial, delta=self.delta)
            fits = eps <= self.target_epsilon
            if not fits and self.accountant == "prv":
                fits = prv_epsilon([*history, event], delta=self.delta) <= self.target_epsilon
            if fits:
                total = trial
                history.append(event)
            out.append(fits)
        return tuple(out)

    # ---------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: ids, delta, accountant, target, events, per-task steps, epsilon.

        ``epsilon`` is computed with the ledger's accountant; infinities are written ``"inf"``.
        """
        return {
            "client": self.client,
            "source": self.source,
            "delta": self.delta,
            "accountant": self.accountant,
            "target_epsilon": _float_to_json(self.target_epsilon),
            "events": [e.to_dict() for e in self._events],
            "steps_by_task": dict(self._steps_by_task),
            "epsilon": _float_to_json(self.epsilon()),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceLedger:
        """Rebuild a ledger from :meth:`to_dict` output (running totals are recomputed).

        Raises:
            PrivacyBudgetError: if a field is missing or invalid.
        """
        try:
            ledger = cls(
                int(data["client"]),
                str(data["source"]),
                delta=float(data["delta"]),
                target_epsilon=_float_from_json(data["target_epsilon"], name="target_epsilon"),
                accountant=str(data["accountant"]),
            )
            events = [DPEvent.from_dict(e) for e in data["events"]]
            steps_by_task = {str(k): int(v) for k, v in data["steps_by_task"].items()}
        except KeyError as exc:
            raise PrivacyBudgetError(
                f"privacy ledger entry lacks the field {exc.args[0]!r}"
            ) from None
        for event in events:
            if ledger._events:
                ledger._closed = ledger._closed + _event_rdp(ledger._events[-1])
            ledger._events.append(event)
        if events:
            ledger._total = ledger._closed + _event_rdp(events[-1])
        ledger._steps_by_task = steps_by_task
        return ledger

    def __repr__(self) -> str:
        return (
            f"SourceLedger(client={self.client}, source={self.source!r}, "
            f"events={len(self._events)}, steps={self.steps}, accountant={self.accountant!r})"
        )


def _event_rdp(event: DPEvent) -> np.ndarray:
    return rdp_vector(
        noise_multiplier=event.noise_multiplier, sample_rate=event.sample_rate, steps=event.steps
    )


class SourceSummary(TypedDict):
    """Epsilon spread over the clients of one data source."""

    max: float
    mean: float
    clients: int


class PrivacyLedger:
    """All source ledgers of a run, keyed by (client, source).

    Args:
        delta: delta of ledgers created by :meth:`get`.
        target_epsilon: budget of ledgers created by :meth:`get` (``math.inf`` for no limit).
        accountant: accountant of ledgers created by :meth:`get`.
    """

    def __init__(self, *, delta: float, target_epsilon: float, accountant: str = "rdp") -> None:
        # Validate the defaults now rather than at the first get().
        SourceLedger(0, "", delta=delta, target_epsilon=target_epsilon, accountant=accountant)
        self.delta = float(delta)
        self.target_epsilon = float(target_epsilon)
        self.accountant = accountant
        self._ledgers: dict[tuple[int, str], SourceLedger] = {}

    def get(self, client: int, source: str) -> SourceLedger:
        """The ledger of (client, source), created empty with the defaults on first use."""
        key = (int(client), str(source))
        ledger = self._ledgers.get(key)
        if ledger is None:
            ledger = SourceLedger(
                key[0],
                key[1],
                delta=self.delta,
                target_epsilon=self.target_epsilon,
                accountant=self.accountant,
            )
            self._ledgers[key] = ledger
        return ledger

    def add(self, ledger: SourceLedger) -> None:
        """Insert an existing ledger.

        Raises:
            PrivacyBudgetError: if (client, source) already has a ledger.
        """
        key = (ledger.client, ledger.source)
        if key in self._ledgers:
            raise PrivacyBudgetError(
                f"a ledger for client {key[0]} and source {key[1]!r} already exists"
            )
        self._ledgers[key] = ledger

    def __getitem__(self, key: tuple[int, str]) -> SourceLedger:
        return self._ledgers[key]

    def __contains__(self, key: object) -> bool:
        return key in self._ledgers

    def __iter__(self) -> Iterator[SourceLedger]:
        return iter(list(self._ledgers.values()))

    def __len__(self) -> int:
        return len(self._ledgers)

    def summary(self, accountant: str | None = None) -> dict[str, SourceSummary]:
        """Per data source: max and mean epsilon over its clients and the number of clients.

        Args:
            accountant: as in :meth:`SourceLedger.epsilon` (``None``: each ledger's own).

        Returns:
            A dict from source name to its :class:`SourceSummary`, sources sorted by name.
        """
        by_source: dict[str, list[float]] = {}
        for ledger in self._ledgers.values():
            by_source.setdefault(ledger.source, []).append(ledger.epsilon(accountant))
        return {
            source: SourceSummary(max=float(max(eps)), mean=float(np.mean(eps)), clients=len(eps))
            for source, eps in sorted(by_source.items())
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict with the defaults and every ledger's :meth:`SourceLedger.to_dict`."""
        return {
            "delta": self.delta,
            "target_epsilon": _float_to_json(self.target_epsilon),
            "accountant": self.accountant,
            "ledgers": [ledger.to_dict() for ledger in self._ledgers.values()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyLedger:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            PrivacyBudgetError: if a field is missing or invalid.
        """
        try:
            ledger = cls(
                delta=float(data["delta"]),
                target_epsilon=_float_from_json(data["target_epsilon"], name="target_epsilon"),
                accountant=str(data["accountant"]),
            )
            entries = data["ledgers"]
        except KeyError as exc:
            raise PrivacyBudgetError(f"privacy ledger lacks the field {exc.args[0]!r}") from None
        for entry in entries:
            ledger.add(SourceLedger.from_dict(entry))
        return ledger


@dataclass(frozen=True, kw_only=True)
class DistributedRound:
    """One released round of the distributed discrete Gaussian, as the ledger keeps it.

    Attributes:
        round: 0-based round index.
        cohort: clients selected.
        threshold: the secure-aggregation threshold of that cohort.
        survivors: clients whose encodings were summed.
        colluders: clients whose noise the adversary may know.
        honest_worst: honest noise shares the protocol guarantees (``threshold - 1 -
            colluders``): what the round costs even if only ``threshold`` clients had survived.
        honest_realized: honest noise shares with the survivors counted (``survivors - 1 -
            colluders``, the protected client's own share excluded).
    """

    round: int
    cohort: int
    threshold: int
    survivors: int
    colluders: int
    honest_worst: int
    honest_realized: int

    def to_dict(self) -> dict[str, int]:
        """JSON-safe dict of the fields."""
        return {
            "round": self.round,
            "cohort": self.cohort,
            "threshold": self.threshold,
            "survivors": self.survivors,
            "colluders": self.colluders,
            "honest_worst": self.honest_worst,
            "honest_realized": self.honest_realized,
        }


class DistributedLedger:
    """The rounds released under the distributed discrete Gaussian, with running RDP totals.

    Two figures are kept: the *guaranteed* epsilon composes every round at its worst admissible
    number of honest noise shares (it holds whatever the server reports about survivors), and
    the *realized* epsilon composes the shares actually counted. The budget is enforced on the
    guaranteed figure before each round (:meth:`would_exceed`), so the realized one, never
    larger, stays within the target too.

    Args:
        params: the run's :class:`~privfed.privacy.distributed.DDGParams`.
        delta: delta at which epsilon is reported.
        target_epsilon: the client-level budget (``math.inf``: none).
    """

    def __init__(self, params: Any, *, delta: float, target_epsilon: float) -> None:
        from privfed.privacy.distributed import DDG_ORDERS

        if not 0 < delta < 1:
            raise PrivacyBudgetError(f"delta must be in (0, 1), got {delta}")
        self.params = params
        self.delta = float(delta)
        self.target_epsilon = float(target_epsilon)
        self.orders = DDG_ORDERS
        self._rounds: list[DistributedRound] = []
        self._worst = np.zeros(len(DDG_ORDERS))
        self._realized = np.zeros(len(DDG_ORDERS))
        self._curves: dict[int, np.ndarray] = {}

    def _curve(self, honest: int) -> np.ndarray:
        if honest not in self._curves:
            from privfed.privacy.distributed import ddg_round_rdp

            self._curves[honest] = ddg_round_rdp(params=self.params, honest=honest)
        return self._curves[honest]

    @property
    def rounds(self) -> tuple[DistributedRound, ...]:
        """The released rounds in order."""
        return tuple(self._rounds)

    def epsilon(self, *, realized: bool = False) -> float:
        """Guaranteed (default) or realized epsilon so far; ``0.0`` before any round."""
        if not self._rounds:
            return 0.0
        total = self._realized if realized else self._worst
        return epsilon_from_rdp(total, delta=self.delta, orders=self.orders)

    def would_exceed(self, honest_worst: int) -> bool:
        """Whether one more round guaranteeing ``honest_worst`` shares would pass the target.

        A round without any guaranteed honest share (``honest_worst <= 0``) always exceeds.
        """
        if honest_worst < 1:
            return True
        if math.isinf(self.target_epsilon):
            return False
        trial = self._worst + self._curve(honest_worst)
        return epsilon_from_rdp(trial, delta=self.delta, orders=self.orders) > self.target_epsilon

    def record(self, entry: DistributedRound) -> None:
        """Add a released round (its realized shares may not be below its guaranteed ones).

        Raises:
            PrivacyBudgetError: if ``honest_realized < honest_worst`` (inconsistent entry).
        """
        if entry.honest_realized < entry.honest_worst:
            raise PrivacyBudgetError(
                f"round {entry.round}: {entry.honest_realized} realized honest shares is below "
                f"the {entry.honest_worst} the protocol guarantees; the round's survivors "
                "cannot be fewer than its threshold"
            )
        self._rounds.append(entry)
        self._worst = self._worst + self._curve(entry.honest_worst)
        self._realized = self._realized + self._curve(entry.honest_realized)

    def history(self) -> list[dict[str, Any]]:
        """Per round: the entry's fields and the cumulative guaranteed and realized epsilon."""
        replay = DistributedLedger(self.params, delta=self.delta, target_epsilon=math.inf)
        out = []
        for entry in self._rounds:
            replay.record(entry)
            out.append(
                {
                    **entry.to_dict(),
                    "epsilon": replay.epsilon(),
                    "epsilon_realized": replay.epsilon(realized=True),
                    "target_epsilon": _float_to_json(self.target_epsilon),
                }
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: delta, target, the rounds (params are the run's, not stored)."""
        return {
            "delta": self.delta,
            "target_epsilon": _float_to_json(self.target_epsilon),
            "rounds": [r.to_dict() for r in self._rounds],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, params: Any) -> DistributedLedger:
        """Rebuild from :meth:`to_dict` output with the run's parameters.

        Raises:
            PrivacyBudgetError: if a field is missing or invalid.
        """
        try:
            ledger = cls(
                params,
                delta=float(data["delta"]),
                target_epsilon=_float_from_json(data["target_epsilon"], name="target_epsilon"),
            )
            for r in data["rounds"]:
                ledger.record(DistributedRound(**{k: int(r[k]) for k in _ROUND_FIELDS}))
        except KeyError as exc:
            raise PrivacyBudgetError(
                f"distributed ledger entry lacks the field {exc.args[0]!r}"
            ) from None
        return ledger


_ROUND_FIELDS = (
    "round",
    "cohort",
    "threshold",
    "survivors",
    "colluders",
    "honest_worst",
    "honest_realized",
)
