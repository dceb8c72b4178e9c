"""The attack plug-in API: threat models, observations, results and the registry.

An attack declares a :class:`ThreatModel` (who the adversary is, what it observes). The
framework builds an :class:`Observation` from a finished run that holds *only* what that threat
model allows (see :func:`privfed.attack_runner.observe_run`) and hands it to :meth:`Attack.run`,
which runs in a process of its own that holds nothing else (:mod:`privfed.attack_sandbox`).
The ground truth (true client updates, which records were members) lives in a separate
:class:`GroundTruth`, assembled after ``run`` has returned, that only :meth:`Attack.evaluate` --
the metric step, in the framework's process -- receives. This is
the split of breaching's ``reconstruct(server_payload, shared_data, server_secrets)`` (Geiping
et al., breaching).

Under secure aggregation a server-side observation carries the *masked* vectors the server
received and the unmasked sum, never an individual update.

This is the library's side of the plug-in seam: the framework (config validation, ``privfed
list``, ``privfed attack``, ``[[attacks]]`` in a run) calls these types and finds attacks in
:data:`ATTACKS`, which loads the entry-point group ``privfed.attacks`` on first lookup. The
built-in attacks (package ``attacks``) register through the same group as third-party ones (see
``docs/writing-an-attack.md``); the library never imports them. ``attacks.base`` re-exports this
module for compatibility.
"""

from __future__ import annotations

import enum
import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from privfed.errors import PrivfedError
from privfed.registry import Registry, subclass_check
from privfed.secagg.config import SecAggConfig
from privfed.unit import UnitSpec


class Adversary(enum.Enum):
    """Who the adversary is."""

    HONEST_BUT_CURIOUS_SERVER = "honest-but-curious-server"
    """Follows the protocol, records everything it receives."""
    MALICIOUS_SERVER = "malicious-server"
    """May deviate from the protocol through the public state machines (``privfed.secagg``)."""
    MALICIOUS_CLIENTS = "malicious-clients"
    """One or more clients that see their own data and updates and may send anything."""
    OUTSIDER = "outsider"
    """Sees only the released (global) models, like any user of the trained models."""


class View(enum.Enum):
    """One thing an adversary can observe."""

    RELEASED_MODELS = "released-models"
    """The final global model of every unit."""
    AGGREGATE = "aggregate"
    """The server's sum of one round's updates (what the server learns under secure aggregation)."""
    SERVER_INBOX = "server-inbox"
    """Per-client messages of one round as the server received them: the masked vectors under
    secure aggregation, the plain float updates with ``aggregator = "plain"``."""
    OWN_CLIENT = "own-client"
    """A client's own data and own update."""
    PUBLIC_DATA = "public-data"
    """The population's public split (every client's validation records, never trained on)."""


#: What each adversary may observe, at most.
ALLOWED_VIEWS: Mapping[Adversary, frozenset[View]] = {
    Adversary.OUTSIDER: frozenset({View.RELEASED_MODELS, View.PUBLIC_DATA}),
    Adversary.HONEST_BUT_CURIOUS_SERVER: frozenset(
        {View.RELEASED_MODELS, View.PUBLIC_DATA, View.AGGREGATE, View.SERVER_INBOX}
    ),
    Adversary.MALICIOUS_SERVER: frozenset(
        {View.RELEASED_MODELS, View.PUBLIC_DATA, View.AGGREGATE, View.SERVER_INBOX}
    ),
    Adversary.MALICIOUS_CLIENTS: frozenset(
        {View.RELEASED_MODELS, View.PUBLIC_DATA, View.OWN_CLIENT}
    ),
}


@dataclass(frozen=True, kw_only=True)
class ThreatModel:
    """Who attacks and what it observes.

    Attributes:
        adversary: the kind of adversary.
        observes: the views the attack needs; each must be allowed for ``adversary``.
        summary: one line for ``privfed list`` (what is attacked, with which knowledge).
    """

    adversary: Adversary
    observes: frozenset[View]
    summary: str = ""

    def __post_init__(self) -> None:
        extra = self.observes - ALLOWED_VIEWS[self.adversary]
        if extra:
            names = ", ".join(sorted(v.value for v in extra))
            raise ValueError(
                f"ThreatModel.observes: the adversary {self.adversary.value} cannot observe "
                f"{names}; pick another adversary or drop those views"
            )

    def describe(self) -> str:
        """``adversary [views]: summary``, the line ``privfed list`` shows."""
        views = ",".join(sorted(v.value for v in self.observes))
        text = f"{self.adversary.value} [{views}]"
        return f"{text}: {self.summary}" if self.summary else text


@dataclass(frozen=True)
class Records:
    """Feature rows and labels of some records of one task group.

    Attributes:
        x: float32 features, one flattened row per record.
        labels: label column -> int64 labels.
    """

    x: np.ndarray
    labels: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class Encoding:
    """How the server's inbox vectors are encoded (public protocol parameters).

    Attributes:
        kind: ``"plain"`` (float vectors), ``"secagg"`` (fixed point, masked, modulo
            ``2**bits``) or ``"secagg+ddg"`` (client-level distributed DP: clipped, rotated,
            scaled, noised integers, masked, modulo ``2**bits``; see
            :mod:`privfed.privacy.distributed`).
        bits: modulus exponent (secagg, secagg+ddg).
        scale_bits: fixed-point scale exponent (secagg; 0 otherwise).
        clip: per-coordinate fixed-point clamp (secagg); the L2 clipping norm (secagg+ddg).
    """

    kind: str
    bits: int = 0
    scale_bits: int = 0
    clip: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Observation:
    """What the adversary sees, built by the framework from a run (never by the attack).

    Fields the threat model does not allow are None. The model layout (units, offsets) and the
    protocol parameters are public knowledge and always present.

    Attributes:
        threat_model: the threat model this observation was built for.
        units: model units (name, group, tasks, architecture), in joint-vector order.
        offsets: unit ``i``'s slice of a joint vector is ``offsets[i]:offsets[i + 1]``.
        counter_base: index of the first participation counter in a joint vector (= the
            length of the update part).
        counters: whether the joint vector carries one participation counter per unit at
            ``counter_base + i`` (1.0 if the client trained unit ``i``); False under
            client-level DP, whose denominator is fixed.
        clip_bit: whether the last coordinate (``counter_base + len(units)``) carries adaptive
            clipping's centred bit (+0.5 within the clip bound, -0.5 above it).
        encoding: how inbox vectors are encoded.
        released: unit name -> final global model (``View.RELEASED_MODELS``).
        public: group -> the population's public split (``View.PUBLIC_DATA``).
        challenge: group -> records whose membership the attack is asked about (members and
            non-members shuffled; who is which is in :class:`GroundTruth`).
        round_index: the observed round (server and client views).
        broadcast: unit name -> global model sent at the start of the observed round.
        aggregate: the server's sum of the observed round (``View.AGGREGATE``).
        inbox: client -> what the server received in the observed round (``View.SERVER_INBOX``).
        included: clients whose update is in ``aggregate``.
        own: client -> its own training records by group (``View.OWN_CLIENT``).
        own_updates: client -> its own joint update vector (``View.OWN_CLIENT``).
        num_clients: population size.
        secagg: the public secure-aggregation parameters (None with ``aggregator = "plain"``).
        recipe: the public training recipe (rounds, local_steps, batch_size, lr, clients) that
            shadow-model attacks imitate.
    """

    threat_model: ThreatModel
    units: tuple[UnitSpec, ...]
    offsets: tuple[int, ...]
    counter_base: int
    encoding: Encoding
    counters: bool = True
    clip_bit: bool = False
    num_clients: int
    recipe: Mapping[str, float] = field(default_factory=dict)
    secagg: SecAggConfig | None = None
    released: Mapping[str, np.ndarray] | None = None
    public: Mapping[str, Records] | None = None
    challenge: Mapping[str, Records] | None = None
    round_index: int | None = None
    broadcast: Mapping[str, np.ndarray] | None = None
    aggregate: np.ndarray | None = None
    inbox: Mapping[int, np.ndarray] | None = None
    included: tuple[int, ...] = ()
    own: Mapping[int, Mapping[str, Records]] | None = None
    own_updates: Mapping[int, np.ndarray] | None = None

    def unit_slice(self, vector: np.ndarray, unit: str) -> np.ndarray:
        """The slice of a joint vector that belongs to ``unit``."""
        names = [u.name for u in self.units]
        if unit not in names:
            raise KeyError(f"unknown unit {unit!r}; the run has {', '.join(names)}")
        i = names.index(unit)
        return vector[self.offsets[i] : self.offsets[i + 1]]


@dataclass(frozen=True, kw_only=True)
class GroundTruth:
    """What really happened; handed only to :meth:`Attack.evaluate`, never to :meth:`Attack.run`.

    Attributes:
        membership: group -> bool per challenge record (True: some client trained on it).
        updates: client -> true joint float32 update of the observed round.
        train: client -> group -> the client's training records.
        mean_image: group -> mean feature row of the whole data source (the prior baseline).
    """

    membership: Mapping[str, np.ndarray] = field(default_factory=dict)
    updates: Mapping[int, np.ndarray] = field(default_factory=dict)
    train: Mapping[int, Mapping[str, Records]] = field(default_factory=dict)
    mean_image: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class AttackResult:
    """What an attack produced and how well it did.

    Attributes:
        attack: registered name of the attack.
        metrics: flat metric name -> number (``evaluate`` adds the ones that need the truth).
        notes: human-readable remarks (which check stopped a protocol attack, caveats).
        outputs: the attack's guesses (scores, reconstructions) for the metric step.
        meta: what the guesses refer to (unit, group, target clients), for the metric step.
    """

    attack: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    outputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    meta: Mapping[str, str] = field(default_factory=dict)

    def with_metrics(self, metrics: Mapping[str, float], *notes: str) -> AttackResult:
        """A copy with ``metrics`` merged in and ``notes`` appended."""
        return replace(self, metrics={**self.metrics, **metrics}, notes=self.notes + notes)


class AttackParameterError(PrivfedError):
    """An attack parameter is unknown or has the wrong type."""


class Attack(ABC):
    """An attack: a threat model, a ``run`` on the adversary's view and a metric step.

    Subclasses set :attr:`name` and :attr:`threat_model` as class attributes and take only
    keyword arguments with defaults in ``__init__`` (the CLI passes ``--param key=value``).
    """

    name: ClassVar[str]
    threat_model: ClassVar[ThreatModel]

    @abstractmethod
    def run(self, observation: Observation, *, rng: np.random.Generator) -> AttackResult:
        """Attack ``observation`` (the adversary's view only); randomness comes from ``rng``."""

    def evaluate(self, result: AttackResult, truth: GroundTruth) -> AttackResult:
        """Score ``result`` against the ground truth (default: no truth-based metric)."""
        del truth
        return result


def _describe(cls: type[Attack]) -> str:
    """An attack's line in ``privfed list``: its threat model."""
    tm = getattr(cls, "threat_model", None)
    return tm.describe() if isinstance(tm, ThreatModel) else ""


def attack_problem(obj: object) -> str:
    """What keeps ``obj`` from being an attack plug-in ("" if nothing)."""
    problem = subclass_check(Attack)(obj)
    if problem:
        return problem
    assert isinstance(obj, type)
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        return f"{obj.__qualname__} does not implement {missing}"
    if not isinstance(getattr(obj, "name", None), str):
        return f"{obj.__qualname__} has no class attribute name (a str)"
    if not isinstance(getattr(obj, "threat_model", None), ThreatModel):
        return f"{obj.__qualname__}.threat_model is not a privfed.attack_api.ThreatModel"
    return ""


#: Every attack by name, built-in and third-party alike, through ``privfed.attacks``.
ATTACKS: Registry[type[Attack]] = Registry(
    "attack",
    entry_point_group="privfed.attacks",
    describe=_describe,
    check=attack_problem,
    hint="the built-in attacks come through the privfed.attacks entry points of the installed "
    "package: if none is registered, reinstall privfed (pip install -e .) after pulling",
)


def register_attack(cls: type[Attack], *, force: bool = False) -> type[Attack]:
    """Register ``cls`` under ``cls.name`` with its threat model as the description."""
    ATTACKS.register(cls.name, cls, description=_describe(cls), force=force)
    return cls
