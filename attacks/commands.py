"""CLI sub-command ``privfed attack NAME --run DIR [--json OUT] [--seed S] [--param K=V ...]``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from privfed.errors import PrivfedError


def _parse_params(items: list[str]) -> dict[str, str]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PrivfedError(f"--param {item!r}: write it as KEY=VALUE (e.g. --param shadows=4)")
        params[key.strip()] = value.strip()
    return params


def _fmt(value: float) -> str:
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return f"{value:.4g}"


def cmd_attack(args: argparse.Namespace) -> int:
    """Run one registered attack against a finished run directory and report its metrics."""
    from privfed.attack_runner import run_attack
    from privfed.io import atomic_write_json

    run = Path(args.run)
    outcome = run_attack(
        args.name,
        run,
        seed=args.seed,
        params=_parse_params(args.param),
        observed_round=args.round,
    )
    res = outcome.result
    print(f"privfed attack: {res.attack} on {run}")
    print(f"threat model: {outcome.threat_model}")
    print(f"seed: {outcome.seed}" + ("" if args.seed is not None else " (drawn; pass --seed)"))
    width = max((len(k) for k in res.metrics), default=0)
    for key in sorted(res.metrics):
        print(f"  {key:<{width}}  {_fmt(float(res.metrics[key]))}")
    for note in res.notes:
        print(f"note: {note}")
    if args.json:
        atomic_write_json(
            Path(args.json),
            {
                "attack": res.attack,
                "threat_model": outcome.threat_model,
                "run": str(run),
                "seed": outcome.seed,
                "observed_round": args.round,
                "metrics": {k: float(v) for k, v in res.metrics.items()},
                "notes": list(res.notes),
                "meta": dict(res.meta),
            },
        )
        print(f"wrote {args.json}")
    return 0


def cmd_poison(args: argparse.Namespace) -> int:
    """``privfed poison --run DIR``: replay the run with a backdooring client (active attack)."""
    import dataclasses
    import secrets

    from attacks.poisoning import replay_with_backdoor
    from privfed.io import atomic_write_json
    from privfed.rng import numpy_rng

    seed = args.seed if args.seed is not None else secrets.randbits(62)
    try:
        report = replay_with_backdoor(
            args.run,
            attacker=args.client,
            rounds=args.rounds,
            unit=args.unit,
            target=args.target,
            gamma=args.gamma,
            steps=args.steps,
            rng=numpy_rng(seed, "poison"),
        )
    except ValueError as exc:
        raise PrivfedError(f"poison {args.run}: {exc}") from None
    print(
        f"backdoor by client {args.client} on {report.unit}/{report.task} (target label "
        f"{report.target}, boost {report.gamma:g}, {report.rounds} rounds replayed; seed {seed})"
    )
    print(
        f"  main-task accuracy: honest {report.main_acc_clean:.3f}, "
        f"poisoned {report.main_acc_poisoned:.3f}"
    )
    print(
        f"  backdoor accuracy : honest {report.backdoor_acc_clean:.3f}, "
        f"poisoned {report.backdoor_acc_poisoned:.3f}"
    )
    if args.json:
        atomic_write_json(args.json, {"seed": seed, **dataclasses.asdict(report)})
        print(f"wrote {args.json}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``attack`` and ``poison`` sub-commands to the ``privfed`` parser."""
    q = sub.add_parser(
        "poison",
        help="replay a finished run with one backdooring client (model replacement, "
        "Bagdasaryan et al. 2020) and report main-task and backdoor accuracy",
    )
    q.add_argument("--run", required=True, help="a finished `privfed run` directory")
    q.add_argument("--client", type=int, default=0, help="the malicious client")
    q.add_argument("--rounds", type=int, default=3, help="rounds replayed from the start")
    q.add_argument("--unit", default=None, help="model unit to backdoor (default: the first)")
    q.add_argument("--target", type=int, default=0, help="label of triggered inputs")
    q.add_argument(
        "--gamma",
        type=float,
        default=None,
        help="boost of the malicious update (default: model replacement)",
    )
    q.add_argument("--steps", type=int, default=50, help="attacker's local steps")
    q.add_argument("--seed", type=int, default=None, help="seed (default: drawn and printed)")
    q.add_argument("--json", help="also write the report to this JSON file")
    q.set_defaults(func=cmd_poison)

    p = sub.add_parser(
        "attack",
        help="run a registered attack against a finished run directory (privfed list)",
    )
    p.add_argument("name", help="registered attack name (see `privfed list`)")
    p.add_argument("--run", required=True, help="a finished `privfed run` directory")
    p.add_argument("--json", help="also write the result to this JSON file")
    p.add_argument(
        "--seed", type=int, default=None, help="seed of the attack (default: drawn and printed)"
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an attack parameter (repeatable), e.g. --param shadows=4 --param client=2",
    )
    p.add_argument(
        "--round",
        choices=["first", "next"],
        default="first",
        help="server/client views: replay the run's first round (default) or one more round "
        "after the checkpoint",
    )
    p.set_defaults(func=cmd_attack)
