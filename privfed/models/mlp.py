"""The multi-layer perceptron: per-task MLPs and a shared-trunk multi-head MLP.

Inputs are flattened; token ids are one-hot encoded first (inside the module, so the data path
is the same for every model). Every layer has an Opacus grad sampler.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from privfed.data.inputs import InputSpec


class OneHotFlatten(nn.Module):
    """Token ids ``[N, L]`` -> flattened one-hot floats ``[N, L * vocab]`` (no parameters)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = int(vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One-hot encode and flatten."""
        return F.one_hot(x.long(), self.vocab).to(torch.float32).flatten(1)


def _mlp(in_features: int, hidden: Sequence[int], vocab: int) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = [OneHotFlatten(vocab) if vocab else nn.Flatten()]
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
        in_features: flattened input size (for token ids: length x vocab).
        hidden: hidden layer widths of the trunk (empty: a linear model).
        heads: task name -> number of classes.
        vocab: one-hot encode integer token ids over this vocabulary first (0: float inputs).
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        heads: Mapping[str, int],
        *,
        vocab: int = 0,
    ) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a model needs at least one head")
        self.trunk, width = _mlp(in_features, hidden, vocab)
        self.heads = nn.ModuleDict({t: nn.Linear(width, k) for t, k in heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per task for a batch ``x``."""
        z = self.trunk(x)
        return {t: head(z) for t, head in self.heads.items()}

    def init_parameters(self, generator: torch.Generator) -> None:
        """The engine's initialization: weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)), zero biases.

        Drawn in parameter order from ``generator`` (the run's ``init`` stream of the unit).
        """
        with torch.no_grad():
            for p in self.parameters():
                if p.dim() > 1:
                    bound = 1.0 / math.sqrt(p.shape[1])
                    p.uniform_(-bound, bound, generator=generator)
                else:
                    p.zero_()


def mlp_model(
    inputs: InputSpec, heads: Mapping[str, int], *, hidden: Sequence[int] = (64,)
) -> MultiHeadMLP:
    """Multi-layer perceptron on the flattened input (token ids one-hot encoded).

    Args:
        inputs: the data source's input spec (any kind).
        heads: task -> number of classes.
        hidden: hidden layer widths (``groups.X.hidden`` sets them; empty: linear model).
    """
    widths = tuple(int(h) for h in hidden)
    if any(h < 1 for h in widths):
        raise ValueError(f"hidden widths must be >= 1, got {list(widths)}")
    vocab = inputs.vocab if inputs.kind == "token_ids" else 0
    return MultiHeadMLP(inputs.size * max(vocab, 1), widths, heads, vocab=vocab)
