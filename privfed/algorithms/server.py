"""Server optimizers: how the mean client update moves the global model.

Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2: the mean update is a
pseudo-gradient; ``sgd`` with learning rate 1 is FedAvg, ``adam`` is FedAdam.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ServerOptimizer:
    """Plain server SGD on the pseudo-gradient: ``w + lr * mean_update``.

    Args:
        lr: server learning rate.
    """

    name = "sgd"

    def __init__(self, *, lr: float) -> None:
        self.lr = float(lr)

    def step(self, *, unit: str, global_vec: np.ndarray, mean_update: np.ndarray) -> np.ndarray:
        """New global vector of ``unit``."""
        return (global_vec + self.lr * mean_update).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state for checkpoints (a tree that privfed.checkpoint.write_state stores)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class ServerAdam(ServerOptimizer):
    """FedAdam (Reddi et al. 2021, Algorithm 2, no bias correction as in the paper).

    ``m = b1 m + (1 - b1) d``, ``v = b2 v + (1 - b2) d²``, ``w += lr * m / (sqrt(v) + tau)``.
    """

    name = "adam"

    def __init__(
        self, *, lr: float, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
    ) -> None:
        super().__init__(lr=lr)
        self.beta1, self.beta2, self.tau = float(beta1), float(beta2), float(tau)
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def step(self, *, unit: str, global_vec: np.ndarray, mean_update: np.ndarray) -> np.ndarray:
        """One FedAdam step of ``unit``."""
        d = mean_update.astype(np.float64)
        m = self.beta1 * self.m.get(unit, np.zeros_like(d)) + (1 - self.beta1) * d
        v = self.beta2 * self.v.get(unit, np.zeros_like(d)) + (1 - self.beta2) * d * d
        self.m[unit], self.v[unit] = m, v
        return (global_vec + self.lr * m / (np.sqrt(v) + self.tau)).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """First and second moments per unit."""
        return {"m": dict(self.m), "v": dict(self.v)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the moments."""
        self.m = dict(state.get("m", {}))
        self.v = dict(state.get("v", {}))
