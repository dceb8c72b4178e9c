"""Privacy-utility sweeps: a grid of experiment points, one run directory each, one results table.

A sweep file is TOML with one ``[sweep]`` table::

    [sweep]
    name = "privacy-utility"
    base = "quickstart"            # bundled config, or a path relative to this file

    [sweep.set]                    # overrides applied to every point (dotted paths)
    rounds = 20

    [sweep.grid]                   # axes: dotted path -> list of values (cartesian product)
    "dp.target_epsilon" = [1, 4, 8, inf]
    "groups.image.partition.alpha" = [0.1, 1.0]
    "federation.algorithm" = ["fedavg", "fedavg-ft", "local"]
    seed = [0, 1, 2]

    [sweep.algorithm_params.fedavg-ft]   # per-algorithm parameters (none for fedavg-ft;
                                   # e.g. ``lambda`` for ditto), for the points running it

    [[sweep.baselines]]            # extra points: fixed overrides, crossed with the other axes
    name = "nonprivate-plain"
    "dp.target_epsilon" = inf
    "federation.aggregator" = "plain"
    "federation.algorithm" = "fedavg"

A baseline entry fixes the paths it names and is crossed with every grid axis it does not
name, so it gets the same seeds (and alphas) as the grid. Points that resolve to the same config
(same :func:`~privfed.config.config_hash`) run once.

Output layout of ``privfed sweep SWEEP.toml --out DIR``::

    DIR/sweep.json            the expanded points (id, label, overrides, config hash)
    DIR/points/<point-id>/    a normal run directory per point (see privfed.engine)
    DIR/results.csv           one row per finished point and task, rebuilt atomically

A point is done iff its ``manifest.json`` says ``finished``. Killed at any moment and started
again, the sweep skips finished points, resumes a point that has a checkpoint and restarts a
point that has none; ``results.csv`` is always rebuilt from the finished run directories, so a
row is never duplicated or half-written.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from privfed.config import (
    ExperimentConfig,
    config_hash,
    load_config,
    resolve_config,
    to_dict,
    with_overrides,
)
from privfed.errors import ConfigError, PrivfedError
from privfed.io import atomic_write_json, atomic_write_text, read_json, read_jsonl, storage_error
from privfed.rundir import CHECKPOINT

__all__ = [
    "RESULT_COLUMNS",
    "VOLATILE_COLUMNS",
    "SweepError",
    "SweepPoint",
    "SweepResult",
    "SweepSpec",
    "build_results",
    "expand_points",
    "format_value",
    "load_sweep",
    "point_status",
    "run_sweep",
]

#: Metric columns of ``results.csv`` after the swept fields (per point and task).
RESULT_COLUMNS: tuple[str, ...] = (
    "seed",
    "config_hash",
    "task",
    "source",
    "rounds",
    "clients",
    "mean_acc",
    "median_acc",
    "worst_acc",
    "std_acc",
    "val_mean_acc",
    "mean_loss",
    "majority_acc",
    "target_epsilon",
    "epsilon_max",
    "epsilon_mean",
    "delta",
    "client_dp",
    "client_target_epsilon",
    "client_epsilon",
    "client_delta",
    "privacy_warnings",
    "accountant",
    "algorithm",
    "aggregator",
    "bytes_down_per_participation",
    "bytes_up_per_participation",
    "compute_s_per_participation",
    "round_s",
    "wall_time_s",
    "privfed_version",
    "commit",
    "run_dir",
)

#: Columns that legitimately differ between two runs of the same point: the measured times, and
#: the commit when the checkout moved on between them (the numbers must not differ; bytes are
#: the same on every run).
VOLATILE_COLUMNS: tuple[str, ...] = (
    "compute_s_per_participation",
    "round_s",
    "wall_time_s",
    "commit",
)

POINTS_DIR = "points"
RESULTS_CSV = "results.csv"
SWEEP_JSON = "sweep.json"
_LOCK = ".sweep.lock"


class SweepError(PrivfedError):
    """A sweep file is invalid, or some points of a sweep failed."""


# --------------------------------------------------------------------------------------------
# Sweep file


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file.

    Attributes:
        name: short name of the sweep.
        source: the sweep file (for messages).
        base: the base config with ``set`` applied.
        base_label: how the base was named in the file (``quickstart`` or a path).
        set: overrides applied to every point.
        axes: grid axes, dotted path -> values, in file order.
        baselines: extra points as (name, fixed overrides).
        algorithm_params: algorithm name -> ``federation.algorithm_params`` of every point that
            runs that algorithm (``[sweep.algorithm_params.NAME]``), unless the point or
            ``set`` gives ``federation.algorithm_params`` itself.
    """

    name: str
    source: str
    base: ExperimentConfig
    base_label: str
    set: Mapping[str, Any]
    axes: Mapping[str, tuple[Any, ...]]
    baselines: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    algorithm_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepPoint:
    """One experiment of a sweep.

    Attributes:
        id: stable directory name (readable slug of the overrides + config hash).
        label: ``grid`` or the baseline's name.
        overrides: the dotted-path overrides of this point (on top of the sweep base).
        config: the resolved experiment config.
        config_hash: :func:`privfed.config.config_hash` of ``config``.
    """

    id: str
    label: str
    overrides: Mapping[str, Any]
    config: ExperimentConfig
    config_hash: str


def format_value(value: Any) -> str:
    """A value as written in ``results.csv`` and point ids (``inf`` for infinity)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest round-trip form: rows compare exactly across runs
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _normalize(value: Any) -> Any:
    """TOML value -> Python value for overrides (``"inf"`` strings become floats)."""
    if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", "infinity"):
        return math.inf
    return value


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file (the base config, ``set``, axes and baselines).

    Raises:
        SweepError: naming the file and every bad key, axis or value.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SweepError(f"cannot read sweep file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise SweepError(
            f"{path}: arrays or tables are nested too deeply to parse; a sweep file nests a "
            "few levels"
        ) from None
    extra = sorted(set(data) - {"sweep"})
    sw = data.get("sweep")
    if not isinstance(sw, dict) or extra:
        raise SweepError(
            f"{path} must hold exactly one [sweep] table (base, grid, set, baselines); "
            f"found top-level keys {sorted(data)}"
        )
    known = {"name", "base", "set", "grid", "baselines", "description", "algorithm_params"}
    unknown = sorted(set(sw) - known)
    if unknown:
        names = ", ".join(f"sweep.{k}" for k in unknown)
        raise SweepError(
            f"{path}: {names} {'is not a known key' if len(unknown) == 1 else 'are not known keys'}"
            f"; known: {', '.join(sorted(known))} (grid axes go under [sweep.grid])"
        )
    name = str(sw.get("name", path.stem))
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SweepError(
            f"{path}: sweep.name must be a word of letters, digits, _ . -, got {name!r}"
        )
    base_ref = sw.get("base", "quickstart")
    if not isinstance(base_ref, str) or not base_ref:
        raise SweepError(f"{path}: sweep.base must name a config file or 'quickstart'")
    base_path = resolve_config(base_ref, base=path.parent)
    if not base_path.exists():
        raise SweepError(
            f"{path}: sweep.base {base_ref!r} not found (looked at {base_path}); give a path "
            "relative to the sweep file or 'quickstart'"
        )
    try:
        base = load_config(base_path)
    except ConfigError as exc:
        raise SweepError(f"{path}: sweep.base {base_ref!r} is invalid: {exc}") from None

    set_ = sw.get("set", {})
    if not isinstance(set_, dict):
        raise SweepError(f"{path}: sweep.set must be a table of dotted path = value")
    set_ = {k: _normalize(v) for k, v in _flatten_keys(set_).items()}
    if set_:
        try:
            base = with_overrides(base, set_)
        except ConfigError as exc:
            raise SweepError(f"{path}: sweep.set is invalid:\n" + _problems(exc)) from None

    # From here on every problem is collected, so that one run of `privfed sweep` names every
    # bad axis, value, baseline and parameter table at once.
    problems: list[str] = []
    grid = sw.get("grid", {})
    if not isinstance(grid, dict):
        raise SweepError(f"{path}: sweep.grid must be a table of dotted path = [values]")
    axes: dict[str, tuple[Any, ...]] = {}
    for axis, values in _flatten_keys(grid).items():
        if not isinstance(values, list) or not values:
            problems.append(
                f"sweep.grid axis {axis!r} must be a non-empty array of values, got {values!r}"
            )
            continue
        vals = tuple(_normalize(v) for v in values)
        if len({format_value(v) for v in vals}) != len(vals):
            problems.append(f"sweep.grid axis {axis!r} repeats a value: {list(vals)}")
        elif axis in set_:
            problems.append(f"{axis!r} is both in sweep.set and a sweep.grid axis; keep one")
        else:
            axes[axis] = vals

    baselines: list[tuple[str, dict[str, Any]]] = []
    raw_b = sw.get("baselines", [])
    if not isinstance(raw_b, list):
        raise SweepError(
            f"{path}: sweep.baselines must be an array of tables ([[sweep.baselines]])"
        )
    for i, entry in enumerate(raw_b):
        if not isinstance(entry, dict):
            problems.append(f"sweep.baselines[{i}] must be a table")
            continue
        entry = dict(entry)
        bname = str(entry.pop("name", f"baseline{i}"))
        fixed = {k: _normalize(v) for k, v in _flatten_keys(entry).items()}
        if not fixed:
            problems.append(f"sweep.baselines[{i}] ({bname}) sets no field")
        elif bname == "grid" or bname in {b[0] for b in baselines}:
            problems.append(
                f"sweep.baselines[{i}] name {bname!r} is reserved or repeated; give each "
                "baseline its own name"
            )
        else:
            baselines.append((bname, fixed))

    raw_p = sw.get("algorithm_params", {})
    if not isinstance(raw_p, dict) or not all(isinstance(v, dict) for v in raw_p.values()):
        raise SweepError(
            f"{path}: sweep.algorithm_params must hold one table per algorithm, e.g. "
            "[sweep.algorithm_params.ditto] with lambda = 0.1"
        )
    from privfed.algorithms import ALGORITHMS, parse_params

    for alg, params in raw_p.items():
        try:
            parse_params(ALGORITHMS.get(alg).Params, params, algorithm=alg)
        except PrivfedError as exc:
            found = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
            problems.extend(f"sweep.algorithm_params.{alg}: {q}" for q in found)

    spec = SweepSpec(
        name=name,
        source=str(path),
        base=base,
        base_label=base_ref,
        set=set_,
        axes=axes,
        baselines=tuple(baselines),
        algorithm_params={k: dict(v) for k, v in raw_p.items()},
    )
    problems.extend(_axis_problems(spec))
    if problems:
        raise SweepError(
            f"{path}: {len(problems)} problem(s); fix them all and run again:\n"
            + "\n".join(f"  - {q}" for q in problems)
        )
    return spec


def _flatten_keys(table: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """``{"dp": {"target_epsilon": 1}}`` and ``{"dp.target_epsilon": 1}`` both -> dotted keys.

    A table is kept whole (not flattened) when its path ends in ``source_params``, the one
    config field whose value is itself a table.
    """
    out: dict[str, Any] = {}
    for k, v in table.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and not path.endswith("source_params"):
            out.update(_flatten_keys(v, prefix=f"{path}."))
        else:
            out[path] = v
    return out


def _problems(exc: ConfigError) -> str:
    return "\n".join(f"  - {p}" for p in exc.problems)


def point_config(spec: SweepSpec, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """The config of the point with ``overrides`` on the sweep base.

    The sweep's ``algorithm_params`` table of the point's algorithm is applied unless the point
    or ``set`` gives ``federation.algorithm_params`` itself.

    Raises:
        ConfigError: the point's config is invalid.
    """
    explicit = any(k.startswith("federation.algorithm_params") for k in [*spec.set, *overrides])
    algorithm = overrides.get("federation.algorithm", spec.base.federation.algorithm)
    params = spec.algorithm_params.get(str(algorithm))
    if params is not None and not explicit:
        overrides = {**overrides, "federation.algorithm_params": dict(params)}
    return with_overrides(spec.base, overrides)


def _axis_problems(spec: SweepSpec) -> list[str]:
    """Every invalid axis value, each checked on its own so that it names its axis and value."""
    problems: list[str] = []
    for axis, values in spec.axes.items():
        for v in values:
            try:
                point_config(spec, {axis: v})
            except ConfigError as exc:
                problems.extend(
                    f"sweep.grid axis {axis!r} value {format_value(v)}: {q}" for q in exc.problems
                )
    return problems


# --------------------------------------------------------------------------------------------
# Points


_SHORT = {
    "dp.target_epsilon": "eps",
    "federation.algorithm": "",
    "federation.aggregator": "agg",
    "seed": "s",
}


def _slug(overrides: Mapping[str, Any]) -> str:
    parts = []
    for k, v in overrides.items():
        short = _SHORT.get(k)
        if short is None:
            last = k.split(".")[-1]
            short = {"alpha": "a", "num_clients": "n", "rounds": "r"}.get(last, last[:6])
        parts.append(f"{short}{format_value(v)}")
    slug = "-".join(parts)
    slug = re.sub(r"[^A-Za-z0-9_.+-]", "", slug)
    return slug[:80].strip("-.") or "point"


def expand_points(spec: SweepSpec) -> list[SweepPoint]:
    """The grid (cartesian product, in file order) followed by the baselines.

    Every point's config is built and validated here, before anything runs.

    Raises:
        SweepError: naming the point's overrides and every invalid field.
    """
    axes = list(spec.axes)
    combos: list[tuple[str, dict[str, Any]]] = (
        [
            ("grid", dict(zip(axes, values, strict=True)))
            for values in itertools.product(*spec.axes.values())
        ]
        if axes
        else [("grid", {})]
    )
    for bname, fixed in spec.baselines:
        free = [a for a in axes if a not in fixed]
        for values in itertools.product(*(spec.axes[a] for a in free)):
            ov = dict(zip(free, values, strict=True))
            ov.update(fixed)
            # keep grid-axis order first, then the baseline's own paths
            ordered = {a: ov[a] for a in axes if a in ov}
            ordered.update({k: v for k, v in fixed.items() if k not in ordered})
            combos.append((bname, ordered))
    points: list[SweepPoint] = []
    seen: dict[str, str] = {}
    for label, ov in combos:
        try:
            cfg = point_config(spec, ov)
        except ConfigError as exc:
            where = ", ".join(f"{k}={format_value(v)}" for k, v in ov.items())
            raise SweepError(
                f"{spec.source}: {label} point ({where}) is invalid:\n{_problems(exc)}"
            ) from None
        h = config_hash(cfg)
        if h in seen:
            continue  # a baseline identical to a grid point (or another baseline) runs once
        pid = f"{_slug(ov)}-{h[:8]}"
        seen[h] = pid
        points.append(SweepPoint(id=pid, label=label, overrides=ov, config=cfg, config_hash=h))
    return points


def swept_fields(spec: SweepSpec) -> list[str]:
    """Every dotted path a point may vary: grid axes, then baseline paths (``seed`` last)."""
    out = [a for a in spec.axes if a != "seed"]
    for _, fixed in spec.baselines:
        out.extend(k for k in fixed if k not in out and k != "seed")
    return out


# --------------------------------------------------------------------------------------------
# Point status and results


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def point_status(run_dir: Path) -> str:
    """``finished``, ``partial`` (has a checkpoint to resume from) or ``missing``."""
    manifest = _read_json(run_dir / "manifest.json")
    if manifest is not None and manifest.get("finished") is True:
        return "finished"
    if (run_dir / CHECKPOINT).exists() and (run_dir / "config.toml").exists():
        return "partial"
    return "missing"


def _float(v: Any) -> float:
    if isinstance(v, str):
        return float(v)  # "inf", "nan"
    return float(v) if v is not None else float("nan")


def _point_rows(
    spec_fields: Sequence[str], point: SweepPoint, run_dir: Path, out_dir: Path
) -> list[dict[str, str]]:
    manifest = _read_json(run_dir / "manifest.json") or {}
    if manifest.get("config_hash") != point.config_hash:
        raise SweepError(
            f"{run_dir}/manifest.json has config hash {manifest.get('config_hash')!r}, expected "
            f"{point.config_hash}; the directory belongs to another config: delete it and "
            "re-run the sweep"
        )
    privacy = _read_json(run_dir / "privacy.json") or {}
    rows = read_jsonl(run_dir / "metrics.jsonl")
    if not rows:
        raise SweepError(
            f"{run_dir}/metrics.jsonl is empty although the run is finished; "
            "delete the point directory and re-run the sweep"
        )
    last = rows[-1]
    cfg_dict = to_dict(point.config)
    timings = manifest.get("timings", {})
    wall = float(timings.get("setup_s", 0.0)) + float(timings.get("run_s", 0.0))
    summary = privacy.get("summary", {})
    from privfed.evaluation.costs import cost_columns

    costs = {k: f"{v:.6g}" for k, v in cost_columns(run_dir).items()}
    cdp = point.config.client_dp
    client_on = cdp.mode != "off"
    client_level = privacy.get("client_level", {})
    out: list[dict[str, str]] = []
    for task, m in last["tasks"].items():
        src = m.get("source", "")
        eps = summary.get(src, {})
        row: dict[str, str] = {"point_id": point.id, "label": point.label}
        for f in spec_fields:
            row[f] = format_value(_lookup(cfg_dict, f))
        row.update(
            {
                "seed": str(point.config.seed),
                "config_hash": point.config_hash,
                "task": task,
                "source": src,
                "rounds": str(last["round"]),
                "clients": str(m.get("clients", "")),
                "mean_acc": format_value(_float(m["mean_acc"])),
                "median_acc": format_value(_float(m["median_acc"])),
                "worst_acc": format_value(_float(m["worst_acc"])),
                "std_acc": format_value(_float(m.get("std_acc"))),
                "val_mean_acc": format_value(_float(m.get("val_mean_acc"))),
                "mean_loss": format_value(_float(m.get("mean_loss"))),
                "majority_acc": format_value(_float(m.get("majority_acc"))),
                # record level: (epsilon, delta) per (client, data source)
                "target_epsilon": format_value(point.config.dp.target_epsilon),
                "epsilon_max": format_value(_float(eps.get("max", m.get("epsilon_max")))),
                "epsilon_mean": format_value(_float(eps.get("mean", m.get("epsilon_mean")))),
                "delta": format_value(float(privacy.get("delta", point.config.dp.delta))),
                # client level: (epsilon, delta) per client, empty when off
                "client_dp": cdp.mode,
                "client_target_epsilon": format_value(cdp.target_epsilon) if client_on else "",
                "client_epsilon": format_value(
                    _float(client_level.get("epsilon", m.get("client_epsilon")))
                )
                if client_on
                else "",
                "client_delta": format_value(float(client_level.get("delta", cdp.delta)))
                if client_on
                else "",
                "privacy_warnings": str(len(privacy.get("warnings", []))),
                "accountant": str(privacy.get("accountant", point.config.dp.accountant)),
                "algorithm": point.config.federation.algorithm,
                "aggregator": str(manifest.get("aggregator", point.config.federation.aggregator)),
                "bytes_down_per_participation": costs.get("bytes_down_per_participation", ""),
                "bytes_up_per_participation": costs.get("bytes_up_per_participation", ""),
                "compute_s_per_participation": costs.get("compute_s_per_participation", ""),
                "round_s": costs.get("round_s", ""),
                "wall_time_s": f"{wall:.2f}",
                "privfed_version": str(manifest.get("versions", {}).get("privfed", "")),
                "commit": str(manifest.get("git", {}).get("commit", "")),
                "run_dir": str(run_dir.relative_to(out_dir)),
            }
        )
        out.append(row)
    return out


def _attack_cells(run_dir: Path) -> dict[str, str]:
    """``attack:<name>:<metric>`` cells from a point's attacks.json (empty if none ran)."""
    data = _read_json(run_dir / "attacks.json") or {}
    return {
        f"attack:{name}:{metric}": format_value(_float(value))
        for name, entry in data.items()
        for metric, value in entry.get("metrics", {}).items()
    }


def build_results(spec: SweepSpec, points: Sequence[SweepPoint], out_dir: Path) -> int:
    """Rebuild ``results.csv`` atomically from the finished point directories.

    Returns:
        The number of finished points in the table.
    """
    all_rows: list[dict[str, str]] = []
    attack_columns: set[str] = set()
    done = 0
    for p in points:
        run_dir = out_dir / POINTS_DIR / p.id
        if point_status(run_dir) != "finished":
            continue
        try:
            rows = _point_rows(swept_fields(spec), p, run_dir, out_dir)
            attack_cells = _attack_cells(run_dir)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SweepError(
                f"{run_dir} holds malformed result files ({type(exc).__name__}: {exc}); delete "
                "the point directory and re-run the sweep"
            ) from None
        attack_columns.update(attack_cells)
        for row in rows:
            row.update(attack_cells)
        all_rows.extend(rows)
        done += 1
    fields = ["point_id", "label", *swept_fields(spec), *RESULT_COLUMNS, *sorted(attack_columns)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(all_rows)
    atomic_write_text(out_dir / RESULTS_CSV, buf.getvalue())
    return done


def _write_sweep_json(spec: SweepSpec, points: Sequence[SweepPoint], out_dir: Path) -> None:
    from privfed.repro import git_commit, package_versions

    atomic_write_json(
        out_dir / SWEEP_JSON,
        {
            "format": 1,
            "name": spec.name,
            "sweep_file": spec.source,
            "base": spec.base_label,
            "set": dict(spec.set),
            "axes": {k: list(v) for k, v in spec.axes.items()},
            "baselines": [{"name": n, **dict(f)} for n, f in spec.baselines],
            "swept_fields": swept_fields(spec),
            "points": [
                {
                    "id": p.id,
                    "label": p.label,
                    "overrides": dict(p.overrides),
                    "config_hash": p.config_hash,
                    "seed": p.config.seed,
                }
                for p in points
            ],
            "versions": package_versions(),
            "git": git_commit(),
        },
    )


# --------------------------------------------------------------------------------------------
# Running


def _watch_parent(parent_pid: int) -> None:
    """Exit this worker as soon as its parent is gone (the sweep was killed, e.g. SIGKILL).

    The parent is the sweep process (spawn context); when it dies this process is
    re-parented and its parent pid changes.
    """
    while True:
        if os.getppid() != parent_pid:
            os._exit(3)
        time.sleep(0.2)


def _die_with_parent() -> None:
    """On Linux, ask the kernel to SIGKILL this process when its parent dies (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # the watchdog thread still ends the worker


def _worker_init() -> None:
    import torch

    from privfed.repro import git_commit

    parent = os.getppid()
    _die_with_parent()
    torch.set_num_threads(1)
    git_commit()  # record the commit this worker's code was imported from
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def run_point(cfg: ExperimentConfig, run_dir: str, backend: Any = None) -> float:
    """Run (or resume) one point into ``run_dir``; returns its wall time in seconds.

    ``backend`` (:class:`~privfed.backends.BackendOptions`) says where the run's clients train.

    Holds an exclusive lock on the point directory for the whole run, so a leftover process of
    a killed sweep can never write into a point that a restarted sweep is running.
    """
    import fcntl

    from privfed.engine import run_experiment

    t0 = time.perf_counter()
    d = Path(run_dir)
    d.parent.mkdir(parents=True, exist_ok=True)
    lock_path = d.parent / f".{d.name}.lock"
    with open(lock_path, "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        status = point_status(d)
        if status == "finished":
            return 0.0
        if status == "missing" and d.exists():
            shutil.rmtree(d)  # started but no checkpoint yet: start afresh
        run_experiment(
            cfg,
            d,
            resume=(status == "partial"),
            progress=False,
            echo=lambda _msg: None,
            backend=backend,
        )
    return time.perf_counter() - t0


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did.

    Attributes:
        out_dir: the sweep directory.
        points: every point of the sweep.
        ran: ids of points run (or resumed) by this invocation.
        skipped: ids of points that were already finished.
        failed: point id -> error message.
        results_csv: path of the rebuilt table.
    """

    out_dir: Path
    points: tuple[SweepPoint, ...]
    ran: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: Mapping[str, str] = field(default_factory=dict)
    results_csv: Path = Path()


def _acquire_sweep_lock(out_dir: Path) -> Any:
    import fcntl

    fh = open(out_dir / _LOCK, "a+b")  # noqa: SIM115 - held for the whole sweep
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise SweepError(
            f"another privfed sweep is running in {out_dir}; wait for it or choose another --out"
        ) from None
    return fh


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    *,
    workers: int = 1,
    backend: Any = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> SweepResult:
    """Run every missing point of ``spec`` into ``out_dir`` and rebuild ``results.csv``.

    Args:
        spec: the parsed sweep (:func:`load_sweep`).
        out_dir: the sweep directory (created if needed; reused to resume).
        workers: cores the sweep may use. With the serial backend (default) that many points
            run in parallel processes (1: in this process, one after another); with
            ``backend.backend = "process"`` each run uses ``backend.workers`` processes (0: all
            of ``workers``) and ``workers // backend.workers`` points run at once, so the sweep
            never starts more processes than ``workers``; with Ray the points run one after
            another, each on the Ray cluster.
        backend: where each run's clients train (:class:`~privfed.backends.BackendOptions`).
        progress: show a progress bar (points done, time left) on stderr.
        echo: where one-line messages go.

    Returns:
        A :class:`SweepResult`; ``failed`` lists points whose run raised.
    """
    if workers < 1:
        raise SweepError(f"--workers must be >= 1, got {workers}")
    from dataclasses import replace

    from privfed.backends import BackendOptions

    backend = backend or BackendOptions()
    parallel = workers
    if backend.backend == "process":
        per_run = backend.workers or workers
        if per_run > workers:
            raise SweepError(
                f"--run-workers ({per_run}) must be <= --workers ({workers}): the sweep never "
                "starts more processes than --workers"
            )
        backend = replace(backend, workers=per_run)
        parallel = max(1, workers // per_run)
    elif backend.backend == "ray":
        parallel = 1
    out = Path(out_dir)
    points = expand_points(spec)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = _acquire_sweep_lock(out)
    except OSError as exc:
        raise storage_error(out, exc, action="create the sweep directory") from None
    try:
        _write_sweep_json(spec, points, out)
        status = {p.id: point_status(out / POINTS_DIR / p.id) for p in points}
        todo = [p for p in points if status[p.id] != "finished"]
        skipped = tuple(p.id for p in points if status[p.id] == "finished")
        n_partial = sum(1 for p in todo if status[p.id] == "partial")
        echo(
            f"privfed sweep {spec.name}: {len(points)} points, {len(skipped)} finished, "
            f"{n_partial} to resume, {len(todo) - n_partial} to run -> {out}"
        )
        build_results(spec, points, out)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                total=len(points),
                initial=len(skipped),
                desc=spec.name,
                unit="point",
                dynamic_ncols=True,
                file=sys.stderr,
            )
        ran: list[str] = []
        failed: dict[str, str] = {}

        def finished(p: SweepPoint, error: BaseException | None) -> None:
            if error is None:
                ran.append(p.id)
                build_results(spec, points, out)
            else:
                msg = (
                    str(error)
                    if isinstance(error, PrivfedError)
                    else "".join(traceback.format_exception_only(type(error), error)).strip()
                )
                failed[p.id] = msg
                echo(f"privfed sweep: point {p.id} failed: {msg}")
            if bar is not None:
                bar.update(1)

        session: Any = contextlib.nullcontext()
        if backend.backend == "ray":
            from privfed.backends.ray_backend import ray_session

            session = ray_session(backend)
        try:
            with session:
                if parallel == 1 or len(todo) <= 1:
                    for p in todo:
                        try:
                            run_point(p.config, str(out / POINTS_DIR / p.id), backend)
                        except (PrivfedError, RuntimeError, ValueError) as exc:
                            finished(p, exc)
                        else:
                            finished(p, None)
                else:
                    _run_pool(todo, out, parallel, finished, backend)
        finally:
            if bar is not None:
                bar.close()
        build_results(spec, points, out)
    finally:
        lock.close()
    return SweepResult(
        out_dir=out,
        points=tuple(points),
        ran=tuple(ran),
        skipped=skipped,
        failed=failed,
        results_csv=out / RESULTS_CSV,
    )


def _run_pool(
    todo: Iterable[SweepPoint],
    out: Path,
    workers: int,
    finished: Callable[[SweepPoint, BaseException | None], None],
    backend: Any,
) -> None:
    # spawn, not forkserver: a spawned worker is a child of this process, so when this process
    # is killed the worker is re-parented and its watchdog (``_watch_parent``) ends it. A
    # forkserver outlives a SIGKILLed parent and its workers would keep writing.
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
        futures: dict[Future[float], SweepPoint] = {
            pool.submit(run_point, p.config, str(out / POINTS_DIR / p.id), backend): p for p in todo
        }
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    exc = fut.exception()
                    finished(futures[fut], exc)
        except KeyboardInterrupt:
            for fut in pending:
                fut.cancel()
            raise


def read_results(path: str | Path) -> list[dict[str, str]]:
    """The rows of a ``results.csv`` as dicts of strings."""
    p = Path(path)
    if not p.exists():
        raise SweepError(f"{p} does not exist; run `privfed sweep` first")
    try:
        with open(p, encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SweepError(
            f"{p} cannot be read as CSV ({exc}); rebuild it by running the same "
            "`privfed sweep` command again"
        ) from None
