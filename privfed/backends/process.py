"""The process backend: a pool of worker processes on this machine.

Each worker process owns the clients ``c`` with ``c % workers == index``; it rebuilds the
federation from the config, builds features and trainers only for its own clients, and keeps
their secure-aggregation state for the round. Requests and replies are bytes over a pipe
(:mod:`privfed.wire`; nothing is pickled). A worker dies with the driver (``PR_SET_PDEATHSIG``
on Linux, and it exits when its pipe closes).

Start method: ``fork`` on Linux by default -- a forked worker shares the driver's imported
modules (torch, opacus), so it is ready in milliseconds, where ``spawn`` or ``forkserver``
re-import them (seconds each on a small machine). Forking a process that has loaded torch is
safe on Linux for CPU work as long as torch has started no threads of its own: the engine runs
torch with one thread (``threads = 1`` in the config) before the workers start. Pick
``forkserver`` or ``spawn`` with ``BackendOptions.start_method`` otherwise (e.g. macOS).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

import tomllib

from privfed.backends import Backend, BackendError, config_text, default_workers
from privfed.config import ExperimentConfig
from privfed.participation import Participate

__all__ = ["ProcessBackend", "die_with_parent"]


def die_with_parent() -> None:
    """On Linux, ask the kernel to SIGKILL this process when its parent dies (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # the worker still exits when its pipe closes


#: The driver's federation, inherited by forked workers (set only while they start).
_INHERITED: dict[str, Any] = {}


def _serve(conn: Connection, text: str, trainer_cache: int) -> None:
    """A worker process's loop: answer requests until the pipe closes."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    import torch

    from privfed.backends.worker import Worker
    from privfed.config import config_hash, from_dict

    cfg = from_dict(tomllib.loads(text), source="worker config")
    torch.set_num_threads(cfg.threads)
    # A forked worker has the driver's federation already (copy-on-write); others derive it.
    fed = _INHERITED.get(config_hash(cfg))
    worker = Worker(cfg, trainer_cache=trainer_cache, federation=fed)
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not request:
            return
        conn.send_bytes(worker.handle(request))


class ProcessBackend(Backend):
    """Runs participations in a pool of worker processes (see the module docstring)."""

    name = "process"

    def _start(
        self, cfg: ExperimentConfig, behaviours: Mapping[int, Participate], federation: Any
    ) -> None:
        if behaviours:
            raise BackendError(
                "replacing a client's participate function (a malicious client) needs the "
                "serial backend"
            )
        self.workers = self.options.workers or default_workers()
        method = self.options.start_method or (
            "fork" if sys.platform.startswith("linux") else "spawn"
        )
        ctx: Any = mp.get_context(method)
        text = config_text(cfg)
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        if method == "fork" and federation is not None:
            from privfed.config import config_hash

            _INHERITED[config_hash(cfg)] = federation
        try:
            for i in range(self.workers):
                ours, theirs = ctx.Pipe(duplex=True)
                proc = ctx.Process(
                    target=_serve,
                    args=(theirs, text, self.options.trainer_cache),
                    name=f"privfed-worker-{i}",
                    daemon=True,
                )
                proc.start()
                theirs.close()
                self._conns.append(ours)
                self._procs.append(proc)
        finally:
            _INHERITED.clear()

    def _call(self, requests: Mapping[int, bytes]) -> dict[int, bytes]:
        for w, req in requests.items():
            try:
                self._conns[w].send_bytes(req)
            except (BrokenPipeError, OSError):
                self._lost(w)
        out: dict[int, bytes] = {}
        for w in requests:
            try:
                out[w] = self._conns[w].recv_bytes()
            except (EOFError, OSError):
                self._lost(w)
        return out

    def _lost(self, w: int) -> None:
        proc = self._procs[w]
        proc.join(timeout=1.0)
        code = proc.exitcode
        self.close()
        raise BackendError(
            f"worker process {w} (pid {proc.pid}) exited (code {code}) during a round; the run "
            "directory keeps the last checkpoint: continue with --resume"
        )

    def close(self) -> None:
        """Close the pipes and wait for the workers (killing any that hang)."""
        for conn in getattr(self, "_conns", []):
            try:
                conn.send_bytes(b"")
            except (BrokenPipeError, OSError):
                pass
            conn.close()
        for proc in getattr(self, "_procs", []):
            proc.join(timeout=5.0)
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
                proc.join(timeout=5.0)
        self._conns, self._procs = [], []
