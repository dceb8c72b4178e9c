"""The model registry and the built-in models, named without importing them.

:data:`MODELS` maps a model name to its factory (see :mod:`privfed.models.base` for the factory
protocol). The built-ins are registered by ``"module:function"`` target so that listing or
checking model names does not import torch; a factory's module is imported when the model is
first looked up. Third-party packages add models through the ``privfed.models`` entry-point
group (docs/writing-a-model.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privfed.registry import Registry, callable_check

if TYPE_CHECKING:
    from privfed.models.base import ModelFactory


MODELS: Registry[ModelFactory] = Registry(
    "model", entry_point_group="privfed.models", check=callable_check("a model factory")
)

MODELS.register_lazy(
    "mlp",
    "privfed.models.mlp:mlp_model",
    description="multi-layer perceptron on the flattened input (token ids one-hot); any source",
)
MODELS.register_lazy(
    "cnn",
    "privfed.models.cnn:cnn_model",
    description="small GroupNorm CNN for images (8x8 digits, 28x28 MNIST/FEMNIST, 32x32 CIFAR)",
)
MODELS.register_lazy(
    "lstm",
    "privfed.models.text:lstm_model",
    description="embedding + stacked LSTM on token ids, per-sample gradients (next character)",
)
