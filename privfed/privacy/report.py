"""The content of ``privacy.json``: every ledger of a run, and the client-level guarantee.

Moved out of the engine: these functions read the run state and the server's privacy
parameters; they never change them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from privfed.config import ExperimentConfig
    from privfed.server import RunState, Server

__all__ = ["client_epsilon", "expected_survivors", "privacy_report"]


def expected_survivors(cfg: ExperimentConfig) -> int:
    """Clients per round the distributed noise was calibrated for."""
    import math

    f = cfg.federation
    return max(1, math.floor(f.cohort_fraction * f.num_clients * (1.0 - f.dropout)))


def client_epsilon(server: Server, state: RunState) -> float | None:
    """Client-level epsilon spent so far (None without client-level DP)."""
    if server.ddg is not None:
        if not state.ddg_survivors:
            return 0.0
        from privfed.privacy.distributed import realized_epsilon

        return realized_epsilon(
            params=server.ddg,
            survivors_per_round=state.ddg_survivors,
            delta=server.cfg.client_dp.delta,
        )
    if state.client_ledger is not None:
        return state.client_ledger.epsilon() if state.client_ledger.steps else 0.0
    return None


def privacy_report(server: Server, state: RunState, *, final: bool = False) -> dict[str, Any]:
    """The content of ``privacy.json``: every (client, source) ledger and a summary.

    Ledgers are listed by client, then in the order the client first trained on each source,
    so the file does not depend on the order in which clients ran.
    """
    cfg = server.cfg
    accountant = cfg.dp.accountant if final else "rdp"
    ordered = sorted(state.ledger, key=lambda lg: lg.client)
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
        "summary": summary,
        "ledgers": ledgers,
        "client_level": _client_level_report(server, state, accountant),
    }


def _client_level_report(server: Server, state: RunState, accountant: str) -> dict[str, Any]:
    cdp = server.cfg.client_dp
    if server.ddg is not None:
        from privfed.privacy.distributed import wrap_probability

        ddg = server.ddg
        n = max(state.ddg_survivors) if state.ddg_survivors else 0
        return {
            "mode": "distributed",
            "unit": "client (everything one client contributes over the whole run)",
            "mechanism": "distributed discrete Gaussian (Kairouz, Liu, Steinke 2021): "
            "clip, randomized Hadamard, conditional randomized rounding, discrete Gaussian "
            "noise added by each client, secure aggregation modulo 2^bits; no amplification "
            "by client sampling is claimed",
            "delta": cdp.delta,
            "target_epsilon": cdp.target_epsilon,
            "accountant": "rdp (sum of discrete Gaussians, Kairouz et al. 2021)",
            "params": {
                "dimension": ddg.dimension,
                "clip": ddg.clip,
                "bits": ddg.bits,
                "gamma": ddg.gamma,
                "sigma_per_client": ddg.sigma,
                "beta": ddg.beta,
            },
            "expected_survivors": expected_survivors(server.cfg),
            "survivors_per_round": state.ddg_survivors,
            "epsilon": client_epsilon(server, state),
            "wrap_probability_bound": wrap_probability(params=ddg, n_clients=n) if n else 0.0,
            "norm_inflation_bound": ddg.norm_inflation,
        }
    params = server.client_dp
    if params is None or state.client_ledger is None:
        return {"mode": "off"}
    lg = state.client_ledger
    return {
        "mode": cdp.mode,
        "unit": "client (everything one client contributes over the whole run)",
        "mechanism": "DP-FedAvg: per-client L2 clipping, Gaussian noise on the sum added by "
        "the server (trusted), fixed denominator, Poisson client sampling"
        + (", adaptive clipping" if cdp.adaptive else ""),
        "delta": cdp.delta,
        "target_epsilon": cdp.target_epsilon,
        "noise_multiplier": params.noise_multiplier,
        "update_noise_multiplier": params.update_noise_multiplier,
        "count_noise_std": params.count_noise_std,
        "sample_rate": params.sample_rate,
        "clip": state.client_clip,
        "accountant": accountant,
        "epsilon": lg.epsilon(accountant) if lg.steps else 0.0,
        "ledger": lg.to_dict(),
    }
