"""Regenerate docs/results/attacks.md: membership inference, audits and inversion vs epsilon.

Three sweeps, each a normal privfed sweep (resumable):

* ``experiments/configs/membership.toml``: the membership-inference game. 65 federated runs per
  record-level epsilon (inf, 8, 4, 1) of one config that differ only in their seed, hence in
  which records they train on; each run is attacked as the target with the other 64 as the
  adversary's shadow models, trained with the target's own federated DP recipe (online LiRA,
  Carlini et al. 2022; :mod:`attacks.game`). Canaries (100 mislabeled records, the same in every
  run) make a regime in which the attack must succeed when nothing stops it.
* ``experiments/configs/audit.toml``: one-run audits (Steinke, Nasr, Jagielski 2023) with enough
  canaries that the bound can reach the accountant's epsilon; the maximum certifiable epsilon is
  printed beside every result.
* ``experiments/configs/attacks_inversion.toml``: analytic gradient inversion of what the server
  observes, with and without secure aggregation, across epsilon; under DP the attack uses the
  noise scale (:mod:`attacks.inversion`).

The runs are sweep points, two at a time on 2 cores (``--workers``); ``--backend process``
trains each run's clients in worker processes instead (same numbers). A page under
docs/results/ is written only from a clean checkout and only from points computed at that
commit; ``--allow-dirty`` runs on a dirty tree but writes outside docs/results/ only.

    python experiments/attacks_vs_privacy.py                 # the page (see regenerate_all.sh)
    python experiments/attacks_vs_privacy.py --seeds 6 --epsilons inf,1 --rounds 4 \\
        --out /tmp/attacks --results /tmp/pages --allow-dirty   # a tiny end-to-end try
"""

from __future__ import annotations

import json
import math
import os
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

    membership: str = "experiments/configs/membership.toml"
    """Sweep file of the membership-inference game."""
    audit: str = "experiments/configs/audit.toml"
    """Sweep file of the audits."""
    inversion: str = "experiments/configs/attacks_inversion.toml"
    """Sweep file of the gradient-inversion half."""
    out: str = "sweeps"
    """Parent directory of the sweep directories (reuse it to resume)."""
    workers: int = 2
    """Cores the sweeps may use (points run in parallel processes)."""
    backend: str = "serial"
    """Where each run's clients train: serial (in the point's process) or process."""
    run_workers: int = 0
    """Worker processes per run with --backend process (0: all of --workers)."""
    seeds: int = 0
    """Runs per epsilon of the game (0: the sweep file's seeds); for tiny trial runs."""
    epsilons: str = ""
    """Epsilons of the game (comma-separated, 'inf' allowed; empty: the sweep file's)."""
    rounds: int = 0
    """Override the rounds of the game and audit runs (0: the files'); for trial runs only."""
    resamples: int = 200
    """Bootstrap resamples of the targets."""
    fixed_variance: bool = False
    """Online LiRA with one variance per side instead of per record."""
    results: str = "docs/results"
    """Where the page and its figure directory go."""
    page: str = "attacks"
    """Name of the page (PAGE.md) and of its figure directory."""
    commands: str = "experiments/regenerate_all.sh"
    """Shell file listing the exact commands of every page."""
    allow_dirty: bool = False
    """Run on a checkout with uncommitted changes; the page must then go outside docs/results."""


def parse_args(argv: list[str] | None = None) -> Args:
    """The script's arguments, one ``--flag`` per field of :class:`Args`."""
    from privfed.evaluation.provenance import parse_dataclass_args

    return parse_dataclass_args(Args, argv, description=__doc__.splitlines()[0])


def _eps(v: Any) -> float:
    return math.inf if str(v) in ("inf", "Infinity") else float(v)


def _fmt_eps(e: float) -> str:
    return "∞ (no DP)" if math.isinf(e) else f"{e:g}"


def _trial_sweep(path: str, out: Path, args: Args, *, game: bool) -> Path:
    """The sweep file, or a scaled-down copy of it for a trial run (seeds, epsilons, rounds)."""
    if not (args.rounds or (game and (args.seeds or args.epsilons))):
        return Path(path)
    import tomli_w
    import tomllib

    src = Path(path)
    doc = tomllib.loads(src.read_text(encoding="utf-8"))
    sw = doc["sweep"]
    if sw.get("base") != "quickstart":
        sw["base"] = str((src.parent / sw["base"]).resolve())
    if args.rounds:
        sw.setdefault("set", {})["rounds"] = args.rounds
        sw["set"]["eval.every"] = args.rounds
    if game and args.seeds:
        sw["grid"]["seed"] = list(range(args.seeds))
    if game and args.epsilons:
        sw["grid"]["dp.target_epsilon"] = [_eps(e) for e in args.epsilons.split(",")]
    trial = out / f"trial-{src.name}"
    trial.parent.mkdir(parents=True, exist_ok=True)
    trial.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return trial


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)
    import numpy as np

    from attacks.game import GameResult, game_run, play
    from attacks.membership import LiRAOnline
    from privfed.backends import BackendOptions
    from privfed.evaluation.audit import guesses_needed, max_certifiable_epsilon
    from privfed.evaluation.pages import open_page, point_problems
    from privfed.evaluation.provenance import SweepRun, provenance_lines
    from privfed.evaluation.results import interval
    from privfed.evaluation.sweep import POINTS_DIR, load_sweep, read_results, run_sweep
    from privfed.io import read_json

    # 0. may this checkout write the page?
    opened = open_page(
        args.results, args.page, repo=REPO, allow_dirty=args.allow_dirty, script="attacks"
    )
    if opened is None:
        return 2
    page, figures, state = opened
    out = Path(args.out)
    backend = BackendOptions(backend=args.backend, workers=args.run_workers)

    # 1. the three sweeps (each resumes what is already done)
    runs: list[SweepRun] = []
    results: dict[str, Any] = {}
    for key, path, game in (
        ("membership", args.membership, True),
        ("audit", args.audit, False),
        ("inversion", args.inversion, False),
    ):
        sweep_file = _trial_sweep(path, out, args, game=game)
        spec = load_sweep(sweep_file)
        t0 = time.perf_counter()
        result = run_sweep(spec, out / spec.name, workers=args.workers, backend=backend)
        if result.failed:
            print(f"{len(result.failed)} points of {path} failed; run again", file=sys.stderr)
            return 1
        runs.append(
            SweepRun(
                str(sweep_file),
                len(result.points),
                len(result.ran),
                len(result.skipped),
                (time.perf_counter() - t0) / 60,
            )
        )
        results[key] = result
    problems = [
        f"{key}: {p}" for key, r in results.items() for p in point_problems(r.out_dir, state)
    ]
    if problems and not args.allow_dirty:
        print(
            f"attacks_vs_privacy: refusing to write {page}: {'; '.join(problems)}",
            file=sys.stderr,
        )
        return 2

    # 2. the membership-inference game, per epsilon
    member = results["membership"]
    by_eps: dict[float, list[Path]] = defaultdict(list)
    for p in member.points:
        by_eps[p.config.dp.target_epsilon].append(member.out_dir / POINTS_DIR / p.id)
    games: dict[float, GameResult] = {}
    accuracy: dict[float, Any] = {}
    spent: dict[float, float] = {}
    attack = LiRAOnline(fixed_variance=args.fixed_variance)
    t0 = time.perf_counter()
    for eps in sorted(by_eps, key=lambda e: -e):
        played = [game_run(d) for d in sorted(by_eps[eps])]
        games[eps] = play(
            played,
            attack,
            group="image",
            rng=np.random.default_rng(0),
            resamples=args.resamples,
        )
        accuracy[eps] = interval(
            [r.accuracy.get("image.identity", math.nan) for r in played], lower=0.0, upper=1.0
        )
        spent[eps] = max(max(r.epsilon.values(), default=math.nan) for r in played)
    game_s = time.perf_counter() - t0
    base = member.points[0].config

    # 3. the page
    def cell(g: GameResult, key: str) -> str:
        m = g.metrics.get(key)
        return m.format() if m is not None else "—"

    order = sorted(games, key=lambda e: -e)
    mia = [
        "| ε | test accuracy | ε spent (max) | score | AUC, all records | TPR @0.1% FPR | "
        "TPR @1% FPR | AUC, canaries | TPR @0.1% FPR, canaries |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for eps in order:
        g = games[eps]
        for score, label in (
            ("online", "online LiRA" + (" (one variance)" if args.fixed_variance else "")),
            ("online-fixed", "online LiRA, one variance per side"),
            ("offline", "offline LiRA"),
            ("threshold", "confidence threshold"),
        ):
            if score == "online-fixed" and args.fixed_variance:
                continue
            mia.append(
                f"| {_fmt_eps(eps)} | {accuracy[eps].format()} | "
                f"{'∞' if math.isinf(spent[eps]) else f'{spent[eps]:.3f}'} | {label} | "
                f"{cell(g, f'{score}/all/auc')} | {cell(g, f'{score}/all/tpr@0.001fpr')} | "
                f"{cell(g, f'{score}/all/tpr@0.01fpr')} | {cell(g, f'{score}/canaries/auc')} | "
                f"{cell(g, f'{score}/canaries/tpr@0.001fpr')} |"
            )
    null = [
        "| ε | null AUC (online) | null TPR @0.1% FPR (online) | null AUC (threshold) |",
        "|---|---|---|---|",
    ]
    for eps in order:
        g = games[eps]
        null.append(
            f"| {_fmt_eps(eps)} | {cell(g, 'null/online/all/auc')} | "
            f"{cell(g, 'null/online/all/tpr@0.001fpr')} | {cell(g, 'null/threshold/all/auc')} |"
        )
    any_game = games[order[0]]
    figures.mkdir(parents=True, exist_ok=True)
    fig_path = _mia_figure(games, figures / "membership.png")

    # audits: audit.json of every point
    audit_rows = []
    audit = results["audit"]
    per: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for p in audit.points:
        data = read_json(audit.out_dir / POINTS_DIR / p.id / "audit.json")
        per[(p.config.federation.algorithm, p.config.dp.target_epsilon)].append(data)
    for (alg, eps), items in sorted(per.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        lows = [float(a["epsilon_lower_bound"]) for a in items]
        acc = max(float(a["epsilon_accountant"]) for a in items)
        ceiling = min(float(a["epsilon_max_certifiable"]) for a in items)
        correct = ", ".join(f"{a['correct']}/{a['guesses']}" for a in items)
        audit_rows.append(
            f"| {alg} | {_fmt_eps(eps)} | {'∞' if math.isinf(acc) else f'{acc:.3f}'} | "
            f"{correct} | {', '.join(f'{v:.2f}' for v in lows)} | {ceiling:.2f} | "
            f"{'— (no claim)' if math.isinf(acc) else 'yes' if ceiling >= acc else 'no'} | "
            f"{'**yes: a bug**' if any(a['flagged'] for a in items) else 'no'} |"
        )
    conf = float(audit.points[0].config.audit.confidence)
    n_guesses = 2 * audit.points[0].config.audit.guesses

    # gradient inversion: attack columns of results.csv
    inv_rows = read_results(results["inversion"].results_csv)
    inv_cols = [
        ("attack:inversion-inbox:psnr_top_db", "one client's message: top candidate (dB)"),
        ("attack:inversion-inbox:psnr_best_db", "best candidate (dB)"),
        ("attack:inversion-aggregate:psnr_top_db", "aggregate: top candidate (dB)"),
        ("attack:inversion-aggregate:psnr_best_db", "best candidate (dB)"),
        ("attack:inversion-inbox:psnr_prior_db", "prior baseline (dB)"),
        ("attack:inversion-inbox:noise_std", "DP noise std per coordinate"),
    ]
    cells: dict[tuple[str, float], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seen: set[str] = set()
    for r in inv_rows:
        if r["point_id"] in seen:
            continue
        seen.add(r["point_id"])
        key = (r["federation.aggregator"], _eps(r["dp.target_epsilon"]))
        for col, _ in inv_cols:
            if r.get(col, "") not in ("", "nan"):
                cells[key][col].append(float(r[col]))
    inv = [
        "| aggregator | ε | " + " | ".join(t for _, t in inv_cols) + " |",
        "|---|---|" + "---|" * len(inv_cols),
    ]
    for key in sorted(cells, key=lambda k: (k[0], -k[1])):
        inv.append(
            f"| {key[0]} | {_fmt_eps(key[1])} | "
            + " | ".join(
                interval(cells[key][c], lower=0.0).format(4 if c.endswith("noise_std") else 2)
                for c, _ in inv_cols
            )
            + " |"
        )

    g0 = base.groups["image"]
    n_clients = base.federation.num_clients
    sized = [
        "## What was scaled down (to regenerate within 3 hours on 2 cores)",
        "",
        f"- data: the 1,797 8x8 digits (Carlini et al. use CIFAR-10's 50,000 images), "
        f"{g0.source_params.get('count', 0)} of them mislabeled canaries; the split "
        f"{list(g0.split)} makes every record a member of about half of the runs",
        f"- model: an MLP with one hidden layer of {g0.hidden[0]} units (theirs: wide ResNets)",
        f"- federation: {n_clients} clients (~{1797 // n_clients} records each, about half in "
        f"training), all taking part in each of {base.rounds} "
        f"rounds of {base.train.local_steps} local steps of batch {base.train.batch_size}; "
        "FedAvg on the plain sum",
        f"- shadow models: {any_game.shadows} per target (theirs: up to 256), trained with the "
        "target's own federated recipe, DP included; every run is a target once (leave one out)",
        "- per-run cost and the total are measured by `python experiments/size_pages.py` and "
        "listed in `experiments/regenerate_all.sh`",
    ]
    head = provenance_lines(
        script="experiments/attacks_vs_privacy.py",
        argv=list(argv if argv is not None else sys.argv[1:]),
        sweeps=runs,
        workers=args.workers,
        commands_file=args.commands,
        state=state,
    )
    lines = [
        "# Attacks against privacy",
        "",
        *head,
        f"- membership-inference game: {game_s / 60:.1f} min to score {len(games)} x "
        f"{any_game.targets} targets",
        "",
        *(["**Not publishable:** " + "; ".join(problems), ""] if problems else []),
        "Threat models and attack details: [threat model](../threat-model.md). An attack's",
        "failure is not a privacy guarantee: read it next to the epsilon, never instead of it.",
        "",
        "## Membership inference on the released model",
        "",
        f"The game of Carlini et al. (2022, Sec. VI): {any_game.targets} runs per ε of one "
        f"config that differ only in their seed; each is the target once, the other "
        f"{any_game.shadows} are the adversary's shadow models (trained with the target's "
        "federated recipe and its DP, on records whose membership the adversary knows). The "
        "attack sees the target's released model and every record; it never sees the target's "
        f"membership. Decisions are pooled over targets: {any_game.decisions:,} per ε "
        f"({any_game.non_members:,} non-members, so 0.1% FPR allows about "
        f"{any_game.non_members // 1000} false positives), {any_game.canary_decisions:,} on "
        "canaries. Online LiRA fits a Gaussian to the logit-scaled confidence of each record "
        "under the shadows that trained on it and one under those that did not, and scores the "
        "likelihood ratio"
        + (" (one variance per side)" if args.fixed_variance else " (per-record variances)")
        + " and with one variance per side for all records (better with few shadows, Sec. "
        "IV-C); offline LiRA uses the OUT Gaussian only; the confidence threshold is the global "
        "attack (the loss threshold of Yeom et al. 2018 ranks records the same way). Brackets: "
        "95% bootstrap intervals over targets. Chance is AUC 0.5 and TPR = FPR.",
        "",
        f"![membership]({figures.name}/{fig_path.name})",
        "",
        *mia,
        "",
        "**Null control**: the same scores against a random permutation of each target's "
        "membership (nothing to find). An AUC has to be read against this spread:",
        "",
        *null,
        "",
        "**The earlier below-chance AUC (0.462 at ε = 1).** The previous page compared one "
        "challenge set of training records with the test records of each of 3 runs. At ε = 1 "
        "that model is noise-dominated: there is nothing to find, and one challenge AUC of ~710 "
        "records varies by several hundredths around 0.5 from run to run, as the null control "
        "above shows for this game; three runs on the same side of 0.5 and a 3-seed t interval "
        "made chance look significant. No bug was found in the challenge set or the scoring "
        "(members and non-members come from the same clients in the same proportions; "
        "the investigation, with the commands that repeat it, is in "
        "[the threat model](../threat-model.md#membership-inference)). The game fixes the "
        "design: membership randomized per record across runs, every run a target, decisions "
        "pooled (thousands of non-members), intervals from a bootstrap over targets, and a null "
        "control.",
        "",
        *sized,
        "",
        "## Empirical audit, sized to its claim",
        "",
        f"One-run audits (Steinke, Nasr, Jagielski 2023) of the same regime on plain digits: "
        f"{audit.points[0].config.audit.canaries} mislabeled canaries in client 0's data, "
        f"each included with probability 1/2; the auditor guesses in/out for the "
        f"{audit.points[0].config.audit.guesses} lowest- and highest-loss canaries under the "
        f"client's model. {n_guesses} guesses can certify at most ε = "
        f"{max_certifiable_epsilon(guesses=n_guesses, confidence=conf):.2f} at {conf:.0%} "
        "confidence, so a bound above the accountant's ε (a bug) could show at "
        f"every finite ε audited here. ε = 8 is not audited: certifying 8 needs "
        f"{guesses_needed(epsilon=8.0, confidence=conf):,} guesses (all right), more records "
        f"than digits has; ε = 4 needs {guesses_needed(epsilon=4.0, confidence=conf)}, ε = 1 "
        f"needs {guesses_needed(epsilon=1.0, confidence=conf)}. Bounds are the pure-DP "
        "statement (with δ > 0 the true bound is slightly lower). Canary *clients* for "
        "client-level DP are not built.",
        "",
        "| algorithm | ε (target) | accountant ε | correct / guesses (per seed) | audited lower "
        "bound (per seed) | max certifiable | can flag the accountant's ε | flagged |",
        "|---|---|---|---|---|---|---|---|",
        *audit_rows,
        "",
        "## Gradient inversion of what the server observes",
        "",
        "4 clients, one local step on a Poisson batch of expected size 4, first round replayed "
        "from the run's checkpointed start; analytic inversion of the first layer (16 hidden "
        "units). Under DP the attack knows the noise scale (the server planned every client's "
        "noise multiplier) and shrinks each row's candidate toward the population's mean image "
        "by the row's estimated signal; without noise it is the exact ratio. PSNR is against "
        "the closest true training record of the target; the prior baseline scores the "
        "dataset's mean image the same way. Under secure aggregation the server's message "
        "from a client is a masked vector. The DP noise is drawn from the run seed: "
        "independent across seeds, the same draw (scaled) at each ε of one seed, so rows "
        "differ only through the noise scale. Mean and 95% t interval over seeds.",
        "",
        *inv,
        "",
    ]
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines), encoding="utf-8")
    (figures / "membership.json").write_text(
        json.dumps(
            {
                ("inf" if math.isinf(e) else str(e)): {
                    "targets": g.targets,
                    "shadows": g.shadows,
                    "decisions": g.decisions,
                    "non_members": g.non_members,
                    "metrics": {k: [m.value, m.low, m.high] for k, m in g.metrics.items()},
                }
                for e, g in games.items()
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    print(f"wrote {page} and its figures in {figures}")
    return 0


def _mia_figure(games: dict[float, Any], path: Path) -> Path:
    """AUC and TPR at 0.1% FPR vs epsilon, all records and canaries, with bootstrap intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = sorted(games, key=lambda e: (math.isinf(e), e))
    finite = [e for e in eps if math.isfinite(e)]
    xs = {e: (e if math.isfinite(e) else (finite[-1] * 3 if finite else 1.0)) for e in eps}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.4), layout="constrained")
    styles = {
        "online": ("C3", "o"),
        "online-fixed": ("C1", "D"),
        "offline": ("C0", "s"),
        "threshold": ("C2", "^"),
    }
    for row, subset in enumerate(("all", "canaries")):
        for col, metric in enumerate(("auc", "tpr@0.001fpr")):
            ax = axes[row][col]
            for k, (score, (colour, marker)) in enumerate(styles.items()):
                shift = math.exp(0.06 * (k - 1.5))
                pts = [(e, games[e].metrics.get(f"{score}/{subset}/{metric}")) for e in eps]
                pts = [(e, m) for e, m in pts if m is not None]
                ax.errorbar(
                    [xs[e] * shift for e, _ in pts],
                    [m.value for _, m in pts],
                    yerr=[
                        [m.value - m.low for _, m in pts],
                        [m.high - m.value for _, m in pts],
                    ],
                    color=colour,
                    marker=marker,
                    capsize=3,
                    label={
                        "online": "online LiRA",
                        "online-fixed": "online LiRA, one variance",
                        "offline": "offline LiRA",
                        "threshold": "confidence threshold",
                    }[score],
                )
            chance = 0.5 if metric == "auc" else 0.001
            ax.axhline(chance, color="0.4", linestyle="--", linewidth=1, label="chance")
            ax.set_xscale("log")
            ax.set_xticks([xs[e] for e in eps])
            ax.set_xticklabels(["∞\n(no DP)" if math.isinf(e) else f"{e:g}" for e in eps])
            ax.minorticks_off()
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("record-level target ε (log scale)")
            ax.set_ylabel("AUC" if metric == "auc" else "TPR at 0.1% FPR")
            ax.set_title(f"{'all records' if subset == 'all' else 'canaries'}: {metric}")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    import io

    from privfed.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


if __name__ == "__main__":
    sys.exit(main())
