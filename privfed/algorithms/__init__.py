"""Federated algorithms: where local training starts, what is shared, how the server updates.

An :class:`Algorithm` works on one model unit at a time (one task's model, or a group's
shared-trunk model) and sees parameter vectors only. The engine owns everything else: cohort,
DP training, the privacy ledger, secure aggregation. Algorithms register in
:data:`ALGORITHMS` (entry-point group ``privfed.algorithms``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from privfed.registry import Registry


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
    """A federated learning strategy over parameter vectors of one unit."""

    #: Registry name.
    name: str = ""
    #: Whether the server aggregates anything (False: no aggregation runs at all).
    aggregates: bool = True

    @abstractmethod
    def start_vector(self, *, global_vec: np.ndarray, personal: np.ndarray | None) -> np.ndarray:
        """The parameters local training starts from."""

    @abstractmethod
    def after_training(
        self, *, start: np.ndarray, trained: np.ndarray, personal: np.ndarray | None
    ) -> ClientOutcome:
        """Split a trained vector into what is sent and what stays on the client."""

    @abstractmethod
    def eval_vector(self, *, global_vec: np.ndarray, personal: np.ndarray | None) -> np.ndarray:
        """The parameters a client would use for prediction."""

    def server_update(
        self, *, global_vec: np.ndarray, mean_update: np.ndarray, server_lr: float
    ) -> np.ndarray:
        """New global parameters from the mean update (FedAvg step by default)."""
        return (global_vec + server_lr * mean_update).astype(np.float32)


class FedAvg(Algorithm):
    """Federated averaging per unit (McMahan et al. 2017); clients use the global model."""

    name = "fedavg"

    def start_vector(self, *, global_vec: np.ndarray, personal: np.ndarray | None) -> np.ndarray:
        """Start from the global model."""
        return global_vec

    def after_training(
        self, *, start: np.ndarray, trained: np.ndarray, personal: np.ndarray | None
    ) -> ClientOutcome:
        """Send the model delta, keep nothing."""
        return ClientOutcome(update=(trained - start).astype(np.float32), personal=None)

    def eval_vector(self, *, global_vec: np.ndarray, personal: np.ndarray | None) -> np.ndarray:
        """Predict with the global model."""
        return global_vec


class LocalOnly(Algorithm):
    """No federation: each client trains its own model from the common initialization."""

    name = "local"
    aggregates = False

    def start_vector(self, *, global_vec: np.ndarray, personal: np.ndarray | None) -> np.ndarray:
        """Continue the client's own model (the shared initialization the first time)."""
        return global_vec if personal is None else personal

    def after_training(
        self, *, start: np.ndarray, trained: np.ndarray, personal: np.ndarray | None
    ) -> ClientOutcome:
        """Keep the trained model, send nothing."""
        return ClientOutcome(update=None, personal=trained)

    def eval_vector(self, *, global_vec: np.ndarray, personal: np.ndarray | None) -> np.ndarray:
        """Predict with the client's own model."""
        return global_vec if personal is None else personal


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
        self, *, start: np.ndarray, trained: np.ndarray, personal: np.ndarray | None
    ) -> ClientOutcome:
        """Send the model delta and keep the trained model as the personal one."""
        return ClientOutcome(update=(trained - start).astype(np.float32), personal=trained)

    def eval_vector(self, *, global_vec: np.ndarray, personal: np.ndarray | None) -> np.ndarray:
        """Predict with the locally fine-tuned model when there is one."""
        return global_vec if personal is None else personal


ALGORITHMS: Registry[type[Algorithm]] = Registry(
    "algorithm", entry_point_group="privfed.algorithms"
)
ALGORITHMS.register(
    "fedavg", FedAvg, description="FedAvg per model unit; clients use the global model"
)
ALGORITHMS.register(
    "fedavg-ft",
    FedAvgFineTune,
    description="FedAvg; clients predict with a locally fine-tuned copy (no extra privacy cost)",
)
ALGORITHMS.register("local", LocalOnly, description="local-only training, no federation (baseline)")

__all__ = ["ALGORITHMS", "Algorithm", "ClientOutcome", "FedAvg", "FedAvgFineTune", "LocalOnly"]
