"""A model unit: one model trained and aggregated as one vector (its description only).

This module imports no torch: the framework hands unit descriptions to attacks and to tools
that only list or check things; :meth:`UnitSpec.build` imports the model code when a module is
really built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from privfed.data.inputs import InputSpec

if TYPE_CHECKING:
    from torch import nn

__all__ = ["UnitSpec"]


@dataclass(frozen=True)
class UnitSpec:
    """A model trained and aggregated as one vector.

    Attributes:
        name: ``group.task`` for a per-task model, ``group`` for a shared-trunk model.
        group: task group name.
        tasks: label columns (heads) of the model.
        in_features: flattened input size as an MLP's first layer sees it (token ids count
            ``vocab`` each, one-hot).
        hidden: hidden widths of the ``mlp`` model (its ``hidden`` parameter unless
            ``model_params`` sets it); unused by other models.
        heads: task -> number of classes.
        model: registered model name (``privfed.models.MODELS``).
        model_params: the model factory's parameters.
        inputs: the data source's input spec; None means float feature vectors of
            ``in_features``.
    """

    name: str
    group: str
    tasks: tuple[str, ...]
    in_features: int
    hidden: tuple[int, ...]
    heads: Mapping[str, int]
    model: str = "mlp"
    model_params: Mapping[str, Any] = field(default_factory=dict)
    inputs: InputSpec | None = None

    @property
    def input_spec(self) -> InputSpec:
        """What one record looks like to the model."""
        if self.inputs is not None:
            return self.inputs
        return InputSpec(shape=(self.in_features,), kind="features")

    @property
    def factory_params(self) -> dict[str, Any]:
        """The parameters passed to the model factory."""
        params = dict(self.model_params)
        if self.model == "mlp":
            params.setdefault("hidden", tuple(self.hidden))
        return params

    def build(self) -> nn.Module:
        """A fresh (untrained) model of this unit: ``x -> {task: logits}``."""
        from privfed.models import build_model

        return build_model(self.model, self.input_spec, self.heads, self.factory_params)
