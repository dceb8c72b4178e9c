"""What a model receives from a data source: input specs and shaped inputs."""

import numpy as np
import pytest

from privfed.data import load_source
from privfed.data.inputs import InputSpec, input_spec, model_inputs, token_vocab
from privfed.data.sources import SourceData


def test_token_ids_keep_their_shape_and_the_vocabulary_counts_the_unknown_id() -> None:
    src = SourceData(
        name="toy",
        x=np.array([[0, 2], [1, 1]], dtype=np.int64),
        labels={"next": np.array([1, 0], dtype=np.int64)},
        num_classes={"next": 3},
        meta={"input_kind": "token_ids", "vocab": "abc"},
    )
    assert token_vocab(src) == 4  # three characters and the unknown id
    assert input_spec(src) == InputSpec(shape=(2,), kind="token_ids", vocab=4)
    out = model_inputs(src, np.array([1, 0]))
    assert out.dtype == np.int64 and out.tolist() == [[1, 1], [0, 2]]


def test_images_and_features() -> None:
    digits = load_source("digits", seed=0)
    assert input_spec(digits) == InputSpec(shape=(1, 8, 8), kind="image")
    x = model_inputs(digits, np.array([0, 5]))
    assert x.shape == (2, 1, 8, 8) and x.dtype == np.float32
    markov = load_source("markov", seed=0, vocab=8, num_owners=2, tokens_per_owner=20)
    assert input_spec(markov) == InputSpec(shape=(8,), kind="features")
    assert InputSpec(shape=(1, 8, 8), kind="image").describe() == "image 1x8x8"


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="vocab must be > 0 exactly for token_ids"):
        InputSpec(shape=(80,), kind="token_ids")
    with pytest.raises(ValueError, match="image input has shape"):
        InputSpec(shape=(64,), kind="image")
