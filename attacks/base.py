"""The attack plug-in API, re-exported from :mod:`privfed.attack_api` (where it now lives).

Kept so that ``from attacks.base import Attack, ThreatModel, ...`` keeps working.
:func:`register_builtins` registers the built-in attacks by hand, for an environment whose
installed metadata lacks the ``privfed.attacks`` entry points (they are found that way
otherwise).
"""

from __future__ import annotations

from privfed.attack_api import (
    ALLOWED_VIEWS,
    ATTACKS,
    Adversary,
    Attack,
    AttackResult,
    Encoding,
    GroundTruth,
    Observation,
    Records,
    ThreatModel,
    View,
    register_attack,
)

__all__ = [
    "ALLOWED_VIEWS",
    "ATTACKS",
    "Adversary",
    "Attack",
    "AttackResult",
    "Encoding",
    "GroundTruth",
    "Observation",
    "Records",
    "ThreatModel",
    "View",
    "register_attack",
    "register_builtins",
]

#: The built-in attacks as ``name -> "module:Class"``, as pyproject.toml declares them.
BUILTINS: dict[str, str] = {
    "mia-loss": "attacks.membership:LossThreshold",
    "mia-lira": "attacks.membership:LiRAOffline",
    "inversion-inbox": "attacks.inversion:AnalyticInversion",
    "inversion-aggregate": "attacks.inversion:AggregateInversion",
    "inversion-dlg": "attacks.inversion:GradientMatching",
    "secagg-fake-dropout": "attacks.protocol:FakeDropoutServer",
    "secagg-both-shares": "attacks.protocol:BothSharesServer",
    "secagg-sybil": "attacks.protocol:SybilServer",
    "secagg-roster-isolation": "attacks.protocol:RosterIsolationServer",
}


def register_builtins() -> None:
    """Register the built-in attacks explicitly (normally they arrive through entry points)."""
    import importlib

    for target in BUILTINS.values():
        module, _, attr = target.partition(":")
        register_attack(getattr(importlib.import_module(module), attr))
