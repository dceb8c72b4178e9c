"""Orchestration: plan -> participate (on a backend) -> sum -> apply -> record -> evaluate.

:func:`run_experiment` is the entry point behind ``privfed run``. The :class:`Engine` holds the
three kinds of code of a round apart (see ``docs/architecture.md``): the server side
(:class:`privfed.server.Server`: plan the tasks, apply the sum), the client side
(:func:`privfed.participation.participate`, run by a :mod:`backend <privfed.backends>` wherever
the clients live) and the orchestration here, which moves their messages, runs the
secure-aggregation session, writes the clients' DP events and kept state in a fixed order, and
returns each round as a :class:`~privfed.round.RoundRecord`.

A run writes one directory as it goes (see ``docs/concepts.md``):

* ``config.toml`` (resolved), ``manifest.json`` (seed, versions, commit, platform, timings),
* ``metrics.jsonl`` (one line per evaluation), ``privacy.json`` (the ledger),
* ``costs.jsonl`` (one line per round: bytes and compute seconds per client; measurements,
  so not part of the numbers that must be identical across backends),
* ``checkpoint/state.ckpt`` after every round (:mod:`privfed.checkpoint`, no pickle; its sha256
  is recorded in the manifest), from which ``--resume`` continues.

Every random draw comes from a stream named by (purpose, round, client, unit), so the same config
and seed give the same numbers on every backend, resumed or not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from privfed.aggregation import RoundContext, plain_sum
from privfed.algorithms import Algorithm
from privfed.backends import Backend, BackendOptions, Delivery, make_backend
from privfed.checkpoint import encode_state, is_int
from privfed.config import ExperimentConfig, config_hash, dump_config, load_config
from privfed.errors import CheckpointError, PrivfedError, StorageError
from privfed.evaluation.clients import evaluate_clients
from privfed.evaluation.costs import COSTS, cost_row, cost_totals
from privfed.federation import Federation
from privfed.io import (
    append_text,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    rewrite_jsonl,
    to_json,
)
from privfed.participation import Participate
from privfed.privacy import report as privacy
from privfed.repro import build_manifest, timestamp
from privfed.round import ClientCost, RoundRecord
from privfed.rundir import (
    CHECKPOINT,
    LEGACY_CHECKPOINT,
    checkpoint_record,
    prepare_out_dir,
    read_manifest,
    verify_checkpoint,
)
from privfed.server import (
    Inbox,
    RoundPlan,
    RunState,
    Server,
    configure_distributed_dp,
    make_server_optimizer,
)

__all__ = [
    "CHECKPOINT",
    "COSTS",
    "Engine",
    "PlayedRound",
    "RunState",
    "RunSummary",
    "configure_distributed_dp",
    "make_server_optimizer",
    "run_experiment",
]


@dataclass(frozen=True)
class RunSummary:
    """The final evaluation of a run.

    Attributes:
        costs: totals over the run's rounds (participations, bytes up and down, compute
            seconds; see :func:`privfed.evaluation.costs.cost_totals`).
    """

    out_dir: Path
    rounds: int
    tasks: Mapping[str, Mapping[str, Any]]
    epsilon: Mapping[str, Mapping[str, float]]
    delta: float
    accountant: str
    attacks: Mapping[str, Any] = field(default_factory=dict)
    audit: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    client_level: Mapping[str, Any] = field(default_factory=dict)
    costs: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Sent:
    """What reached the server in one round (internal to the orchestrator)."""

    included: tuple[int, ...] = ()
    observed: Mapping[int, np.ndarray] = field(default_factory=dict)
    bytes_down: Mapping[int, Mapping[str, int]] = field(default_factory=dict)
    bytes_up: Mapping[int, Mapping[str, int]] = field(default_factory=dict)
    aborted: str = ""


@dataclass(frozen=True)
class PlayedRound:
    """A round's record and, apart from it, the clients' true updates (if asked for).

    Attributes:
        record: what the round did, as the server and the wire saw it.
        updates: client -> its joint float update before encoding: the ground truth of attack
            metrics, never part of an observation.
    """

    record: RoundRecord
    updates: Mapping[int, np.ndarray] = field(default_factory=dict)


class Engine:
    """Runs the rounds of one experiment into one run directory.

    Args:
        cfg: the experiment.
        out_dir: the run directory.
        progress: show a progress bar.
        echo: where one-line messages go.
        backend: where participations run (a run option; default: serial, in this process).
        behaviours: client -> a participate function replacing the honest one (a malicious
            client; serial backend only).
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        out_dir: Path,
        *,
        progress: bool = True,
        echo: Callable[[str], None] = print,
        backend: BackendOptions | None = None,
        behaviours: Mapping[int, Participate] | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.progress = progress
        self.echo = echo
        torch.set_num_threads(cfg.threads)
        t0 = time.perf_counter()
        self.fed = Federation(cfg)
        self.server = Server(cfg, self.fed)
        self.setup_seconds = time.perf_counter() - t0
        self.backend_options = backend or BackendOptions()
        self.behaviours = dict(behaviours or {})
        self._backend: Backend | None = None
        self.backend_seconds = 0.0
        self.backend_workers = 0
        self._eval_models = {u.name: u.build() for u in self.fed.units}
        # (sha256, rounds) of the checkpoint file on disk, as the manifest records it
        self._checkpoint: tuple[str | None, int] = (None, 0)
        self._manifest_base: dict[str, Any] | None = None

    @property
    def algorithm(self) -> Algorithm:
        """The server's algorithm object (its server-side state: e.g. MOCHA's Omega)."""
        return self.server.algorithm

    @property
    def record_plan(self) -> Any:
        """The record-level privacy plan (None without record-level DP)."""
        return self.server.record_plan

    @property
    def ddg_plan(self) -> Any:
        """The distributed-DP plan (None unless ``client_dp.mode = "distributed"``)."""
        return self.server.ddg_plan

    @property
    def warnings(self) -> list[str]:
        """Privacy problems accepted with a warning (each names the field and the fix)."""
        return self.server.warnings

    @property
    def ddg(self) -> Any:
        """The distributed-DP parameters (None unless ``client_dp.mode = "distributed"``)."""
        return self.server.ddg

    @property
    def backend(self) -> Backend:
        """The started backend (started on first use)."""
        if self._backend is None:
            t0 = time.perf_counter()
            backend = make_backend(self.backend_options)
            backend.start(self.cfg, behaviours=self.behaviours, federation=self.fed)
            self._backend = backend
            self.backend_seconds = time.perf_counter() - t0
            self.backend_workers = backend.workers
        return self._backend

    def close(self) -> None:
        """Stop the backend's workers (the engine restarts them if used again)."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fresh_state(self) -> RunState:
        """Round-0 state: common initialization, empty ledgers."""
        return self.server.fresh_state()

    # ------------------------------------------------------------------ round
    def run_round(self, r: int, state: RunState) -> RoundRecord:
        """One federated round; updates ``state`` and returns the round's record."""
        return self.play_round(r, state).record

    def play_round(self, r: int, state: RunState, *, keep_updates: bool = False) -> PlayedRound:
        """One federated round, optionally keeping the clients' true updates apart.

        Args:
            r: round index (0-based).
            state: the run state, updated in place.
            keep_updates: also return each client's true joint update (for attack metrics).
        """
        plan = self.server.plan_tasks(r, state)  # server: cohort, budgets, one task each
        if plan.refused:
            return PlayedRound(self._refuse(state, plan))
        deliveries = self.backend.map(plan.tasks, keep_updates=keep_updates)  # clients
        self._keep(state, deliveries)  # their DP events and kept state, in client order
        inbox, sent = self._collect(plan, deliveries)  # what the server receives
        aggregate = None
        if inbox is not None and not sent.aborted:
            aggregate = self.server.apply_round(plan, state, inbox)  # server update
        elif sent.aborted:  # too few survivors (or another abort): the round is lost, not the run
            state.aborted_rounds.append(r)
            self.echo(f"round {r + 1}: aggregation aborted ({sent.aborted}); models unchanged")
        record = self._record(plan, deliveries, sent, aggregate)
        if record.diverged:
            self.echo(
                f"round {r + 1}: {record.diverged} local trainings diverged (non-finite "
                "weights) and were not sent; lower train.lr or raise train.batch_size"
            )
        updates = {
            d.participation.client: d.participation.update
            for d in deliveries
            if keep_updates and d.participation.update is not None
        }
        return PlayedRound(record, updates)

    def _refuse(self, state: RunState, plan: RoundPlan) -> RoundRecord:
        """A round refused before dispatch (client-level budget): noted once, then quietly."""
        if not state.client_refused_rounds:
            self.echo(plan.refused)
        state.client_refused_rounds.append(plan.round_index)
        return RoundRecord(
            round_index=plan.round_index,
            cohort=plan.cohort,
            model_hash=plan.model_hash,
            encoding=self.server.encoding.name,
            refused=plan.refused,
        )

    def _keep(self, state: RunState, deliveries: list[Delivery]) -> None:
        """Write each client's DP events and kept state, in sorted client order."""
        for d in sorted(deliveries, key=lambda d: d.participation.client):
            p = d.participation
            for e in p.events:
                state.ledger.get(p.client, e.source).record(
                    noise_multiplier=e.noise_multiplier,
                    sample_rate=e.sample_rate,
                    steps=e.steps,
                    task=e.task,
                )
            for unit, vec in p.personal.items():
                state.personal[(p.client, unit)] = np.array(vec, dtype=np.float32)

    def _collect(self, plan: RoundPlan, deliveries: list[Delivery]) -> tuple[Inbox | None, _Sent]:
        """What the server receives: individual vectors, a plain sum or a secure sum."""
        alg, encoding = self.server.algorithm, self.server.encoding
        uploads = {
            d.participation.client: d.participation.upload
            for d in deliveries
            if d.participation.upload is not None or encoding.secure
        }
        if alg.needs_individual_updates:
            individual = {c: v for c, v in sorted(uploads.items()) if v is not None}
            sent = _Sent(included=tuple(individual), observed=individual)
            return Inbox(total=None, included=sent.included, individual=individual), sent
        if not alg.aggregates or not uploads:
            return None, _Sent()
        senders = sorted(uploads)
        try:
            if encoding.secure:
                session = self._secure_session(plan, senders)
                total, included = session.total, session.included
                sent = _Sent(
                    included=included,
                    observed=session.observed,
                    bytes_down=session.bytes_received,
                    bytes_up=session.bytes_sent,
                )
            else:
                ctx = RoundContext(
                    round_index=plan.round_index, model_hash=plan.model_hash, dropouts=plan.dropouts
                )
                vectors = {c: v for c, v in uploads.items() if v is not None}
                total, included, _ = plain_sum(vectors, ctx)
                sent = _Sent(included=included, observed={c: vectors[c] for c in included})
        except PrivfedError as exc:
            return None, _Sent(aborted=str(exc))
        return Inbox(total=total, included=included), sent

    def _secure_session(self, plan: RoundPlan, senders: list[int]) -> Any:
        """The secure-aggregation session: the server here, each client on its worker."""
        from privfed.secagg.simulate import run_session

        registry = self.backend.enrol(senders) if self.cfg.secagg.security == "malicious" else None
        return run_session(
            self.backend,
            senders,
            config=self.cfg.secagg,
            registry=registry,
            round_index=plan.round_index,
            model_hash=plan.model_hash,
            length=self.server.encoding.encoded_length(self.server.layout.length),
            dropouts=plan.dropouts,
            keep_observed=True,
        )

    def _record(
        self,
        plan: RoundPlan,
        deliveries: list[Delivery],
        sent: _Sent,
        aggregate: np.ndarray | None,
    ) -> RoundRecord:
        """The round as the wire and the server saw it, with each client's cost."""
        parts = {d.participation.client: d.participation for d in deliveries}
        seconds = self._backend.protocol_seconds() if self._backend is not None else {}
        costs = {}
        for d in sorted(deliveries, key=lambda d: d.participation.client):
            c = d.participation.client
            up = dict(sent.bytes_up.get(c, {})) or (
                {"update": d.upload_bytes} if d.upload_bytes else {}
            )
            costs[c] = ClientCost(
                download={"task": d.task_bytes, **sent.bytes_down.get(c, {})},
                upload=up,
                compute_seconds=d.participation.compute_seconds,
                protocol_seconds=seconds.get(c, 0.0),
            )
        senders = [c for c in sorted(parts) if parts[c].upload is not None] or sorted(sent.bytes_up)
        return RoundRecord(
            round_index=plan.round_index,
            cohort=plan.cohort,
            model_hash=plan.model_hash,
            encoding=self.server.encoding.name,
            trained=sum(p.trained for p in parts.values()),
            budget_skips=plan.budget_skips,
            diverged=sum(p.diverged for p in parts.values()),
            events=tuple((c, e) for c in sorted(parts) for e in parts[c].events),
            dropouts=dict(plan.dropouts),
            included=sent.included,
            dropped=tuple(c for c in senders if c not in set(sent.included)),
            aborted=sent.aborted,
            observed=dict(sent.observed),
            aggregate=aggregate,
            costs=costs,
        )

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, r: int, state: RunState) -> dict[str, Any]:
        """Per-task metrics over clients with the model each client would use."""
        return evaluate_clients(
            self.fed,
            self.server.algorithm,
            state,
            cfg=self.cfg,
            models=self._eval_models,
            round_index=r,
            client_epsilon=self.client_epsilon(state),
        )

    def client_epsilon(self, state: RunState) -> float | None:
        """Client-level epsilon spent so far (None without client-level DP)."""
        return privacy.client_epsilon(self.server, state)

    def privacy_report(self, state: RunState, *, final: bool = False) -> dict[str, Any]:
        """The content of ``privacy.json`` (see :func:`privfed.privacy.report.privacy_report`)."""
        return privacy.privacy_report(self.server, state, final=final)

    # ------------------------------------------------------------------ checkpoints
    def state_tree(self, state: RunState) -> dict[str, Any]:
        """The checkpoint tree of ``state`` (:meth:`privfed.server.Server.state_tree`)."""
        return self.server.state_tree(state)

    def state_from_tree(self, tree: Mapping[str, Any], *, source: str | Path) -> RunState:
        """The checked state of a tree (:meth:`privfed.server.Server.state_from_tree`)."""
        return self.server.state_from_tree(tree, source=source)

    def save_checkpoint(self, state: RunState) -> None:
        """Write the checkpoint atomically and record its sha256 in the manifest.

        The manifest first lists the new digest as pending, then the file is replaced, then
        the manifest lists the new digest alone (:mod:`privfed.rundir`): a run killed at any
        point leaves a checkpoint its manifest accepts.

        Raises:
            StorageError: a file cannot be written; the previous checkpoint is intact.
        """
        enc = encode_state(self.state_tree(state))
        self._write_manifest(state, finished=False, pending=enc.sha256)
        enc.write(self.out / CHECKPOINT)
        self._checkpoint = (enc.sha256, state.next_round)
        self._write_manifest(state, finished=False)

    def load_checkpoint(self) -> RunState:
        """Read this run directory's checkpoint, verified against the manifest's sha256.

        Raises:
            CheckpointError: the checkpoint is missing, damaged, not the one the manifest
                records, from another config, or inconsistent with this run.
        """
        path = self.out / CHECKPOINT
        if not path.exists() and not (self.out / LEGACY_CHECKPOINT).exists():
            raise CheckpointError(f"{path} does not exist; run without --resume to start afresh")
        checked = verify_checkpoint(self.out)
        state = self.state_from_tree(checked.tree, source=path)
        self._checkpoint = (checked.sha256, state.next_round)
        return state

    # ------------------------------------------------------------------ run
    def open_run_dir(self, *, resume: bool) -> tuple[RunState, list[dict[str, Any]]]:
        """Check ``--out``, then start the run directory or load its checkpoint.

        Returns:
            The state to continue from and the metrics rows already written (up to it).
        """
        cfg = self.cfg
        prepare_out_dir(self.out, resume=resume)
        metrics_path = self.out / "metrics.jsonl"
        if not resume:
            state = self.fresh_state()
            # The manifest first: it marks the directory as a privfed run.
            self._write_manifest(state, finished=False)
            atomic_write_text(self.out / "config.toml", dump_config(cfg))
            for stale in ("metrics.jsonl", COSTS, "privacy.json", "attacks.json", "audit.json"):
                (self.out / stale).unlink(missing_ok=True)
            return state, []
        on_disk = load_config(self.out / "config.toml")
        if config_hash(on_disk) != config_hash(cfg):
            raise CheckpointError(
                f"{self.out / 'config.toml'} differs from the config given; resume with "
                "the run directory's own config"
            )
        if (self.out / CHECKPOINT).exists() or (self.out / LEGACY_CHECKPOINT).exists():
            state = self.load_checkpoint()
        else:
            recorded = read_manifest(self.out).get("checkpoint")
            if isinstance(recorded, dict) and recorded.get("sha256"):
                raise CheckpointError(
                    f"{self.out / CHECKPOINT} is missing, but manifest.json records a checkpoint "
                    f"after round {recorded.get('rounds_done')}; restore the file, or start the "
                    "run afresh in a new --out directory"
                )
            # Stopped before the first checkpoint: nothing to keep, start from round 0.
            self.echo(f"{self.out}: no checkpoint yet; starting from the first round")
            state = self.fresh_state()
        kept: dict[str, list[dict[str, Any]]] = {}
        for name in ("metrics.jsonl", COSTS):
            try:
                rows = read_jsonl(self.out / name)
            except (OSError, ValueError) as exc:
                raise CheckpointError(
                    f"{self.out / name} cannot be read ({exc}); restore it or delete it (it is "
                    "rebuilt only from later rounds)"
                ) from None
            kept[name] = [m for m in rows if is_int(m.get("round"))]
            kept[name] = [m for m in kept[name] if m["round"] <= state.next_round]
            rewrite_jsonl(self.out / name, kept[name])
        rows = [m for m in kept["metrics.jsonl"] if isinstance(m.get("tasks"), dict)]
        if len(rows) != len(kept["metrics.jsonl"]):
            rewrite_jsonl(metrics_path, rows)
        return state, rows

    def run(self, *, resume: bool = False) -> RunSummary:
        """Run (or resume) every round, writing the run directory.

        Raises:
            CheckpointError: ``--out`` cannot be used (see :func:`privfed.rundir.prepare_out_dir`)
                or the run cannot be resumed.
            StorageError: a file cannot be written; everything up to the last checkpoint is
                kept and the message says how to continue.
            BackendError: a worker failed; everything up to the last checkpoint is kept.

        The backend's workers stay up for attacks and inspection; :meth:`close` them (or use
        the engine as a context manager, as :func:`run_experiment` does).
        """
        try:
            return self._run(resume=resume)
        except StorageError as exc:
            raise StorageError(
                f"{exc}. Nothing computed is lost: {self.out} holds the run up to round "
                f"{self._checkpoint[1]}; once the problem is fixed, continue it with "
                f"`privfed run --resume --out {self.out}`",
                path=exc.path,
                errno=exc.errno,
            ) from None

    def _run(self, *, resume: bool) -> RunSummary:
        cfg = self.cfg
        state, rows = self.open_run_dir(resume=resume)
        self._write_manifest(state, finished=False)
        for w in self.warnings:
            self.echo(f"WARNING (privacy): {w}")
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=cfg.rounds,
                initial=state.next_round,
                desc=cfg.name,
                unit="round",
                leave=True,
                dynamic_ncols=True,
            )
        t_run = time.perf_counter()
        last_eval: dict[str, Any] | None = rows[-1] if rows else None
        try:
            for r in range(state.next_round, cfg.rounds):
                t0 = time.perf_counter()
                record = self.run_round(r, state)
                round_s = time.perf_counter() - t0
                state.timings["train_aggregate_s"] = (
                    state.timings.get("train_aggregate_s", 0.0) + round_s
                )
                if (r + 1) % cfg.eval.every == 0 or r + 1 == cfg.rounds:
                    t1 = time.perf_counter()
                    last_eval = self.evaluate(r, state)
                    rows.append(last_eval)
                    append_text(self.out / "metrics.jsonl", to_json(last_eval) + "\n")
                    state.timings["eval_s"] = state.timings.get("eval_s", 0.0) + (
                        time.perf_counter() - t1
                    )
                append_text(
                    self.out / COSTS, to_json(cost_row(record, round_seconds=round_s)) + "\n"
                )
                state.next_round = r + 1
                self.save_checkpoint(state)
                atomic_write_json(self.out / "privacy.json", self.privacy_report(state))
                if bar is not None:
                    # legend: privfed.cli.PROGRESS_LEGEND (privfed run --help)
                    post: dict[str, float] = {
                        "clients": len(record.included),
                        "trainings": record.trained,
                    }
                    if last_eval:
                        accs = [v["mean_acc"] for v in last_eval["tasks"].values()]
                        post["acc"] = round(float(np.mean(accs)), 3)
                        post["eps"] = round(
                            max(v["epsilon_max"] for v in last_eval["tasks"].values()), 2
                        )
                    bar.set_postfix(post)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        state.timings["run_s"] = state.timings.get("run_s", 0.0) + time.perf_counter() - t_run
        report = self.privacy_report(state, final=True)
        atomic_write_json(self.out / "privacy.json", report)
        attack_results = self.run_attacks() if cfg.attacks else {}
        audit = self.run_audit(state) if self.fed.audit is not None else {}
        if last_eval is None:  # resumed a complete run whose metrics were removed
            last_eval = self.evaluate(cfg.rounds - 1, state)
            append_text(self.out / "metrics.jsonl", to_json(last_eval) + "\n")
        self._write_manifest(state, finished=True)
        return RunSummary(
            out_dir=self.out,
            rounds=cfg.rounds,
            tasks=last_eval["tasks"],
            epsilon=report["summary"],
            delta=cfg.dp.delta,
            accountant=report["accountant"],
            attacks=attack_results,
            audit=audit,
            warnings=tuple(self.warnings),
            client_level=report["client_level"],
            costs=cost_totals(read_jsonl(self.out / COSTS)),
        )

    def run_audit(self, state: RunState) -> dict[str, Any]:
        """Score the audit's canaries under the audited client's model; write audit.json."""
        from privfed.evaluation.audit import audit_run

        result = audit_run(
            self.fed, self.server.algorithm, state, cfg=self.cfg, models=self._eval_models
        )
        atomic_write_json(self.out / "audit.json", result)
        verdict = " -- ABOVE the accountant's epsilon: a privacy bug" if result["flagged"] else ""
        self.echo(
            f"audit (client {result['client']}, {result['source']}): epsilon >= "
            f"{result['epsilon_lower_bound']:.3f} at {self.cfg.audit.confidence:.0%} confidence "
            f"({result['correct']}/{result['guesses']} guesses right); accountant epsilon "
            f"{result['epsilon_accountant']:.3f}{verdict}"
        )
        return result

    def run_attacks(self) -> dict[str, Any]:
        """Run the configured ``[[attacks]]`` against this finished run; write attacks.json.

        The run directory is complete (config, checkpoint, privacy.json) but the manifest is
        not yet marked finished, so a run stopped during its attacks resumes and re-runs them.
        """
        from privfed.attack_runner import run_configured_attacks

        out = run_configured_attacks(self.cfg, self.out, echo=self.echo)
        atomic_write_json(self.out / "attacks.json", out)
        return out

    def _write_manifest(
        self, state: RunState, *, finished: bool, pending: str | None = None
    ) -> None:
        """Write ``manifest.json``; ``rounds_done`` counts the rounds the checkpoint holds."""
        import dataclasses

        if self._manifest_base is None:
            self._manifest_base = build_manifest(self.cfg)
        manifest = dict(self._manifest_base)
        sha, rounds = self._checkpoint
        params = dataclasses.asdict(self.server.algorithm.params)
        manifest.update(
            {
                "written_at": timestamp(),
                "finished": finished,
                "rounds_done": rounds,
                "checkpoint": checkpoint_record(
                    sha256=sha, rounds_done=rounds, pending_sha256=pending
                ),
                "aborted_rounds": state.aborted_rounds,
                "partition_hashes": {g: gs.partition_hash for g, gs in self.fed.groups.items()},
                "vector_length": self.fed.vector_length,
                "units": {u.name: n for u, n in zip(self.fed.units, self.fed.sizes, strict=True)},
                "timings": {"setup_s": self.setup_seconds, **state.timings},
                "aggregator": self.server.encoding.name,
                "algorithm": self.cfg.federation.algorithm,
                "algorithm_params": {k.rstrip("_"): v for k, v in params.items()},
                "backend": {
                    "name": self.backend_options.backend,
                    "workers": self.backend_workers or None,
                    "start_s": self.backend_seconds,
                },
            }
        )
        atomic_write_json(self.out / "manifest.json", manifest)


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    backend: BackendOptions | None = None,
) -> RunSummary:
    """Run ``cfg`` into ``out_dir`` (or resume it) and return the final evaluation.

    Args:
        cfg: the experiment.
        out_dir: the run directory.
        resume: continue the run in ``out_dir`` from its last checkpoint.
        progress: show a progress bar.
        echo: where one-line messages go.
        backend: where participations run (default: serial); never changes a number.
    """
    with Engine(cfg, Path(out_dir), progress=progress, echo=echo, backend=backend) as engine:
        return engine.run(resume=resume)
