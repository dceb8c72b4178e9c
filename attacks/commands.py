"""CLI sub-command ``privfed attack``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``attack`` sub-command to the ``privfed`` parser."""
