"""A client's persistent training state for one model unit, with DP-SGD through Opacus.

One :class:`UnitTrainer` exists per (client, unit) for the whole run: the Opacus
``PrivacyEngine`` wraps its model, optimizer and Poisson data loader once, and every round only
the weights are loaded into it. (A new engine per round would silently reset Opacus's
accountant, and a second engine on the same model fails; see the field notes.)

The trainer's random streams (Poisson sampling, DP noise) are re-seeded from the run seed at
every call, so a client's round does not depend on earlier rounds' draws: resumed runs and
runs on other backends give the same numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privfed.models import flat_parameters, load_flat_parameters
from privfed.privacy.planning import sample_rate_for
from privfed.rng import int_seed
from privfed.unit import UnitSpec

__all__ = ["TrainResult", "UnitSpec", "UnitTrainer", "sample_rate_for"]


@dataclass(frozen=True)
class TrainResult:
    """What one local training call produced.

    Attributes:
        vector: the trained parameters (float32).
        steps: optimizer steps actually taken (each one is a DP event when private).
        sample_rate: Poisson sampling rate the data loader used (1 / len(loader)).
        noise_multiplier: DP noise multiplier used (0 when not private).
        mean_loss: mean training loss over the non-empty batches (nan if all were empty).
    """

    vector: np.ndarray
    steps: int
    sample_rate: float
    noise_multiplier: float
    mean_loss: float


def direct_batches(loader: DataLoader) -> tuple[torch.Tensor, ...] | None:
    """The tensors behind ``loader`` if its batches can be cut from them directly, else None.

    That is a single-process loader over a :class:`~torch.utils.data.TensorDataset` with a
    batch sampler and the default collation (or Opacus's wrapper of it, which only adds empty
    batches): iterating it stacks ``dataset[i]`` for the sampled indices ``i``, the same
    values as indexing each tensor with them.
    """
    from torch.utils.data._utils.collate import default_collate

    collate = loader.collate_fn
    if collate is not default_collate:
        from opacus.data_loader import CollateFnWithEmpty

        if isinstance(collate, CollateFnWithEmpty):
            collate = collate.wrapped_collator_fn
    if (
        isinstance(loader.dataset, TensorDataset)
        and loader.num_workers == 0
        and loader.batch_sampler is not None
        and collate is default_collate
        and not loader.pin_memory
    ):
        return tuple(loader.dataset.tensors)
    return None


class UnitTrainer:
    """Persistent local trainer of one unit on one client's training records.

    Args:
        spec: the unit.
        x: training inputs as the unit's model takes them (float32, or int64 token ids).
        y: label column -> int64 tensor, one per head.
        batch_size: expected (Poisson) batch size.
        lr: SGD learning rate.
        noise_multiplier: DP noise multiplier; None trains without DP (no clipping, no noise).
        max_grad_norm: per-sample clipping norm (private training only).
        seed: run seed; with ``stream`` it names this trainer's random streams.
        stream: integer coordinates (client, unit index) of this trainer.
        public_sample_rate: if given (``dp.public_sampling``), Poisson-sample records at this
            public rate instead of ``1 / len(loader)``, which depends on the private record count.
        public_batch_size: with ``public_sample_rate``, the public divisor of the summed clipped
            gradients (Opacus divides by its ``expected_batch_size``, otherwise derived from
            the record count).
    """

    def __init__(
        self,
        spec: UnitSpec,
        *,
        x: torch.Tensor,
        y: Mapping[str, torch.Tensor],
        batch_size: int,
        lr: float,
        noise_multiplier: float | None,
        max_grad_norm: float,
        seed: int,
        stream: Sequence[int],
        public_sample_rate: float | None = None,
        public_batch_size: int | None = None,
    ) -> None:
        if len(x) == 0:
            raise ValueError(f"unit {spec.name}: a trainer needs at least one training record")
        self.spec = spec
        self.seed = seed
        self.stream = tuple(stream)
        self.tasks = spec.tasks
        self.private = noise_multiplier is not None
        self.lr = lr
        self.noise_multiplier = float(noise_multiplier or 0.0)
        self._sample_gen = torch.Generator()
        self._noise_gen = torch.Generator()
        dataset = TensorDataset(x, *(y[t] for t in spec.tasks))
        model: nn.Module = spec.build()
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=True, generator=self._sample_gen
        )
        self.sample_rate = 1.0 / len(loader)
        if self.private:
            with warnings.catch_warnings():
                # Opacus warns that it was not asked for secure_mode; simulation randomness is
                # seeded on purpose (reproducibility). Cryptographic randomness is elsewhere.
                warnings.simplefilter("ignore")
                engine = PrivacyEngine(accountant="rdp")
                model, optimizer, loader = engine.make_private(
                    module=model,
                    optimizer=optimizer,
                    data_loader=loader,
                    noise_multiplier=self.noise_multiplier,
                    max_grad_norm=max_grad_norm,
                    poisson_sampling=True,
                    noise_generator=self._noise_gen,
                )
                if public_sample_rate is not None:
                    # Poisson sampling at the public rate, averaged by a public batch size, and
                    # Opacus's own accountant told the same rate.
                    loader = DPDataLoader(
                        dataset, sample_rate=public_sample_rate, generator=self._sample_gen
                    )
                    self.sample_rate = float(public_sample_rate)
                    optimizer.expected_batch_size = int(public_batch_size or 1)
                    optimizer.attach_step_hook(
                        engine.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate)
                    )
            self.engine: PrivacyEngine | None = engine
        else:
            self.engine = None
        self.model = model
        self.optimizer = optimizer
        self.loader = loader
        self._tensors: tuple[torch.Tensor, ...] | None = direct_batches(loader)
        self._loss = nn.CrossEntropyLoss()

    @property
    def module(self) -> nn.Module:
        """The plain model under the Opacus wrapper."""
        inner = getattr(self.model, "_module", None)
        return inner if isinstance(inner, nn.Module) else self.model

    def train(
        self,
        start: np.ndarray,
        *,
        steps: int,
        round_index: int,
        prox_center: np.ndarray | None = None,
        prox_mu: float = 0.0,
        frozen: np.ndarray | None = None,
        phase: int = 0,
    ) -> TrainResult:
        """Load ``start`` and run ``steps`` SGD (DP-SGD when private) steps.

        With ``prox_mu > 0`` every step also moves by ``-lr * prox_mu * (w - prox_center)``, the
        gradient of the proximal term ``prox_mu / 2 * ||w - prox_center||^2`` (FedProx, Li et
        al. 2020; Ditto, Li et al. 2021). The term does not touch the data, so it is added
        after Opacus privatizes the data gradient (post-processing: no privacy cost); adding it
        to the loss instead would be silently dropped, because Opacus uses per-sample
        gradients from layer hooks only.

        Args:
            start: parameter vector to start from.
            steps: optimizer steps (Poisson batches).
            round_index: federated round, used to derive this call's random streams.
            prox_center: centre of the proximal term (None: no proximal term).
            prox_mu: weight of the proximal term.
            frozen: boolean mask of coordinates kept at their start value (FedRep's phases);
                the DP step still clips and noises the whole gradient, so the privacy
                accounting is unchanged.
            phase: index of this call within the round (distinct random streams per phase).
        """
        coords = (round_index, *self.stream, phase) if phase else (round_index, *self.stream)
        self._sample_gen.manual_seed(int_seed(self.seed, "sample", *coords))
        self._noise_gen.manual_seed(int_seed(self.seed, "noise", *coords))
        load_flat_parameters(self.module, start)
        self.model.train()
        with warnings.catch_warnings():
            # Inputs carry no gradient, so torch notes that Opacus's full backward hooks fire on
            # module outputs; that is how Opacus computes per-sample gradients.
            warnings.filterwarnings("ignore", message="Full backward hook", category=UserWarning)
            center = None
            if prox_center is not None and prox_mu > 0:
                center = torch.from_numpy(np.ascontiguousarray(prox_center, dtype=np.float32))
            keep = None
            if frozen is not None and frozen.any():
                keep = (
                    torch.from_numpy(np.ascontiguousarray(frozen)),
                    torch.from_numpy(np.ascontiguousarray(start, dtype=np.float32)),
                )
            done, losses = self._steps(steps, center=center, mu=prox_mu, keep=keep)
        return TrainResult(
            vector=flat_parameters(self.module),
            steps=done,
            sample_rate=self.sample_rate,
            noise_multiplier=self.noise_multiplier if self.private else 0.0,
            mean_loss=float(np.mean(losses)) if losses else float("nan"),
        )

    def _steps(
        self,
        steps: int,
        *,
        center: torch.Tensor | None,
        mu: float,
        keep: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[int, list[float]]:
        params = list(self.module.parameters())
        frozen: list[tuple[torch.Tensor, torch.Tensor]] = []
        if keep is not None:
            mask, values = keep
            offset = 0
            for p in params:
                n = p.numel()
                frozen.append(
                    (mask[offset : offset + n].view_as(p), values[offset : offset + n].view_as(p))
                )
                offset += n
        centers: list[torch.Tensor] = []
        if center is not None:
            offset = 0
            for p in params:
                centers.append(center[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        losses: list[torch.Tensor] = []
        done = 0
        # Without DP the optimizer is plain SGD: its update is applied directly (what
        # torch.optim.SGD does on CPU tensors, without its per-step bookkeeping).
        step = self.optimizer.step if self.private else self._sgd_step
        while done < steps:
            for batch in self._epoch():
                xb, ys = batch[0], batch[1:]
                if self.private:
                    self.optimizer.zero_grad(set_to_none=True)
                else:
                    for p in params:
                        p.grad = None
                out = self.model(xb)
                loss = self._loss(out[self.tasks[0]], ys[0])
                for t, yb in zip(self.tasks[1:], ys[1:], strict=True):
                    loss = loss + self._loss(out[t], yb)
                loss.backward()
                prox = (
                    [mu * (p.detach() - c) for p, c in zip(params, centers, strict=True)]
                    if centers
                    else []
                )
                step()
                if prox:
                    with torch.no_grad():
                        for p, d in zip(params, prox, strict=True):
                            p.add_(d, alpha=-self.lr)
                if frozen:
                    with torch.no_grad():
                        for p, (m, v) in zip(params, frozen, strict=True):
                            p.copy_(torch.where(m, v, p))
                if len(xb):
                    losses.append(loss.detach())
                done += 1
                if done == steps:
                    break
        return done, [float(v) for v in losses]

    def release(self) -> None:
        """Drop the gradients the last step left (and Opacus's per-sample gradients).

        A trainer is kept between rounds; without this it would hold a gradient per parameter,
        and under DP a per-sample gradient per record of the last batch (most of its memory).
        """
        if self.private:
            self.optimizer.zero_grad(set_to_none=True)  # Opacus clears grad_sample too
        else:
            for p in self.module.parameters():
                p.grad = None

    def _sgd_step(self) -> None:
        """``torch.optim.SGD.step`` without momentum or weight decay: ``p -= lr * grad``.

        The same operation, with the same arguments, as the single-tensor path SGD takes on CPU
        (``tests/core/test_trainer_batches.py`` compares the two).
        """
        with torch.no_grad():
            for group in self.optimizer.param_groups:
                lr = float(group["lr"])
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-lr)

    def _epoch(self) -> Iterator[Sequence[torch.Tensor]]:
        """One pass over ``self.loader``: the same batches from the same random draws.

        For a loader over in-memory tensors (every trainer's), the batches are cut from the
        tensors directly instead of fetched record by record and collated: the data loader's
        iterator draws its base seed from the loader's generator, then its batch sampler
        (Poisson or shuffled) draws the indices, exactly as here, and indexing copies the same
        values ``torch.stack`` would (``tests/core/test_trainer_batches.py`` checks both paths
        against each other).
        """
        if self._tensors is None:
            yield from self.loader
            return
        torch.empty((), dtype=torch.int64).random_(generator=self.loader.generator)
        for idx in self.loader.batch_sampler:  # type: ignore[union-attr]
            index = torch.tensor(idx, dtype=torch.int64)
            yield tuple(t.index_select(0, index) for t in self._tensors)
