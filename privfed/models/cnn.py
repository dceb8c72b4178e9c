"""A small convolutional network for image sources, sized from the input shape.

Each stage is a 3x3 convolution, GroupNorm (never BatchNorm: it mixes the examples of a batch
and breaks per-sample gradients) and ReLU, followed by 2x2 max pooling while the feature map
is at least 8 pixels on its short side; an adaptive average pool then caps the map at 4x4, and a
fully connected layer of ``hidden`` units feeds one linear head per task. Default widths:

* up to 8x8 (scikit-learn digits): channels (16, 32) -> 32x4x4 features;
* up to 28x28 (MNIST, FEMNIST): channels (32, 64) -> 64x4x4 (28 -> 14 -> 7 -> pooled to 4);
* larger (CIFAR-10 32x32x3): channels (32, 64, 64) -> 64x4x4 (32 -> 16 -> 8 -> 4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from privfed.data.inputs import InputSpec
from privfed.models.base import MultiHead


def default_channels(height: int, width: int) -> tuple[int, ...]:
    """The convolution widths used for a ``height`` x ``width`` image."""
    side = min(height, width)
    if side <= 8:
        return (16, 32)
    if side <= 28:
        return (32, 64)
    return (32, 64, 64)


def cnn_trunk(
    shape: tuple[int, int, int], channels: Sequence[int], hidden: int, groups: int
) -> tuple[nn.Sequential, int]:
    """The convolutional trunk for images of ``shape`` (C, H, W) and its output width."""
    c_in, h, w = shape
    layers: list[nn.Module] = []
    for c in channels:
        layers += [
            nn.Conv2d(c_in, c, kernel_size=3, padding=1),
            nn.GroupNorm(groups, c),
            nn.ReLU(),
        ]
        if min(h, w) >= 8:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        c_in = c
    out_h, out_w = min(h, 4), min(w, 4)
    layers += [
        nn.AdaptiveAvgPool2d((out_h, out_w)),
        nn.Flatten(),
        nn.Linear(c_in * out_h * out_w, hidden),
        nn.ReLU(),
    ]
    return nn.Sequential(*layers), hidden


def cnn_model(
    inputs: InputSpec,
    heads: Mapping[str, int],
    *,
    channels: Sequence[int] = (),
    hidden: int = 128,
    groups: int = 8,
) -> MultiHead:
    """Small CNN with GroupNorm for image sources (C, H, W), sized from the input shape.

    Args:
        inputs: an image input spec (digits 1x8x8, MNIST/FEMNIST 1x28x28, CIFAR-10 3x32x32).
        heads: task -> number of classes.
        channels: convolution widths, one stage each (empty: chosen from the image size, see
            :func:`default_channels`).
        hidden: width of the fully connected layer before the heads.
        groups: GroupNorm groups per stage (must divide every stage's width).
    """
    if inputs.kind != "image":
        raise ValueError(
            f"the cnn needs image inputs (C, H, W); this source gives {inputs.describe()}: "
            'use model = "mlp" (or "lstm" for token ids)'
        )
    widths = tuple(int(c) for c in channels) or default_channels(inputs.shape[1], inputs.shape[2])
    if any(c < 1 for c in widths):
        raise ValueError(f"channels must be >= 1, got {list(widths)}")
    if int(hidden) < 1:
        raise ValueError(f"hidden must be >= 1, got {hidden}")
    if int(groups) < 1 or any(c % int(groups) for c in widths):
        raise ValueError(
            f"groups ({groups}) must divide every stage's channels {list(widths)}; pick a "
            "divisor such as 1, 2, 4 or 8"
        )
    c, h, w = inputs.shape
    trunk, width = cnn_trunk((c, h, w), widths, int(hidden), int(groups))
    return MultiHead(trunk, width, heads)
