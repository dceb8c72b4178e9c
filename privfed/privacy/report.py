"""The content of ``privacy.json``: every ledger of a run, and the client-level guarantee.

Moved out of the engine: these functions read the run state and the server's privacy
parameters; they never change them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from privfed.server import RunState, Server

__all__ = ["client_epsilon", "privacy_report"]


def client_epsilon(server: Server, state: RunState) -> float | None:
    """Client-level epsilon guaranteed so far (None without client-level DP).

    Distributed mode: every round composed at the honest noise shares the protocol
    guarantees (:class:`privfed.privacy.ledger.DistributedLedger`), never fewer.
    """
    if state.ddg_ledger is not None:
        return state.ddg_ledger.epsilon()
    if state.client_ledger is not None:
        return state.client_ledger.epsilon() if state.client_ledger.steps else 0.0
    return None


def privacy_report(server: Server, state: RunState, *, final: bool = False) -> dict[str, Any]:
    """The content of ``privacy.json``: every (client, source) ledger and a summary.

    Ledgers are listed by (client, source), so the file does not depend on the order in which
    clients ran.
    """
    cfg = server.cfg
    plan = server.record_plan
    accountant = cfg.dp.accountant if final else "rdp"
    ordered = sorted(state.ledger, key=lambda lg: (lg.client, lg.source))
    ledgers = []
    for lg in ordered:
        d = lg.to_dict()
        if accountant != "rdp":
            d["epsilon_rdp"] = d.get("epsilon")
            d["epsilon"] = lg.epsilon(accountant) if lg.steps else 0.0
        ledgers.append(d)
    summary = {}
    for src in sorted({lg.source for lg in ordered}):
        eps = [
            lg.epsilon(accountant) if accountant != "rdp" else lg.epsilon()
            for lg in ordered
            if lg.source == src and lg.steps > 0
        ]
        summary[src] = {
            "max": max(eps) if eps else 0.0,
            "mean": float(np.mean(eps)) if eps else 0.0,
            "clients": len(eps),
        }
    return {
        "unit": "record (one training example of one client's data source)",
        "mechanism": "DP-SGD (Opacus), Poisson sampling, per-sample clipping"
        if cfg.dp.private
        else "none (target_epsilon = inf)",
        "delta": cfg.dp.delta,
        "target_epsilon": cfg.dp.target_epsilon,
        "accountant": accountant,
        "complete": final,
        "assumptions": list(plan.assumptions) if plan else [],
        "warnings": list(server.warnings),
        "public_sampling": (
            {
                "sample_rate": plan.public_sample_rate,
                "batch_size": plan.public_batch_size,
                "nominal_records": cfg.dp.nominal_records,
            }
            if plan is not None and plan.public_sample_rate
            else None
        ),
        "summary": summary,
        "ledgers": ledgers,
        "client_level": _client_level_report(server, state, accountant),
    }


def _client_level_report(server: Server, state: RunState, accountant: str) -> dict[str, Any]:
    cdp = server.cfg.client_dp
    common = {
        "unit": "client (everything one client contributes over the whole run)",
        "delta": cdp.delta,
        "target_epsilon": cdp.target_epsilon,
        "refused_rounds": list(state.client_refused_rounds),
    }
    if server.ddg_plan is not None and state.ddg_ledger is not None:
        from privfed.privacy.distributed import wrap_probability

        plan, lg = server.ddg_plan, state.ddg_ledger
        n = max((e.survivors for e in lg.rounds), default=0)
        return {
            "mode": "distributed",
            **common,
            "mechanism": "distributed discrete Gaussian (Kairouz, Liu, Steinke 2021): "
            "clip, randomized Hadamard, conditional randomized rounding, discrete Gaussian "
            "noise added by each client, secure aggregation modulo 2^bits; no amplification "
            "by client sampling is claimed",
            "accountant": "rdp (sum of discrete Gaussians, Kairouz et al. 2021, Prop. 14)",
            "params": {
                "dimension": server.ddg.dimension,
                "padded_dimension": server.ddg.padded_dimension,
                "clip": server.ddg.clip,
                "bits": server.ddg.bits,
                "gamma": server.ddg.gamma,
                "sigma_per_client": server.ddg.sigma,
                "beta": server.ddg.beta,
                "l2_sensitivity": server.ddg.l2_sensitivity,
                "l1_sensitivity": server.ddg.l1_sensitivity,
            },
            "max_colluders": plan.colluders,
            "max_colluders_derived": plan.colluders_derived,
            "planned": {
                "cohort": plan.planned.cohort,
                "threshold": plan.planned.threshold,
                "honest_noise_shares": plan.planned.worst,
            },
            "epsilon": lg.epsilon(),
            "epsilon_realized": lg.epsilon(realized=True),
            "rounds": lg.history(),
            "assumptions": [
                "epsilon counts, every round, only the noise of t - 1 - max_colluders "
                "clients: t survivors (the fewest secure aggregation completes with), "
                "max_colluders of them colluding with the server, the protected client's "
                "own share excluded; epsilon_realized counts the survivors reported",
                "noise is simulation randomness drawn from the run seed; deployed clients "
                "must draw it from a cryptographically secure generator",
            ],
            "wrap_probability_bound": wrap_probability(params=server.ddg, n_clients=n)
            if n
            else 0.0,
            "norm_inflation_bound": server.ddg.norm_inflation,
        }
    if server.client_dp is None or state.client_ledger is None:
        return {"mode": "off"}
    central = state.client_ledger
    return {
        "mode": cdp.mode,
        **common,
        "mechanism": "DP-FedAvg: per-client L2 clipping, Gaussian noise on the sum added by "
        "the server (trusted), fixed denominator, Poisson client sampling"
        + (", adaptive clipping" if cdp.adaptive else ""),
        "noise_multiplier": server.client_dp.noise_multiplier,
        "update_noise_multiplier": server.client_dp.update_noise_multiplier,
        "count_noise_std": server.client_dp.count_noise_std,
        "sample_rate": server.client_dp.sample_rate,
        "clip": state.client_clip,
        "accountant": accountant,
        "epsilon": central.epsilon(accountant) if central.steps else 0.0,
        "ledger": central.to_dict(),
        "assumptions": [
            "the server adding the noise is trusted; the client sampling is hidden from "
            "the adversary (amplification by Poisson sampling)",
            "noise is simulation randomness drawn from the run seed",
        ],
    }
