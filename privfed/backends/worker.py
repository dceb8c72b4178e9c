"""A worker: runs the clients it owns, whichever backend hosts it.

A :class:`Worker` is built from the config alone. It derives the federation (data source,
partition, splits) and builds a client's features and trainers only when one of its clients
first needs them; trainers live in a bounded cache with Opacus's per-sample gradient buffers
released after every training. For secure aggregation it keeps each of its clients' encoded
update and protocol state (a :class:`~privfed.secagg.parties.LocalParties`) for the round,
and, in the malicious setting, each client's long-term signing identity for the whole run:
they never leave the worker, only protocol messages and public keys do.

Requests and replies are bytes (:mod:`privfed.wire`), the same for every backend:

* ``{"op": "map", "tasks": [...], "contexts": [...]}`` -> ``{"replies": [...]}``: one
  participation per task (a task message, and the client's own state in its context);
* ``{"op": "step", "stage", "clients", "messages"}`` -> ``{"replies", "failures",
  "seconds"}``: one secure-aggregation stage for the named clients;
* ``{"op": "enrol", "clients"}`` -> ``{"clients", "keys"}``: the clients' public signing keys
  (each identity made on first sight and kept on the worker);
* ``{"op": "registry", "clients", "keys"}`` -> ``{"clients"}``: public keys from the trusted
  enrolment, which the clients check every roster against;
* ``{"op": "ping"}`` -> ``{"pid"}``.

An error becomes ``{"error": message}``; the driver raises it as a
:class:`~privfed.backends.BackendError`.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Mapping
from typing import Any

import numpy as np

from privfed.config import ExperimentConfig, config_hash
from privfed.errors import PrivfedError
from privfed.participation import ClientRuntime, ClientSetup, Participate, TrainerCache, participate
from privfed.round import ClientTask
from privfed.secagg.messages import Stage
from privfed.wire import WireError, pack, unpack

__all__ = ["Worker"]


def _bytes(v: Any, *, what: str) -> bytes:
    if not isinstance(v, np.ndarray) or v.dtype != np.uint8 or v.ndim != 1:
        raise WireError(f"{what} must be bytes")
    return v.tobytes()


class Worker:
    """Runs participations and protocol steps for the clients routed to it.

    Args:
        cfg: the experiment (the worker derives everything else from it).
        trainer_cache: how many trainers the worker keeps (least recently used evicted).
        behaviours: client -> a participate function replacing the honest one (a malicious
            client); in-process backends only.
        federation: the run's :class:`~privfed.federation.Federation` if this process already
            has it (the driver's, in the serial backend or a forked worker); else it is built
            from the config on first use.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        *,
        trainer_cache: int = 512,
        behaviours: Mapping[int, Participate] | None = None,
        federation: Any = None,
    ) -> None:
        self.cfg = cfg
        self.config_hash = config_hash(cfg)
        self.trainers = TrainerCache(trainer_cache)
        self.behaviours = dict(behaviours or {})
        self._federation = federation
        self._setup: ClientSetup | None = None
        self._round = -1
        self._held: dict[int, tuple[bytes, np.ndarray]] = {}
        self._parties: Any = None
        #: the long-term signing identities of this worker's clients (never sent anywhere).
        self._identities: dict[int, Any] = {}
        self._registry_keys: dict[int, bytes] = {}
        self._registry: Any = None

    @property
    def setup(self) -> ClientSetup:
        """The client code and settings, built on first use."""
        if self._setup is None:
            from privfed.federation import Federation
            from privfed.server import configure_distributed_dp

            fed = self._federation if self._federation is not None else Federation(self.cfg)
            ddg = (
                configure_distributed_dp(self.cfg, dimension=fed.counter_base).params
                if self.cfg.client_dp.mode == "distributed"
                else None
            )
            self._setup = ClientSetup(self.cfg, fed, ddg=ddg)
        return self._setup

    # ------------------------------------------------------------------ requests
    def handle(self, request: bytes) -> bytes:
        """Answer one request (see the module docstring); errors become ``{"error": ...}``."""
        try:
            msg = unpack(request, what="worker request")
            op = msg.get("op")
            if op == "map":
                return pack(self._map(msg))
            if op == "step":
                return pack(self._step(msg))
            if op == "enrol":
                return pack(self._enrol(msg))
            if op == "registry":
                return pack(self._learn_registry(msg))
            if op == "ping":
                return pack({"pid": os.getpid(), "config_hash": self.config_hash})
            raise WireError(f"worker request: unknown op {op!r}")
        except PrivfedError as exc:
            return pack({"error": f"{type(exc).__name__}: {exc}"})
        except Exception as exc:  # report, do not die: the driver names the worker and the cause
            return pack(
                {
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                }
            )

    def _map(self, msg: Mapping[str, Any]) -> dict[str, Any]:
        setup = self.setup
        tasks, contexts = msg["tasks"], msg["contexts"]
        if not isinstance(tasks, list) or not isinstance(contexts, list):
            raise WireError("map request: tasks and contexts must be lists")
        if len(tasks) != len(contexts):
            raise WireError("map request: one context per task")
        replies = []
        for raw, rawctx in zip(tasks, contexts, strict=True):
            ctx = unpack(_bytes(rawctx, what="task context"), what="task context")
            task = ClientTask.from_message(
                unpack(_bytes(raw, what="task"), what="task"), personal=ctx["personal"]
            )
            if task.round_index != self._round:
                self._round, self._held, self._parties = task.round_index, {}, None
            runtime = ClientRuntime(task.client, setup, self.trainers)
            fn = self.behaviours.get(task.client, participate)
            part = fn(runtime, task)
            upload: Any = None
            if part.upload is not None:
                if setup.encoding.secure:
                    self._held[task.client] = (task.model_hash, part.upload)
                else:
                    upload = np.frombuffer(
                        pack(
                            {
                                "round": part.round_index,
                                "client": part.client,
                                "update": part.upload,
                            }
                        ),
                        dtype=np.uint8,
                    )
            reply = pack(
                {"upload": upload, "report": part.report(keep_update=bool(ctx["keep_update"]))}
            )
            replies.append(np.frombuffer(reply, dtype=np.uint8))
        return {"replies": replies}

    def _enrol(self, msg: Mapping[str, Any]) -> dict[str, Any]:
        """Each named client's long-term signing key: made here on first sight, kept here.

        Only the public keys leave the worker (the simulated PKI of the malicious setting,
        :mod:`privfed.secagg.identity`).
        """
        from privfed.secagg.identity import generate_identity

        clients = [int(c) for c in msg["clients"]]
        for c in clients:
            if c not in self._identities:
                self._identities[c] = generate_identity(c)
        keys = [np.frombuffer(self._identities[c].public, dtype=np.uint8) for c in clients]
        return {"clients": clients, "keys": keys}

    def _learn_registry(self, msg: Mapping[str, Any]) -> dict[str, Any]:
        """Public keys from the trusted enrolment (never from the protocol's server)."""
        clients = [int(c) for c in msg["clients"]]
        keys = msg["keys"]
        if not isinstance(keys, list) or len(keys) != len(clients):
            raise WireError("registry request: one key per client")
        for c, k in zip(clients, keys, strict=True):
            self._registry_keys[c] = _bytes(k, what=f"registry key of client {c}")
        self._registry = None
        return {"clients": clients}

    def _step(self, msg: Mapping[str, Any]) -> dict[str, Any]:
        import time

        from privfed.secagg.identity import KeyRegistry
        from privfed.secagg.parties import LocalParties, PartyFailure

        stage = Stage(msg["stage"])
        clients = [int(c) for c in msg["clients"]]
        messages = {
            c: _bytes(m, what=f"{stage.value} message to client {c}")
            for c, m in zip(clients, msg["messages"], strict=True)
        }
        if stage is Stage.ADVERTISE_KEYS:
            missing = [c for c in clients if c not in self._held]
            if missing:
                raise WireError(f"no encoded update held for clients {missing[:5]} this round")
            hashes = {self._held[c][0] for c in clients}
            if len(hashes) != 1:
                raise WireError("the clients of one session trained on different models")
            malicious = self.cfg.secagg.security == "malicious"
            if malicious:
                missing = [c for c in clients if c not in self._identities]
                if missing:
                    raise WireError(f"clients {missing[:5]} have no enrolled signing key")
                if self._registry is None:
                    self._registry = KeyRegistry(self._registry_keys)
            self._parties = LocalParties(
                {c: self._held[c][1] for c in clients},
                config=self.cfg.secagg,
                round_index=self._round,
                model_hash=hashes.pop(),
                identities={c: self._identities[c] for c in clients} if malicious else None,
                registry=self._registry if malicious else None,
                clock=time.thread_time,
            )
        if self._parties is None:
            raise WireError(f"{stage.value} before advertise_keys in round {self._round}")
        before = {c: self._parties.seconds.get(c, 0.0) for c in clients}
        out = self._parties.step(stage, messages)
        replies: list[Any] = []
        failures: list[Any] = []
        for c in clients:
            r = out[c]
            if isinstance(r, PartyFailure):
                replies.append(None)
                failures.append(r.reason)
            else:
                replies.append(np.frombuffer(r, dtype=np.uint8))
                failures.append(None)
        seconds = [self._parties.seconds.get(c, 0.0) - before[c] for c in clients]
        return {"clients": clients, "replies": replies, "failures": failures, "seconds": seconds}
