"""The engine adapter: float vectors in, decoded float sum out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from privfed.aggregation import PHASES, PlainSumAggregator, RoundContext
from privfed.errors import ConfigError
from privfed.secagg import SecAggAbort, SecAggAggregator, SecAggConfig


def updates(n: int, length: int, seed: int = 0, counters: int = 3) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for c in range(n):
        v = rng.normal(0, 0.3, size=length).astype(np.float32)
        if counters:
            v[-counters:] = rng.integers(0, 2, size=counters).astype(np.float32)
        out[c] = v
    return out


def test_sum_close_to_plain_sum_and_counters_exact() -> None:
    ups = updates(10, 200)
    agg = SecAggAggregator(SecAggConfig())
    res = agg.aggregate(
        ups,
        RoundContext(
            round_index=3,
            model_hash=b"h",
            seed=7,
            dropouts={"masked_input": (4,), "share_keys": (1,)},
        ),
    )
    plain = PlainSumAggregator().aggregate(
        ups,
        RoundContext(
            round_index=3,
            model_hash=b"h",
            seed=7,
            dropouts={"masked_input": (4,), "share_keys": (1,)},
        ),
    )
    assert res.included == plain.included and res.dropped == (1, 4)
    clipped = sum(np.clip(ups[c].astype(np.float64), -1, 1) for c in res.included)
    assert np.all(np.abs(res.total - clipped) <= len(res.included) * 2.0**-16)
    counts = sum(ups[c][-3:].astype(np.float64) for c in res.included)
    assert np.array_equal(res.total[-3:], counts)  # exact, not approximately
    assert set(PHASES) <= {k.split(".", 1)[1] for k in res.stats if k.startswith("bytes.")}
    assert res.observed == {}


def test_rounding_is_seeded_per_client() -> None:
    ups = updates(5, 100, counters=0)
    agg = SecAggAggregator(SecAggConfig(scale_bits=4))
    a = agg.aggregate(ups, RoundContext(round_index=0, model_hash=b"", seed=1))
    b = agg.aggregate(ups, RoundContext(round_index=0, model_hash=b"", seed=1))
    c = agg.aggregate(ups, RoundContext(round_index=0, model_hash=b"", seed=2))
    assert np.array_equal(a.total, b.total)
    assert not np.array_equal(a.total, c.total)


def test_clamping_is_counted() -> None:
    ups = {c: np.array([5.0, -5.0, 0.5], dtype=np.float32) for c in range(4)}
    res = SecAggAggregator().aggregate(ups, RoundContext(round_index=0, model_hash=b"", seed=0))
    assert res.stats["clamped_coordinates"] == 8
    assert np.allclose(res.total, [4.0, -4.0, 2.0])


def test_observed_vectors_are_masked() -> None:
    ups = updates(4, 50)
    res = SecAggAggregator().aggregate(
        ups, RoundContext(round_index=0, model_hash=b"", seed=0, keep_observed=True)
    )
    assert set(res.observed) == set(res.included)
    for c, y in res.observed.items():
        assert y.dtype == np.uint32
        decoded = y.astype(np.int64)
        assert not np.allclose(decoded / 2**16, ups[c], atol=1e-3)


def test_too_few_survivors_aborts() -> None:
    with pytest.raises(SecAggAbort):
        SecAggAggregator().aggregate(
            updates(6, 10),
            RoundContext(
                round_index=0,
                model_hash=b"",
                seed=0,
                dropouts={
                    "masked_input": (
                        0,
                        1,
                        2,
                    )
                },
            ),
        )


def test_overflowing_cohort_is_refused() -> None:
    agg = SecAggAggregator(SecAggConfig(bits=20, scale_bits=10))
    with pytest.raises(ConfigError, match="raise bits to at least"):
        agg.aggregate(updates(600, 4), RoundContext(round_index=0, model_hash=b"", seed=0))


def test_forked_mask_removal_inside_a_training_run_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker processes forked from a process with torch loaded give the same run."""
    from support import tiny

    from privfed.engine import run_experiment
    from privfed.secagg import prg, server

    if not prg.FORK_WORKERS:
        pytest.skip("no forked workers on this platform")
    forks = []
    real_fork = prg.os.fork

    def counting_fork() -> int:
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid

    # The tiny model is shorter than one default chunk; small chunks make the workers split it.
    def small_chunks(*args: Any, **kwargs: Any) -> np.ndarray:
        return prg.apply_masks(*args, **{**kwargs, "chunk": 256})

    monkeypatch.setattr(server, "combine", small_chunks)
    monkeypatch.setattr(prg.os, "fork", counting_fork)
    summaries = []
    for workers in (1, 2):
        cfg = tiny(federation={"aggregator": "secagg"}, secagg={"workers": workers})
        summaries.append(
            run_experiment(cfg, tmp_path / str(workers), progress=False, echo=lambda _m: None)
        )
    assert forks  # the second run really forked
    assert summaries[0].tasks == summaries[1].tasks


def test_identities_persist_across_rounds() -> None:
    """The malicious setting's PKI: one long-term identity per client, enrolled on first sight."""
    agg = SecAggAggregator()
    ups = updates(5, 20)
    agg.aggregate(ups, RoundContext(round_index=0, model_hash=b"a", seed=0))
    first, registry = agg.enrol(range(5))
    agg.aggregate(
        {c: ups[c] for c in (0, 1, 2, 3)}, RoundContext(round_index=1, model_hash=b"b", seed=1)
    )
    again, later = agg.enrol([*range(5), 9])
    assert all(again[c] is first[c] for c in range(5))
    assert set(later.keys) == {*range(5), 9} and set(registry.keys) == set(range(5))


def test_experiment_config_cross_checks_the_cohort() -> None:
    from support import tiny_dict

    from privfed.config import from_dict

    data = tiny_dict(federation={"aggregator": "secagg", "num_clients": 4})
    data["federation"]["cohort_fraction"] = 0.5
    with pytest.raises(ConfigError, match="secagg.min_clients = 4 exceeds the expected cohort"):
        from_dict(data)
    data["secagg"] = {"threshold": 2}
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    assert any("threshold = 2 gives no security margin" in p for p in info.value.problems)
    data = tiny_dict(federation={"aggregator": "secagg", "num_clients": 40})
    data["secagg"] = {"threshold": 8}
    with pytest.raises(ConfigError, match="threshold = 8 is at most half of the expected cohort"):
        from_dict(data)
    from_dict(tiny_dict(federation={"aggregator": "secagg"}))  # the defaults fit four clients
