"""Per-client evaluation: every client's test accuracy with the model it would use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from privfed.evaluation.metrics import summarize
from privfed.models import load_flat_parameters

if TYPE_CHECKING:
    from privfed.algorithms import Algorithm
    from privfed.config import ExperimentConfig
    from privfed.federation import Federation
    from privfed.server import RunState

__all__ = ["evaluate_clients"]


def evaluate_clients(
    fed: Federation,
    algorithm: Algorithm,
    state: RunState,
    *,
    cfg: ExperimentConfig,
    models: Mapping[str, nn.Module],
    round_index: int,
    client_epsilon: float | None,
) -> dict[str, Any]:
    """Per-task metrics over clients, each with the model it would use (one metrics.jsonl row).

    Args:
        fed: the federation (test, validation and training labels of every client).
        algorithm: says which model a client predicts with (global, personal, merged).
        state: the run state (global models, kept personal state, ledgers).
        cfg: the experiment.
        models: unit name -> a model of that unit to load vectors into.
        round_index: the round just finished (0-based).
        client_epsilon: the client-level epsilon spent so far (None without client-level DP).
    """
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    tasks: dict[str, Any] = {}
    per_client: dict[str, dict[str, float]] = {}
    # A client's test and validation features (and training labels, for the majority
    # baseline) are built once per evaluation and shared by the units of its group.
    data: dict[tuple[str, int], Any] = {}
    for unit in fed.units:
        gs = fed.unit_group[unit.name]
        model = models[unit.name]
        model.eval()
        loaded: bytes | None = None
        accs: dict[str, dict[int, float]] = {t: {} for t in unit.tasks}
        val_accs: dict[str, list[float]] = {t: [] for t in unit.tasks}
        losses: dict[str, list[float]] = {t: [] for t in unit.tasks}
        base: dict[str, list[float]] = {t: [] for t in unit.tasks}
        for c in fed.clients_of(unit):
            vec = algorithm.eval_vector(
                unit=unit.name,
                global_vec=state.globals[unit.name],
                personal=state.personal.get((c, unit.name)),
            )
            key = vec.tobytes() if vec is not state.globals[unit.name] else b"global"
            if key != loaded:
                load_flat_parameters(model, vec)
                loaded = key
            if (unit.group, c) not in data:
                data = {k: v for k, v in data.items() if k[0] == unit.group}
                data[(unit.group, c)] = (
                    *fed.tensors(unit.group, "test", c),
                    *fed.tensors(unit.group, "val", c),
                    fed.labels(unit.group, "train", c),
                )
            x, ys, xv, yv, ytr = data[(unit.group, c)]
            with torch.no_grad():
                out = model(x)
                outv = model(xv) if len(xv) else None
            for t in unit.tasks:
                y = ys[t]
                accs[t][c] = float((out[t].argmax(1) == y).float().mean())
                losses[t].append(float(loss_fn(out[t], y)) / len(y))
                if outv is not None:
                    val_accs[t].append(float((outv[t].argmax(1) == yv[t]).float().mean()))
                majority = int(torch.bincount(ytr[t]).argmax())
                base[t].append(float((y == majority).float().mean()))
        for t in unit.tasks:
            full = f"{unit.group}.{t}"
            ledgers = [
                state.ledger[(c, gs.ledger_key)]
                for c in fed.clients_of(unit)
                if (c, gs.ledger_key) in state.ledger
            ]
            eps = [lg.epsilon() for lg in ledgers if lg.steps > 0]
            s = summarize(list(accs[t].values()), worst_fraction=cfg.eval.worst_fraction)
            tasks[full] = {
                "mean_acc": s.mean,
                "median_acc": s.median,
                "worst_acc": s.worst,
                "std_acc": s.std,
                "mean_loss": float(np.mean(losses[t])),
                "val_mean_acc": float(np.mean(val_accs[t])) if val_accs[t] else float("nan"),
                "majority_acc": float(np.mean(base[t])),
                "clients": s.n,
                "epsilon_max": max(eps) if eps else 0.0,
                "epsilon_mean": float(np.mean(eps)) if eps else 0.0,
                "client_epsilon": client_epsilon,
                "source": gs.ledger_key,
            }
            bayes = gs.source.meta.get("bayes_accuracy", {}).get(t)
            if bayes:
                # Bayes-optimal accuracy of a perfect pooled / personal model (generated data)
                tasks[full]["bayes_pooled_acc"] = float(bayes["pooled"])
                tasks[full]["bayes_personal_acc"] = float(bayes["personal"])
            per_client[full] = {str(c): a for c, a in accs[t].items()}
    return {"round": round_index + 1, "tasks": tasks, "per_client": per_client}
