"""Small Opacus-compatible models: per-task MLPs and a shared-trunk multi-head MLP.

No BatchNorm anywhere (it mixes examples and breaks per-sample gradients); every layer here has
an Opacus grad sampler. Models map a float feature batch to one logit tensor per task, always
as a dict ``{task: logits}``, so per-task and shared-trunk models train through one code path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn


def _mlp(in_features: int, hidden: Sequence[int]) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers), width


class MultiHeadMLP(nn.Module):
    """An MLP trunk with one linear head per task.

    With a single task this is the per-task model; with several it is hard parameter sharing
    within a task group (Caruana 1997).

    Args:
        in_features: flattened input size.
        hidden: hidden layer widths of the trunk.
        heads: task name -> number of classes.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], heads: Mapping[str, int]) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a model needs at least one head")
        self.trunk, width = _mlp(in_features, hidden)
        self.heads = nn.ModuleDict({t: nn.Linear(width, k) for t, k in heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per task for a batch ``x``."""
        z = self.trunk(x)
        return {t: head(z) for t, head in self.heads.items()}


def flat_parameters(module: nn.Module) -> np.ndarray:
    """All trainable parameters of ``module`` as one float32 vector (module order)."""
    with torch.no_grad():
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).numpy().copy()


def load_flat_parameters(module: nn.Module, vector: np.ndarray) -> None:
    """Copy ``vector`` (as produced by :func:`flat_parameters`) into ``module`` in place."""
    params = list(module.parameters())
    total = sum(p.numel() for p in params)
    if vector.shape != (total,):
        raise ValueError(f"parameter vector has shape {vector.shape}, model needs ({total},)")
    src = torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float32))
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(src[offset : offset + n].view_as(p))
            offset += n


def num_parameters(module: nn.Module) -> int:
    """Number of trainable scalars in ``module``."""
    return sum(p.numel() for p in module.parameters())
