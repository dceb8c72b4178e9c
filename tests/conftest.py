"""Shared fixtures."""

from __future__ import annotations

import pytest
from support import tiny

from privfed.config import ExperimentConfig


@pytest.fixture
def tiny_config() -> ExperimentConfig:
    return tiny()
