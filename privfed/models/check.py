"""Checks that a built model can be trained with DP-SGD, before any round runs.

:func:`model_problems` runs three checks on a freshly built module and returns one line per
problem, each naming the layer (or parameter) and the fix:

1. Opacus's ``ModuleValidator`` rules, applied layer by layer so the message can name the
   layer (BatchNorm -> GroupNorm, ``nn.LSTM`` -> ``opacus.layers.DPLSTM``, ...).
2. The output contract: a dict ``{task: logits [N, classes]}`` for exactly the unit's tasks.
3. Per-sample gradients: one Opacus ``GradSampleModule`` step on two synthetic records must give
   every trainable parameter a per-sample gradient, and record 0's must equal the gradient of
   record 0 alone (a layer that mixes the examples of a batch fails this).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator
from torch import nn

from privfed.data.inputs import InputSpec

# type name -> the fix, for the layers Opacus's validator knows (see opacus/validators)
_FIXES = {
    "BatchNorm1d": "replace it with nn.GroupNorm (or nn.LayerNorm)",
    "BatchNorm2d": "replace it with nn.GroupNorm (or nn.LayerNorm)",
    "BatchNorm3d": "replace it with nn.GroupNorm (or nn.LayerNorm)",
    "SyncBatchNorm": "replace it with nn.GroupNorm (or nn.LayerNorm)",
    "InstanceNorm1d": "construct it with track_running_stats=False",
    "InstanceNorm2d": "construct it with track_running_stats=False",
    "InstanceNorm3d": "construct it with track_running_stats=False",
    "LSTM": "replace it with opacus.layers.DPLSTM (same arguments)",
    "GRU": "replace it with opacus.layers.DPGRU (same arguments)",
    "RNN": "replace it with opacus.layers.DPRNN (same arguments)",
    "MultiheadAttention": "replace it with opacus.layers.DPMultiheadAttention",
}
_GENERIC_FIX = "opacus.validators.ModuleValidator.fix(module) shows a compatible replacement"


def example_batch(
    inputs: InputSpec, heads: Mapping[str, int], *, n: int, seed: int = 0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``n`` synthetic records of ``inputs`` and labels for ``heads`` (fixed seed)."""
    gen = torch.Generator().manual_seed(seed)
    if inputs.kind == "token_ids":
        x = torch.randint(0, inputs.vocab, (n, *inputs.shape), generator=gen)
    else:
        x = torch.rand(n, *inputs.shape, generator=gen)
    ys = {t: torch.randint(0, int(k), (n,), generator=gen) for t, k in heads.items()}
    return x, ys


def layer_problems(module: nn.Module) -> list[str]:
    """Opacus's validator rules, one problem per offending layer, naming it and the fix."""
    problems: list[str] = []
    for name, sub in module.named_modules():
        validator = ModuleValidator.VALIDATORS.get(type(sub))
        if validator is None:
            continue
        if not any(p.requires_grad for p in sub.parameters(recurse=False)) and not isinstance(
            sub, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
        ):
            continue
        errors = validator(sub)
        if errors:
            kind = type(sub).__name__
            reason = str(errors[0]).split(". ")[0]
            fix = _FIXES.get(kind, _GENERIC_FIX)
            problems.append(
                f"layer {name or '(root)'} ({kind}) cannot be trained with DP-SGD: {reason}; {fix}"
            )
    return problems


def output_problems(out: object, heads: Mapping[str, int], n: int) -> list[str]:
    """Problems with a forward pass's output for ``n`` records."""
    if not isinstance(out, Mapping):
        return [
            f"the module returned {type(out).__name__}; it must return a dict "
            f"{{task: logits}} for the tasks {', '.join(heads)}"
        ]
    problems = []
    if set(out) != set(heads):
        problems.append(
            f"the module returned logits for {sorted(map(str, out))}; expected exactly "
            f"{sorted(heads)} (one head per task of the unit)"
        )
    for t, k in heads.items():
        v = out.get(t)
        if isinstance(v, torch.Tensor) and tuple(v.shape) != (n, int(k)):
            problems.append(
                f"logits of task {t!r} have shape {list(v.shape)}; expected [{n}, {k}] "
                "(batch, classes)"
            )
    return problems


def _loss(out: Mapping[str, torch.Tensor], ys: Mapping[str, torch.Tensor]) -> torch.Tensor:
    ce = nn.CrossEntropyLoss(reduction="sum")
    return sum((ce(out[t], y) for t, y in ys.items()), torch.zeros(()))


def gradient_problems(
    module: nn.Module, inputs: InputSpec, heads: Mapping[str, int], *, rtol: float = 1e-3
) -> list[str]:
    """Per-sample gradient check on two synthetic records (see the module docstring).

    The module is used as it is (its parameters receive gradients); pass a throwaway copy.
    """
    x, ys = example_batch(inputs, heads, n=2)
    # Opacus records activations in training mode only; dropout off, so that the two passes
    # below compute the same function
    module.train()
    for sub in module.modules():
        if isinstance(sub, nn.modules.dropout._DropoutNd):
            sub.eval()
    problems: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsm = GradSampleModule(module, loss_reduction="sum")
        try:
            _loss(gsm(x), ys).backward()
            per_sample = {}
            for name, p in module.named_parameters():
                if not p.requires_grad:
                    continue
                gs = getattr(p, "grad_sample", None)
                if gs is None or tuple(gs.shape) != (2, *p.shape):
                    problems.append(
                        f"parameter {name} got no per-sample gradient; its layer is not "
                        "supported by Opacus (use standard layers or register a grad sampler)"
                    )
                    continue
                per_sample[name] = gs[0].detach().clone()
            gsm.zero_grad(set_to_none=True)
        finally:
            gsm.remove_hooks()
    if problems:
        return problems
    module.zero_grad(set_to_none=True)
    _loss(module(x[:1]), {t: y[:1] for t, y in ys.items()}).backward()
    alone = {
        name: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone()
        for name, p in module.named_parameters()
        if name in per_sample
    }
    module.zero_grad(set_to_none=True)
    # one scale for the whole model: a parameter whose gradient is ~0 (a bias before a
    # normalization) must not be judged on its rounding noise
    scale = max(
        [float(g.abs().max()) for g in (*alone.values(), *per_sample.values()) if g.numel()]
        or [0.0]
    )
    for name, g in alone.items():
        if float((per_sample[name] - g).abs().max()) > rtol * scale + 1e-8:
            problems.append(
                f"parameter {name}: record 0's per-sample gradient depends on the other records "
                "of the batch; a layer mixes examples (batch statistics?), which DP-SGD cannot "
                "clip per record: make every layer act on each record independently"
            )
    return problems


def model_problems(module: nn.Module, inputs: InputSpec, heads: Mapping[str, int]) -> list[str]:
    """Every reason ``module`` cannot be trained with DP-SGD on ``inputs`` (empty: fine).

    The module's parameters receive gradients during the check: pass a throwaway instance.
    """
    module.train()
    problems = layer_problems(module)
    if problems:
        return problems
    x, _ = example_batch(inputs, heads, n=2)
    try:
        with torch.no_grad():
            out = module(x)
    except Exception as exc:  # a user's module: report, never crash the run later
        return [f"the module fails on a batch of {inputs.describe()}: {type(exc).__name__}: {exc}"]
    problems = output_problems(out, heads, 2)
    if problems:
        return problems
    try:
        return gradient_problems(module, inputs, heads)
    except Exception as exc:
        return [
            f"Opacus cannot compute per-sample gradients of the module: {type(exc).__name__}: {exc}"
        ]
