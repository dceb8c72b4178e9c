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

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from privfed.backends import RAY_MISSING, Backend, BackendError, config_text, default_workers
from privfed.config import ExperimentConfig
from privfed.participation import Participate

__all__ = ["RayBackend"]


def _init_ray(ray: Any, options: Any) -> None:
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": "ERROR",
        "configure_logging": False,
    }
    if options.address:
        ray.init(address=options.address, **kwargs)
    else:
        ray.init(num_cpus=options.workers or default_workers(), **kwargs)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BackendError(RAY_MISSING) from None
    return ray


@contextlib.contextmanager
def ray_session(options: Any) -> Iterator[None]:
    """One Ray session for several runs (a sweep): started here unless one is running."""
    ray = _import_ray()
    if ray.is_initialized():
        yield
        return
    _init_ray(ray, options)
    job = str(ray.get_runtime_context().get_job_id())
    try:
        yield
    finally:
        _IDLE.pop(job, None)
        ray.shutdown()


class _RayWorker:
    """The actor: a :class:`~privfed.backends.worker.Worker` behind ``handle``.

    An actor outlives a run in a Ray session it did not start (a sweep, tests): it is
    configured for the next run's config instead of being replaced, so torch is imported once
    per actor process.
    """

    def __init__(self) -> None:
        self.worker: Any = None

    def configure(self, text: str, trainer_cache: int) -> str:
        """Become a fresh worker for the config ``text``; return its hash."""
        import tomllib
        import torch

        from privfed.backends.worker import Worker
        from privfed.config import config_hash, from_dict

        cfg = from_dict(tomllib.loads(text), source="worker config")
        torch.set_num_threads(cfg.threads)
        self.worker = Worker(cfg, trainer_cache=trainer_cache)
        return config_hash(cfg)

    def handle(self, request: bytes) -> bytes:
        """Answer one request."""
        return bytes(self.worker.handle(request))


#: Idle actors of the current Ray session, for the next run (by Ray job id).
_IDLE: dict[str, list[Any]] = {}


class RayBackend(Backend):
    """Runs participations on Ray actors (see the module docstring)."""

    name = "ray"

    def _start(
        self, cfg: ExperimentConfig, behaviours: Mapping[int, Participate], federation: Any
    ) -> None:
        ray = _import_ray()
        if behaviours:
            raise BackendError(
                "replacing a client's participate function (a malicious client) needs the "
                "serial backend"
            )
        self._ray: Any = ray
        self._owns_ray = False
        if not ray.is_initialized():
            _init_ray(ray, self.options)
            self._owns_ray = True
        workers = self.options.workers
        if not workers:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.workers = workers
        self._job = str(ray.get_runtime_context().get_job_id())
        idle = _IDLE.setdefault(self._job, [])
        actor: Any = ray.remote(num_cpus=1)(_RayWorker)
        self._actors = [idle.pop() if idle else actor.remote() for _ in range(workers)]
        text = config_text(cfg)
        ray.get([a.configure.remote(text, self.options.trainer_cache) for a in self._actors])

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
        """Stop the local Ray this backend started, or keep the actors for the next run."""
        ray = getattr(self, "_ray", None)
        if ray is None:
            return
        if self._owns_ray:
            ray.shutdown()
            _IDLE.pop(self._job, None)
        else:
            _IDLE.setdefault(self._job, []).extend(self._actors)
        self._actors = []
        self._ray = None
