"""The model registry, the factory protocol and parameter-vector helpers.

A *model factory* is a callable ``factory(inputs, heads, **params) -> nn.Module``:

* ``inputs`` is the data source's :class:`~privfed.data.inputs.InputSpec` (shape, kind, vocab);
* ``heads`` maps each task the module must predict to its number of classes;
* ``params`` are the keyword-only parameters the factory declares (``model_params`` in a
  config); a config naming any other parameter is refused at load time.

The module maps a batch ``x`` (``[N, *inputs.shape]``, float32 or int64 ids) to a dict
``{task: logits [N, classes]}``. It must be Opacus-compatible (no BatchNorm, no ``nn.LSTM``;
see :mod:`privfed.models.check`). Task heads live under ``heads.<task>.`` so that algorithms
that keep heads personal (FedPer, FedRep) can find them; :class:`MultiHead` does that for a
trunk. A unit is per-task (``heads`` has one task) or shared-trunk (every task of the group).

Factories register in :data:`MODELS` (built-ins in :mod:`privfed.models.registry`); third-party
packages add theirs through the ``privfed.models`` entry-point group.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from privfed.data.inputs import InputSpec
from privfed.errors import ConfigError, PrivfedError
from privfed.models.registry import MODELS

ModelFactory = Callable[..., nn.Module]
"""``factory(inputs: InputSpec, heads: Mapping[str, int], **params) -> nn.Module``."""

__all__ = [
    "MODELS",
    "ModelFactory",
    "MultiHead",
    "build_model",
    "factory_parameters",
    "flat_parameters",
    "load_flat_parameters",
    "num_parameters",
    "param_problems",
]


class MultiHead(nn.Module):
    """A trunk and one linear head per task: ``x -> {task: heads[task](trunk(x))}``.

    Args:
        trunk: maps a batch to features ``[N, width]``.
        width: the trunk's output width.
        heads: task name -> number of classes.
    """

    def __init__(self, trunk: nn.Module, width: int, heads: Mapping[str, int]) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a model needs at least one head")
        self.trunk = trunk
        self.heads = nn.ModuleDict({t: nn.Linear(width, int(k)) for t, k in heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per task for a batch ``x``."""
        z = self.trunk(x)
        return {t: head(z) for t, head in self.heads.items()}


def factory_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The keyword parameters model ``name`` accepts in ``model_params`` (name -> parameter).

    Raises:
        RegistryError: no model is called ``name``.
    """
    sig = inspect.signature(MODELS.get(name))
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    skip = {p.name for p in positional[:2]}  # inputs, heads
    return {
        p.name: p
        for p in params
        if p.name not in skip and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def _accepts_any(name: str) -> bool:
    sig = inspect.signature(MODELS.get(name))
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())


def param_problems(name: str, params: Mapping[str, Any]) -> list[str]:
    """Problems with ``params`` for model ``name``: unknown names, with the accepted ones.

    Each problem starts with the bare parameter name, so a caller can prefix its config path.
    """
    if _accepts_any(name):
        return []
    accepted = factory_parameters(name)
    allowed = ", ".join(accepted) or "none"
    return [
        f"{p} is not a parameter of model {name!r}; accepted: {allowed}"
        for p in sorted(set(params) - set(accepted))
    ]


def build_model(
    name: str, inputs: InputSpec, heads: Mapping[str, int], params: Mapping[str, Any]
) -> nn.Module:
    """Build model ``name`` for ``inputs`` with ``heads`` and ``params``.

    Raises:
        ConfigError: unknown parameters, values the factory rejects, inputs it cannot take, or
            a factory that returned something other than an ``nn.Module``. Problems read
            ``model 'cnn' ...`` so that a caller can prefix the config path.
        RegistryError: no model is called ``name``.
    """
    factory = MODELS.get(name)
    problems = param_problems(name, params)
    if problems:
        raise ConfigError(problems)
    try:
        module = factory(inputs, dict(heads), **dict(params))
    except PrivfedError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"model {name!r} cannot be built for {inputs.describe()} with model_params "
            f"{dict(params)}: {exc}"
        ) from exc
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"model {name!r}: its factory returned {type(module).__name__}, not a torch "
            "nn.Module; fix the factory"
        )
    return module


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
