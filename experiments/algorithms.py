"""Regenerate docs/results/algorithms.md: multi-task and personalized algorithms, compared fairly.

1. Tuning (``experiments/configs/algorithms.toml``): every algorithm x alpha x epsilon with a
   small grid of client learning rates (and FedProx's mu, Ditto's lambda) on two tuning seeds.
2. Selection: per (algorithm, alpha, epsilon) the setting with the best validation accuracy
   (multi-task average of ``val_mean_acc``, mean over the tuning seeds). The test split is never
   looked at. The selection uses the clients' validation records, which are private: the
   reported epsilon is that of one training run and excludes the tuning (said on the page).
3. The comparison: the selected settings on 10 seeds (0-9), written as a sweep file with one
   ``[[sweep.cases]]`` entry per selection (``final.toml`` in the sweep directory, copied next
   to the page), plus FedAvg under secure aggregation and with client-level DP.
4. The page: the selection, the DP steps per participation of every algorithm (equal), the
   conclusions generated from paired tests across seeds (:mod:`privfed.evaluation.claims`),
   then the report's tables and figures.

A page under docs/results/ is written only from a clean checkout and only from points computed
at that commit; ``--allow-dirty`` runs on a dirty tree but writes outside docs/results/ only.

    python experiments/algorithms.py                      # the page (see regenerate_all.sh)
    python experiments/algorithms.py --tuning_seeds 100 --seeds 0,1,2 --rounds 2 \\
        --algorithms fedavg,ditto --out /tmp/alg --results /tmp/pages --allow-dirty  # a try
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Args:
    """Arguments of this script (each is also a --flag)."""

    config: str = "experiments/configs/algorithms.toml"
    """Tuning sweep file (relative to the repository root)."""
    out: str = "sweeps/algorithms"
    """Parent directory of the tuning and final sweep directories (reuse it to resume)."""
    workers: int = 2
    """Cores the sweeps may use (points run in parallel processes)."""
    seeds: str = "0,1,2,3,4,5,6,7,8,9"
    """Seeds of the final comparison (comma-separated)."""
    tuning_seeds: str = ""
    """Override the tuning sweep's seeds (comma-separated; empty: the file's)."""
    rounds: int = 0
    """Override the rounds of both stages (0: the file's; for tiny trial runs only)."""
    algorithms: str = ""
    """Restrict the tuning grid to these algorithms (comma-separated; for trial runs only)."""
    claims_epsilon: float = 4.0
    """Record-level epsilon of the generated conclusions."""
    test: str = "t"
    """Paired test of the conclusions: t (paired t-test) or wilcoxon (signed-rank)."""
    results: str = "docs/results"
    """Where the page and its figure directory go."""
    page: str = "algorithms"
    """Name of the page (PAGE.md) and of its figure directory."""
    commands: str = "experiments/regenerate_all.sh"
    """Shell file listing the exact commands of every page."""
    allow_dirty: bool = False
    """Run on a checkout with uncommitted changes; the page must then go outside docs/results."""


def parse_args(argv: list[str] | None = None) -> Args:
    """The script's arguments, one ``--flag`` per field of :class:`Args`."""
    from privfed.evaluation.provenance import parse_dataclass_args

    return parse_dataclass_args(Args, argv, description=__doc__.splitlines()[0])


#: The tuned settings of an algorithm (dotted paths of results.csv).
TUNED = ("train.lr", "federation.algorithm_params.mu", "federation.algorithm_params.lambda")
ALPHA = "groups.image.partition.alpha"
EPS = "dp.target_epsilon"


@dataclass(frozen=True)
class Selection:
    """The chosen setting of one (algorithm, alpha, epsilon)."""

    algorithm: str
    alpha: float
    epsilon: float
    setting: dict[str, Any]
    val_acc: float
    candidates: int


def _num(v: str) -> float:
    return math.inf if v in ("inf", "Infinity") else float(v)


def select(rows: list[dict[str, str]]) -> list[Selection]:
    """Per (algorithm, alpha, epsilon): the setting with the best mean validation accuracy.

    A point's score is the average over its tasks of ``val_mean_acc``; a setting's score the
    mean over its seeds; ties go to the first setting in sorted order.
    """
    per_point: dict[str, list[float]] = defaultdict(list)
    meta: dict[str, tuple[tuple[str, float, float], tuple[tuple[str, str], ...], str]] = {}
    for r in rows:
        per_point[r["point_id"]].append(float(r["val_mean_acc"]))
        key = (r["algorithm"], _num(r[ALPHA]), _num(r["target_epsilon"]))
        setting = tuple((k, r[k]) for k in TUNED if r.get(k, "") not in ("", "None"))
        meta[r["point_id"]] = (key, setting, r["seed"])
    scores: dict[tuple[str, float, float], dict[tuple[tuple[str, str], ...], list[float]]]
    scores = defaultdict(lambda: defaultdict(list))
    for pid, vals in per_point.items():
        key, setting, _ = meta[pid]
        scores[key][setting].append(sum(vals) / len(vals))
    out = []
    for key in sorted(scores):
        cands = scores[key]
        best = max(sorted(cands), key=lambda s: sum(cands[s]) / len(cands[s]))
        setting: dict[str, Any] = {}
        for k, v in best:
            setting[k] = float(v)
        out.append(
            Selection(
                key[0], key[1], key[2], setting, sum(cands[best]) / len(cands[best]), len(cands)
            )
        )
    return out


def final_sweep(spec: Any, selections: list[Selection], seeds: list[int]) -> dict[str, Any]:
    """The comparison's sweep file: one case per selection, the baselines, the final seeds."""
    by = {(s.algorithm, s.alpha, s.epsilon): s for s in selections}
    alphas = sorted({s.alpha for s in selections})
    cases = []
    for s in selections:
        case: dict[str, Any] = {
            "federation.algorithm": s.algorithm,
            ALPHA: s.alpha,
            EPS: s.epsilon,
            "train.lr": s.setting["train.lr"],
        }
        for k in ("federation.algorithm_params.mu", "federation.algorithm_params.lambda"):
            if k in s.setting:
                case[k] = s.setting[k]
        cases.append(case)
    baselines = []
    for a in alphas:
        lr4 = by[("fedavg", a, 4.0)].setting["train.lr"] if ("fedavg", a, 4.0) in by else None
        lr_inf = by.get(("fedavg", a, math.inf))
        tag = f"a{a:g}"  # one series per name: the report drops what follows the @
        if lr4 is not None:
            baselines.append(
                {
                    "name": f"fedavg-secagg@{tag}",
                    "federation.algorithm": "fedavg",
                    "federation.aggregator": "secagg",
                    EPS: 4.0,
                    ALPHA: a,
                    "train.lr": lr4,
                }
            )
        if lr_inf is not None:
            for name, mode, eps, extra in (
                ("fedavg-client-dp-8", "central", 8.0, {}),
                ("fedavg-client-dp-2", "central", 2.0, {}),
                (
                    "fedavg-distributed-dp-8",
                    "distributed",
                    8.0,
                    {"federation.aggregator": "secagg", "secagg.bits": 48},
                ),
            ):
                baselines.append(
                    {
                        "name": f"{name}@{tag}",
                        "federation.algorithm": "fedavg",
                        "client_dp.mode": mode,
                        "client_dp.target_epsilon": eps,
                        "client_dp.delta": 1e-2,
                        "client_dp.clip": 0.5,
                        EPS: math.inf,
                        ALPHA: a,
                        "train.lr": lr_inf.setting["train.lr"],
                        **extra,
                    }
                )
    return {
        "sweep": {
            "name": "algorithms",
            "base": spec.base_label
            if spec.base_label == "quickstart"
            else str((Path(spec.source).parent / spec.base_label).resolve()),
            "description": "algorithms: tuned settings on the final seeds (generated)",
            "set": dict(spec.set),
            "algorithm_params": {k: dict(v) for k, v in spec.algorithm_params.items()},
            "algorithm_set": {k: dict(v) for k, v in spec.algorithm_set.items()},
            "grid": {ALPHA: alphas, "seed": seeds},
            "cases": cases,
            "baselines": baselines,
        }
    }


def _fmt(e: float) -> str:
    return "∞" if math.isinf(e) else f"{e:g}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)
    import tomli_w

    from privfed.algorithms import ALGORITHMS
    from privfed.backends import BackendOptions
    from privfed.errors import PrivfedError
    from privfed.evaluation.pages import PageClaims, open_page, write_page
    from privfed.evaluation.provenance import SweepRun, provenance_lines
    from privfed.evaluation.sweep import load_sweep, read_results, run_sweep

    # 0. may this checkout write the page?
    opened = open_page(
        args.results, args.page, repo=REPO, allow_dirty=args.allow_dirty, script="algorithms"
    )
    if opened is None:
        return 2
    page, figures, state = opened
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    # 1. tuning sweep (resumable)
    tuning_file = Path(args.config)
    if args.tuning_seeds or args.rounds or args.algorithms:
        import tomllib

        doc = tomllib.loads(tuning_file.read_text(encoding="utf-8"))
        sw = doc["sweep"]
        if args.tuning_seeds:
            sw["grid"]["seed"] = [int(s) for s in args.tuning_seeds.split(",")]
        if args.rounds:
            sw.setdefault("set", {})["rounds"] = args.rounds
            sw["set"]["eval.every"] = args.rounds
        if args.algorithms:
            keep = [a.strip() for a in args.algorithms.split(",")]
            sw["grid"]["federation.algorithm"] = keep
            sw["baselines"] = [
                b for b in sw.get("baselines", []) if b["federation.algorithm"] in keep
            ]
        if sw.get("base") != "quickstart":
            sw["base"] = str((tuning_file.parent / sw["base"]).resolve())
        tuning_file = out / "tuning.toml"
        tuning_file.write_text(tomli_w.dumps(doc), encoding="utf-8")
    spec = load_sweep(tuning_file)
    backend = BackendOptions()
    t0 = time.perf_counter()
    tuning = run_sweep(spec, out / "tuning", workers=args.workers, backend=backend)
    tuning_s = time.perf_counter() - t0
    if tuning.failed:
        print(f"{len(tuning.failed)} tuning points failed; run again", file=sys.stderr)
        return 1

    # 2. selection on the validation split
    selections = select(read_results(tuning.results_csv))
    final_doc = final_sweep(spec, selections, seeds)
    if args.rounds:
        final_doc["sweep"]["set"]["rounds"] = args.rounds
        final_doc["sweep"]["set"]["eval.every"] = args.rounds
    final_file = out / "final.toml"
    final_file.write_text(
        "# Generated by experiments/algorithms.py from the tuning sweep "
        f"{args.config}: the selected settings on the final seeds.\n" + tomli_w.dumps(final_doc),
        encoding="utf-8",
    )

    # 3. the comparison (resumable)
    final_spec = load_sweep(final_file)
    t0 = time.perf_counter()
    final = run_sweep(final_spec, out / "final", workers=args.workers, backend=backend)
    final_s = time.perf_counter() - t0
    if final.failed:
        print(f"{len(final.failed)} points failed; run again", file=sys.stderr)
        return 1

    # 4. the page
    algs = sorted({s.algorithm for s in selections})
    local_steps = {
        p.config.federation.algorithm: p.config.train.local_steps
        for p in final.points
        if p.label == "grid"
    }
    steps_table = [
        "| algorithm | DP trainings per participation | local steps per training | "
        "DP-SGD steps per participation |",
        "|---|---|---|---|",
    ]
    for a in algs:
        tpp = ALGORITHMS.get(a).trainings_per_participation
        steps_table.append(f"| {a} | {tpp} | {local_steps[a]} | {tpp * local_steps[a]} |")
    sel_table = [
        "| algorithm | α | ε | learning rate | mu / lambda | validation accuracy (tuning "
        "seeds) | settings tried |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in selections:
        param = s.setting.get(
            "federation.algorithm_params.mu", s.setting.get("federation.algorithm_params.lambda")
        )
        sel_table.append(
            f"| {s.algorithm} | {s.alpha:g} | {_fmt(s.epsilon)} | {s.setting['train.lr']:g} | "
            f"{'—' if param is None else f'{param:g}'} | {s.val_acc:.3f} | {s.candidates} |"
        )
    tuning_seeds = spec.axes.get("seed", ())
    tried: dict[str, list[float]] = {"mu": [], "lambda": []}
    for p in tuning.points:
        for k, v in p.config.federation.algorithm_params.items():
            if k in tried and float(v) not in tried[k]:
                tried[k].append(float(v))
    tried = {k: sorted(v) for k, v in tried.items()}
    n_tuning = len(tuning.points)
    sections = [
        "## Setup",
        "",
        f"Every algorithm runs the quickstart federation ({final_spec.base.federation.num_clients} "
        f"clients; digits identity/parity/ge5 and generated Markov text next/next_group), "
        f"{final_spec.base.rounds} rounds, record-level DP-SGD at the target ε per client and "
        "data source, on the plain sum (secure aggregation gives the same sum up to fixed-point "
        "rounding: see the `fedavg-secagg` series). FedRep and Ditto train twice per "
        "participation (two phases; a global and a personal model), so they take half the local "
        "steps per training: every algorithm takes the same number of DP-SGD steps per "
        "participation, and its noise is calibrated for the same number of steps:",
        "",
        *steps_table,
        "",
        "## Tuning (on the validation split) and the privacy it costs",
        "",
        "Each (algorithm, α, ε) was tuned over the client learning rate "
        f"{list(spec.axes['train.lr'])} and, for FedProx and Ditto, mu in {tried['mu']} and "
        f"lambda in {tried['lambda']} "
        f"({n_tuning} tuning runs on seeds {list(tuning_seeds)}, disjoint from the comparison's "
        f"seeds {seeds}). The setting with the highest validation accuracy (clients' validation "
        "splits, multi-task average, mean over the tuning seeds) was kept; test accuracy was "
        "never used. **The selection looked at the clients' validation records, which are "
        "private data: the ε reported on this page is that of one training run and does not "
        "include the privacy cost of tuning** (as is common; accounting for it needs e.g. the "
        "private selection of Papernot and Steinke 2022, not done here). The final sweep file "
        f"with the selected settings is [`final.toml`]({figures.name}/final.toml).",
        "",
        *sel_table,
        "",
    ]
    head = provenance_lines(
        script="experiments/algorithms.py",
        argv=list(argv if argv is not None else sys.argv[1:]),
        sweeps=[
            SweepRun(
                str(args.config), n_tuning, len(tuning.ran), len(tuning.skipped), tuning_s / 60
            ),
            SweepRun(
                f"{final_file} (generated)",
                len(final.points),
                len(final.ran),
                len(final.skipped),
                final_s / 60,
            ),
        ],
        workers=args.workers,
        commands_file=args.commands,
        state=state,
    )
    try:
        from privfed.evaluation.pages import point_problems

        tuning_problems = point_problems(out / "tuning", state)
        if tuning_problems and not args.allow_dirty:
            raise PrivfedError("tuning sweep: " + "; ".join(tuning_problems))
        write_page(
            sweep_dir=out / "final",
            page=page,
            figures=figures,
            title="Multi-task and personalized algorithms",
            head=head,
            state=state,
            publish=not args.allow_dirty,
            epsilon=args.claims_epsilon,
            claims=PageClaims(epsilons=(args.claims_epsilon,), test=args.test),
            sections=sections,
        )
    except PrivfedError as exc:
        print(f"algorithms: {exc}", file=sys.stderr)
        return 2
    shutil.copyfile(final_file, figures / "final.toml")
    (figures / "selection.json").write_text(
        json.dumps(
            [
                {
                    "algorithm": s.algorithm,
                    "alpha": s.alpha,
                    "epsilon": "inf" if math.isinf(s.epsilon) else s.epsilon,
                    "setting": s.setting,
                    "val_acc": s.val_acc,
                }
                for s in selections
            ],
            indent=1,
        ),
        encoding="utf-8",
    )
    print(f"wrote {page} and its figures in {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
