"""The ``privfed`` command line: run, list, bench, data (and the evaluation / attack commands)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from privfed.errors import PrivfedError
from privfed.registry import Registry


def _quickstart_path() -> Path:
    """The bundled quickstart config (``privfed.config.resolve_config("quickstart")``)."""
    from privfed.config import resolve_config

    return resolve_config("quickstart")


def _fmt_eps(eps: float) -> str:
    return "inf" if math.isinf(eps) else f"{eps:.2f}"


#: What the progress bar of ``privfed run`` shows (its --help epilog; docs/quickstart.md).
PROGRESS_LEGEND = """\
progress bar, after each round:
  clients    clients whose update reached the server's sum this round
  trainings  (client, model unit) trainings sent this round: a client holding a group
             trains each of its units (per-task: one per task; shared-trunk: one per group)
  acc        mean test accuracy over the tasks at the last evaluation
  eps        largest record-level epsilon spent so far (any client, any data source)
"""


def cmd_run(args: argparse.Namespace) -> int:
    """``privfed run [CONFIG] [--out DIR] [--resume]``."""
    from privfed.config import load_config, resolve_config
    from privfed.engine import run_experiment

    if args.resume and args.out is None:
        raise PrivfedError("--resume needs --out DIR naming the run directory to continue")
    if args.out is not None:
        from privfed.rundir import check_out_dir

        # Refuse a bad --out before anything is read or written (the engine checks again).
        check_out_dir(Path(args.out), resume=args.resume)
    if args.resume and args.config is None:
        cfg_path = Path(args.out) / "config.toml"
    else:
        cfg_path = resolve_config(args.config)
    cfg = load_config(cfg_path)
    out = (
        Path(args.out)
        if args.out
        else Path("runs") / (f"{cfg.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    )
    backend = backend_options(args)
    where = backend.backend + (f", {backend.workers} workers" if backend.workers else "")
    print(f"privfed run: {cfg.name} ({cfg_path}) -> {out} [{where}]")
    try:
        summary = run_experiment(
            cfg, out, resume=args.resume, progress=not args.quiet, backend=backend
        )
    except KeyboardInterrupt:
        print(
            f"\nprivfed: interrupted; the rounds checkpointed in {out} are kept. Continue with:"
            f"\n  privfed run --resume --out {out}",
            file=sys.stderr,
        )
        return 130
    print()
    print(
        f"after {summary.rounds} rounds ({cfg.federation.algorithm}, "
        f"aggregator={cfg.federation.aggregator}, {cfg.federation.num_clients} clients):"
    )
    header = f"{'task':<22}{'mean acc':>9}{'worst-10%':>10}{'majority':>9}{'epsilon':>9}  source"
    print(header)
    print("-" * len(header))
    for task, m in summary.tasks.items():
        src = m["source"]
        eps = summary.epsilon.get(src, {}).get("max", 0.0)
        print(
            f"{task:<22}{m['mean_acc']:>9.3f}{m['worst_acc']:>10.3f}{m['majority_acc']:>9.3f}"
            f"{_fmt_eps(eps):>9}  {src}"
        )
    for task, m in summary.tasks.items():
        if "bayes_pooled_acc" in m:
            print(
                f"{task}: Bayes-optimal accuracy {m['bayes_pooled_acc']:.3f} for one pooled "
                f"model, {m['bayes_personal_acc']:.3f} for perfect personal models"
            )
    print(
        f"epsilon: max over clients of each data source, at delta={summary.delta:g} "
        f"({summary.accountant.upper()} accountant); majority: each client's majority-class "
        "baseline"
    )
    cl = summary.client_level
    if cl.get("mode", "off") != "off":
        print(
            f"client-level ({cl['mode']}): epsilon {_fmt_eps(float(cl['epsilon']))} at "
            f"delta={cl['delta']:g} (target {_fmt_eps(float(cl['target_epsilon']))})"
        )
    for w in summary.warnings:
        print(f"WARNING (privacy): {w}")
    c = summary.costs
    if c.get("participations"):
        print(
            f"cost: {int(c['participations'])} participations; per participation "
            f"{c['bytes_down_per_participation'] / 1024:.1f} KiB down, "
            f"{c['bytes_up_per_participation'] / 1024:.1f} KiB up, "
            f"{c['compute_seconds_per_participation'] * 1000:.1f} ms local compute (CPU); "
            f"{c['round_seconds'] / max(c['rounds'], 1):.2f} s per round (costs.jsonl)"
        )
    for name, a in summary.attacks.items():
        metrics = ", ".join(f"{k}={v:.3g}" for k, v in sorted(a["metrics"].items()))
        print(f"attack {name} ({a['threat_model']}): {metrics}")
    if summary.audit:
        a = summary.audit
        flag = "  FLAGGED: above the accountant's epsilon (a bug)" if a["flagged"] else ""
        ceiling = a.get("epsilon_max_certifiable")
        reach = "" if ceiling is None else f"; at most {ceiling:.2f} certifiable with these guesses"
        print(
            f"audit: epsilon >= {a['epsilon_lower_bound']:.3f} at {a['confidence']:.0%} "
            f"confidence (client {a['client']}, {a['source']}; accountant "
            f"{_fmt_eps(a['epsilon_accountant'])}{reach}){flag}"
        )
        if ceiling is not None and not a.get("can_flag", True):
            print(f"audit: {a['note'].split('; ', 1)[-1]}")
    print(f"run directory: {out}")
    return 0


def add_backend_options(p: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    """The ``--backend``, ``--workers`` and ``--address`` options (run options, never hashed)."""
    p.add_argument(
        "--backend",
        choices=["serial", "process", "ray"],
        default=None,
        help="where clients train: in this process (serial), a pool of worker processes "
        "(process) or Ray actors (ray, needs pip install -e '.[ray]'); the numbers are the "
        "same on every backend. Default: privfed run uses process on a machine with more "
        "than one core (serial on one core); privfed sweep runs serial points in parallel",
    )
    if sweep:
        p.add_argument(
            "--workers",
            type=int,
            default=0,
            help="cores the sweep may use (default: all): parallel points with the serial "
            "backend; with --backend process, --workers / --run-workers points at a time",
        )
        p.add_argument(
            "--run-workers",
            type=int,
            default=0,
            help="--backend process: worker processes per run (default: all of --workers)",
        )
    else:
        p.add_argument(
            "--workers",
            type=int,
            default=0,
            help="worker processes or Ray actors (default: all cores; on a Ray cluster, all "
            "its CPUs)",
        )
    p.add_argument(
        "--address", default="", help="--backend ray: the Ray cluster to connect to (e.g. auto)"
    )


def backend_options(args: argparse.Namespace) -> Any:
    """The :class:`~privfed.backends.BackendOptions` of ``privfed run``'s arguments."""
    from privfed.backends import BackendError, BackendOptions, default_workers

    # Without --backend: Ray when given a cluster, else every core in worker processes (the
    # numbers are the same on every backend), or this process on a one-core machine.
    cores = default_workers()
    parallel = args.workers > 0 or cores > 1
    name = args.backend or ("ray" if args.address else "process" if parallel else "serial")
    if name == "serial" and args.workers:
        raise BackendError("--workers needs --backend process or ray (serial runs in this process)")
    if args.workers < 0:
        raise BackendError(f"--workers must be >= 1, got {args.workers}")
    # A process pool's size is known here (a Ray cluster's only once connected): name it, so
    # the run's first line and its manifest say how many workers ran.
    workers = args.workers or (cores if name == "process" else 0)
    return BackendOptions(backend=name, workers=workers, address=args.address)


def cmd_list(args: argparse.Namespace) -> int:
    """``privfed list``: every registered plug-in, one line each; broken plug-ins at the end.

    Built-ins are described without importing their modules (no torch); third-party plug-ins
    are loaded to describe them (an attack by its threat model). A plug-in that fails to load
    is named with its error under "problems" and skipped; the exit status stays 0.
    """
    from privfed.algorithms import ALGORITHMS
    from privfed.attack_api import ATTACKS
    from privfed.data.partition import PARTITIONERS
    from privfed.data.sources import SOURCES
    from privfed.models.registry import MODELS

    sections: list[tuple[str, Registry[Any]]] = [
        ("data sources (tasks are their label columns)", SOURCES),
        ("models (groups.X.model; parameters in model_params)", MODELS),
        ("partitioners", PARTITIONERS),
        ("algorithms (federation.algorithm; parameters in algorithm_params)", ALGORITHMS),
        ("attacks: adversary [what it observes]: summary", ATTACKS),
    ]
    problems: list[str] = []
    for title, reg in sections:
        listed = reg.listing()
        width = max((len(e.name) for e in listed), default=0) + 2
        print(f"{title}:")
        for e in listed:
            origin = "" if e.origin.startswith(("built-in", "privfed ")) else f"  ({e.origin})"
            print(f"  {e.name:<{width}}{e.description}{origin}")
        print()
        problems.extend(reg.problems().values())
    if problems:
        print(f"problems: {len(problems)} plug-in(s) could not be loaded and were skipped:")
        for text in problems:
            print(f"  - {text}")
        print()
        print(
            f"privfed list: warning: {len(problems)} broken plug-in(s) skipped (see problems "
            "above); the others work",
            file=sys.stderr,
        )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``privfed bench NAME [ARGS...]``: run a benchmark from experiments/benchmarks."""
    if args.name == "secagg":
        from privfed.secagg.bench import main as secagg_main

        return int(secagg_main(args.rest))
    if args.name == "client":
        from privfed.bench import client_main

        return int(client_main(args.rest))
    if args.name == "round":
        from privfed.bench_round import main as round_main

        return int(round_main(args.rest))
    raise PrivfedError(f"unknown benchmark {args.name!r}; choose one of: secagg, client, round")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``privfed`` command."""
    parser = argparse.ArgumentParser(
        prog="privfed",
        description="Privacy-preserving multi-task federated learning experiments.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "run",
        help="train a federation (no CONFIG: the built-in quickstart)",
        epilog=PROGRESS_LEGEND,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "config",
        nargs="?",
        help="experiment TOML file, or the name of a bundled config (quickstart, the default)",
    )
    p.add_argument("--out", help="run directory (default: runs/NAME-TIMESTAMP)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_backend_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "list", help="registered data sources, models, partitioners, algorithms, attacks"
    )
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "bench", help="speed benchmarks with in-run baselines (secagg, client, round)"
    )
    p.add_argument("name", choices=["secagg", "client", "round"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own arguments")
    p.set_defaults(func=cmd_bench)

    from privfed.data.commands import register as register_data

    register_data(sub)

    from privfed.evaluation.commands import register as register_evaluation

    register_evaluation(sub)

    _plugin_commands(sub)
    return parser


def _plugin_commands(sub: argparse._SubParsersAction) -> None:
    """Sub-commands plug-in packages add (entry-point group ``privfed.commands``).

    Each entry point is a function ``register(subparsers)``; the built-in ``attack`` and
    ``poison`` commands arrive this way from the ``attacks`` package. A plug-in that fails to
    load is reported on stderr and skipped.
    """
    from importlib import metadata

    for ep in sorted(metadata.entry_points(group="privfed.commands"), key=lambda e: e.name):
        try:
            ep.load()(sub)
        except Exception as exc:  # a broken plug-in must not break the command line
            print(
                f"privfed: warning: the commands of plug-in {ep.name!r} ({ep.value}) failed to "
                f"load: {exc}; fix or uninstall the package that provides them",
                file=sys.stderr,
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``privfed`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PrivfedError as exc:
        print(f"privfed: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "privfed: interrupted; a run continues with privfed run --resume --out DIR, a sweep "
            "with the same privfed sweep command (finished points are kept)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
