"""What a model receives from a data source: the input spec and the input tensors.

A data source's records reach a model unchanged in shape: float feature vectors as
``[N, features]``, images as ``[N, C, H, W]`` and token sequences (LEAF Shakespeare) as int64
ids ``[N, length]``. Encoding (flattening, one-hot) is the model's business, so one data path
serves every model: the MLP one-hot encodes token ids itself, the text models embed them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from privfed.data.sources import SourceData

InputKind = Literal["features", "image", "token_ids"]


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """The shape and kind of one record as a model receives it.

    Attributes:
        shape: one record's shape: ``(features,)``, ``(C, H, W)`` or ``(length,)``.
        kind: ``"features"`` (float vector), ``"image"`` (float ``C, H, W``) or
            ``"token_ids"`` (int64 ids in ``0 .. vocab - 1``).
        vocab: number of token ids (``token_ids`` only; 0 otherwise).
    """

    shape: tuple[int, ...]
    kind: InputKind
    vocab: int = 0

    def __post_init__(self) -> None:
        if not self.shape or any(int(d) < 1 for d in self.shape):
            raise ValueError(f"input shape must be non-empty and positive, got {self.shape}")
        if self.kind not in ("features", "image", "token_ids"):
            raise ValueError(f"input kind must be features, image or token_ids, got {self.kind}")
        if self.kind == "image" and len(self.shape) != 3:
            raise ValueError(f"an image input has shape (C, H, W), got {self.shape}")
        if (self.kind == "token_ids") != (self.vocab > 0):
            raise ValueError(
                f"vocab must be > 0 exactly for token_ids inputs, got kind {self.kind} and "
                f"vocab {self.vocab}"
            )
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def size(self) -> int:
        """Scalars per record (ids count once)."""
        return int(np.prod(self.shape))

    def describe(self) -> str:
        """A short human-readable description, e.g. ``image 1x8x8``."""
        dims = "x".join(str(d) for d in self.shape)
        if self.kind == "token_ids":
            return f"token ids [{dims}] over a vocabulary of {self.vocab}"
        return f"{self.kind} {dims}"


def token_vocab(src: SourceData) -> int:
    """Vocabulary size of a token-id source: its declared vocabulary plus the unknown id.

    Never smaller than the largest id present plus one. 0 for sources of float inputs.
    """
    if src.meta.get("input_kind") != "token_ids":
        return 0
    vocab = src.meta.get("vocab")
    known = len(vocab) + 1 if isinstance(vocab, (str, list, tuple)) else 0  # + unknown id
    present = int(src.x.max()) + 1 if len(src) else 0
    return max(known, present, 1)


def input_spec(src: SourceData) -> InputSpec:
    """The :class:`InputSpec` of a data source's records.

    Token ids are flagged by ``meta["input_kind"] == "token_ids"``; float records of shape
    ``(C, H, W)`` are images; anything else is a feature vector (or tensor) as it is.
    """
    shape = src.input_shape
    vocab = token_vocab(src)
    if vocab:
        return InputSpec(shape=shape, kind="token_ids", vocab=vocab)
    if len(shape) == 3:
        return InputSpec(shape=shape, kind="image")
    return InputSpec(shape=shape, kind="features")


def model_inputs(src: SourceData, idx: np.ndarray) -> np.ndarray:
    """Records ``idx`` as a model receives them: float32 ``[n, *shape]`` or int64 ids."""
    x = src.x[idx]
    if src.meta.get("input_kind") == "token_ids":
        return np.ascontiguousarray(x, dtype=np.int64)
    return np.ascontiguousarray(x, dtype=np.float32)
