"""Models: a registry of Opacus-compatible model factories, and the built-in models.

A config names a model per task group (``[groups.X] model = "cnn"``, ``model_params = {...}``);
the unit's factory gets the data source's input spec and the unit's heads and returns an
``nn.Module`` mapping a batch to ``{task: logits}`` (see :mod:`privfed.models.base`). Before any
round runs, each unit's module is checked for DP-SGD (:mod:`privfed.models.check`).

Built-ins:

* ``mlp``: :class:`MultiHeadMLP` on the flattened input (token ids one-hot encoded).
* ``cnn``: a small GroupNorm CNN for image sources, sized from the image shape.
* ``lstm``: embedding + stacked LSTM for token sequences (next-character tasks).

Third-party packages add models through the ``privfed.models`` entry-point group
(docs/writing-a-model.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privfed.lazy import lazy_exports
from privfed.models.registry import MODELS

if TYPE_CHECKING:
    from privfed.data.inputs import InputSpec
    from privfed.models.base import (
        ModelFactory,
        MultiHead,
        build_model,
        factory_parameters,
        flat_parameters,
        load_flat_parameters,
        num_parameters,
        param_problems,
    )
    from privfed.models.cnn import cnn_model
    from privfed.models.mlp import MultiHeadMLP, mlp_model
    from privfed.models.text import FusedLSTMLayer, lstm_model

__all__ = [
    "MODELS",
    "FusedLSTMLayer",
    "InputSpec",
    "ModelFactory",
    "MultiHead",
    "MultiHeadMLP",
    "build_model",
    "cnn_model",
    "factory_parameters",
    "flat_parameters",
    "load_flat_parameters",
    "lstm_model",
    "mlp_model",
    "num_parameters",
    "param_problems",
]

# Where each public name lives. They are imported on first use (PEP 562), so that importing
# this package -- to list or look up model names -- does not import torch.
_LAZY: dict[str, str] = {
    "InputSpec": "privfed.data.inputs",
    "ModelFactory": "privfed.models.base",
    "MultiHead": "privfed.models.base",
    "build_model": "privfed.models.base",
    "factory_parameters": "privfed.models.base",
    "flat_parameters": "privfed.models.base",
    "load_flat_parameters": "privfed.models.base",
    "num_parameters": "privfed.models.base",
    "param_problems": "privfed.models.base",
    "cnn_model": "privfed.models.cnn",
    "MultiHeadMLP": "privfed.models.mlp",
    "mlp_model": "privfed.models.mlp",
    "FusedLSTMLayer": "privfed.models.text",
    "lstm_model": "privfed.models.text",
}


__getattr__ = lazy_exports(__name__, _LAZY, globals())
