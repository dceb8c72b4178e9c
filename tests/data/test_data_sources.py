"""Tests of privfed.data.sources, markov and synthetic: shapes, Bayes accuracies, heterogeneity."""

from __future__ import annotations

import numpy as np
import pytest

from privfed.data import SOURCES, SourceData, load_source, markov
from privfed.errors import ConfigError, DataError, RegistryError


def test_digits_source_has_three_tasks_on_the_same_images() -> None:
    d = load_source("digits", seed=0)
    assert isinstance(d, SourceData)
    assert d.name == "digits" and len(d) == 1797 and d.input_shape == (1, 8, 8)
    assert d.x.dtype == np.float32 and d.x.min() == 0.0 and d.x.max() == 1.0
    assert list(d.labels) == ["identity", "parity", "ge5"] and d.primary_label == "identity"
    assert dict(d.num_classes) == {"identity": 10, "parity": 2, "ge5": 2}
    y = d.labels["identity"]
    assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    assert np.array_equal(d.labels["parity"], y % 2)
    assert np.array_equal(d.labels["ge5"], (y >= 5).astype(np.int64))
    assert d.owner is None
    with pytest.raises(TypeError):
        d.labels["new"] = y  # type: ignore[index]


def test_registry_and_param_errors() -> None:
    assert {"digits", "markov", "synthetic", "mnist", "cifar10", "leaf"} <= set(SOURCES.names())
    assert all(e.description for e in SOURCES.entries())
    with pytest.raises(ConfigError, match=r"vocabulary is not a parameter of source 'markov'"):
        load_source("markov", seed=0, vocabulary=8)
    with pytest.raises(ConfigError, match=r"lam must be in \[0, 1\], got 1.5"):
        load_source("markov", seed=0, lam=1.5)
    with pytest.raises(ConfigError, match=r"vocab must be a multiple of 4"):
        load_source("markov", seed=0, vocab=10)
    with pytest.raises(ConfigError, match=r"path is required"):
        load_source("mnist", seed=0)
    with pytest.raises(ConfigError, match=r"seed must be a non-negative integer, got -1"):
        load_source("digits", seed=-1)
    with pytest.raises(ConfigError, match="source 'markov' rejected"):
        load_source("markov", seed=0, vocab="16")
    with pytest.raises(RegistryError, match="did you mean 'digits'"):
        load_source("digit", seed=0)


def test_source_data_validates_its_arrays() -> None:
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(DataError, match="outside 0..1"):
        SourceData("t", x, {"y": np.array([0, 1, 2])}, {"y": 2})
    with pytest.raises(DataError, match="int64"):
        SourceData("t", x, {"y": np.array([0, 1, 1], np.int32)}, {"y": 2})
    with pytest.raises(DataError, match="float32"):
        SourceData("t", x.astype(np.float64), {"y": np.array([0, 1, 1])}, {"y": 2})


def test_markov_source_shapes_and_owners() -> None:
    m = load_source("markov", seed=3, vocab=8, num_owners=5, tokens_per_owner=50)
    assert len(m) == 250 and m.input_shape == (8,)
    assert np.all(m.x.sum(axis=1) == 1.0)
    prev = m.x.argmax(axis=1)
    # consecutive records of one owner form a chain: next of record t is prev of record t+1
    same_owner = m.owner[1:] == m.owner[:-1]
    assert np.array_equal(m.labels["next"][:-1][same_owner], prev[1:][same_owner])
    assert np.array_equal(m.labels["next_group"], m.labels["next"] // 4)
    assert dict(m.num_classes) == {"next": 8, "next_group": 2}
    assert m.owner is not None and np.array_equal(np.bincount(m.owner), [50] * 5)
    again = load_source("markov", seed=3, vocab=8, num_owners=5, tokens_per_owner=50)
    other = load_source("markov", seed=4, vocab=8, num_owners=5, tokens_per_owner=50)
    assert np.array_equal(m.labels["next"], again.labels["next"])
    assert not np.array_equal(m.labels["next"], other.labels["next"])


def test_stationary_distribution_is_stationary() -> None:
    lang = markov.make_language(
        vocab=12, num_owners=3, lam=0.5, concentration=0.3, rng=np.random.default_rng(0)
    )
    for p in lang.transitions:
        pi = markov.stationary(p)
        assert np.allclose(pi @ p, pi, atol=1e-10) and np.isclose(pi.sum(), 1.0)


@pytest.mark.parametrize("lam", [0.9, 0.5])
def test_markov_bayes_accuracy_matches_monte_carlo(lam: float) -> None:
    vocab, owners = 16, 20
    rng = np.random.default_rng(123)
    lang = markov.make_language(vocab=vocab, num_owners=owners, lam=lam, concentration=0.3, rng=rng)
    smp = markov.sample(lang, tokens_per_owner=20_000, rng=rng)
    p = lang.transitions
    for table, truth in ((p, smp.next), (markov.group_columns(p), smp.next // 4)):
        context = np.stack([markov.stationary(p[k]) for k in range(owners)])
        acc = markov.bayes_accuracy(table, context=context)
        # personal: each owner predicts with its own chain's argmax
        personal_pred = table.argmax(axis=2)[smp.owner, smp.prev]
        mc_personal = float(np.mean(personal_pred == truth))
        # pooled: one predictor for everyone, the argmax of the mixture
        joint = np.einsum("ki,kic->ic", context, table)
        pooled_pred = joint.argmax(axis=1)[smp.prev]
        mc_pooled = float(np.mean(pooled_pred == truth))
        assert abs(acc.personal - mc_personal) < 0.01
        assert abs(acc.pooled - mc_pooled) < 0.01
        assert acc.personal > acc.pooled
        for k in (0, 7):
            mine = smp.owner == k
            assert (
                abs(acc.personal_per_owner[k] - np.mean(personal_pred[mine] == truth[mine])) < 0.02
            )
            assert abs(acc.pooled_per_owner[k] - np.mean(pooled_pred[mine] == truth[mine])) < 0.02
        assert acc.pooled == pytest.approx(float(np.mean(acc.pooled_per_owner)))
        # the pooled predictor is the best single one: no owner's own predictor beats it on
        # the mixture
        for k in range(0, owners, 5):
            other = table.argmax(axis=2)[k][smp.prev]
            assert np.mean(other == truth) <= mc_pooled + 0.005


def test_no_personalization_means_personal_equals_pooled() -> None:
    m = load_source("markov", seed=0, lam=0.0)
    for col in ("next", "next_group"):
        acc = m.meta["bayes_accuracy"][col]
        assert acc["personal"] == pytest.approx(acc["pooled"], abs=1e-12)


def test_markov_defaults_reproduce_field_notes_roughly() -> None:
    # field notes: V=16, 20 clients, lam=0.9 -> personal 0.316, pooled 0.110
    accs = [load_source("markov", seed=s).meta["bayes_accuracy"]["next"] for s in range(8)]
    personal = np.mean([a["personal"] for a in accs])
    pooled = np.mean([a["pooled"] for a in accs])
    assert 0.30 < personal < 0.345
    assert 0.10 < pooled < 0.125
    emp = load_source("markov", seed=0).meta["bayes_accuracy_empirical"]["next"]
    assert abs(emp["personal"] - accs[0]["personal"]) < 0.02


def test_synthetic_shapes_and_sizes() -> None:
    s = load_source("synthetic", seed=0, alpha=0.5, beta=0.5, num_owners=10)
    assert s.input_shape == (60,) and s.x.dtype == np.float32
    assert dict(s.num_classes) == {"label": 10}
    assert s.owner is not None and set(np.unique(s.owner)) == set(range(10))
    sizes = np.bincount(s.owner)
    assert sizes.min() >= 50 and sizes.max() <= 1000
    fixed = load_source("synthetic", seed=0, num_owners=4, samples_per_owner=25)
    assert len(fixed) == 100 and np.array_equal(np.bincount(fixed.owner), [25] * 4)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"alpha must be >= 0"):
        load_source("synthetic", seed=0, alpha=-1.0)


def test_synthetic_alpha_shifts_models_but_not_labels() -> None:
    a = load_source("synthetic", seed=1, alpha=0.0, num_owners=5, samples_per_owner=50)
    b = load_source("synthetic", seed=1, alpha=3.0, num_owners=5, samples_per_owner=50)
    assert np.array_equal(a.labels["label"], b.labels["label"])
    assert np.array_equal(a.x, b.x)


def _heterogeneity(alpha: float, beta: float) -> tuple[float, float]:
    """Spread of owners' input means and mean TV distance of owner label mixes to the pool."""
    tv, spread = [], []
    for seed in range(3):
        s = load_source(
            "synthetic", seed=seed, alpha=alpha, beta=beta, num_owners=20, samples_per_owner=200
        )
        assert s.owner is not None
        y = s.labels["label"]
        pool = np.bincount(y, minlength=10) / len(y)
        means = np.stack([s.x[s.owner == k].mean(axis=0) for k in range(20)])
        spread.append(float(means.mean(axis=1).std()))
        for k in range(20):
            q = np.bincount(y[s.owner == k], minlength=10) / 200
            tv.append(0.5 * np.abs(q - pool).sum())
    return float(np.mean(spread)), float(np.mean(tv))


def test_synthetic_alpha_beta_control_heterogeneity() -> None:
    spread0, _ = _heterogeneity(0.0, 0.0)
    spread1, _ = _heterogeneity(0.0, 1.0)
    assert spread1 > 3 * spread0  # beta moves owners' inputs apart
    _, tv_lo = _heterogeneity(0.0, 0.0)
    _, tv_hi = _heterogeneity(5.0, 0.0)
    # u_k shifts every logit of owner k by the same amount (u_k * sum(x) + u_k), so with the
    # same draws alpha leaves every label unchanged (documented in privfed.data.synthetic)
    assert tv_hi == pytest.approx(tv_lo)
    # still strongly non-IID: each owner has its own W_k; an IID split of 200 records from
    # 10 classes has a mean TV distance near 0.1
    assert tv_lo > 0.3
