"""CLI sub-commands of the evaluation module (``sweep``, ``report``, ``reproduce``)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the evaluation sub-commands to the ``privfed`` parser."""
