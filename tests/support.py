"""Test support: a tiny federation config that runs in a few seconds, and a toy unit trainer."""

from __future__ import annotations

from typing import Any

from privfed.config import ExperimentConfig, from_dict
from privfed.unit import UnitSpec

#: A two-task unit on 8 features (tasks a: 3 classes, b: 2), hidden layer of 16.
TOY_SPEC = UnitSpec("g", "g", ("a", "b"), 8, (16,), {"a": 3, "b": 2})

TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "rounds": 2,
    "groups": {
        "image": {
            "source": "digits",
            "tasks": ["identity", "parity"],
            "architecture": "shared-trunk",
            "hidden": [16],
            "partition": {"kind": "dirichlet", "alpha": 0.5},
        },
        "text": {
            "source": "markov",
            "source_params": {
                "vocab": 8,
                "num_owners": 4,
                "lam": 0.5,
                "tokens_per_owner": 120,
                "concentration": 0.3,
            },
            "tasks": ["next"],
            "hidden": [8],
            "partition": {"kind": "natural"},
        },
    },
    "federation": {"num_clients": 4, "aggregator": "plain"},
    "train": {"local_steps": 2, "batch_size": 16, "lr": 0.3},
    "dp": {"target_epsilon": 8.0, "delta": 1e-4},
    "eval": {"every": 1},
}


def tiny_dict(**overrides: Any) -> dict[str, Any]:
    """A deep copy of TINY with top-level sections updated (section dicts are merged)."""
    import copy

    data = copy.deepcopy(TINY)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return data


def tiny(**overrides: Any) -> ExperimentConfig:
    """The tiny config, validated."""
    return from_dict(tiny_dict(**overrides))


def trainers_of(engine: Any) -> dict[tuple[int, str], Any]:
    """The trainers of a serial-backend engine, keyed (client, unit name[#personal]).

    The serial backend runs every client in one worker in this process; its trainer cache is
    the clients' own state, read here only to compare it with the ledgers.
    """
    out = {}
    for (client, unit_index, personal), tr in engine.backend.worker.trainers.items():
        name = engine.fed.units[unit_index].name + ("#personal" if personal else "")
        out[(client, name)] = tr
    return out


def dp_accounting_rdp_epsilon(events: list[tuple[float, float, int]], delta: float) -> float:
    """dp-accounting's RDP epsilon of ``(sigma, q, steps)`` events at Opacus's orders.

    An independent accountant for the tests. At fractional orders its series differs from the
    exact value (checked by numerical integration: 0.0272397 vs 0.0272373 at q = 0.1,
    sigma = 1.341, order 5.3; Opacus and privfed give the exact value), so it agrees with
    privfed to ~1e-3 relative at small sigma, not bit for bit; :func:`dp_accounting_pld_epsilon`
    is the soundness check.
    """
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    from privfed.privacy.accounting import DEFAULT_ORDERS

    acc = RdpAccountant(orders=list(DEFAULT_ORDERS))
    for sigma, q, steps in events:
        acc.compose(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
        )
    return float(acc.get_epsilon(delta))


def dp_accounting_pld_epsilon(events: list[tuple[float, float, int]], delta: float) -> float:
    """dp-accounting's PLD epsilon (pessimistic discretization: an upper bound on the truth)."""
    import dp_accounting
    from dp_accounting.pld import PLDAccountant

    acc = PLDAccountant(
        dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-2
    )
    for sigma, q, steps in events:
        acc.compose(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
        )
    return float(acc.get_epsilon(delta))


def toy_trainer(
    *,
    n: int = 40,
    batch: int = 8,
    sigma: float | None = 1.0,
    seed: int = 1,
    data_seed: int = 0,
    stream: tuple[int, int] = (0, 0),
    public: float | None = None,
) -> Any:
    """A :class:`privfed.client.UnitTrainer` of :data:`TOY_SPEC` on ``n`` random records."""
    import torch

    from privfed.client import UnitTrainer

    gen = torch.Generator().manual_seed(data_seed)
    x = torch.randn(n, 8, generator=gen)
    y = {
        "a": torch.randint(0, 3, (n,), generator=gen),
        "b": torch.randint(0, 2, (n,), generator=gen),
    }
    return UnitTrainer(
        TOY_SPEC,
        x=x,
        y=y,
        batch_size=batch,
        lr=0.1,
        noise_multiplier=sigma,
        max_grad_norm=1.0,
        seed=seed,
        stream=stream,
        public_sample_rate=public,
        public_batch_size=batch if public else None,
    )
