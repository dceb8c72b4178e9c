"""Run an attack in a process of its own that holds its view and nothing else.

An attack's threat model says what it may observe; this module makes that the only thing it
*can* reach. :func:`run_isolated` writes the :class:`~privfed.attack_api.Observation` the
framework built to a file in a fresh temporary directory, starts a new Python interpreter
(``python -m privfed.attack_sandbox VIEW RESULT``) with

* its working directory an empty temporary directory (not the run directory, not the caller's);
* an environment reduced to what Python needs (``PATH``, the import path, locale, thread
  counts): not the caller's ``PWD``, ``OLDPWD`` or anything else;
* no argument that names the run directory, and no open file of it (stdin is ``/dev/null``,
  stdout and stderr are pipes the framework relays);

and reads back the attack's :class:`~privfed.attack_api.AttackResult`. The attack's process
never holds the ground truth, the engine, the federation or the run directory's path: they do
not exist in that process. The framework builds the ground truth only after the guesses are
back, in its own process, and calls :meth:`~privfed.attack_api.Attack.evaluate` there on a
fresh instance of the attack.

Formats, in both directions, are the checkpoint container of :mod:`privfed.checkpoint`: a JSON
header and raw numeric arrays, never a pickle. The view is built by the framework; the result
comes from plug-in code, so :func:`result_from_tree` checks every field before the framework
uses it (the attack's process cannot run code in the framework's process through it).

What this does not do: it is not an operating-system sandbox. Code that is malicious on
purpose can still search the file system or read ``/proc`` for other processes of the same
user; run untrusted plug-ins in a container or as another user. The isolation here makes the
declared view the only thing an attack is handed and removes every in-process path to the rest
(caller frames, the garbage collector, module globals, the working directory, the
environment), which is what keeps honest research code honest.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from privfed.attack_api import (
    Adversary,
    Attack,
    AttackParameterError,
    AttackResult,
    Encoding,
    Observation,
    Records,
    ShadowModel,
    ThreatModel,
    View,
)
from privfed.checkpoint import read_state, write_state
from privfed.data.inputs import InputSpec
from privfed.errors import CheckpointError, PrivfedError, a_or_an
from privfed.rng import numpy_rng
from privfed.unit import UnitSpec

__all__ = [
    "AttackFailed",
    "instantiate",
    "observation_from_tree",
    "observation_to_tree",
    "result_from_tree",
    "result_to_tree",
    "run_isolated",
]

#: Environment variables the attack's process inherits (everything else is dropped).
ENV_KEEP = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "TEMP",
    "TMP",
    "SYSTEMROOT",
    "PYTHONHASHSEED",
    "PYTHONWARNINGS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
)

#: Largest result file read back from an attack's process (bytes).
MAX_RESULT_BYTES = 2**32

#: Exit status of the attack's process when the attack raised (the reason is in the result).
_EXIT_ATTACK_ERROR = 3


class AttackFailed(PrivfedError):
    """The attack's process failed or returned something that is not an attack result."""


# ---------------------------------------------------------------------------- parameters
def instantiate(cls: type[Attack], name: str, params: Mapping[str, str] | None) -> Attack:
    """``cls(**params)`` with each string value converted to its keyword's default's type.

    Raises:
        AttackParameterError: unknown parameter or a value of the wrong type.
    """
    sig = inspect.signature(cls.__init__)
    accepted = {k: p for k, p in sig.parameters.items() if k != "self" and p.kind is p.KEYWORD_ONLY}
    kwargs: dict[str, Any] = {}
    for key, raw in (params or {}).items():
        if key not in accepted:
            raise AttackParameterError(
                f"attack {name!r} has no parameter {key!r}; it takes "
                f"{', '.join(sorted(accepted)) or 'none'}"
            )
        default = accepted[key].default
        try:
            if isinstance(default, bool):
                kwargs[key] = raw.lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                kwargs[key] = int(raw)
            elif isinstance(default, float):
                kwargs[key] = float(raw)
            else:
                kwargs[key] = raw
        except ValueError:
            raise AttackParameterError(
                f"attack {name!r}: --param {key}={raw!r} is not {a_or_an(type(default).__name__)}"
            ) from None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise AttackParameterError(f"attack {name!r}: {exc}") from None


# ---------------------------------------------------------------------------- the view
def _records_tree(rec: Records) -> dict[str, Any]:
    return {"x": np.asarray(rec.x), "labels": {t: np.asarray(v) for t, v in rec.labels.items()}}


def _groups_tree(groups: Mapping[str, Records]) -> dict[str, Any]:
    return {g: _records_tree(r) for g, r in groups.items()}


def _records(node: Any) -> Records:
    return Records(np.asarray(node["x"]), {t: np.asarray(v) for t, v in node["labels"].items()})


def _by_client(mapping: Mapping[int, Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    return {str(int(c)): fn(v) for c, v in mapping.items()}


def _client_keys(node: Mapping[str, Any], fn: Callable[[Any], Any]) -> dict[int, Any]:
    return {int(c): fn(v) for c, v in node.items()}


def _floats(mapping: Mapping[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in mapping.items()}


def _tuples(value: Any) -> Any:
    """Lists back to tuples, as a config's sequences are (the container stores lists)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _unit_tree(u: UnitSpec) -> dict[str, Any]:
    return {
        "name": u.name,
        "group": u.group,
        "tasks": list(u.tasks),
        "in_features": int(u.in_features),
        "hidden": [int(h) for h in u.hidden],
        "heads": {t: int(k) for t, k in u.heads.items()},
        "model": u.model,
        "model_params": dict(u.model_params),
        "inputs": None
        if u.inputs is None
        else {"shape": list(u.inputs.shape), "kind": u.inputs.kind, "vocab": u.inputs.vocab},
    }


def _unit(node: Mapping[str, Any]) -> UnitSpec:
    inputs = node["inputs"]
    return UnitSpec(
        name=node["name"],
        group=node["group"],
        tasks=tuple(node["tasks"]),
        in_features=int(node["in_features"]),
        hidden=tuple(int(h) for h in node["hidden"]),
        heads={t: int(k) for t, k in node["heads"].items()},
        model=node["model"],
        model_params=_tuples(node["model_params"]),
        inputs=None
        if inputs is None
        else InputSpec(shape=tuple(inputs["shape"]), kind=inputs["kind"], vocab=inputs["vocab"]),
    )


def _opt(value: Any, fn: Callable[[Any], Any]) -> Any:
    return None if value is None else fn(value)


def observation_to_tree(obs: Observation) -> dict[str, Any]:
    """The observation as a tree of plain values and arrays (:mod:`privfed.checkpoint`)."""
    tm = obs.threat_model
    arrays = lambda m: {k: np.asarray(v) for k, v in m.items()}  # noqa: E731
    return {
        "threat_model": {
            "adversary": tm.adversary.value,
            "observes": sorted(v.value for v in tm.observes),
            "summary": tm.summary,
        },
        "units": [_unit_tree(u) for u in obs.units],
        "offsets": [int(o) for o in obs.offsets],
        "counter_base": int(obs.counter_base),
        "counters": bool(obs.counters),
        "clip_bit": bool(obs.clip_bit),
        "encoding": dataclasses.asdict(obs.encoding),
        "num_clients": int(obs.num_clients),
        "recipe": {k: float(v) for k, v in obs.recipe.items()},
        "secagg": _opt(obs.secagg, dataclasses.asdict),
        "released": _opt(obs.released, arrays),
        "public": _opt(obs.public, lambda m: {g: _records_tree(r) for g, r in m.items()}),
        "challenge": _opt(obs.challenge, lambda m: {g: _records_tree(r) for g, r in m.items()}),
        "round_index": obs.round_index,
        "broadcast": _opt(obs.broadcast, arrays),
        "aggregate": _opt(obs.aggregate, np.asarray),
        "inbox": _opt(obs.inbox, lambda m: _by_client(m, np.asarray)),
        "included": [int(c) for c in obs.included],
        "own": _opt(obs.own, lambda m: _by_client(m, _groups_tree)),
        "own_updates": _opt(obs.own_updates, lambda m: _by_client(m, np.asarray)),
        "shadows": _opt(
            obs.shadows,
            lambda ss: [{"released": arrays(s.released), "members": arrays(s.members)} for s in ss],
        ),
        "noise_multipliers": _opt(
            obs.noise_multipliers,
            lambda m: _by_client(m, _floats),
        ),
    }


def observation_from_tree(tree: Mapping[str, Any]) -> Observation:
    """The :class:`~privfed.attack_api.Observation` that :func:`observation_to_tree` wrote."""
    from privfed.secagg.config import SecAggConfig

    tm = tree["threat_model"]
    records = lambda m: {g: _records(r) for g, r in m.items()}  # noqa: E731
    arrays = lambda m: {k: np.asarray(v) for k, v in m.items()}  # noqa: E731
    return Observation(
        threat_model=ThreatModel(
            adversary=Adversary(tm["adversary"]),
            observes=frozenset(View(v) for v in tm["observes"]),
            summary=tm["summary"],
        ),
        units=tuple(_unit(u) for u in tree["units"]),
        offsets=tuple(int(o) for o in tree["offsets"]),
        counter_base=int(tree["counter_base"]),
        counters=bool(tree["counters"]),
        clip_bit=bool(tree["clip_bit"]),
        encoding=Encoding(**tree["encoding"]),
        num_clients=int(tree["num_clients"]),
        recipe={k: float(v) for k, v in tree["recipe"].items()},
        secagg=_opt(tree["secagg"], lambda d: SecAggConfig(**d)),
        released=_opt(tree["released"], arrays),
        public=_opt(tree["public"], records),
        challenge=_opt(tree["challenge"], records),
        round_index=tree["round_index"],
        broadcast=_opt(tree["broadcast"], arrays),
        aggregate=_opt(tree["aggregate"], np.asarray),
        inbox=_opt(tree["inbox"], lambda m: _client_keys(m, np.asarray)),
        included=tuple(int(c) for c in tree["included"]),
        own=_opt(tree["own"], lambda m: _client_keys(m, records)),
        own_updates=_opt(tree["own_updates"], lambda m: _client_keys(m, np.asarray)),
        shadows=_opt(
            tree["shadows"],
            lambda ss: tuple(
                ShadowModel(released=arrays(s["released"]), members=arrays(s["members"]))
                for s in ss
            ),
        ),
        noise_multipliers=_opt(
            tree["noise_multipliers"],
            lambda m: _client_keys(m, _floats),
        ),
    )


# ---------------------------------------------------------------------------- the result
def result_to_tree(result: AttackResult) -> dict[str, Any]:
    """The result as a tree (numbers as Python floats, guesses as numeric arrays).

    Raises:
        AttackFailed: a metric is not a number, a note or meta value not a string, or an output
            not a numeric array.
    """
    where = f"attack {result.attack!r}"
    metrics: dict[str, float] = {}
    for key, number in result.metrics.items():
        if isinstance(number, bool) or not isinstance(
            number, (int, float, np.integer, np.floating)
        ):
            raise AttackFailed(
                f"{where}: metrics[{key!r}] is {a_or_an(type(number).__name__)}, not a number"
            )
        metrics[str(key)] = float(number)
    outputs: dict[str, np.ndarray] = {}
    for key, value in result.outputs.items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "biufc":
            raise AttackFailed(
                f"{where}: outputs[{key!r}] has dtype {arr.dtype}; outputs must be numeric or "
                "boolean arrays (put text in notes or meta)"
            )
        outputs[str(key)] = arr
    for note in result.notes:
        if not isinstance(note, str):
            raise AttackFailed(
                f"{where}: notes hold {a_or_an(type(note).__name__)}; notes are strings"
            )
    for key, text in result.meta.items():
        if not isinstance(text, str):
            raise AttackFailed(
                f"{where}: meta[{key!r}] is {a_or_an(type(text).__name__)}; meta maps str to str"
            )
    return {
        "attack": str(result.attack),
        "metrics": metrics,
        "notes": list(result.notes),
        "outputs": outputs,
        "meta": {str(k): v for k, v in result.meta.items()},
    }


def _expect(cond: bool, where: str, problem: str) -> None:
    if not cond:
        raise AttackFailed(f"{where}: the result it sent back is malformed: {problem}")


def result_from_tree(tree: Any, *, where: str) -> AttackResult:
    """Check a result tree that came from an attack's process and build the result.

    Raises:
        AttackFailed: naming the field that is missing or of the wrong type.
    """
    _expect(isinstance(tree, dict), where, "not a table")
    keys = {"attack", "metrics", "notes", "outputs", "meta"}
    _expect(set(tree) == keys, where, f"fields {sorted(tree)}, expected {sorted(keys)}")
    _expect(isinstance(tree["attack"], str), where, "attack is not a string")
    metrics, notes, outputs, meta = tree["metrics"], tree["notes"], tree["outputs"], tree["meta"]
    _expect(isinstance(metrics, dict), where, "metrics is not a table")
    for k, v in metrics.items():
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        _expect(ok, where, f"metrics[{k!r}] is not a number")
    _expect(isinstance(notes, list), where, "notes is not a list")
    _expect(all(isinstance(n, str) for n in notes), where, "a note is not a string")
    _expect(isinstance(outputs, dict), where, "outputs is not a table")
    for k, v in outputs.items():
        _expect(isinstance(v, np.ndarray), where, f"outputs[{k!r}] is not an array")
    _expect(isinstance(meta, dict), where, "meta is not a table")
    _expect(all(isinstance(v, str) for v in meta.values()), where, "a meta value is not a string")
    return AttackResult(
        attack=tree["attack"],
        metrics={k: float(v) for k, v in metrics.items()},
        notes=tuple(notes),
        outputs=dict(outputs),
        meta=dict(meta),
    )


# ---------------------------------------------------------------------------- parent side
def class_target(cls: type) -> str:
    """``module:qualname`` of ``cls``, checked to import back to the same class.

    Raises:
        AttackFailed: the class cannot be imported by name (defined in ``__main__``, inside a
            function, or in a module not on the import path).
    """
    target = f"{cls.__module__}:{cls.__qualname__}"
    found: Any = None
    if "<locals>" not in cls.__qualname__ and cls.__module__ != "__main__":
        try:
            found = importlib.import_module(cls.__module__)
            for part in cls.__qualname__.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError):
            found = None
    if found is not cls:
        raise AttackFailed(
            f"attack class {target} cannot be imported by name, so it cannot run in a process "
            "of its own; define it at module level in an importable module (a package that "
            "declares it under the privfed.attacks entry points)"
        )
    return target


def _child_env(work: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in ENV_KEEP if k in os.environ}
    # The attack's process imports what this process imports (the plug-in's package, the
    # checkout under test), but not the working directory ("" on sys.path).
    path = [os.path.abspath(p) for p in sys.path if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    env["PWD"] = str(work)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_isolated(
    cls: type[Attack],
    *,
    name: str,
    params: Mapping[str, str] | None,
    observation: Observation,
    seed: int,
    echo: Callable[[str], None] = print,
) -> AttackResult:
    """Run ``cls(**params).run(observation, rng=...)`` in a new process; return its result.

    The generator is ``numpy_rng(seed, f"attack:{name}")``, as in the framework's process.
    The attack's printed output is relayed through ``echo`` after it finishes.

    Raises:
        AttackParameterError: a parameter is unknown or of the wrong type.
        AttackFailed: the attack raised (its message is kept; a ``ValueError`` is the attack
            saying the run does not fit it), crashed, or returned a malformed result.
    """
    target = class_target(cls)
    root = Path(tempfile.mkdtemp(prefix="privfed-attack-"))
    try:
        work = root / "work"
        work.mkdir()
        view, out = root / "view.pfstate", root / "result.pfstate"
        write_state(
            view,
            {
                "attack": {"target": target, "name": name, "params": dict(params or {})},
                "seed": int(seed),
                "observation": observation_to_tree(observation),
            },
        )
        proc = subprocess.run(
            [sys.executable, "-m", "privfed.attack_sandbox", str(view), str(out)],
            cwd=work,
            env=_child_env(work),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        for line in proc.stdout.splitlines():
            echo(line)
        where = f"attack {name!r} ({target})"
        if proc.returncode not in (0, _EXIT_ATTACK_ERROR) or not out.is_file():
            tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
            raise AttackFailed(
                f"{where} stopped with exit status {proc.returncode} in its own process; its "
                f"last error output:\n{tail}"
            )
        if proc.stderr.strip():
            sys.stderr.write(proc.stderr)
        try:
            tree = read_state(out, max_bytes=MAX_RESULT_BYTES)
        except CheckpointError as exc:
            raise AttackFailed(f"{where}: its result file cannot be read: {exc}") from None
        if proc.returncode == _EXIT_ATTACK_ERROR:
            error = tree.get("error")
            if not isinstance(error, dict):
                raise AttackFailed(f"{where}: it failed without saying why")
            kind, message = error.get("kind"), error.get("message")
            _expect(isinstance(kind, str) and isinstance(message, str), where, "bad error")
            if kind == "parameter":
                raise AttackParameterError(message)
            raise AttackFailed(f"{where}: {message}")
        return result_from_tree(tree.get("result"), where=where)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------- child side
def _load_class(target: str) -> type[Attack]:
    module, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Attack)):
        raise AttackFailed(f"{target} is not an attack class")
    return obj


def _attack_main(view: Path, out: Path) -> int:
    spec = read_state(view)
    attack_spec, seed = spec["attack"], int(spec["seed"])
    name = str(attack_spec["name"])
    observation = observation_from_tree(spec["observation"])
    del spec
    try:
        attack = instantiate(_load_class(attack_spec["target"]), name, attack_spec["params"])
    except AttackParameterError as exc:
        write_state(out, {"error": {"kind": "parameter", "message": str(exc)}})
        return _EXIT_ATTACK_ERROR
    try:
        result = attack.run(observation, rng=numpy_rng(seed, f"attack:{name}"))
        if not isinstance(result, AttackResult):
            raise AttackFailed(
                f"run() returned {a_or_an(type(result).__name__)}, not an AttackResult"
            )
        tree = result_to_tree(result)
    except (ValueError, PrivfedError) as exc:
        # The attack's way to say the run does not fit it (e.g. a plain run for a protocol
        # attack): the message goes to the user as it is.
        write_state(out, {"error": {"kind": type(exc).__name__, "message": str(exc)}})
        return _EXIT_ATTACK_ERROR
    write_state(out, {"result": tree})
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the attack's process: ``python -m privfed.attack_sandbox VIEW RESULT``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m privfed.attack_sandbox VIEW RESULT", file=sys.stderr)
        return 2
    try:
        return _attack_main(Path(args[0]), Path(args[1]))
    except Exception:
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
