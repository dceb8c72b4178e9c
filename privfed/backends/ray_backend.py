"""The Ray backend: workers as Ray actors, on this machine or on a Ray cluster.

Install with ``pip install -e ".[ray]"``. ``privfed run CONFIG --backend ray`` starts a local
Ray with ``--workers`` CPUs; ``--address ADDR`` (e.g. ``ray://head:10001`` or ``auto``)
connects to a running cluster instead, whose nodes must have privfed installed at the same
commit. Each actor is a :class:`~privfed.backends.worker.Worker` owning the clients
``c % workers == index``; requests and replies are bytes (:mod:`privfed.wire`).

What a Ray deployment simulates: the clients' computation spread over machines, each client's
secure-aggregation secrets held only by the actor that runs it, and the real bytes of every
message. What it does not: network latency and bandwidth (actors talk over Ray's object store,
not a client's uplink), client devices (an actor runs many clients one after another), and
failures other than the simulated dropouts (a lost actor stops the run, which resumes from its
last checkpoint).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from privfed.backends import Backend, BackendError, config_text, default_workers
from privfed.config import ExperimentConfig
from privfed.participation import Participate

__all__ = ["RayBackend"]


class _RayWorker:
    """The actor: a :class:`~privfed.backends.worker.Worker` behind ``handle``."""

    def __init__(self, text: str, trainer_cache: int) -> None:
        import tomllib
        import torch

        from privfed.backends.worker import Worker
        from privfed.config import from_dict

        cfg = from_dict(tomllib.loads(text), source="worker config")
        torch.set_num_threads(cfg.threads)
        self.worker = Worker(cfg, trainer_cache=trainer_cache)

    def handle(self, request: bytes) -> bytes:
        """Answer one request."""
        return self.worker.handle(request)


class RayBackend(Backend):
    """Runs participations on Ray actors (see the module docstring)."""

    name = "ray"

    def _start(self, cfg: ExperimentConfig, behaviours: Mapping[int, Participate]) -> None:
        try:
            import ray
        except ImportError:
            raise BackendError(
                "--backend ray needs Ray: pip install -e '.[ray]' (or pip install 'ray>=2.9')"
            ) from None
        if behaviours:
            raise BackendError(
                "replacing a client's participate function (a malicious client) needs the "
                "serial backend"
            )
        self._ray: Any = ray
        self._owns_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "logging_level": "ERROR",
                "configure_logging": False,
            }
            if self.options.address:
                ray.init(address=self.options.address, **kwargs)
            else:
                ray.init(num_cpus=self.options.workers or default_workers(), **kwargs)
            self._owns_ray = True
        workers = self.options.workers
        if not workers:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.workers = workers
        actor: Any = ray.remote(num_cpus=1)(_RayWorker)
        text = config_text(cfg)
        self._actors = [actor.remote(text, self.options.trainer_cache) for _ in range(workers)]

    def _call(self, requests: Mapping[int, bytes]) -> dict[int, bytes]:
        ray = self._ray
        refs = {w: self._actors[w].handle.remote(req) for w, req in requests.items()}
        try:
            return {w: bytes(ray.get(ref)) for w, ref in refs.items()}
        except ray.exceptions.RayError as exc:
            raise BackendError(
                f"a Ray worker failed during a round ({type(exc).__name__}: {exc}); the run "
                "directory keeps the last checkpoint: continue with --resume"
            ) from None

    def close(self) -> None:
        """Stop the actors (and the local Ray this backend started)."""
        ray = getattr(self, "_ray", None)
        if ray is None:
            return
        for a in getattr(self, "_actors", []):
            ray.kill(a)
        self._actors = []
        if self._owns_ray:
            ray.shutdown()
        self._ray = None
