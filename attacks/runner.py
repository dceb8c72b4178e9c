"""Compatibility: running an attack moved to :mod:`privfed.attack_runner` (the framework)."""

from __future__ import annotations

from privfed.attack_runner import AttackParameterError, AttackRun, make_attack, run_attack

__all__ = ["AttackParameterError", "AttackRun", "make_attack", "run_attack"]
