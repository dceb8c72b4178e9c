"""The trainer's direct batches against the data loader they replace (fast vs reference).

``UnitTrainer`` cuts its batches from the record tensors instead of iterating its (Opacus or
torch) data loader; both must give the same batches from the same random draws, so a trained
vector is bit-for-bit the one the loader path gives.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import TOY_SPEC, toy_trainer

from privfed.client import direct_batches
from privfed.models import flat_parameters

SPEC = TOY_SPEC


def _trainer(*, n: int, batch: int, sigma: float | None, public: float | None = None):
    return toy_trainer(
        n=n, batch=batch, sigma=sigma, public=public, seed=3, data_seed=n, stream=(5, 0)
    )


CASES = [
    # (records, batch, sigma, public rate): DP (Poisson), plain (shuffled, partial last
    # batch and several epochs per call), public sampling, a single tiny batch, empty batches.
    (40, 8, 1.0, None),
    (37, 8, None, None),
    (32, 16, None, None),
    (50, 8, 0.8, 0.25),
    (3, 8, 1.0, None),
    (6, 2, 1.0, 0.05),
]


@pytest.mark.parametrize(("n", "batch", "sigma", "public"), CASES)
def test_direct_batches_equal_the_loaders(n, batch, sigma, public):
    tr = _trainer(n=n, batch=batch, sigma=sigma, public=public)
    assert direct_batches(tr.loader) is not None
    for epoch in range(3):
        seed = 100 + epoch
        tr.loader.generator.manual_seed(seed)
        reference = [tuple(b) for b in tr.loader]
        tr.loader.generator.manual_seed(seed)
        direct = list(tr._epoch())
        assert len(direct) == len(reference)
        for d, r in zip(direct, reference, strict=True):
            assert len(d) == len(r) == 3
            for a, b in zip(d, r, strict=True):
                assert a.dtype == b.dtype and a.shape == b.shape
                assert torch.equal(a, b)
        # the generator is left in the same state (the next epoch draws the same)
        tr.loader.generator.manual_seed(seed)
        list(tr.loader)
        after_loader = torch.rand(4, generator=tr.loader.generator)
        tr.loader.generator.manual_seed(seed)
        list(tr._epoch())
        assert torch.equal(torch.rand(4, generator=tr.loader.generator), after_loader)


@pytest.mark.parametrize(("n", "batch", "sigma", "public"), CASES)
def test_training_on_direct_batches_gives_the_loaders_vector(n, batch, sigma, public):
    fast = _trainer(n=n, batch=batch, sigma=sigma, public=public)
    slow = _trainer(n=n, batch=batch, sigma=sigma, public=public)
    slow._tensors = None  # the data loader path
    start = flat_parameters(SPEC.build())
    for r in range(2):
        a = fast.train(start, steps=7, round_index=r)
        b = slow.train(start, steps=7, round_index=r)
        assert np.array_equal(a.vector, b.vector)
        assert a.steps == b.steps == 7
        assert a.mean_loss == b.mean_loss or (np.isnan(a.mean_loss) and np.isnan(b.mean_loss))


def test_loaders_that_are_not_over_tensors_use_the_loader():
    data = [(torch.zeros(2), torch.tensor(0))] * 4
    loader = torch.utils.data.DataLoader(data, batch_size=2)  # type: ignore[arg-type]
    assert direct_batches(loader) is None
    tensors = torch.utils.data.TensorDataset(torch.zeros(4, 2))
    custom = torch.utils.data.DataLoader(tensors, batch_size=2, collate_fn=lambda b: b)
    assert direct_batches(custom) is None


@pytest.mark.parametrize("frozen", [False, True])
def test_plain_sgd_step_equals_torch_sgd(frozen: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _trainer(n=37, batch=8, sigma=None)
    slow = _trainer(n=37, batch=8, sigma=None)
    group = slow.optimizer.param_groups[0]
    assert group["momentum"] == 0 and group["weight_decay"] == 0 and not group["maximize"]
    monkeypatch.setattr(slow, "_sgd_step", slow.optimizer.step)
    start = flat_parameters(SPEC.build())
    mask = np.zeros(start.shape, dtype=bool)
    mask[: start.size // 2] = frozen
    centre = start + 0.5
    kw = {"prox_center": centre, "prox_mu": 0.3, "frozen": mask if frozen else None}
    a = fast.train(start, steps=9, round_index=1, **kw)
    b = slow.train(start, steps=9, round_index=1, **kw)
    assert np.array_equal(a.vector, b.vector)
    assert not np.array_equal(a.vector, start)
