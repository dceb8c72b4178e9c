"""Where participations run: in this process, in a pool of worker processes, or on Ray.

A backend moves bytes between the driver and :class:`~privfed.backends.worker.Worker` objects
that own fixed sets of clients (client ``c`` belongs to worker ``c % workers``); it never
changes a number. Its interface is small:

* :meth:`Backend.start` -- bring up the workers for a config;
* :meth:`Backend.map` -- run one round's participations, each on the worker owning its client;
* :meth:`Backend.step` -- deliver one secure-aggregation stage's messages to the workers that
  hold those clients' protocol state (a backend *is* the
  :class:`~privfed.secagg.parties.ClientParties` of the round's session);
* :meth:`Backend.enrol` -- the malicious setting's key registry (identities live on workers);
* :meth:`Backend.close` -- stop the workers.

``serial`` (:class:`~privfed.backends.serial.SerialBackend`) runs one worker in the driver;
``process`` (:class:`~privfed.backends.process.ProcessBackend`) a pool of processes on this
machine; ``ray`` (:class:`~privfed.backends.ray_backend.RayBackend`, optional extra) Ray actors
on a cluster. The choice is a run option (``privfed run --backend``), never part of the hashed
config: the outputs are the same on every backend.
"""

from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from privfed.config import ExperimentConfig, config_hash, dump_config
from privfed.errors import PrivfedError
from privfed.participation import Participate
from privfed.round import ClientTask, Participation
from privfed.secagg.messages import Stage
from privfed.wire import WireError, pack, unpack

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "BackendOptions",
    "Delivery",
    "RAY_MISSING",
    "default_workers",
    "make_backend",
]

#: Backend names accepted by ``privfed run --backend``.
BACKENDS: tuple[str, ...] = ("serial", "process", "ray")

#: The error for ``--backend ray`` where Ray is not installed (says how to install it).
RAY_MISSING = "--backend ray needs Ray: pip install -e '.[ray]' (or pip install 'ray>=2.9')"


class BackendError(PrivfedError):
    """A backend could not start, or a worker failed or vanished during a round."""


def default_workers() -> int:
    """All cores this process may use (the default of ``--workers``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, kw_only=True)
class BackendOptions:
    """How to run participations (a run option: it never changes a number).

    Attributes:
        backend: ``serial``, ``process`` or ``ray``.
        workers: worker processes or Ray actors (``process``, ``ray``); 0 means every core
            (``process``; on a Ray cluster, every CPU it has).
        address: a Ray cluster to connect to (``ray``); empty starts a local Ray.
        trainer_cache: trainers each worker keeps (least recently used evicted).
        start_method: how ``process`` starts its workers: ``fork`` (default on Linux),
            ``forkserver`` or ``spawn``.
    """

    backend: str = "serial"
    workers: int = 0
    address: str = ""
    trainer_cache: int = 512
    start_method: str = ""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise BackendError(
                f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if self.workers < 0:
            raise BackendError(f"--workers must be >= 1, got {self.workers}")
        if self.trainer_cache < 1:
            raise BackendError(f"trainer_cache must be >= 1, got {self.trainer_cache}")
        if self.address and self.backend != "ray":
            raise BackendError("--address names a Ray cluster; use it with --backend ray")
        if self.backend == "ray" and importlib.util.find_spec("ray") is None:
            # Refused here, before a run directory or a sweep's points are written.
            raise BackendError(RAY_MISSING)
        if self.start_method not in ("", "fork", "forkserver", "spawn"):
            raise BackendError(
                f"start_method must be fork, forkserver or spawn, got {self.start_method!r}"
            )


@dataclass(frozen=True)
class Delivery:
    """One participation as it came back, with the size of the messages that carried it.

    Attributes:
        participation: what the client produced (``upload`` decoded from its message).
        task_bytes: length of the task message the client received.
        upload_bytes: length of the update message it sent in the clear (0 under secure
            aggregation, where the protocol's messages carry it).
    """

    participation: Participation
    task_bytes: int
    upload_bytes: int


def _u8(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


def _raise_error(reply: Mapping[str, Any], worker: int) -> None:
    if "error" in reply:
        tb = reply.get("traceback")
        raise BackendError(
            f"worker {worker}: {reply['error']}" + (f"\n{tb}" if isinstance(tb, str) else "")
        )


class Backend(ABC):
    """Runs participations on workers that own fixed sets of clients (see the module docs)."""

    #: ``serial``, ``process`` or ``ray``.
    name: str = ""

    def __init__(self, options: BackendOptions) -> None:
        self.options = options
        self.workers = 1
        self._seconds: dict[int, float] = {}
        self._keys: dict[int, bytes] = {}
        self._registry: Any = None

    # ------------------------------------------------------------------ transport
    @abstractmethod
    def _start(
        self, cfg: ExperimentConfig, behaviours: Mapping[int, Participate], federation: Any
    ) -> None:
        """Start :attr:`workers` workers for ``cfg`` (reusing ``federation`` where it can)."""

    @abstractmethod
    def _call(self, requests: Mapping[int, bytes]) -> dict[int, bytes]:
        """Send each worker its request, all at once, and return every reply."""

    @abstractmethod
    def close(self) -> None:
        """Stop the workers (idempotent)."""

    # ------------------------------------------------------------------ interface
    def start(
        self,
        cfg: ExperimentConfig,
        *,
        behaviours: Mapping[int, Participate] | None = None,
        federation: Any = None,
    ) -> None:
        """Bring up the workers for ``cfg``.

        Args:
            cfg: the experiment.
            behaviours: client -> participate function replacing the honest one (a malicious
                client); only the serial backend runs functions that are not importable.
            federation: the driver's :class:`~privfed.federation.Federation` of ``cfg``; the
                serial backend and forked workers use it instead of deriving their own (it is
                read-only), other workers derive theirs from the config.
        """
        self._start(cfg, dict(behaviours or {}), federation)
        replies = self._call({w: pack({"op": "ping"}) for w in range(self.workers)})
        want = config_hash(cfg)
        for w, raw in replies.items():
            reply = unpack(raw, what=f"reply of worker {w}")
            _raise_error(reply, w)
            if reply.get("config_hash") != want:
                raise BackendError(
                    f"worker {w} loaded a different config ({reply.get('config_hash')} vs "
                    f"{want}); this is a bug in privfed (please report it)"
                )

    def owner(self, client: int) -> int:
        """The worker that runs ``client``."""
        return client % self.workers

    def map(self, tasks: Sequence[ClientTask], *, keep_updates: bool = False) -> list[Delivery]:
        """Run each task on the worker owning its client; deliveries in task order.

        Args:
            tasks: one round's tasks.
            keep_updates: also bring back each client's true update (attack ground truth).
        """
        self._seconds = {}
        batches: dict[int, tuple[list[np.ndarray], list[np.ndarray], list[int]]] = {}
        sizes: dict[int, int] = {}
        for task in tasks:
            msg = pack(task.message())
            sizes[task.client] = len(msg)
            ctx = pack({"personal": dict(task.personal), "keep_update": keep_updates})
            msgs, ctxs, ids = batches.setdefault(self.owner(task.client), ([], [], []))
            msgs.append(_u8(msg))
            ctxs.append(_u8(ctx))
            ids.append(task.client)
        requests = {
            w: pack({"op": "map", "tasks": t, "contexts": c}) for w, (t, c, _) in batches.items()
        }
        out: dict[int, Delivery] = {}
        for w, raw in self._call(requests).items():
            reply = unpack(raw, what=f"reply of worker {w}")
            _raise_error(reply, w)
            ids = batches[w][2]
            parts = reply.get("replies")
            if not isinstance(parts, list) or len(parts) != len(ids):
                raise WireError(f"reply of worker {w}: expected {len(ids)} participations")
            for c, part in zip(ids, parts, strict=True):
                out[c] = self._delivery(c, part, sizes[c], w)
        return [out[t.client] for t in tasks]

    @staticmethod
    def _delivery(client: int, raw: Any, task_bytes: int, worker: int) -> Delivery:
        what = f"participation of client {client} (worker {worker})"
        if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8:
            raise WireError(f"{what}: not a message")
        msg = unpack(raw.tobytes(), what=what)
        upload, up_bytes = None, 0
        if msg.get("upload") is not None:
            raw_up = msg["upload"]
            if not isinstance(raw_up, np.ndarray) or raw_up.dtype != np.uint8:
                raise WireError(f"{what}: upload is not a message")
            up = unpack(raw_up.tobytes(), what=f"update of client {client}")
            if up.get("client") != client:
                raise WireError(f"{what}: the update names client {up.get('client')}")
            upload, up_bytes = up.get("update"), len(raw_up)
            if not isinstance(upload, np.ndarray) or upload.ndim != 1:
                raise WireError(f"{what}: the update is not a vector")
        part = Participation.from_report(msg["report"], upload=upload)
        if part.client != client:
            raise WireError(f"{what}: the report names client {part.client}")
        return Delivery(participation=part, task_bytes=task_bytes, upload_bytes=up_bytes)

    def enrol(self, clients: Sequence[int]) -> Any:
        """The key registry of the malicious setting, with ``clients`` enrolled.

        The simulated PKI (:mod:`privfed.secagg.identity`): each client's signing key is made
        and kept on the worker that runs it; the workers return only public keys, and the
        backend -- acting as the trusted enrolment, not as the protocol's server -- sends every
        new or changed key (a worker restarted since) to every worker, whose clients check
        each roster against it. Returns the :class:`~privfed.secagg.identity.KeyRegistry` the
        server uses.
        """
        from privfed.secagg.identity import KeyRegistry

        by_worker: dict[int, list[int]] = {}
        for c in sorted(set(clients)):
            by_worker.setdefault(self.owner(c), []).append(c)
        requests = {w: pack({"op": "enrol", "clients": ids}) for w, ids in by_worker.items()}
        changed: dict[int, bytes] = {}
        for w, raw in self._call(requests).items():
            reply = unpack(raw, what=f"enrol reply of worker {w}")
            _raise_error(reply, w)
            ids, keys = by_worker[w], reply.get("keys")
            if reply.get("clients") != ids or not isinstance(keys, list) or len(keys) != len(ids):
                raise WireError(f"enrol reply of worker {w}: wrong clients or keys")
            for c, k in zip(ids, keys, strict=True):
                if not isinstance(k, np.ndarray) or k.dtype != np.uint8 or k.shape != (32,):
                    raise WireError(f"enrol reply of worker {w}: key of client {c} malformed")
                if self._keys.get(c) != k.tobytes():
                    changed[c] = k.tobytes()
        if changed or self._registry is None:
            self._keys.update(changed)
            ids = sorted(changed)
            note = pack({"op": "registry", "clients": ids, "keys": [_u8(changed[c]) for c in ids]})
            for w, raw in self._call(dict.fromkeys(range(self.workers), note)).items():
                _raise_error(unpack(raw, what=f"registry reply of worker {w}"), w)
            self._registry = KeyRegistry(self._keys)
        return self._registry

    def step(self, stage: Stage, messages: Mapping[int, bytes]) -> dict[int, Any]:
        """Deliver one secure-aggregation stage to the workers holding the named clients.

        Returns each client's reply (bytes) or a
        :class:`~privfed.secagg.parties.PartyFailure`.
        """
        from privfed.secagg.parties import PartyFailure

        by_worker: dict[int, list[int]] = {}
        for c in sorted(messages):
            by_worker.setdefault(self.owner(c), []).append(c)
        requests = {
            w: pack(
                {
                    "op": "step",
                    "stage": stage.value,
                    "clients": ids,
                    "messages": [_u8(messages[c]) for c in ids],
                }
            )
            for w, ids in by_worker.items()
        }
        out: dict[int, Any] = {}
        for w, raw in self._call(requests).items():
            reply = unpack(raw, what=f"{stage.value} reply of worker {w}")
            _raise_error(reply, w)
            ids = by_worker[w]
            if reply.get("clients") != ids:
                raise WireError(f"{stage.value} reply of worker {w}: wrong clients")
            for c, r, f, s in zip(
                ids, reply["replies"], reply["failures"], reply["seconds"], strict=True
            ):
                out[c] = PartyFailure(str(f)) if f is not None else bytes(r.tobytes())
                self._seconds[c] = self._seconds.get(c, 0.0) + float(s)
        return out

    def protocol_seconds(self) -> dict[int, float]:
        """Client -> CPU seconds of its protocol steps since the last :meth:`map`."""
        return dict(self._seconds)

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_backend(options: BackendOptions | None = None) -> Backend:
    """The backend ``options`` name (not started).

    Raises:
        BackendError: ``ray`` without Ray installed (the message says how to install it).
    """
    options = options or BackendOptions()
    if options.backend == "process":
        from privfed.backends.process import ProcessBackend

        return ProcessBackend(options)
    if options.backend == "ray":
        from privfed.backends.ray_backend import RayBackend

        return RayBackend(options)
    from privfed.backends.serial import SerialBackend

    return SerialBackend(options)


def config_text(cfg: ExperimentConfig) -> str:
    """The config as the workers receive it (resolved TOML; they check its hash)."""
    return dump_config(cfg)
