"""Tests of privfed.data.partition: coverage, skew, determinism, hashing, errors."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privfed.data import (
    PARTITIONERS,
    assign_groups,
    check_partition,
    load_source,
    partition_hash,
    run_partitioner,
    split_client,
)
from privfed.errors import ConfigError

FAST = settings(max_examples=40, deadline=None)


def _assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    allidx = np.concatenate(parts)
    assert allidx.dtype == np.int64
    assert np.array_equal(np.sort(allidx), np.arange(n))
    for p in parts:
        assert np.all(np.diff(p) > 0)  # sorted, no duplicates within a client


def _labels(n: int, k: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k, n).astype(np.int64)


@FAST
@given(
    name=st.sampled_from(["iid", "dirichlet", "shards", "quantity"]),
    n=st.integers(10, 400),
    classes=st.integers(1, 12),
    clients_frac=st.floats(0.01, 0.5),
    seed=st.integers(0, 2**32 - 1),
    alpha=st.sampled_from([0.01, 0.1, 1.0, 100.0]),
)
def test_label_partitioners_assign_every_record_exactly_once(
    name: str, n: int, classes: int, clients_frac: float, seed: int, alpha: float
) -> None:
    labels = _labels(n, classes, seed)
    num_clients = max(1, int(n * clients_frac) // 2)
    params: dict[str, object] = {}
    if name == "dirichlet":
        params = {"alpha": alpha, "min_size": 2}
    elif name == "quantity":
        params = {"alpha": alpha, "min_size": 1}
    elif name == "shards":
        params = {"shards_per_client": 2}
    parts = run_partitioner(
        name, labels, None, num_clients=num_clients, rng=np.random.default_rng(seed), **params
    )
    assert len(parts) == num_clients
    _assert_exact_cover(parts, n)
    if name in ("dirichlet", "quantity"):
        assert min(len(p) for p in parts) >= params["min_size"]  # type: ignore[operator]


@FAST
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=25),
    data=st.data(),
)
def test_natural_assigns_each_record_once_and_keeps_owners_whole(
    sizes: list[int], data: st.DataObject
) -> None:
    owner_ids = np.arange(len(sizes)) * 3 + 7  # arbitrary, non-contiguous ids
    owner = np.repeat(owner_ids, sizes).astype(np.int64)
    perm = np.random.default_rng(len(sizes)).permutation(owner.shape[0])
    owner = owner[perm]
    labels = np.zeros_like(owner)
    num_clients = data.draw(st.integers(1, len(sizes)))
    parts = run_partitioner(
        "natural", labels, owner, num_clients=num_clients, rng=np.random.default_rng(0)
    )
    assert len(parts) == num_clients
    _assert_exact_cover(parts, owner.shape[0])
    client_of_owner: dict[int, int] = {}
    for c, p in enumerate(parts):
        assert len(p) > 0
        for o in np.unique(owner[p]):
            assert client_of_owner.setdefault(int(o), c) == c  # an owner is on one client
    again = run_partitioner(
        "natural", labels, owner, num_clients=num_clients, rng=np.random.default_rng(99)
    )
    assert partition_hash(parts) == partition_hash(again)  # grouping is deterministic


def test_natural_one_client_per_owner_in_id_order() -> None:
    owner = np.array([5, 2, 5, 9, 2, 2], dtype=np.int64)
    parts = PARTITIONERS.get("natural")(
        np.zeros(6, np.int64), owner, num_clients=3, rng=np.random.default_rng(0)
    )
    assert [p.tolist() for p in parts] == [[1, 4, 5], [0, 2], [3]]


def _mean_label_entropy(parts: list[np.ndarray], labels: np.ndarray) -> float:
    ents = []
    for p in parts:
        counts = np.bincount(labels[p], minlength=10).astype(float)
        q = counts[counts > 0] / counts.sum()
        ents.append(float(-(q * np.log(q)).sum()))
    return float(np.mean(ents))


@pytest.fixture(scope="module")
def digits_labels() -> np.ndarray:
    return load_source("digits", seed=0).labels["identity"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_smaller_alpha_gives_more_label_skew_on_digits(
    seed: int, digits_labels: np.ndarray
) -> None:
    ents = []
    for alpha in (0.05, 1.0, 100.0):
        parts = run_partitioner(
            "dirichlet",
            digits_labels,
            None,
            num_clients=20,
            rng=np.random.default_rng(seed),
            alpha=alpha,
        )
        ents.append(_mean_label_entropy(parts, digits_labels))
    assert ents[0] < ents[1] < ents[2]
    assert ents[0] < 1.0  # a few classes per client
    assert ents[2] > 0.95 * np.log(10)  # nearly uniform


def test_shards_give_few_labels_per_client(digits_labels: np.ndarray) -> None:
    parts = run_partitioner(
        "shards",
        digits_labels,
        None,
        num_clients=20,
        rng=np.random.default_rng(0),
        shards_per_client=2,
    )
    _assert_exact_cover(parts, digits_labels.shape[0])
    # a label-sorted shard spans at most two labels
    assert max(len(np.unique(digits_labels[p])) for p in parts) <= 4
    assert np.mean([len(np.unique(digits_labels[p])) for p in parts]) <= 3.0
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 2


def test_quantity_skews_sizes_not_labels(digits_labels: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    skewed = run_partitioner("quantity", digits_labels, None, num_clients=10, rng=rng, alpha=0.3)
    sizes = np.array([len(p) for p in skewed])
    assert sizes.max() > 3 * sizes.min()
    power = run_partitioner(
        "quantity", digits_labels, None, num_clients=10, rng=rng, scheme="power_law", exponent=2.0
    )
    psizes = sorted(len(p) for p in power)
    assert psizes[-1] > 10 * psizes[0]
    big = skewed[int(np.argmax(sizes))]
    # labels IID: the largest client sees every class
    assert len(np.unique(digits_labels[big])) == 10


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("iid", {}),
        ("dirichlet", {"alpha": 0.5}),
        ("shards", {"shards_per_client": 2}),
        ("quantity", {"alpha": 1.0}),
    ],
)
def test_same_seed_same_partition_different_seed_different(
    name: str, params: dict[str, float], digits_labels: np.ndarray
) -> None:
    def run(seed: int) -> list[np.ndarray]:
        return run_partitioner(
            name, digits_labels, None, num_clients=20, rng=np.random.default_rng(seed), **params
        )

    a, b, c = run(7), run(7), run(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert partition_hash(a) == partition_hash(b)
    assert partition_hash(a) != partition_hash(c)


def test_partition_hash_known_answer_and_sensitivity() -> None:
    parts = [np.array([0, 1], dtype=np.int64), np.array([2], dtype=np.int64)]
    expected = hashlib.sha256(
        b"privfed.partition.v1"
        + struct.pack("<Q", 2)
        + struct.pack("<Q", 2)
        + struct.pack("<2q", 0, 1)
        + struct.pack("<Q", 1)
        + struct.pack("<q", 2)
    ).hexdigest()
    assert partition_hash(parts) == expected
    assert partition_hash(parts[::-1]) != expected  # client order matters
    # moving the boundary between clients changes the hash
    assert partition_hash([np.array([0]), np.array([1, 2])]) != expected
    # dtype does not
    assert partition_hash([p.astype(np.int32) for p in parts]) == expected


def test_errors_name_the_parameter_and_range() -> None:
    labels = _labels(100, 5, 0)
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=r"partition\.alpha must be > 0, got 0"):
        run_partitioner("dirichlet", labels, None, num_clients=5, rng=rng, alpha=0)
    with pytest.raises(ConfigError, match=r"partition\.alpha must be > 0, got -1"):
        PARTITIONERS.get("dirichlet")(labels, None, num_clients=5, rng=rng, alpha=-1)
    with pytest.raises(ConfigError, match=r"partition\.shards_per_client must be >= 1"):
        run_partitioner("shards", labels, None, num_clients=5, rng=rng, shards_per_client=0)
    with pytest.raises(ConfigError, match=r"partition\.shards_per_client must be <= 20"):
        run_partitioner("shards", labels, None, num_clients=5, rng=rng, shards_per_client=21)
    with pytest.raises(ConfigError, match=r"partition\.num_clients must be <= 100"):
        run_partitioner("iid", labels, None, num_clients=101, rng=rng)
    with pytest.raises(ConfigError, match=r"partition\.bogus is not a parameter of 'iid'"):
        run_partitioner("iid", labels, None, num_clients=5, rng=rng, bogus=1)
    with pytest.raises(ConfigError, match=r"partition\.scheme"):
        run_partitioner("quantity", labels, None, num_clients=5, rng=rng, scheme="zipf")
    with pytest.raises(ConfigError, match="natural owners"):
        run_partitioner("natural", labels, None, num_clients=5, rng=rng)
    owner = np.repeat(np.arange(4), 25).astype(np.int64)
    with pytest.raises(ConfigError, match=r"partition\.num_clients must be <= 4"):
        run_partitioner("natural", labels, owner, num_clients=5, rng=rng)
    with pytest.raises(ConfigError, match=r"<= 33 for 100.*partition\.min_size"):
        run_partitioner("dirichlet", labels, None, num_clients=50, rng=rng, alpha=1.0, min_size=3)


def test_dirichlet_min_size_holds_under_extreme_skew() -> None:
    labels = _labels(300, 10, 3)
    for seed in range(5):
        parts = run_partitioner(
            "dirichlet",
            labels,
            None,
            num_clients=50,
            rng=np.random.default_rng(seed),
            alpha=0.01,
            min_size=5,
            max_resample=0,
        )
        _assert_exact_cover(parts, 300)
        assert min(len(p) for p in parts) >= 5


def test_check_partition_refuses_overlap_and_gaps() -> None:
    with pytest.raises(ConfigError, match="1 unassigned, 1 assigned more than once"):
        check_partition([np.array([0, 1]), np.array([1])], 3)
    check_partition([np.array([0, 2]), np.array([1])], 3)


@FAST
@given(n=st.integers(0, 200), seed=st.integers(0, 2**32 - 1))
def test_split_client_partitions_the_client(n: int, seed: int) -> None:
    idx = np.random.default_rng(seed).choice(10_000, size=n, replace=False).astype(np.int64)
    split = split_client(idx, rng=np.random.default_rng(seed))
    joined = np.concatenate([split.train, split.val, split.test])
    assert np.array_equal(np.sort(joined), np.sort(idx))
    if n >= 3:
        assert len(split.train) > 0 and len(split.val) > 0 and len(split.test) > 0
    if n >= 50:
        assert abs(len(split.train) / n - 0.8) < 0.05


def test_split_client_fractions_validated_and_zero_allowed() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=r"split\.fractions"):
        split_client(np.arange(10), rng=rng, fractions=(0.5, 0.2, 0.2))
    s = split_client(np.arange(10), rng=rng, fractions=(0.7, 0.0, 0.3))
    assert len(s.val) == 0 and len(s.train) == 7 and len(s.test) == 3


@FAST
@given(
    num_clients=st.integers(1, 30),
    num_groups=st.integers(1, 6),
    data=st.data(),
)
def test_assign_groups_covers_every_group(
    num_clients: int, num_groups: int, data: st.DataObject
) -> None:
    groups = [f"g{i}" for i in range(num_groups)]
    low = -(-num_groups // num_clients)
    k = data.draw(st.integers(low, num_groups))
    seed = data.draw(st.integers(0, 1000))
    held = assign_groups(num_clients, groups, rng=np.random.default_rng(seed), groups_per_client=k)
    assert len(held) == num_clients
    assert all(len(h) == k and len(set(h)) == k for h in held)
    assert all(list(h) == sorted(h, key=groups.index) for h in held)
    assert set().union(*map(set, held)) == set(groups)


def test_assign_groups_all_and_errors() -> None:
    rng = np.random.default_rng(0)
    assert assign_groups(3, ["img", "txt"], rng=rng, groups_per_client=None) == [("img", "txt")] * 3
    with pytest.raises(ConfigError, match=r"tasks\.groups_per_client must be >= 3"):
        assign_groups(2, ["a", "b", "c", "d", "e"], rng=rng, groups_per_client=2)
    with pytest.raises(ConfigError, match=r"tasks\.groups_per_client must be in 1\.\.2"):
        assign_groups(2, ["a", "b"], rng=rng, groups_per_client=3)


def test_registry_lists_builtins_with_descriptions() -> None:
    names = PARTITIONERS.names()
    assert {"iid", "dirichlet", "shards", "quantity", "natural"} <= set(names)
    assert all(e.description for e in PARTITIONERS.entries())
