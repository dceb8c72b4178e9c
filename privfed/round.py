"""What crosses the client seam in one round, and what the round leaves behind.

The server side (:mod:`privfed.server`) builds one :class:`ClientTask` per selected client:
everything that client may know this round. The client side
(:func:`privfed.participation.participate`, run by a backend wherever the client lives)
returns a :class:`Participation`: what it sends, what it keeps, the DP steps it took. The
orchestrator (:mod:`privfed.engine`) turns a round into a :class:`RoundRecord`, the only thing
attacks and reports read.

Every message here has a byte form (:mod:`privfed.wire`): a task as the server sends it
(:meth:`ClientTask.message`), and a participation's reply. The personal state that travels with
a task is the client's own (a real client keeps it on the device; the simulation stores it on
the driver, as Flower keeps a client's context), so it is packed apart from the task and not
counted as downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privfed.wire import WireError

__all__ = [
    "ClientCost",
    "ClientTask",
    "DPEvent",
    "Participation",
    "RoundRecord",
    "UnitWork",
]


def _vector(v: Any, *, what: str) -> np.ndarray:
    if not isinstance(v, np.ndarray) or v.ndim != 1 or v.dtype.kind not in "fiu":
        raise WireError(f"{what} must be a 1-d numeric vector")
    return v


def _int(v: Any, *, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise WireError(f"{what} must be an integer, got {v!r}")
    return v


def _float(v: Any, *, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise WireError(f"{what} must be a number, got {v!r}")
    return float(v)


def _str(v: Any, *, what: str) -> str:
    if not isinstance(v, str):
        raise WireError(f"{what} must be a string, got {v!r}")
    return v


@dataclass(frozen=True, kw_only=True)
class UnitWork:
    """One model unit a client trains this round.

    Attributes:
        unit: the unit's name (``group.task`` or ``group``).
        global_vector: the unit's global model as broadcast (float32).
        noise_multiplier: the client's DP-SGD noise multiplier on the unit's records (None:
            no record-level DP).
        sample_rate: the Poisson sampling rate the server's privacy plan accounts for (0:
            not private); the client's trainer must sample at exactly this rate.
        public_batch_size: under ``dp.public_sampling``, the public divisor of the summed
            clipped gradients, and ``sample_rate`` is the public rate to sample at; 0 otherwise
            (the client samples at ``1 / batches`` of its own records).
        prox_centre: centre of a proximal term computed by the server (MOCHA's regularizer;
            None: the algorithm's own client-side term, if any).
        prox_weight: weight of that server-computed proximal term.
    """

    unit: str
    global_vector: np.ndarray
    noise_multiplier: float | None
    sample_rate: float = 0.0
    public_batch_size: int = 0
    prox_centre: np.ndarray | None = None
    prox_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.noise_multiplier is not None and not self.noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if not 0.0 <= self.sample_rate <= 1.0 or self.public_batch_size < 0:
            raise ValueError(
                f"sample_rate must be in [0, 1] and public_batch_size >= 0, got "
                f"{self.sample_rate} and {self.public_batch_size}"
            )
        if not self.prox_weight >= 0:
            raise ValueError(f"prox_weight must be >= 0, got {self.prox_weight}")


@dataclass(frozen=True, kw_only=True)
class ClientTask:
    """What the server sends one client for one round: everything the client may know.

    Attributes:
        round_index: the federated round (0-based).
        client: the client's id.
        units: the units it trains this round, in joint-vector order (the server left out the
            units whose privacy budget the round would exceed).
        local_steps: DP-SGD steps per unit and local phase.
        client_clip: L2 bound of the client's joint update (client-level DP); 0: no clipping.
        model_hash: hash of the global model broadcast this round (bound into secure
            aggregation).
        seed: root of the named simulation streams (sampling, DP noise, stochastic rounding,
            distributed noise); every draw is named by (purpose, round, client, unit). In a
            deployment each client draws its own.
        personal: the client's state kept from earlier rounds (unit -> vector). It travels
            with the task in the simulation but is the client's own, not downloaded.
    """

    round_index: int
    client: int
    units: tuple[UnitWork, ...]
    local_steps: int
    client_clip: float
    model_hash: bytes
    seed: int
    personal: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.round_index < 0 or self.client < 0 or self.local_steps < 1:
            raise ValueError(
                f"ClientTask: round_index and client must be >= 0 and local_steps >= 1, got "
                f"{self.round_index}, {self.client}, {self.local_steps}"
            )
        if not self.client_clip >= 0:
            raise ValueError(f"ClientTask.client_clip must be >= 0, got {self.client_clip}")

    def message(self) -> dict[str, Any]:
        """The task as the server sends it (without the client's own state)."""
        return {
            "round": self.round_index,
            "client": self.client,
            "local_steps": self.local_steps,
            "client_clip": self.client_clip,
            "model_hash": np.frombuffer(self.model_hash, dtype=np.uint8),
            "seed": self.seed,
            "units": [
                {
                    "unit": w.unit,
                    "global": w.global_vector,
                    "sigma": w.noise_multiplier,
                    "q": w.sample_rate,
                    "public_batch": w.public_batch_size,
                    "prox_centre": w.prox_centre,
                    "prox_weight": w.prox_weight,
                }
                for w in self.units
            ],
        }

    @classmethod
    def from_message(
        cls, msg: Mapping[str, Any], personal: Mapping[str, Any] | None = None
    ) -> ClientTask:
        """Rebuild a task from :meth:`message` (and the client's own state), checking fields.

        Raises:
            WireError: a field is missing or has the wrong type.
        """
        try:
            units = []
            for i, u in enumerate(msg["units"]):
                where = f"task.units[{i}]"
                sigma = u["sigma"]
                centre = u["prox_centre"]
                units.append(
                    UnitWork(
                        unit=_str(u["unit"], what=f"{where}.unit"),
                        global_vector=_vector(u["global"], what=f"{where}.global"),
                        noise_multiplier=None
                        if sigma is None
                        else _float(sigma, what=f"{where}.sigma"),
                        sample_rate=_float(u["q"], what=f"{where}.q"),
                        public_batch_size=_int(u["public_batch"], what=f"{where}.public_batch"),
                        prox_centre=None
                        if centre is None
                        else _vector(centre, what=f"{where}.prox_centre"),
                        prox_weight=_float(u["prox_weight"], what=f"{where}.prox_weight"),
                    )
                )
            mh = msg["model_hash"]
            if not isinstance(mh, np.ndarray) or mh.dtype != np.uint8:
                raise WireError("task.model_hash must be bytes")
            return cls(
                round_index=_int(msg["round"], what="task.round"),
                client=_int(msg["client"], what="task.client"),
                units=tuple(units),
                local_steps=_int(msg["local_steps"], what="task.local_steps"),
                client_clip=_float(msg["client_clip"], what="task.client_clip"),
                model_hash=mh.tobytes(),
                seed=_int(msg["seed"], what="task.seed"),
                personal={
                    _str(k, what="personal unit"): _vector(v, what=f"personal[{k}]")
                    for k, v in (personal or {}).items()
                },
            )
        except (KeyError, TypeError) as exc:
            raise WireError(f"task: missing or malformed field ({exc})") from None
        except ValueError as exc:
            raise WireError(f"task: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class DPEvent:
    """DP-SGD steps a client took on one data source (one entry of its privacy ledger).

    Attributes:
        source: the ledger key of the data source (records shared by the tasks on it).
        task: what trained (a unit name; ``unit:personal`` for Ditto's personal model).
        noise_multiplier: sigma of the steps (0 without DP).
        sample_rate: Poisson sampling rate q of the steps.
        steps: number of steps taken.
    """

    source: str
    task: str
    noise_multiplier: float
    sample_rate: float
    steps: int

    def to_tree(self) -> dict[str, Any]:
        """The event as a message tree."""
        return {
            "source": self.source,
            "task": self.task,
            "sigma": self.noise_multiplier,
            "q": self.sample_rate,
            "steps": self.steps,
        }

    @classmethod
    def from_tree(cls, t: Mapping[str, Any]) -> DPEvent:
        """Rebuild an event from :meth:`to_tree`, checking its fields."""
        try:
            return cls(
                source=_str(t["source"], what="event.source"),
                task=_str(t["task"], what="event.task"),
                noise_multiplier=_float(t["sigma"], what="event.sigma"),
                sample_rate=_float(t["q"], what="event.q"),
                steps=_int(t["steps"], what="event.steps"),
            )
        except (KeyError, TypeError) as exc:
            raise WireError(f"DP event: missing or malformed field ({exc})") from None


@dataclass(frozen=True, kw_only=True)
class Participation:
    """What one client produced in one round.

    Attributes:
        client: the client's id.
        round_index: the round.
        upload: the client's encoded update: the message it sends in the clear (float32 under
            plain aggregation), or the integer vector it masks under secure aggregation. None
            if the algorithm sends nothing.
        personal: the state it keeps (unit -> vector) for the units that changed this round.
        events: the DP-SGD steps it took, in order (its ledger entries).
        trained: units it trained and sent.
        diverged: units whose local training diverged (non-finite weights): the steps stay on
            the ledger, nothing is sent for them and the personal state is not replaced.
        compute_seconds: CPU seconds of local training and encoding (this thread).
        update: the joint float update before encoding (after client-level clipping): ground
            truth for attack metrics, never part of what the server observes. Backends drop it
            unless the orchestrator asks for it.
    """

    client: int
    round_index: int
    upload: np.ndarray | None
    personal: Mapping[str, np.ndarray]
    events: tuple[DPEvent, ...]
    trained: int
    diverged: int
    compute_seconds: float
    update: np.ndarray | None = None

    def report(self, *, keep_update: bool) -> dict[str, Any]:
        """Everything but the upload, as a message tree (the simulation's side channel)."""
        return {
            "client": self.client,
            "round": self.round_index,
            "personal": dict(self.personal),
            "events": [e.to_tree() for e in self.events],
            "trained": self.trained,
            "diverged": self.diverged,
            "compute_seconds": self.compute_seconds,
            "update": self.update if keep_update else None,
        }

    @classmethod
    def from_report(cls, t: Mapping[str, Any], *, upload: np.ndarray | None) -> Participation:
        """Rebuild a participation from :meth:`report` and the upload, checking fields."""
        try:
            update = t["update"]
            return cls(
                client=_int(t["client"], what="participation.client"),
                round_index=_int(t["round"], what="participation.round"),
                upload=upload,
                personal={
                    _str(k, what="personal unit"): _vector(v, what=f"personal[{k}]")
                    for k, v in t["personal"].items()
                },
                events=tuple(DPEvent.from_tree(e) for e in t["events"]),
                trained=_int(t["trained"], what="participation.trained"),
                diverged=_int(t["diverged"], what="participation.diverged"),
                compute_seconds=_float(t["compute_seconds"], what="compute_seconds"),
                update=None if update is None else _vector(update, what="participation.update"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise WireError(f"participation: missing or malformed field ({exc})") from None


@dataclass(frozen=True, kw_only=True)
class ClientCost:
    """What one client's participation cost (measurements, not results).

    Attributes:
        download: phase -> bytes the client received (``task``: its task message; under
            secure aggregation also each protocol phase).
        upload: phase -> bytes the client sent (``update`` in the clear, or each protocol
            phase under secure aggregation).
        compute_seconds: CPU seconds of local training and encoding.
        protocol_seconds: CPU seconds the client spent in the secure-aggregation protocol.
    """

    download: Mapping[str, int]
    upload: Mapping[str, int]
    compute_seconds: float
    protocol_seconds: float = 0.0

    @property
    def bytes_down(self) -> int:
        """Bytes received over every phase."""
        return int(sum(self.download.values()))

    @property
    def bytes_up(self) -> int:
        """Bytes sent over every phase."""
        return int(sum(self.upload.values()))


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    """What one round did, as the orchestrator saw it: what attacks and reports read.

    It holds what crossed the wire and what the server learned, never a client's true update
    under secure aggregation (the framework keeps that apart, for attack metrics only).

    Attributes:
        round_index: the round (0-based).
        cohort: the selected clients, sorted.
        model_hash: hash of the global model broadcast this round.
        encoding: how updates travelled: ``plain``, ``secagg`` (fixed point, masked) or
            ``secagg+ddg`` (distributed discrete Gaussian, masked).
        trained: (client, unit) trainings that were sent.
        budget_skips: (client, unit) trainings the server did not ask for (budget spent).
        diverged: trainings whose result was not sent (non-finite weights).
        events: (client, DP event) in sorted cohort order, as written to the ledgers.
        dropouts: protocol phase -> clients that vanished before it.
        included: clients whose update is in the aggregate.
        dropped: selected senders whose update is not.
        aborted: why the aggregation aborted ("" if it did not).
        refused: why the server refused the whole round before dispatch ("" if it did not):
            releasing it could exceed the client-level budget.
        observed: client -> what the server received from it (the masked vector under
            secure aggregation; the plain vector, or the individual model, otherwise).
        aggregate: the decoded sum the server learned, before any central noise (None if
            nothing was summed).
        costs: client -> bytes and seconds of its participation.
    """

    round_index: int
    cohort: tuple[int, ...]
    model_hash: bytes
    encoding: str
    trained: int = 0
    budget_skips: int = 0
    diverged: int = 0
    events: tuple[tuple[int, DPEvent], ...] = ()
    dropouts: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    included: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()
    aborted: str = ""
    refused: str = ""
    observed: Mapping[int, np.ndarray] = field(default_factory=dict)
    aggregate: np.ndarray | None = None
    costs: Mapping[int, ClientCost] = field(default_factory=dict)

    def cost_summary(self) -> dict[str, float]:
        """Totals over the cohort: bytes up and down, and compute and protocol seconds."""
        costs = list(self.costs.values())
        seconds = [c.compute_seconds for c in costs]
        return {
            "participations": float(len(costs)),
            "bytes_down": float(sum(c.bytes_down for c in costs)),
            "bytes_up": float(sum(c.bytes_up for c in costs)),
            "compute_seconds": float(sum(seconds)),
            "compute_seconds_max": float(max(seconds)) if seconds else 0.0,
            "protocol_seconds": float(sum(c.protocol_seconds for c in costs)),
        }
