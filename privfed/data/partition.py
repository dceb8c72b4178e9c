"""Non-IID partitioners: which records of a data source each client holds.

A partitioner is called as
``partitioner(labels, owner, *, num_clients=..., rng=..., **params) -> list[np.ndarray]`` and
returns one sorted int64 index array per client; every record is assigned to exactly one client.
Built-ins (registered in :data:`PARTITIONERS`; third-party ones arrive through the
``privfed.partitioners`` entry point group):

* ``iid``: a random permutation cut into near-equal parts.
* ``dirichlet``: label skew of Hsu, Qi and Brown 2019 ("Measuring the effects of non-identical
  data distribution", Sec. 3): for every class, the share of each client is drawn from
  ``Dirichlet(alpha * 1_K)``. Small ``alpha`` = few classes per client.
* ``shards``: McMahan et al. 2017 (Sec. 3, "pathological non-IID"): sort by label, cut into
  ``num_clients * shards_per_client`` shards, give every client ``shards_per_client`` of them.
* ``quantity``: quantity skew with IID labels: client sizes from ``Dirichlet(alpha)`` or a power
  law.
* ``natural``: by natural owner (writer, speaker, generating owner).

The engine derives ``rng`` from the run seed (``privfed.rng.numpy_rng(seed, "partition", ...)``)
and records :func:`partition_hash` of the result in the run manifest. Each client's records are
then cut into train/val/test by :func:`split_client`.

**Task skew.** :func:`assign_groups` decides which task groups each client holds. The engine
partitions every data source independently (one partition per source, all tasks on a source
see the same client records), then client ``c`` trains and is evaluated only on the tasks whose
group is in ``assign_groups(...)[c]``; the remaining records of that client are unused. Because
the server learns per-task sums and counts, not holders, task skew is invisible to it under
secure aggregation.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from privfed.errors import ConfigError
from privfed.registry import Registry, callable_check

Partitioner = Callable[..., list[np.ndarray]]
"""``(labels, owner, *, num_clients, rng, **params) -> list of index arrays, one per client``."""

PARTITIONERS: Registry[Partitioner] = Registry(
    "partitioner",
    entry_point_group="privfed.partitioners",
    check=callable_check("a partitioner"),
)


def _check_common(labels: np.ndarray, num_clients: int, *, min_records: int = 1) -> int:
    if labels.ndim != 1:
        raise ConfigError(f"partition labels must be a 1-d array, got shape {list(labels.shape)}")
    if num_clients < 1:
        raise ConfigError(f"partition.num_clients must be >= 1, got {num_clients}")
    n = int(labels.shape[0])
    if n < num_clients * min_records:
        raise ConfigError(
            f"partition.num_clients must be <= {n // max(min_records, 1)} for {n} records "
            f"(at least {min_records} each), got {num_clients}"
            + (f"; or lower partition.min_size ({min_records})" if min_records > 1 else "")
        )
    return n


def _finish(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def iid(
    labels: np.ndarray,
    owner: np.ndarray | None = None,
    *,
    num_clients: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Random permutation cut into ``num_clients`` parts whose sizes differ by at most one.

    Args:
        labels: int64 [N] labels (only their number is used).
        owner: ignored.
        num_clients: number of clients, 1..N.
        rng: source of randomness.
    """
    del owner
    n = _check_common(labels, num_clients)
    return _finish(np.array_split(rng.permutation(n), num_clients))


def _repair_min_size(
    parts: list[list[int]] | list[np.ndarray], *, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Move random records from the largest clients to clients below ``min_size``."""
    arrays = [np.asarray(p, dtype=np.int64) for p in parts]
    for c in range(len(arrays)):
        while arrays[c].shape[0] < min_size:
            donor = int(np.argmax([a.shape[0] for a in arrays]))
            take = int(rng.integers(arrays[donor].shape[0]))
            arrays[c] = np.append(arrays[c], arrays[donor][take])
            arrays[donor] = np.delete(arrays[donor], take)
    return arrays


def dirichlet(
    labels: np.ndarray,
    owner: np.ndarray | None = None,
    *,
    num_clients: int,
    rng: np.random.Generator,
    alpha: float,
    min_size: int = 2,
    max_resample: int = 20,
) -> list[np.ndarray]:
    """Label skew: per class, client shares from ``Dirichlet(alpha)`` (Hsu et al. 2019).

    For each class, the class's records are shuffled and cut at the cumulative shares of a
    fresh ``Dirichlet(alpha * 1_K)`` draw. If some client ends up with fewer than ``min_size``
    records, the whole draw is repeated (up to ``max_resample`` times, as in the common
    reference implementations); if it still falls short, a repair moves random records from the
    currently largest client to each short client until every client has ``min_size``. The
    repair perturbs the label distribution only by ``min_size`` records per short client.

    Args:
        labels: int64 [N] class of each record.
        owner: ignored.
        num_clients: number of clients K.
        rng: source of randomness.
        alpha: Dirichlet concentration, > 0 (0.05 = extreme skew, 100 = nearly IID).
        min_size: minimum records per client, >= 0, with ``K * min_size <= N``.
        max_resample: full redraws tried before the repair, >= 0.
    """
    del owner
    problems = []
    if not alpha > 0:
        problems.append(f"partition.alpha must be > 0, got {alpha}")
    if min_size < 0:
        problems.append(f"partition.min_size must be >= 0, got {min_size}")
    if max_resample < 0:
        problems.append(f"partition.max_resample must be >= 0, got {max_resample}")
    if problems:
        raise ConfigError(problems)
    _check_common(labels, num_clients, min_records=max(min_size, 1))
    classes = np.unique(labels)
    parts: list[list[int]] = []
    for _ in range(max_resample + 1):
        parts = [[] for _ in range(num_clients)]
        for cls in classes:
            idx = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = (np.cumsum(shares)[:-1] * idx.shape[0]).astype(np.int64)
            for c, chunk in enumerate(np.split(idx, cuts)):
                parts[c].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            break
    return _finish(_repair_min_size(parts, min_size=min_size, rng=rng))


def shards(
    labels: np.ndarray,
    owner: np.ndarray | None = None,
    *,
    num_clients: int,
    rng: np.random.Generator,
    shards_per_client: int = 2,
) -> list[np.ndarray]:
    """Pathological label skew of McMahan et al. 2017: ``shards_per_client`` label-sorted shards.

    Records are shuffled, stably sorted by label, cut into ``num_clients * shards_per_client``
    contiguous shards of near-equal size, and the shards are dealt to clients at random.

    Args:
        labels: int64 [N] class of each record.
        owner: ignored.
        num_clients: number of clients K.
        rng: source of randomness.
        shards_per_client: shards per client, >= 1, with ``K * shards_per_client <= N``.
    """
    del owner
    if shards_per_client < 1:
        raise ConfigError(f"partition.shards_per_client must be >= 1, got {shards_per_client}")
    n = _check_common(labels, num_clients)
    num_shards = num_clients * shards_per_client
    if num_shards > n:
        raise ConfigError(
            f"partition.shards_per_client must be <= {n // num_clients} for {n} records and "
            f"{num_clients} clients, got {shards_per_client}"
        )
    shuffled = rng.permutation(n)
    order = shuffled[np.argsort(labels[shuffled], kind="stable")]
    pieces = np.array_split(order, num_shards)
    deal = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return _finish([np.concatenate([pieces[s] for s in row]) for row in deal])


def quantity(
    labels: np.ndarray,
    owner: np.ndarray | None = None,
    *,
    num_clients: int,
    rng: np.random.Generator,
    alpha: float = 0.5,
    scheme: str = "dirichlet",
    exponent: float = 1.5,
    min_size: int = 2,
) -> list[np.ndarray]:
    """Quantity skew with IID labels: client sizes vary, label mix does not.

    Sizes are ``min_size`` plus a share of the remaining records, the shares drawn from
    ``Dirichlet(alpha * 1_K)`` (``scheme="dirichlet"``) or proportional to ``rank ** -exponent``
    over a random ranking of the clients (``scheme="power_law"``). Records are a random
    permutation cut at those sizes.

    Args:
        labels: int64 [N] labels (only their number is used).
        owner: ignored.
        num_clients: number of clients K.
        rng: source of randomness.
        alpha: Dirichlet concentration for ``scheme="dirichlet"``, > 0.
        scheme: ``"dirichlet"`` or ``"power_law"``.
        exponent: power-law exponent for ``scheme="power_law"``, >= 0.
        min_size: minimum records per client, >= 0, with ``K * min_size <= N``.
    """
    del owner
    problems = []
    if scheme not in ("dirichlet", "power_law"):
        problems.append(f"partition.scheme must be 'dirichlet' or 'power_law', got {scheme!r}")
    if not alpha > 0:
        problems.append(f"partition.alpha must be > 0, got {alpha}")
    if not exponent >= 0:
        problems.append(f"partition.exponent must be >= 0, got {exponent}")
    if min_size < 0:
        problems.append(f"partition.min_size must be >= 0, got {min_size}")
    if problems:
        raise ConfigError(problems)
    n = _check_common(labels, num_clients, min_records=max(min_size, 1))
    if scheme == "dirichlet":
        shares = rng.dirichlet(np.full(num_clients, float(alpha)))
    else:
        ranks = rng.permutation(num_clients) + 1.0
        powers = ranks ** (-float(exponent))
        shares = powers / powers.sum()
    rest = n - num_clients * min_size
    extra = np.floor(shares * rest).astype(np.int64)
    # hand the rounding remainder to the clients with the largest fractional parts
    remainder = rest - int(extra.sum())
    if remainder:
        frac = shares * rest - extra
        extra[np.argsort(-frac, kind="stable")[:remainder]] += 1
    sizes = extra + min_size
    cuts = np.cumsum(sizes)[:-1]
    return _finish(np.split(rng.permutation(n), cuts))


def natural(
    labels: np.ndarray,
    owner: np.ndarray | None,
    *,
    num_clients: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """One client per natural owner, or owners grouped onto fewer clients.

    With as many clients as owners, client ``i`` is the ``i``-th owner id in ascending order.
    With fewer clients, owners are grouped deterministically (no randomness): owners sorted by
    record count (largest first, ties by id) are each placed on the client with the fewest
    records so far (longest-processing-time rule), which balances client sizes.

    Args:
        labels: int64 [N] labels (only their number is used).
        owner: int64 [N] natural owner of each record (required).
        num_clients: number of clients, 1..number of owners.
        rng: unused (grouping is deterministic).
    """
    del rng
    if owner is None:
        raise ConfigError(
            "partition 'natural' needs a data source with natural owners (owner is None); "
            "use dirichlet, shards, quantity or iid for this source"
        )
    if owner.shape != labels.shape:
        raise ConfigError(f"partition owner must have shape {list(labels.shape)}")
    if num_clients < 1:
        raise ConfigError(f"partition.num_clients must be >= 1, got {num_clients}")
    ids, counts = np.unique(owner, return_counts=True)
    if num_clients > ids.shape[0]:
        raise ConfigError(
            f"partition.num_clients must be <= {ids.shape[0]} (the number of owners) for "
            f"'natural', got {num_clients}"
        )
    members = [np.flatnonzero(owner == o) for o in ids]
    if num_clients == ids.shape[0]:
        return _finish(members)
    order = sorted(range(ids.shape[0]), key=lambda i: (-int(counts[i]), int(ids[i])))
    loads = np.zeros(num_clients, dtype=np.int64)
    groups: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for i in order:
        c = int(np.argmin(loads))
        groups[c].append(members[i])
        loads[c] += counts[i]
    return _finish([np.concatenate(g) for g in groups])


def run_partitioner(
    name: str,
    labels: np.ndarray,
    owner: np.ndarray | None,
    *,
    num_clients: int,
    rng: np.random.Generator,
    **params: Any,
) -> list[np.ndarray]:
    """Look up ``name`` and call it, refusing unknown parameters with a ConfigError.

    Also checks the result: every record assigned to exactly one client.

    Args:
        name: a registered partitioner.
        labels: int64 [N] labels of the primary column.
        owner: int64 [N] natural owners or None.
        num_clients: number of clients.
        rng: source of randomness (derive it from the run seed).
        **params: the partitioner's parameters.

    Returns:
        One sorted int64 index array per client.
    """
    fn = PARTITIONERS.get(name)
    sig = inspect.signature(fn)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        allowed = [p for p in list(sig.parameters)[2:] if p not in ("num_clients", "rng")]
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ConfigError(
                [
                    f"partition.{p} is not a parameter of {name!r}; allowed: "
                    f"{', '.join(allowed) or 'none'}"
                    for p in unknown
                ]
            )
    try:
        parts = fn(labels, owner, num_clients=num_clients, rng=rng, **params)
    except TypeError as exc:
        raise ConfigError(f"partition {name!r}: {exc}") from exc
    check_partition(parts, int(labels.shape[0]))
    return parts


def check_partition(parts: Sequence[np.ndarray], n: int) -> None:
    """Raise ConfigError unless ``parts`` assigns each of ``n`` records exactly once."""
    allidx = (
        np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
        if parts
        else np.array([], dtype=np.int64)
    )
    counts = np.bincount(allidx, minlength=n) if allidx.size else np.zeros(n, dtype=np.int64)
    if allidx.size and (allidx.min() < 0 or allidx.max() >= n):
        raise ConfigError(f"partition assigns indices outside 0..{n - 1}")
    if not np.all(counts == 1):
        raise ConfigError(
            f"partition must assign every record exactly once: {int((counts == 0).sum())} "
            f"unassigned, {int((counts > 1).sum())} assigned more than once"
        )


def partition_hash(parts: Sequence[np.ndarray]) -> str:
    """SHA-256 hex digest of a partition, for the run manifest.

    Canonical encoding: ``b"privfed.partition.v1"``, the number of clients as 8-byte
    little-endian, then per client (in order) its length as 8-byte little-endian and its
    indices as little-endian int64 (in the given order; partitioners return them sorted).
    """
    h = hashlib.sha256(b"privfed.partition.v1")
    h.update(len(parts).to_bytes(8, "little"))
    for p in parts:
        arr = np.ascontiguousarray(np.asarray(p, dtype="<i8"))
        h.update(int(arr.shape[0]).to_bytes(8, "little"))
        h.update(arr.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class ClientSplit:
    """One client's records cut into train, validation and test index arrays (sorted)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_client(
    indices: np.ndarray,
    *,
    rng: np.random.Generator,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    ordered: bool = False,
) -> ClientSplit:
    """Cut one client's records at random (or in record order) into train / val / test.

    With ``ordered`` the client's records keep their order (index order: time order for
    text windows): the first ones train, the next validate, the last test, as LEAF and
    McMahan et al. 2017 split Shakespeare roles (their later lines are the test set).

    Sizes are ``floor(fraction * n)`` with the rounding remainder given to train; then every
    split with a positive fraction that came out empty takes one record from the largest split,
    so with ``n >=`` (number of positive fractions) every such split is non-empty (with the
    default fractions: every split of a client with >= 3 records). Not stratified.

    Args:
        indices: the client's record indices.
        rng: source of randomness.
        fractions: (train, val, test), each >= 0, train > 0, summing to 1.
        ordered: contiguous parts in index order instead of a random permutation (``rng`` is
            then unused).

    Returns:
        The three sorted index arrays.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or np.any(fr < 0) or fr[0] <= 0 or abs(fr.sum() - 1.0) > 1e-9:
        raise ConfigError(
            f"split.fractions must be 3 numbers >= 0 (train > 0) summing to 1, got {fractions}"
        )
    idx = np.asarray(indices, dtype=np.int64)
    idx = np.sort(idx) if ordered else rng.permutation(idx)
    n = idx.shape[0]
    sizes = np.floor(fr * n).astype(np.int64)
    sizes[0] += n - int(sizes.sum())
    for s in range(3):
        if fr[s] > 0 and sizes[s] == 0:
            donor = int(np.argmax(sizes))
            if sizes[donor] > 1:
                sizes[donor] -= 1
                sizes[s] += 1
    train, val, test = np.split(idx, np.cumsum(sizes)[:-1])
    return ClientSplit(train=np.sort(train), val=np.sort(val), test=np.sort(test))


def assign_groups(
    num_clients: int,
    groups: Sequence[str],
    *,
    rng: np.random.Generator,
    groups_per_client: int | None = None,
) -> list[tuple[str, ...]]:
    """Task skew: which task groups each client holds.

    With ``groups_per_client=None`` every client holds every group. Otherwise each client holds
    exactly ``groups_per_client`` distinct groups: a random permutation of the clients first
    deals the groups round-robin (so every group is held by at least one client), then each
    client's remaining slots are filled with groups drawn uniformly without replacement. See the
    module docstring for how the engine uses the result.

    Args:
        num_clients: number of clients, >= 1.
        groups: names of the task groups (distinct).
        rng: source of randomness.
        groups_per_client: groups per client, 1..len(groups), with
            ``num_clients * groups_per_client >= len(groups)``; None = all.

    Returns:
        Per client, the groups it holds, in the order of ``groups``.
    """
    names = list(groups)
    g = len(names)
    if num_clients < 1:
        raise ConfigError(f"tasks.num_clients must be >= 1, got {num_clients}")
    if g == 0 or len(set(names)) != g:
        raise ConfigError(f"tasks.groups must be distinct and non-empty, got {names}")
    if groups_per_client is None:
        return [tuple(names) for _ in range(num_clients)]
    if not 1 <= groups_per_client <= g:
        raise ConfigError(f"tasks.groups_per_client must be in 1..{g}, got {groups_per_client}")
    if num_clients * groups_per_client < g:
        raise ConfigError(
            f"tasks.groups_per_client must be >= {-(-g // num_clients)} so that each of the {g} "
            f"groups is held by one of {num_clients} clients, got {groups_per_client}"
        )
    held: list[set[int]] = [set() for _ in range(num_clients)]
    clients = rng.permutation(num_clients)
    for j, gi in enumerate(rng.permutation(g)):
        held[int(clients[j % num_clients])].add(int(gi))
    for c in range(num_clients):
        missing = groups_per_client - len(held[c])
        if missing > 0:
            choices = np.array([i for i in range(g) if i not in held[c]])
            held[c].update(int(i) for i in rng.choice(choices, size=missing, replace=False))
    return [tuple(names[i] for i in sorted(h)) for h in held]


PARTITIONERS.register("iid", iid, description="IID: random equal-size parts")
PARTITIONERS.register(
    "dirichlet",
    dirichlet,
    description=("label skew: per-class client shares ~ Dirichlet(alpha) (Hsu et al. 2019)"),
)
PARTITIONERS.register(
    "shards",
    shards,
    description=(
        "label skew: shards_per_client label-sorted shards per client (McMahan et al. 2017)"
    ),
)
PARTITIONERS.register(
    "quantity",
    quantity,
    description=("quantity skew: client sizes ~ Dirichlet(alpha) or power law, labels IID"),
)
PARTITIONERS.register(
    "natural",
    natural,
    description=(
        "by natural owner (writer / speaker / generating owner); owners grouped onto clients"
    ),
)
