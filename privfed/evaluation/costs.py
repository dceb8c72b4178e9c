"""What a run cost: ``costs.jsonl`` (one line per round) and its totals.

The cost of a round is measured, not computed: bytes are the lengths of the real encoded
messages (a client's task, its update, every secure-aggregation message), compute seconds are
each client's CPU time (its thread's, wherever it ran) and round seconds the driver's wall time.
Bytes are the same on every backend; seconds are not (they depend on the machine and its load),
so costs live in ``costs.jsonl``, apart from ``metrics.jsonl``, whose numbers must be identical
across backends and after a resume.

A ``costs.jsonl`` line::

    {"round": 3, "encoding": "secagg", "participations": 20.0,
     "bytes_down": ..., "bytes_up": ..., "compute_seconds": ..., "compute_seconds_max": ...,
     "protocol_seconds": ..., "round_seconds": ...,
     "bytes_down_by_phase": {"task": ..., "share_keys": ..., ...},
     "bytes_up_by_phase": {"advertise_keys": ..., "masked_input": ..., ...},
     "clients": [[client, bytes_down, bytes_up, compute_s, protocol_s], ...]}

Phases: ``task`` (the task a client downloads), ``update`` (its update sent in the clear);
under secure aggregation ``advertise_keys``, ``share_keys``, ``masked_input``, ``unmask``
(downloads: the server's messages; uploads: the client's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from privfed.io import read_jsonl
from privfed.round import RoundRecord

__all__ = ["COSTS", "cost_columns", "cost_row", "cost_totals"]

#: The cost file of a run directory.
COSTS = "costs.jsonl"


def cost_row(record: RoundRecord, *, round_seconds: float) -> dict[str, Any]:
    """One line of ``costs.jsonl``: a round's bytes and seconds, in total and per client.

    Per client: ``[client, bytes down, bytes up, compute seconds, protocol seconds]``; the
    totals split bytes by phase (``task``/``update`` in the clear, the protocol's phases under
    secure aggregation).
    """
    down: dict[str, int] = {}
    up: dict[str, int] = {}
    for cost in record.costs.values():
        for ph, n in cost.download.items():
            down[ph] = down.get(ph, 0) + int(n)
        for ph, n in cost.upload.items():
            up[ph] = up.get(ph, 0) + int(n)
    return {
        "round": record.round_index + 1,
        "encoding": record.encoding,
        **record.cost_summary(),
        "round_seconds": round_seconds,
        "bytes_down_by_phase": down,
        "bytes_up_by_phase": up,
        "clients": [
            [c, cost.bytes_down, cost.bytes_up, cost.compute_seconds, cost.protocol_seconds]
            for c, cost in sorted(record.costs.items())
        ],
    }


def cost_totals(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Totals over ``costs.jsonl`` rows: participations, bytes, seconds, per participation."""
    n = sum(float(r.get("participations", 0)) for r in rows)
    out = {
        "rounds": float(len(rows)),
        "participations": n,
        "bytes_down": sum(float(r.get("bytes_down", 0)) for r in rows),
        "bytes_up": sum(float(r.get("bytes_up", 0)) for r in rows),
        "compute_seconds": sum(float(r.get("compute_seconds", 0)) for r in rows),
        "protocol_seconds": sum(float(r.get("protocol_seconds", 0)) for r in rows),
        "round_seconds": sum(float(r.get("round_seconds", 0)) for r in rows),
    }
    for key in ("bytes_down", "bytes_up", "compute_seconds", "protocol_seconds"):
        out[f"{key}_per_participation"] = out[key] / n if n else 0.0
    return out


def cost_columns(run_dir: Path) -> dict[str, float]:
    """Per-participation costs of a finished run (``results.csv`` columns; empty if none)."""
    t = cost_totals(read_jsonl(run_dir / COSTS))
    if not t["participations"]:
        return {}
    return {
        "bytes_down_per_participation": t["bytes_down_per_participation"],
        "bytes_up_per_participation": t["bytes_up_per_participation"],
        "compute_s_per_participation": t["compute_seconds_per_participation"],
        "round_s": t["round_seconds"] / max(t["rounds"], 1.0),
    }
