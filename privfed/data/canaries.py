"""A data source with a fixed set of mislabeled records: canaries for membership inference.

``canaries`` wraps another source and gives ``count`` of its records a wrong label in every
label column. The canaries are drawn from ``canary_seed`` only, never from the run seed, so
every run of a membership-inference experiment has the *same* canaries, while which of them a
run trains on follows the run's partition and train/validation/test split (its seed). A
mislabeled record is the easiest record to memorize and the hardest to predict without having
seen it: the regime in which membership inference must succeed when nothing stops it (Jagielski,
Ullman, Oprea 2020; Carlini et al. 2022 also plant such outliers). ``meta["canaries"]`` lists
their indices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from privfed.errors import ConfigError
from privfed.rng import numpy_rng

if TYPE_CHECKING:
    from privfed.data.sources import SourceData

__all__ = ["canary_source"]


def canary_source(
    *,
    seed: int,
    base: str = "digits",
    count: int = 100,
    canary_seed: int = 0,
    base_params: Mapping[str, Any] | None = None,
) -> SourceData:
    """Source ``base`` with ``count`` records mislabeled (drawn from ``canary_seed`` only).

    Args:
        seed: the run seed, passed to the base source (generated sources use it).
        base: name of the wrapped source.
        count: records to mislabel.
        canary_seed: seed of the draw of canaries and of their wrong labels.
        base_params: parameters of the wrapped source.

    Raises:
        ConfigError: ``count`` out of range, or the base is itself ``canaries``.
    """
    from privfed.data.sources import SourceData, load_source  # noqa: F811 (runtime import)

    if base == "canaries":
        raise ConfigError("base must name another source, not canaries")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"count must be an integer >= 1, got {count!r}")
    if isinstance(canary_seed, bool) or not isinstance(canary_seed, int) or canary_seed < 0:
        raise ConfigError(f"canary_seed must be a non-negative integer, got {canary_seed!r}")
    src = load_source(base, seed=seed, **dict(base_params or {}))
    n = len(src)
    if count > n:
        raise ConfigError(f"count must be at most the {n} records of {base!r}, got {count}")
    rng = numpy_rng(canary_seed, "canaries")
    idx = np.sort(rng.choice(n, size=count, replace=False))
    labels = {}
    for col, y in src.labels.items():
        k = int(src.num_classes[col])
        if k < 2:
            raise ConfigError(f"label {col!r} of {base!r} has one class: nothing to mislabel")
        wrong = (y[idx] + rng.integers(1, k, size=count)) % k
        new = y.copy()
        new[idx] = wrong
        labels[col] = new
    meta = dict(src.meta)
    meta.update(
        canaries=[int(i) for i in idx],
        canary_seed=canary_seed,
        base=base,
        provenance=f"{src.meta.get('provenance', base)}; {count} records mislabeled "
        f"(canary_seed {canary_seed})",
    )
    return SourceData(
        name="canaries",
        x=src.x,
        labels=labels,
        num_classes=dict(src.num_classes),
        owner=src.owner,
        meta=meta,
    )
