"""``privfed bench client``: privfed's local DP training against a bare Opacus loop.

Both sides train the same model on the same records with the same Opacus settings in the same
process: the baseline is the textbook loop (``make_private`` once, then
``for x, y in loader: zero_grad, loss, backward, step``); privfed's side is what the engine
runs per participation: load the global vector into the persistent wrapper, re-seed its
streams, take the steps, read the trained vector back, and record the steps on the ledger after
a budget check. The figure of merit is the ratio of seconds per step (goal: below 1.10).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Sequence

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privfed.client import UnitSpec, UnitTrainer
from privfed.models import flat_parameters
from privfed.privacy.ledger import SourceLedger


def _data(n: int, features: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, features, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    return x, y


def _bare_opacus(
    spec: UnitSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    sigma: float,
    steps: int,
    repeats: int,
) -> list[float]:
    model = spec.build()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(
        TensorDataset(x, y),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        model, optimizer, loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=sigma,
            max_grad_norm=1.0,
            poisson_sampling=True,
            noise_generator=torch.Generator().manual_seed(1),
        )
    task = spec.tasks[0]
    loss_fn = nn.CrossEntropyLoss()
    times = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook")
        for _ in range(repeats):
            t0 = time.perf_counter()
            done = 0
            while done < steps:
                for xb, yb in loader:
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(model(xb)[task], yb)
                    loss.backward()
                    optimizer.step()
                    done += 1
                    if done == steps:
                        break
            times.append((time.perf_counter() - t0) / steps)
    return times


def _privfed(
    spec: UnitSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    sigma: float,
    steps: int,
    repeats: int,
) -> list[float]:
    trainer = UnitTrainer(
        spec,
        x=x,
        y={spec.tasks[0]: y},
        batch_size=batch_size,
        lr=0.1,
        noise_multiplier=sigma,
        max_grad_norm=1.0,
        seed=0,
        stream=(0, 0),
    )
    ledger = SourceLedger(0, "bench", delta=1e-5, target_epsilon=float("inf"))
    start = flat_parameters(spec.build())
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        if not ledger.would_exceed(
            noise_multiplier=sigma, sample_rate=trainer.sample_rate, steps=steps
        ):
            res = trainer.train(start, steps=steps, round_index=r)
            ledger.record(
                noise_multiplier=res.noise_multiplier,
                sample_rate=res.sample_rate,
                steps=res.steps,
                task=spec.name,
            )
        times.append((time.perf_counter() - t0) / steps)
    return times


def client_main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print seconds per step for both loops and their ratio."""
    p = argparse.ArgumentParser(prog="privfed bench client", description=__doc__)
    p.add_argument("--records", type=int, default=1024, help="training records")
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--hidden", type=int, nargs="+", default=[64])
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=50, help="steps per participation")
    p.add_argument("--repeats", type=int, default=12, help="participations timed per side")
    p.add_argument("--sigma", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(list(argv) if argv is not None else None)
    torch.set_num_threads(args.threads)
    spec = UnitSpec(
        "bench.task", "bench", ("task",), args.features, tuple(args.hidden), {"task": args.classes}
    )
    x, y = _data(args.records, args.features, args.classes, seed=0)
    kw = dict(batch_size=args.batch_size, sigma=args.sigma, steps=args.steps)
    # warm up both, then interleave the timed repetitions so drift hits both sides alike
    _bare_opacus(spec, x, y, repeats=1, **kw)
    _privfed(spec, x, y, repeats=1, **kw)
    bare: list[float] = []
    ours: list[float] = []
    for _ in range(3):
        bare += _bare_opacus(spec, x, y, repeats=max(1, args.repeats // 3), **kw)
        ours += _privfed(spec, x, y, repeats=max(1, args.repeats // 3), **kw)
    b, o = statistics.median(bare), statistics.median(ours)
    result = {
        "model_parameters": int(sum(p.numel() for p in spec.build().parameters())),
        "batch_size": args.batch_size,
        "steps_per_participation": args.steps,
        "bare_opacus_ms_per_step": b * 1e3,
        "privfed_ms_per_step": o * 1e3,
        "ratio": o / b,
        "examples_per_second_privfed": args.batch_size / o,
        "threads": args.threads,
    }
    print(
        f"model: MLP {args.features}-{'-'.join(map(str, args.hidden))}-{args.classes} "
        f"({result['model_parameters']} parameters), batch {args.batch_size}, "
        f"{args.steps} steps per participation, sigma {args.sigma}, {args.threads} thread(s)"
    )
    print(f"bare Opacus loop      : {b * 1e3:8.3f} ms/step (median of {len(bare)})")
    print(f"privfed UnitTrainer   : {o * 1e3:8.3f} ms/step (median of {len(ours)})")
    print(f"ratio privfed / bare  : {o / b:8.3f}  (goal < 1.10)")
    if args.json:
        from privfed.io import atomic_write_json

        atomic_write_json(args.json, result)
    return 0
