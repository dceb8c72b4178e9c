"""Federated algorithms: where local training starts, what is shared, what stays on the client.

An :class:`Algorithm` works on one model unit at a time (one task's model, or a group's
shared-trunk model) and sees parameter vectors only. The engine owns everything else: cohort,
DP training, the privacy ledger, secure aggregation, the server optimizer
(:mod:`privfed.algorithms.server`). Every algorithm except MOCHA needs only the *sum* of the
clients' updates, so they run under secure aggregation. Algorithms register in
:data:`ALGORITHMS` (entry-point group ``privfed.algorithms``); their parameters are a frozen
dataclass (:attr:`Algorithm.Params`, ``[federation.algorithm_params]``).

One object serves both sides of the client seam, each side with its own instance built from the
config: the client calls :meth:`Algorithm.start_vector`, :meth:`Algorithm.client_prox`,
:meth:`Algorithm.local_phases`, :meth:`Algorithm.after_training` and
:meth:`Algorithm.eval_vector` (inside :func:`privfed.participation.participate`); the server
calls :meth:`Algorithm.server_prox` (a term it computes from its own state and sends in the
task), :meth:`Algorithm.server_individual` and the state hooks. Client hooks must not depend on
server state: a worker's instance never sees another client's vector.

=============  ===========================  =====================  ==========================
algorithm      shared (summed)              kept on the client     local objective
=============  ===========================  =====================  ==========================
fedavg         whole unit                   nothing                task loss
fedavg-ft      whole unit                   its fine-tuned copy    task loss
fedprox        whole unit                   nothing                task loss + mu/2 ||w - g||²
fedper         trunk                        heads                  task loss
fedrep         trunk                        heads                  heads, then trunk
mocha          each client's model (plain)  its model              task loss + lambda
                                                                   tr(W Omega^-1 W^T)
ditto          whole unit (global model)    personal model         personal: task loss +
                                                                   lambda/2 ||v - g||²
local          nothing                      whole unit             task loss
=============  ===========================  =====================  ==========================

Privacy of personal state: every personal part here is trained by DP-SGD on the same records
as the shared part, and the engine records those steps on the same (client, source) ledger
(Ditto's personal model doubles the steps per participation, and the noise is calibrated for
it: :attr:`Algorithm.trainings_per_participation`).
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from privfed.errors import ConfigError
from privfed.registry import Registry, subclass_check
from privfed.unit import UnitSpec


# ------------------------------------------------------------------------------ parameters
@dataclass(frozen=True, kw_only=True)
class NoParams:
    """The algorithm takes no parameters."""


@dataclass(frozen=True, kw_only=True)
class ProximalParams:
    """FedProx's parameters (Li et al. 2020, Sec. 3)."""

    mu: float = 0.01
    """Weight of the proximal term ``mu/2 ||w - w_global||²`` pulling local training toward the
    round's global model."""

    def __post_init__(self) -> None:
        if not self.mu >= 0:
            raise ConfigError(f"mu must be >= 0, got {self.mu!r}")


@dataclass(frozen=True, kw_only=True)
class DittoParams:
    """Ditto's parameters (Li et al. 2021, Algorithm 1)."""

    lambda_: float = 0.01
    """``lambda``: the personal model's pull ``lambda/2 ||v - w_global||²`` toward the global
    model (TOML key ``lambda``)."""

    def __post_init__(self) -> None:
        if not self.lambda_ >= 0:
            raise ConfigError(f"lambda must be >= 0, got {self.lambda_!r}")


@dataclass(frozen=True, kw_only=True)
class MochaParams:
    """MOCHA's parameters (Smith et al. 2017, objective (1)-(2))."""

    lambda_: float = 0.01
    """``lambda``: strength of the task-relationship regularizer ``lambda tr(W Omega^-1 W^T)``
    (TOML key ``lambda``)."""

    def __post_init__(self) -> None:
        if not self.lambda_ >= 0:
            raise ConfigError(f"lambda must be >= 0, got {self.lambda_!r}")


def _toml_name(field_name: str) -> str:
    """A parameter's TOML key: the field name without a trailing underscore (``lambda_``)."""
    return field_name.rstrip("_")


def parse_params(params_type: type, values: Mapping[str, Any], *, algorithm: str) -> Any:
    """Build ``params_type`` from TOML-shaped ``values`` (keys as in the config file).

    Raises:
        ConfigError: listing every unknown, missing or ill-typed parameter, each named with the
            parameters the algorithm declares.
    """
    fields = {_toml_name(f.name): f for f in dataclasses.fields(params_type)}
    declared = ", ".join(sorted(fields)) or "none"
    problems: list[str] = []
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        f = fields.get(key)
        if f is None:
            problems.append(
                f"{key} is not a parameter of algorithm {algorithm!r}; it takes: {declared}"
            )
            continue
        expected = (
            f.type
            if isinstance(f.type, type)
            else {"float": float, "int": int}.get(str(f.type), object)
        )
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected in (float, int) and (
            isinstance(value, bool) or not isinstance(value, expected)
        ):
            problems.append(f"{key} must be a number, got {value!r}")
            continue
        kwargs[f.name] = value
    for key, f in fields.items():
        if (
            f.name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            problems.append(f"{key} is required by algorithm {algorithm!r}")
    if problems:
        raise ConfigError(problems)
    try:
        return params_type(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"algorithm {algorithm!r}: {exc}") from None


@dataclass(frozen=True)
class ClientOutcome:
    """What a client keeps and sends after local training of one unit.

    Attributes:
        update: the vector sent to the (secure) sum, or None if nothing is shared.
        personal: the client's new personal vector for this unit, or None if it keeps none.
    """

    update: np.ndarray | None
    personal: np.ndarray | None


class Algorithm(ABC):
    """A federated learning strategy over parameter vectors of one unit.

    Args:
        params: the algorithm's parameters, an instance of :attr:`Params` (``None``: defaults).
            A config gives them as ``[federation.algorithm_params]``; :func:`make_algorithm`
            validates them against :attr:`Params`.
    """

    #: Registry name.
    name: str = ""
    #: The frozen dataclass of the algorithm's parameters (its fields are the TOML keys).
    Params: ClassVar[type] = NoParams
    #: Whether the server aggregates anything (False: no aggregation runs at all).
    aggregates: bool = True
    #: DP trainings of each unit per participation (Ditto trains a personal model too).
    trainings_per_participation: int = 1

    def __init__(self, params: Any = None) -> None:
        if params is None:
            params = self.Params()
        if not isinstance(params, self.Params):
            raise TypeError(
                f"algorithm {self.name!r} takes {self.Params.__name__}, got {type(params).__name__}"
            )
        self.params: Any = params

    #: Whether the server needs each client's vector rather than their sum (MOCHA). Such an
    #: algorithm cannot run under secure aggregation; the config loader refuses the pair.
    needs_individual_updates: bool = False

    def setup(  # noqa: B027 (optional hook)
        self, units: Sequence[UnitSpec], *, holders: Mapping[str, Sequence[int]], lr: float
    ) -> None:
        """Called once before the first round.

        Args:
            units: the run's model units.
            holders: unit name -> ids of the clients that hold its task group.
            lr: the clients' learning rate.
        """

    @property
    def prox_mu(self) -> float:
        """Weight of the proximal term of the shared training (0: none)."""
        return 0.0

    def client_prox(self, *, unit: str, start: np.ndarray) -> tuple[np.ndarray, float] | None:
        """Client side: centre and weight of the proximal term of the shared training, or None.

        The default is FedProx's ``(start, prox_mu)`` when ``prox_mu > 0``. Used when the
        server sent no proximal term of its own (:meth:`server_prox`).
        """
        return (start, self.prox_mu) if self.prox_mu > 0 else None

    def server_prox(
        self, *, unit: str, client: int, global_vec: np.ndarray
    ) -> tuple[np.ndarray, float] | None:
        """Server side: a proximal term computed from server state and sent in the task.

        For algorithms whose regularizer couples clients (MOCHA); the default is None.
        """
        return None

    def local_phases(self, unit: str) -> list[np.ndarray | None]:
        """Masks of the coordinates frozen in each local training phase.

        Default: one phase, nothing frozen. Each phase is ``local_steps`` DP-SGD steps on the
        same records (so ``trainings_per_participation`` must equal the number of phases).
        """
        return [None]

    def server_individual(self, *, unit: str, vectors: Mapping[int, np.ndarray]) -> None:
        """Receive each client's vector (only for ``needs_individual_updates``)."""
        raise NotImplementedError(f"{self.name} aggregates sums, not individual vectors")

    def state_dict(self) -> dict[str, Any]:
        """Server-side algorithm state for checkpoints (empty by default).

        It is stored by :func:`privfed.checkpoint.write_state` (no pickle): a tree of dicts with
        ``str`` keys, lists, ``str`` / ``int`` / ``float`` / ``bool`` / ``None`` and numeric
        numpy arrays. :meth:`load_state_dict` receives it back from a file that may have been
        tampered with: raise ``ValueError`` on anything that does not fit the run.
        """
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Restore :meth:`state_dict`."""

    @property
    def personal_mu(self) -> float | None:
        """Proximal weight of a separate personal training, or None if there is none."""
        return None

    @abstractmethod
    def start_vector(
        self, *, unit: str, global_vec: np.ndarray, personal: np.ndarray | None
    ) -> np.ndarray:
        """The parameters local training starts from."""

    @abstractmethod
    def after_training(
        self, *, unit: str, start: np.ndarray, trained: np.ndarray, personal: np.ndarray | None
    ) -> ClientOutcome:
        """Split a trained vector into what is sent and what stays on the client.

        ``personal`` is the client's personal vector after this round's personal training
        (Ditto) or its previous one.
        """

    @abstractmethod
    def eval_vector(
        self, *, unit: str, global_vec: np.ndarray, personal: np.ndarray | None
    ) -> np.ndarray:
        """The parameters a client would use for prediction."""


class FedAvg(Algorithm):
    """Federated averaging per unit (McMahan et al. 2017); clients use the global model."""

    name = "fedavg"

    def start_vector(
        self, *, unit: str, global_vec: np.ndarray, personal: np.ndarray | None
    ) -> np.ndarray:
        """Start from the global model."""
        return global_vec

    def after_training(
        self, *, unit: str, start: np.ndarray, trained: np.ndarray, personal: np.ndarray | None
    ) -> ClientOutcome:
        """Send the model delta, keep nothing."""
        return ClientOutcome(update=(trained - start).astype(np.float32), personal=None)

    def eval_vector(
        self, *, unit: str, global_vec: np.ndarray, personal: np.ndarray | None
    ) -> np.ndarray:
        """Predict with the global model."""
        return global_vec


class FedProx(FedAvg):
    """FedAvg with a proximal term ``mu/2 ||w - w_global||²`` in the local objective.

    Li et al. 2020, "Federated Optimization in Heterogeneous Networks", Sec. 3. The term's
    gradient is added after DP noise (it does not touch data), see
    :meth:`privfed.client.UnitTrainer.train`.
    """

    name = "fedprox"
    Params = ProximalParams

    @property
    def prox_mu(self) -> float:
        """The configured ``mu``."""
        return float(self.params.mu)


class FedAvgFineTune(FedAvg):
    """FedAvg whose clients predict with their locally fine-tuned copy of the global model.

    Every participation already runs ``local_steps`` DP-SGD steps from the global model on the
    client's own records; the client keeps that result and predicts with it ("FedAvg +
    fine-tune", local adaptation as in Wang et al. 2019, "Federated Evaluation of On-device
    Personalization"). The fine-tuning steps are the steps already taken and recorded on the
    client's ledger, so personalization costs no extra privacy. A client that never took part
    predicts with the global model.
    """

    name = "fedavg-ft"

    def after_training(
        self, *, unit: str, start: np.ndarray, trained: np.ndarray, personal: np.ndarray | None
    ) -> ClientOutcome:
        """Send the model delta and keep the trained model as the personal one."""
        return ClientOutcome(update=(trained - start).astype(np.float32), personal=trained)

    def eval_vector(
        self, *, unit: str, global_vec: np.ndarray, personal: np.ndarray | None
    ) -> np.ndarray:
        """Predict with the locally fine-tuned model when there is one."""
        return global_vec if personal is None else personal


class FedPer(Algorithm):
    """Shared trunk, personal heads kept on the client.

    Arivazhagan et al. 2019, "Federated Learning with Personalization Layers".

    Local training starts from the global trunk and the client's own heads; only the trunk's
    change is summed (the head coordinates of the update are zero, so the server's copy of the
    heads stays at the common initialization and is never used); the trained heads stay on the
    client.
    """

    name = "fedper"

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._head_mask: dict[str, np.ndarray] = {}

    def setup(
        self, units: Sequence[UnitSpec], *, holders: Mapping[str, Sequence[int]], lr: float
    ) -> None:
        """Find which coordinates of each unit's vector are head parameters."""
        for u in units:
            parts = [
                np.full(p.numel(), name.startswith("heads."), dtype=bool)
                for name, p in u.build().named_parameters()
            ]
            self._head_mask[u.name] = np.concatenate(parts)

    def head_mask(self, unit: str) -> np.ndarray:
        """Boolean mask of the head coordinates of ``unit``'s vector."""
        return self._head_mask[unit]

    def _merge(self, unit: str, global_vec: np.ndarray, personal: np.ndarray | None) -> np.ndarray:
        if personal is None:
            return global_vec
        return np.where(self._head_mask[unit], personal, global_vec).astype(np.float32)

    def start_vector(
        self, *, unit: str, global_vec: np.ndarray, personal: np.ndarray | None
    ) -> np.ndarray:
        """Global trunk with the client's own heads."""
        return self._merge(unit, global_vec, personal)

    def after_training(
        self, *, unit: str, start: np.ndarray, trained: np.ndarray, personal: np.ndarray | None
    ) -> ClientOutcome:
        """Send the trunk's change; keep the heads."""
        update = np.where(self._head_mask[unit], 0.0, trained - start).astype(np.float32)
        return ClientOutcome(update=update, personal=trained)

    def eval_vector(
        self, *, unit: str, global_vec: np.ndarray, personal: np.ndarray | None
    ) -> np.ndarray:
        """Global trunk with the client's own heads."""
        return self._merge(unit, global_vec, personal)


class FedRep(FedPer):
    """Shared representation, personal heads, trained in two phases (FedRep).

    Collins, Hassani, Mokhtari, Shakkottai 2021, "Exploiting Shared Representations for
    Personalized Federated Learning", Algorithm 1: each participation first trains the client's
    heads with the representation frozen, then the representation with the heads frozen; only
    the representation's change is summed. Both phases are DP-SGD steps on the same records and
    both are recorded on the client's ledger (the noise is calibrated for both).
    """

    name = "fedrep"
    trainings_per_participation = 2

    def local_phases(self, unit: str) -> list[np.ndarray | None]:
        """Heads first (trunk frozen), then the trunk (heads frozen)."""
        heads = self.head_mask(unit)
        return [~heads, heads]


class Ditto(FedAvg):
    """A global model per unit plus a personal model regularized toward it.

    Li et al. 2021, "Ditto: Fair and Robust Federated Learning Through Personalization",
    Algorithm 1: each participation trains the global model as FedAvg does and, separately, the
    personal model ``v`` on ``loss(v) + lambda/2 ||v - w_global||²``.
    Both trainings are DP-SGD on the same records and both are recorded on the client's ledger
    for that data source.
    """

    name = "ditto"
    Params = DittoParams
    trainings_per_participation = 2

    @property
    def personal_mu(self) -> float | None:
        """Lambda: the personal model's pull toward the global one."""
        return float(self.params.lambda_)

    def after_training(
        self, *, unit: str, start: np.ndarray, trained: np.ndarray, personal: np.ndarray | None
    ) -> ClientOutcome:
        """Send the global model's delta; keep the (already trained) personal model."""
        return ClientOutcome(update=(trained - start).astype(np.float32), personal=personal)

    def eval_vector(
        self, *, unit: str, global_vec: np.ndarray, personal: np.ndarray | None
    ) -> np.ndarray:
        """Predict with the personal model."""
        return global_vec if personal is None else personal


class Mocha(Algorithm):
    """Federated multi-task learning with a learned task-relationship matrix (MOCHA).

    Smith, Chiang, Sanjabi, Talwalkar 2017, "Federated Multi-Task Learning", objective (1)-(2)
    with the regularizer of Zhang & Yeung 2010: every client k has its own model ``w_k`` (a
    column of ``W``) and the server learns ``Omega``::

        min_{W, Omega}  sum_k loss_k(w_k) + lambda tr(W Omega^-1 W^T),
        Omega = (W^T W)^(1/2) / tr((W^T W)^(1/2))      (closed form, MOCHA eq. (4))

    Each round, a client runs DP-SGD on its own loss plus the regularizer's gradient in
    ``w_k`` with the other columns fixed at the round start. That gradient is
    ``2 lambda (Omega^-1_kk w_k + sum_{j!=k} Omega^-1_jk w_j)``: a proximal term with weight
    ``a = 2 lambda Omega^-1_kk`` and centre ``-sum_{j!=k} Omega^-1_jk w_j / Omega^-1_kk``, added
    after the DP noise (it does not touch data). The client sends ``w_k``; the server updates
    ``Omega``. The local solver is (DP-)SGD, not MOCHA's CoCoA dual method, so this is MOCHA's
    model and alternating optimization, not its communication-efficient primal-dual solver.

    Meant for convex (linear) models (``hidden = []``). The server needs the individual
    models, so the config loader refuses ``mocha`` with secure aggregation. The individual
    models are DP-SGD outputs, so releasing them to the server is covered by the record-level
    guarantee; Omega is post-processing.

    Args:
        params: :class:`MochaParams` (``lambda``, the strength of the task-relationship
            regularizer).
    """

    name = "mocha"
    Params = MochaParams
    needs_individual_updates = True

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.holders: dict[str, list[int]] = {}
        self.columns: dict[str, dict[int, np.ndarray]] = {}
        self.omega_inv: dict[str, np.ndarray] = {}
        #: Safeguard: the proximal weight is capped at 1 / lr so a step never overshoots.
        self.max_weight = math.inf

    def setup(
        self, units: Sequence[UnitSpec], *, holders: Mapping[str, Sequence[int]], lr: float
    ) -> None:
        """Start from Omega = I / m (MOCHA's initialization); cap the proximal weight at 1/lr."""
        self.max_weight = 1.0 / lr
        for u in units:
            hs = sorted(holders[u.name])
            self.holders[u.name] = hs
            self.omega_inv[u.name] = np.eye(len(hs)) * len(hs)

    def start_vector(
        self, *, unit: str, global_vec: np.ndarray, personal: np.ndarray | None
    ) -> np.ndarray:
        """Continue the client's own model (the common initialization the first time)."""
        return global_vec if personal is None else personal

    def server_prox(
        self, *, unit: str, client: int, global_vec: np.ndarray
    ) -> tuple[np.ndarray, float] | None:
        """The regularizer's gradient as a proximal term (see the class docstring)."""
        lam = float(self.params.lambda_)
        if lam <= 0:
            return None
        idx = self.holders[unit].index(client)
        oinv = self.omega_inv[unit]
        cols = self.columns.get(unit, {})
        pull = np.zeros_like(global_vec, dtype=np.float64)
        for j, c in enumerate(self.holders[unit]):
            if c != client:
                pull += oinv[j, idx] * cols.get(c, global_vec)
        a = 2.0 * lam * oinv[idx, idx]
        centre = (-pull / oinv[idx, idx]).astype(np.float32)
        return centre, float(min(a, self.max_weight))

    def after_training(
        self, *, unit: str, start: np.ndarray, trained: np.ndarray, personal: np.ndarray | None
    ) -> ClientOutcome:
        """Send the model itself (the server needs ``w_k``) and keep it."""
        return ClientOutcome(update=trained, personal=trained)

    def eval_vector(
        self, *, unit: str, global_vec: np.ndarray, personal: np.ndarray | None
    ) -> np.ndarray:
        """Predict with the client's own model."""
        return global_vec if personal is None else personal

    def server_individual(self, *, unit: str, vectors: Mapping[int, np.ndarray]) -> None:
        """Store the received columns and update Omega in closed form."""
        cols = self.columns.setdefault(unit, {})
        for c, v in vectors.items():
            cols[c] = np.asarray(v, dtype=np.float64)
        hs = self.holders[unit]
        if len(cols) < len(hs):
            return  # Omega stays at its initialization until every column is known
        w = np.stack([cols[c] for c in hs], axis=1)  # d x m
        gram = w.T @ w
        evals, evecs = np.linalg.eigh(gram)
        evals = np.clip(evals, 0.0, None)
        root = np.sqrt(evals)
        # ridge so Omega stays invertible when m exceeds the rank of W (Zhang & Yeung 2010)
        root = root + 1e-6 * max(float(root.sum()), 1e-12)
        trace = float(root.sum())
        # Omega = V diag(root) V^T / trace  =>  Omega^-1 = V diag(trace / root) V^T
        self.omega_inv[unit] = (evecs * (trace / root)) @ evecs.T

    def omega(self, unit: str) -> np.ndarray:
        """The current task-relationship matrix of ``unit`` (clients in sorted order)."""
        return np.linalg.inv(self.omega_inv[unit])

    def state_dict(self) -> dict[str, Any]:
        """Columns (keyed by unit, then client id as a string) and Omega^-1 per unit."""
        return {
            "columns": {
                u: {str(c): v for c, v in cols.items()} for u, cols in self.columns.items()
            },
            "omega_inv": dict(self.omega_inv),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore columns and Omega^-1.

        Raises:
            ValueError: a unit, client or matrix does not fit this federation.
        """
        if not state:
            return
        columns: dict[str, dict[int, np.ndarray]] = {}
        for u, cols in state["columns"].items():
            holders = self.holders.get(u)
            if holders is None:
                raise ValueError(f"columns of unknown unit {u!r}")
            columns[u] = {}
            for c, v in cols.items():
                if int(c) not in holders or not isinstance(v, np.ndarray) or v.ndim != 1:
                    raise ValueError(f"column of client {c!r} of unit {u!r} is not a vector")
                columns[u][int(c)] = v
        omega_inv = {}
        for u, m in state["omega_inv"].items():
            k = len(self.holders.get(u, ()))
            if not isinstance(m, np.ndarray) or m.shape != (k, k):
                raise ValueError(f"omega_inv of unit {u!r} is not a {k} x {k} matrix")
            omega_inv[u] = m
        self.columns, self.omega_inv = columns, omega_inv


class LocalOnly(Algorithm):
    """No federation: each client trains its own model from the common initialization."""

    name = "local"
    aggregates = False

    def start_vector(
        self, *, unit: str, global_vec: np.ndarray, personal: np.ndarray | None
    ) -> np.ndarray:
        """Continue the client's own model (the shared initialization the first time)."""
        return global_vec if personal is None else personal

    def after_training(
        self, *, unit: str, start: np.ndarray, trained: np.ndarray, personal: np.ndarray | None
    ) -> ClientOutcome:
        """Keep the trained model, send nothing."""
        return ClientOutcome(update=None, personal=trained)

    def eval_vector(
        self, *, unit: str, global_vec: np.ndarray, personal: np.ndarray | None
    ) -> np.ndarray:
        """Predict with the client's own model."""
        return global_vec if personal is None else personal


ALGORITHMS: Registry[type[Algorithm]] = Registry(
    "algorithm", entry_point_group="privfed.algorithms", check=subclass_check(Algorithm)
)


def make_algorithm(name: str, params: Mapping[str, Any] | None = None) -> Algorithm:
    """The registered algorithm ``name`` with its parameters checked against its ``Params``.

    Raises:
        RegistryError: unknown algorithm.
        ConfigError: unknown, missing or invalid parameters (each one named).
    """
    cls = ALGORITHMS.get(name)
    return cls(parse_params(cls.Params, params or {}, algorithm=name))


ALGORITHMS.register(
    "fedavg", FedAvg, description="FedAvg per model unit; clients use the global model"
)
ALGORITHMS.register(
    "fedavg-ft",
    FedAvgFineTune,
    description="FedAvg; clients predict with a locally fine-tuned copy (no extra privacy cost)",
)
ALGORITHMS.register(
    "fedprox", FedProx, description="FedAvg with a proximal term (Li et al. 2020); params: mu"
)
ALGORITHMS.register("fedper", FedPer, description="shared trunk, personal heads kept on the client")
ALGORITHMS.register(
    "fedrep", FedRep, description="shared trunk, personal heads; heads then trunk each round"
)
ALGORITHMS.register(
    "ditto", Ditto, description="global model + personal model pulled toward it; params: lambda"
)
ALGORITHMS.register(
    "mocha",
    Mocha,
    description="per-client models + learned task relationships (convex; individual models); "
    "params: lambda",
)
ALGORITHMS.register("local", LocalOnly, description="local-only training, no federation (baseline)")

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "ClientOutcome",
    "Ditto",
    "DittoParams",
    "FedAvg",
    "FedAvgFineTune",
    "FedPer",
    "FedProx",
    "FedRep",
    "LocalOnly",
    "Mocha",
    "MochaParams",
    "NoParams",
    "ProximalParams",
    "make_algorithm",
    "parse_params",
]
