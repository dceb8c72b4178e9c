"""Run one registered attack against a finished run directory.

:func:`run_attack` is the glue behind ``privfed attack``: it looks the attack up, builds the
observation its threat model allows, calls :meth:`~attacks.base.Attack.run` with a generator
derived from ``seed``, then hands the result and the ground truth to
:meth:`~attacks.base.Attack.evaluate`. A missing seed is drawn, and returned with the result so
it can be written next to the metrics (as breaching does).
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from attacks.base import ATTACKS, Attack, AttackResult
from attacks.observe import observe_run
from privfed.errors import PrivfedError
from privfed.rng import numpy_rng


class AttackParameterError(PrivfedError):
    """An attack parameter is unknown or has the wrong type."""


@dataclass(frozen=True)
class AttackRun:
    """One attack run: its result, the seed used and where it ran.

    Attributes:
        result: the evaluated result.
        seed: the seed of every random draw of the attack and the challenge.
        run_dir: the attacked run directory.
        threat_model: ``ThreatModel.describe()`` of the attack.
    """

    result: AttackResult
    seed: int
    run_dir: Path
    threat_model: str


def make_attack(name: str, params: Mapping[str, str] | None = None) -> Attack:
    """Instantiate the registered attack ``name`` with string ``params`` (``key=value``).

    Each value is converted to the type of the keyword's default in ``__init__``.

    Raises:
        RegistryError: unknown attack (the message lists the registered ones).
        AttackParameterError: unknown parameter or a value of the wrong type.
    """
    cls = ATTACKS.get(name)
    sig = inspect.signature(cls.__init__)
    accepted = {k: p for k, p in sig.parameters.items() if k != "self" and p.kind is p.KEYWORD_ONLY}
    kwargs: dict[str, Any] = {}
    for key, raw in (params or {}).items():
        if key not in accepted:
            raise AttackParameterError(
                f"attack {name!r} has no parameter {key!r}; it takes "
                f"{', '.join(sorted(accepted)) or 'none'}"
            )
        default = accepted[key].default
        try:
            if isinstance(default, bool):
                kwargs[key] = raw.lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                kwargs[key] = int(raw)
            elif isinstance(default, float):
                kwargs[key] = float(raw)
            else:
                kwargs[key] = raw
        except ValueError:
            raise AttackParameterError(
                f"attack {name!r}: --param {key}={raw!r} is not a {type(default).__name__}"
            ) from None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise AttackParameterError(f"attack {name!r}: {exc}") from None


def run_attack(
    name: str,
    run_dir: str | Path,
    *,
    seed: int | None = None,
    params: Mapping[str, str] | None = None,
    observed_round: Literal["first", "next"] = "first",
) -> AttackRun:
    """Run the attack ``name`` against ``run_dir`` and evaluate it.

    Args:
        name: registered attack name.
        run_dir: a finished run directory.
        seed: root seed of the attack's randomness; None draws one (returned in the result).
        params: ``key -> value`` strings for the attack's keyword arguments.
        observed_round: which round server/client views replay (see :mod:`attacks.observe`).
    """
    attack = make_attack(name, params)
    if seed is None:
        seed = secrets.randbits(62)
    prepared = observe_run(
        run_dir,
        type(attack).threat_model,
        rng=numpy_rng(seed, "attack-challenge"),
        observed_round=observed_round,
    )
    try:
        raw = attack.run(prepared.observation, rng=numpy_rng(seed, f"attack:{name}"))
        result = attack.evaluate(raw, prepared.truth)
    except ValueError as exc:
        raise PrivfedError(f"attack {name!r} on {run_dir}: {exc}") from None
    return AttackRun(
        result=result,
        seed=seed,
        run_dir=Path(run_dir),
        threat_model=type(attack).threat_model.describe(),
    )
