"""``privfed bench client``: privfed's local DP training against a bare Opacus loop, per model.

For each built-in model (mlp, cnn, lstm) both sides train the same module (``UnitSpec.build()``)
on the same records with the same Opacus settings in the same process: the baseline is the
textbook loop (``make_private`` once, then ``for x, y in loader: zero_grad, loss, backward,
step``); privfed's side is what a participation runs per unit: load the global vector into
the persistent wrapper, re-seed its streams, take the steps, read the trained vector back,
release the per-sample gradients, and record the steps on the ledger after a budget check.
The figure of merit is the ratio of CPU seconds per step, privfed / bare (goal: below 1.10 for
every model). Repetitions of the two sides are interleaved so that drift on a loaded machine
hits both alike; medians are compared.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privfed.client import UnitSpec, UnitTrainer
from privfed.data.inputs import InputSpec
from privfed.models import flat_parameters
from privfed.privacy.ledger import SourceLedger


@dataclass(frozen=True)
class Case:
    """One model benchmarked: its unit, records and steps per participation."""

    name: str
    spec: UnitSpec
    describe: str
    steps: int
    records: int = 1024
    extra: dict[str, Any] = field(default_factory=dict)


def _unit(model: str, inputs: InputSpec, classes: int, params: dict[str, Any]) -> UnitSpec:
    return UnitSpec(
        name=f"bench.{model}",
        group="bench",
        tasks=("task",),
        in_features=inputs.size * max(inputs.vocab, 1),
        hidden=tuple(params.get("hidden", (64,))) if model == "mlp" else (64,),
        heads={"task": classes},
        model=model,
        model_params={k: v for k, v in params.items() if model != "mlp" or k != "hidden"},
        inputs=inputs,
    )


def default_cases(args: argparse.Namespace) -> dict[str, Case]:
    """The built-in models at the sizes of the benchmark configs (digits, Shakespeare)."""
    digits = InputSpec(shape=(1, 8, 8), kind="image")
    chars = InputSpec(shape=(80,), kind="token_ids", vocab=81)
    lstm = {"embedding": 8, "hidden": args.lstm_hidden, "layers": args.lstm_layers}
    return {
        "mlp": Case(
            "mlp",
            _unit("mlp", digits, 10, {"hidden": (64,)}),
            "mlp 64-64-10 on 8x8 digits",
            steps=args.steps,
        ),
        "cnn": Case(
            "cnn",
            _unit("cnn", digits, 10, {}),
            "cnn (16, 32) channels, 128 hidden, on 1x8x8 digits",
            steps=args.steps,
        ),
        "lstm": Case(
            "lstm",
            _unit("lstm", chars, 81, lstm),
            f"lstm {args.lstm_layers} x {args.lstm_hidden} units, 8-dim embedding, 80 characters",
            steps=max(1, args.steps // 5),
        ),
    }


def _data(spec: UnitSpec, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    inputs = spec.input_spec
    if inputs.kind == "token_ids":
        x = torch.randint(0, inputs.vocab, (n, *inputs.shape), generator=gen)
    else:
        x = torch.rand(n, *inputs.shape, generator=gen)
    y = torch.randint(0, spec.heads["task"], (n,), generator=gen)
    return x, y


Clock = Callable[[], float]


def _bare_opacus(
    spec: UnitSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    sigma: float,
    steps: int,
    repeats: int,
    clock: Clock,
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
            t0 = clock()
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
            times.append((clock() - t0) / steps)
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
    clock: Clock,
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
        t0 = clock()
        if not ledger.would_exceed(
            noise_multiplier=sigma, sample_rate=trainer.sample_rate, steps=steps
        ):
            res = trainer.train(start, steps=steps, round_index=r)
            trainer.optimizer.zero_grad(set_to_none=True)  # as participate() releases memory
            ledger.record(
                noise_multiplier=res.noise_multiplier,
                sample_rate=res.sample_rate,
                steps=res.steps,
                task=spec.name,
            )
        times.append((clock() - t0) / steps)
    return times


def measure(
    case: Case, *, batch_size: int, sigma: float, repeats: int, clock: Clock
) -> dict[str, Any]:
    """Seconds per step of both loops on ``case`` (medians of interleaved repetitions)."""
    x, y = _data(case.spec, case.records, seed=0)
    kw: dict[str, Any] = {
        "batch_size": batch_size,
        "sigma": sigma,
        "steps": case.steps,
        "clock": clock,
    }
    # warm up both, then interleave the timed repetitions so drift hits both sides alike
    _bare_opacus(case.spec, x, y, repeats=1, **kw)
    _privfed(case.spec, x, y, repeats=1, **kw)
    bare: list[float] = []
    ours: list[float] = []
    rounds = 3
    for _ in range(rounds):
        bare += _bare_opacus(case.spec, x, y, repeats=max(1, repeats // rounds), **kw)
        ours += _privfed(case.spec, x, y, repeats=max(1, repeats // rounds), **kw)
    b, o = statistics.median(bare), statistics.median(ours)
    return {
        "model": case.name,
        "describe": case.describe,
        "model_parameters": int(sum(p.numel() for p in case.spec.build().parameters())),
        "steps_per_participation": case.steps,
        "bare_opacus_ms_per_step": b * 1e3,
        "privfed_ms_per_step": o * 1e3,
        "ratio": o / b,
        "timings": len(bare),
    }


def client_main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print ms per step of both loops and their ratio, per model."""
    p = argparse.ArgumentParser(prog="privfed bench client", description=__doc__)
    p.add_argument(
        "--models", default="mlp,cnn,lstm", help="comma-separated built-in models to measure"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=50, help="steps per participation (lstm: a fifth)")
    p.add_argument("--repeats", type=int, default=12, help="participations timed per side")
    p.add_argument("--sigma", type=float, default=1.0)
    p.add_argument("--lstm-hidden", type=int, default=128, help="lstm units per layer")
    p.add_argument("--lstm-layers", type=int, default=1, help="lstm layers")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default="cpu",
        help="cpu: process CPU time (robust on a loaded machine); wall: elapsed time",
    )
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(list(argv) if argv is not None else None)
    torch.set_num_threads(args.threads)
    clock: Clock = time.process_time if args.clock == "cpu" else time.perf_counter
    cases = default_cases(args)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in cases]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(cases)}")
    print(
        f"privfed bench client: batch {args.batch_size}, sigma {args.sigma}, "
        f"{args.threads} thread(s), {args.clock} time, medians of {args.repeats} "
        "participations per side, interleaved"
    )
    print(f"{'model':<6} {'bare Opacus':>12} {'privfed':>12} {'ratio':>7}  (goal < 1.10)")
    results = []
    for name in names:
        r = measure(
            cases[name],
            batch_size=args.batch_size,
            sigma=args.sigma,
            repeats=args.repeats,
            clock=clock,
        )
        results.append(r)
        print(
            f"{name:<6} {r['bare_opacus_ms_per_step']:>9.3f} ms {r['privfed_ms_per_step']:>9.3f} "
            f"ms {r['ratio']:>7.3f}  {r['describe']}, {r['model_parameters']} parameters, "
            f"{r['steps_per_participation']} steps per participation"
        )
    if args.json:
        from privfed.io import atomic_write_json

        atomic_write_json(
            args.json,
            {
                "batch_size": args.batch_size,
                "sigma": args.sigma,
                "threads": args.threads,
                "clock": args.clock,
                "models": results,
            },
        )
    return 0
