"""Estimate how long each results page takes to regenerate, from scaled-down runs.

For every sweep a page runs, the points are grouped into classes that cost the same per round
(algorithm, private or not, aggregator, client-level DP mode, audit). One point of each class
is run twice in this process, with ``--short`` and ``2 * --short`` rounds (same config
otherwise), and its CPU time (``time.process_time``, one torch thread, as in a sweep worker) is
fitted as ``setup + rounds * per_round``; the sweep's cost is the sum over its points of that
line at their real number of rounds. The membership game's scoring, which grows with targets x
shadows, is timed on the short runs and scaled by ``(R / r)^2``. A page's expected wall time on
``--cores`` cores is the total CPU time divided by the cores (the sweeps keep every core busy).

These are extrapolations from short runs: they ignore load from other programs, and CPU time
on a busy machine is somewhat higher than on an idle one. ``experiments/regenerate_all.sh``
quotes the figures this script printed, with the machine and date.

    python experiments/size_pages.py                 # every page (a few minutes)
    python experiments/size_pages.py --pages attacks
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Args:
    """Arguments of this script (each is also a --flag)."""

    pages: str = "privacy-utility,algorithms,attacks"
    """Comma-separated pages to size."""
    short: int = 2
    """Rounds of the shorter measuring run (the longer one runs twice as many)."""
    cores: int = 2
    """Cores of the machine the pages regenerate on."""
    json: str = ""
    """Also write the estimates to this JSON file."""


def parse_args(argv: list[str] | None = None) -> Args:
    """The script's arguments, one ``--flag`` per field of :class:`Args`."""
    from privfed.evaluation.provenance import parse_dataclass_args

    return parse_dataclass_args(Args, argv, description=__doc__.splitlines()[0])


def _class(cfg: Any) -> tuple[Any, ...]:
    """Points of one class cost the same per round."""
    return (
        cfg.federation.algorithm,
        math.isfinite(cfg.dp.target_epsilon),
        cfg.federation.aggregator,
        cfg.client_dp.mode,
        cfg.audit.canaries,
        tuple(a.name for a in cfg.attacks),
        cfg.train.local_steps,
    )


def _cpu(cfg: Any, rounds: int, where: Path) -> float:
    """CPU seconds of one run of ``cfg`` cut to ``rounds`` rounds, in this process."""
    from privfed.config import with_overrides
    from privfed.engine import run_experiment

    short = with_overrides(cfg, {"rounds": rounds, "eval.every": rounds})
    out = where / f"r{rounds}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.process_time()
    run_experiment(short, out, progress=False, echo=lambda _m: None)
    return time.process_time() - t0


def size_sweep(path: str, *, short: int, echo: Callable[[str], None]) -> dict[str, Any]:
    """CPU seconds of every point of a sweep, extrapolated from two short runs per class."""
    from privfed.evaluation.sweep import expand_points, load_sweep

    points = expand_points(load_sweep(path))
    classes: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
    for p in points:
        classes[_class(p.config)].append(p)
    total = 0.0
    lines = []
    with tempfile.TemporaryDirectory(prefix="size-") as tmp:
        for key, members in classes.items():
            cfg = members[0].config
            a = _cpu(cfg, short, Path(tmp))
            b = _cpu(cfg, 2 * short, Path(tmp))
            per_round = max(b - a, 0.0) / short
            setup = max(a - short * per_round, 0.0)
            cost = sum(setup + p.config.rounds * per_round for p in members)
            total += cost
            lines.append(
                {
                    "class": [str(k) for k in key],
                    "points": len(members),
                    "rounds": sorted({p.config.rounds for p in members}),
                    "setup_cpu_s": setup,
                    "cpu_s_per_round": per_round,
                    "cpu_s": cost,
                }
            )
            echo(
                f"  {path}: {len(members)} x {key[:4]}: {setup:.1f} s + "
                f"{per_round:.2f} s/round -> {cost / 60:.1f} CPU-min"
            )
    return {"sweep": path, "points": len(points), "cpu_s": total, "classes": lines}


def size_game(path: str, *, short: int, echo: Callable[[str], None]) -> float:
    """CPU seconds of scoring the membership game, scaled from 5 short runs to the full size."""
    import numpy as np

    from attacks.game import game_run, play
    from attacks.membership import LiRAOnline
    from privfed.config import with_overrides
    from privfed.engine import run_experiment
    from privfed.evaluation.sweep import expand_points, load_sweep

    points = expand_points(load_sweep(path))
    per_eps: dict[float, int] = defaultdict(int)
    for p in points:
        per_eps[p.config.dp.target_epsilon] += 1
    small = 5
    with tempfile.TemporaryDirectory(prefix="size-game-") as tmp:
        dirs = []
        for i in range(small):
            cfg = with_overrides(
                points[0].config, {"rounds": short, "eval.every": short, "seed": i}
            )
            run_experiment(cfg, Path(tmp) / f"s{i}", progress=False, echo=lambda _m: None)
            dirs.append(Path(tmp) / f"s{i}")
        t0 = time.process_time()
        runs = [game_run(d) for d in dirs]
        play(runs, LiRAOnline(), group="image", rng=np.random.default_rng(0), resamples=200)
        cpu = time.process_time() - t0
    total = sum(cpu * (n / small) ** 2 for n in per_eps.values())
    echo(f"  game scoring: {cpu:.1f} s for {small} runs -> {total / 60:.1f} CPU-min in all")
    return total


PAGES: dict[str, tuple[str, ...]] = {
    "privacy-utility": ("experiments/configs/privacy_utility.toml",),
    "algorithms": ("experiments/configs/algorithms.toml", "final"),
    "attacks": (
        "experiments/configs/membership.toml",
        "experiments/configs/audit.toml",
        "experiments/configs/attacks_inversion.toml",
    ),
}


def _final_algorithms(tmp: Path) -> str:
    """The comparison sweep as the algorithms page builds it, with the file's first settings."""
    import tomli_w

    sys.path.insert(0, str(REPO / "experiments"))
    import algorithms as page  # the page script: its selection and final-sweep code

    from privfed.evaluation.sweep import expand_points, load_sweep

    spec = load_sweep("experiments/configs/algorithms.toml")
    seen: dict[tuple[str, float, float], Any] = {}
    for p in expand_points(spec):
        c = p.config
        key = (c.federation.algorithm, c.groups["image"].partition.alpha, c.dp.target_epsilon)
        seen.setdefault(key, c)
    picks = [
        page.Selection(k[0], k[1], k[2], {"train.lr": c.train.lr}, math.nan, 1)
        for k, c in seen.items()
    ]
    doc = page.final_sweep(spec, picks, list(range(10)))
    out = tmp / "final.toml"
    out.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return str(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)
    import torch

    torch.set_num_threads(1)  # as in a sweep worker
    wanted: Sequence[str] = [p.strip() for p in args.pages.split(",") if p.strip()]
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="size-final-") as tmp:
        for name in wanted:
            if name not in PAGES:
                print(f"unknown page {name!r}; choose from {', '.join(PAGES)}", file=sys.stderr)
                return 2
            print(f"{name}:")
            sweeps = []
            cpu = 0.0
            for path in PAGES[name]:
                sweep = _final_algorithms(Path(tmp)) if path == "final" else path
                s = size_sweep(sweep, short=args.short, echo=print)
                sweeps.append(s)
                cpu += s["cpu_s"]
            if name == "attacks":
                cpu += size_game(PAGES[name][0], short=args.short, echo=print)
            wall = cpu / args.cores
            report[name] = {"cpu_s": cpu, "wall_s_on_cores": wall, "sweeps": sweeps}
            print(
                f"{name}: {cpu / 3600:.2f} CPU-hours -> ~{wall / 60:.0f} min on {args.cores} cores"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
