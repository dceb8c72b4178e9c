"""Hostile probe attacks: they look everywhere Python lets them for what their view excludes.

They live in an importable module (not a test file) because the framework runs an attack in a
process of its own, which imports the attack's class by name.

:func:`survey` walks the caller frames (``sys._getframe`` and ``inspect.stack``), every object
the garbage collector tracks, the referrers of the observation, the globals of every
``privfed`` and ``attacks`` module, the environment, ``sys.argv`` and ``sys.path``, one level
into every container and object it meets. It reports what it found as plain data: counts of
framework objects that hold the ground truth, directories that look like a privfed run, the
working directory's entries, and a sha256 of every numpy array it met (so a test can check
that no ground-truth array was among them).
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from privfed.attack_api import (
    Adversary,
    Attack,
    AttackResult,
    GroundTruth,
    Observation,
    ThreatModel,
    View,
)

#: How many references deep the probe follows from each root.
DEPTH = 4

#: Types whose instances hold ground truth or the run (the framework's side).
FORBIDDEN_TYPES = frozenset(
    {"GroundTruth", "Engine", "Federation", "RunState", "Prepared", "PlayedRound", "Server"}
)


def array_digest(a: np.ndarray) -> bytes:
    """What :func:`survey` records of an array: dtype, shape and bytes, hashed."""
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).digest()


def _looks_like_run(path: str) -> bool:
    try:
        return os.path.isdir(path) and any(
            os.path.exists(os.path.join(path, f)) for f in ("config.toml", "manifest.json")
        )
    except (OSError, ValueError):
        return False


@dataclass
class Findings:
    """What a survey found."""

    forbidden: dict[str, int] = field(default_factory=dict)
    run_dirs: set[str] = field(default_factory=set)
    digests: set[bytes] = field(default_factory=set)
    strings: set[str] = field(default_factory=set)
    cwd_entries: list[str] = field(default_factory=list)
    objects: int = 0


def survey(observation: object | None = None) -> Findings:
    """Look for everything reachable from here (see the module docstring)."""
    with warnings.catch_warnings():  # touching every module attribute wakes deprecation shims
        warnings.simplefilter("ignore")
        return _survey(observation)


def _survey(observation: object | None) -> Findings:
    found = Findings()
    roots: list[Any] = []
    frame = sys._getframe()
    while frame is not None:
        roots.extend(frame.f_locals.values())
        frame = frame.f_back
    for info in inspect.stack(0):
        roots.extend(info.frame.f_locals.values())
    roots.extend(gc.get_objects())
    if observation is not None:
        roots.extend(gc.get_referrers(observation))
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("privfed", "attacks") and module is not None:
            roots.extend(vars(module).values())
    roots.extend(os.environ.values())
    roots.extend(sys.argv)
    roots.extend(sys.path)
    found.cwd_entries = sorted(os.listdir(os.getcwd()))

    seen: set[int] = set()

    def visit(obj: Any) -> None:
        seen.add(id(obj))
        found.objects += 1
        kind = type(obj).__name__
        if kind in FORBIDDEN_TYPES:
            found.forbidden[kind] = found.forbidden.get(kind, 0) + 1
        if isinstance(obj, np.ndarray) and obj.dtype.kind in "biuf":
            found.digests.add(array_digest(obj))
        elif isinstance(obj, (str, os.PathLike)):
            text = os.fspath(obj)
            if isinstance(text, str) and os.sep in text and "\n" not in text and len(text) < 4096:
                found.strings.add(text)
                if _looks_like_run(text):
                    found.run_dirs.add(text)

    def children(obj: Any) -> list[Any]:
        try:
            if isinstance(obj, dict):
                return [*obj.keys(), *obj.values()]
            if isinstance(obj, (list, tuple, set, frozenset)):
                return list(obj)
            return list(getattr(obj, "__dict__", {}).values())
        except Exception:  # some objects refuse introspection; a probe moves on
            return []

    layer = roots
    for _ in range(DEPTH):
        nxt: list[Any] = []
        for obj in layer:
            if id(obj) not in seen:
                visit(obj)
                nxt.extend(children(obj))
        layer = nxt
    return found


def _result(name: str, found: Findings) -> AttackResult:
    digests = np.frombuffer(b"".join(sorted(found.digests)), dtype=np.uint8).reshape(-1, 32)
    return AttackResult(
        attack=name,
        metrics={
            "forbidden_objects": float(sum(found.forbidden.values())),
            "run_dirs": float(len(found.run_dirs)),
            "cwd_entries": float(len(found.cwd_entries)),
            "objects_seen": float(found.objects),
        },
        notes=tuple(sorted(found.strings)),
        outputs={"digests": digests},
        meta={
            "forbidden": ",".join(sorted(found.forbidden)),
            "run_dirs": os.pathsep.join(sorted(found.run_dirs)),
            "cwd": ",".join(found.cwd_entries),
        },
    )


class OutsiderProbe(Attack):
    """A hostile outsider: released models only, but it searches for the rest."""

    name: ClassVar[str] = "test-probe-outsider"
    threat_model: ClassVar[ThreatModel] = ThreatModel(
        adversary=Adversary.OUTSIDER, observes=frozenset({View.RELEASED_MODELS})
    )

    def run(self, observation: Observation, *, rng: np.random.Generator) -> AttackResult:
        """Survey everything reachable, report it."""
        del rng
        return _result(self.name, survey(observation))


class ServerProbe(OutsiderProbe):
    """A hostile honest-but-curious server: inbox and aggregate, but it searches for the rest."""

    name: ClassVar[str] = "test-probe-server"
    threat_model: ClassVar[ThreatModel] = ThreatModel(
        adversary=Adversary.HONEST_BUT_CURIOUS_SERVER,
        observes=frozenset({View.SERVER_INBOX, View.AGGREGATE}),
    )


class Spy(Attack):
    """Reports what its view holds; its metric step keeps the truth it is handed."""

    name: ClassVar[str] = "test-spy"
    threat_model: ClassVar[ThreatModel] = ServerProbe.threat_model
    truths: ClassVar[list[object]] = []

    def run(self, observation: Observation, *, rng: np.random.Generator) -> AttackResult:
        """Count what the view holds; draw one number from ``rng``."""
        fields = [getattr(observation, f) for f in vars(observation)]
        in_view = any(type(v).__name__ == "GroundTruth" for v in fields)
        return AttackResult(
            attack=self.name,
            metrics={
                "draw": float(rng.random()),
                "inbox": float(len(observation.inbox or {})),
                "aggregate": float(observation.aggregate is not None),
            },
            meta={"truth_in_view": "yes" if in_view else "no"},
        )

    def evaluate(self, result: AttackResult, truth: GroundTruth) -> AttackResult:
        """Keep the truth (in the framework's process) and count its true updates."""
        Spy.truths.append(truth)
        return result.with_metrics({"clients": float(len(truth.updates))})
