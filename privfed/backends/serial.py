"""The serial backend: one worker in the driver's process, owning every client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from privfed.backends import Backend
from privfed.backends.worker import Worker
from privfed.config import ExperimentConfig
from privfed.participation import Participate


class SerialBackend(Backend):
    """Runs every participation in this process, one after another.

    The requests and replies still pass through their byte form, so a serial run exercises
    the same code as a distributed one (and counts the same bytes).
    """

    name = "serial"

    def _start(
        self, cfg: ExperimentConfig, behaviours: Mapping[int, Participate], federation: Any
    ) -> None:
        self.workers = 1
        self.worker = Worker(
            cfg,
            trainer_cache=self.options.trainer_cache,
            behaviours=behaviours,
            federation=federation,
        )

    def _call(self, requests: Mapping[int, bytes]) -> dict[int, bytes]:
        return {w: self.worker.handle(req) for w, req in requests.items()}

    def close(self) -> None:
        """Nothing to stop."""
