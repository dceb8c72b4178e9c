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
    from attacks.runner import run_attack
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``attack`` sub-command to the ``privfed`` parser."""
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
