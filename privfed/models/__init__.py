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

from privfed.data.inputs import InputSpec
from privfed.models.base import (
    MODELS,
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

MODELS.register(
    "mlp",
    mlp_model,
    description="multi-layer perceptron on the flattened input (token ids one-hot); any source",
)
MODELS.register(
    "cnn",
    cnn_model,
    description="small GroupNorm CNN for images (8x8 digits, 28x28 MNIST/FEMNIST, 32x32 CIFAR)",
)
MODELS.register(
    "lstm",
    lstm_model,
    description="embedding + stacked LSTM on token ids, per-sample gradients (next character)",
)
