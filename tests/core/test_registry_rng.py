import numpy as np
import pytest

from privfed.errors import RegistryError
from privfed.registry import Registry
from privfed.rng import int_seed, numpy_rng, torch_generator


def test_registry_register_get_and_suggest():
    reg: Registry[int] = Registry("widget")
    reg.register("alpha", 1, description="first")
    reg.register("beta", 2)
    assert reg.get("alpha") == 1
    assert reg.names() == ["alpha", "beta"]
    with pytest.raises(RegistryError, match="did you mean 'alpha'.*Registered: alpha, beta"):
        reg.get("alpah")
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("alpha", 3)
    reg.register("alpha", 3, force=True)
    assert reg.get("alpha") == 3


def test_streams_are_stable_and_distinct():
    a = numpy_rng(7, "train", 1, 2).random(4)
    b = numpy_rng(7, "train", 1, 2).random(4)
    c = numpy_rng(7, "train", 2, 1).random(4)
    d = numpy_rng(7, "noise", 1, 2).random(4)
    e = numpy_rng(8, "train", 1, 2).random(4)
    assert np.array_equal(a, b)
    for other in (c, d, e):
        assert not np.array_equal(a, other)
    assert int_seed(1, "x", 3) == int_seed(1, "x", 3) != int_seed(1, "x", 4)
    g1, g2 = torch_generator(1, "x"), torch_generator(1, "x")
    import torch

    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
