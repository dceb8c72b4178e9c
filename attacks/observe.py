"""Compatibility: observation building moved to :mod:`privfed.attack_runner` (the framework)."""

from __future__ import annotations

from privfed.attack_runner import AttackSetupError, Prepared, load_run, observe_run

__all__ = ["AttackSetupError", "Prepared", "load_run", "observe_run"]
