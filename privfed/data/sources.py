"""Data sources: named, offline, seeded producers of a :class:`SourceData`.

A *data source* is one set of records (images, transitions, ...) with one or more label columns;
every task on the source predicts one column from the same features, so tasks on one source
reuse the same records (and share one privacy ledger). Sources are looked up by name in
:data:`SOURCES`; third-party packages add theirs through the ``privfed.sources`` entry point
group. Each factory is called as ``factory(seed=..., **params)``.

Built-ins:

* ``digits``: scikit-learn's bundled 8x8 digits (ships inside scikit-learn; no download).
* ``markov``: a generated per-owner Markov-chain language (:mod:`privfed.data.markov`).
* ``synthetic``: FedProx's Synthetic(alpha, beta) (:mod:`privfed.data.synthetic`).
* ``mnist``, ``cifar10``, ``leaf``: readers of a local directory (:mod:`privfed.data.loaders`).

privfed never downloads anything: a missing directory is a :class:`~privfed.errors.DataError`
that names the files expected.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from privfed.data import loaders, markov, synthetic
from privfed.errors import ConfigError, DataError, PrivfedError
from privfed.registry import Registry, callable_check
from privfed.rng import numpy_rng


@dataclass(frozen=True)
class SourceData:
    """Records of one data source and all of their label columns.

    Attributes:
        name: the source's registry name, e.g. ``"digits"``.
        x: features, float32 [N, *input_shape], already scaled; for sources whose inputs are
            token sequences (LEAF Shakespeare) int64 token ids, flagged by
            ``meta["input_kind"] == "token_ids"``.
        labels: label column -> int64 [N]; one column per task on this source. The first column
            is the source's primary label (the one partitioners use by default).
        num_classes: label column -> number of classes.
        owner: int64 [N] natural owner of each record (writer, generating owner, LEAF user) or
            None when the source has no natural owners.
        meta: provenance and source-specific facts (e.g. Bayes-optimal accuracies).
    """

    name: str
    x: np.ndarray
    labels: Mapping[str, np.ndarray]
    num_classes: Mapping[str, int]
    owner: np.ndarray | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = int(self.x.shape[0])
        if self.x.dtype not in (np.float32, np.int64):
            raise DataError(
                f"source {self.name!r}: x must be float32 (or int64 ids), got {self.x.dtype}"
            )
        if not self.labels:
            raise DataError(f"source {self.name!r} has no label column")
        if set(self.labels) != set(self.num_classes):
            raise DataError(
                f"source {self.name!r}: label columns {sorted(self.labels)} and num_classes keys "
                f"{sorted(self.num_classes)} differ"
            )
        for col, y in self.labels.items():
            if y.shape != (n,) or y.dtype != np.int64:
                raise DataError(
                    f"source {self.name!r}: label {col!r} must be int64 [{n}], "
                    f"got {y.dtype} {list(y.shape)}"
                )
            k = self.num_classes[col]
            if n and (y.min() < 0 or y.max() >= k):
                raise DataError(
                    f"source {self.name!r}: label {col!r} has values outside 0..{k - 1}"
                )
        if self.owner is not None and (self.owner.shape != (n,) or self.owner.dtype != np.int64):
            raise DataError(f"source {self.name!r}: owner must be int64 [{n}]")
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        object.__setattr__(self, "num_classes", MappingProxyType(dict(self.num_classes)))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one record's features."""
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def primary_label(self) -> str:
        """Name of the first label column (used for label-skew partitioning by default)."""
        return next(iter(self.labels))

    def __len__(self) -> int:
        return int(self.x.shape[0])


SourceFactory = Callable[..., SourceData]
"""``factory(*, seed: int, **params) -> SourceData``."""

SOURCES: Registry[SourceFactory] = Registry(
    "data source",
    entry_point_group="privfed.sources",
    check=callable_check("a data source factory"),
)


def load_source(name: str, *, seed: int, **params: Any) -> SourceData:
    """Build the data source ``name`` with ``params``.

    Args:
        name: a registered source name (see ``SOURCES.names()``).
        seed: the run's root seed; generated sources derive their stream from it by purpose
            ``"source:<name>"``; file loaders ignore it.
        **params: the source's parameters.

    Returns:
        The records and their label columns.

    Raises:
        ConfigError: an unknown parameter or an out-of-range value. Each problem starts with
            the bare parameter name (``"lam must be in [0, 1], got 1.5"``) so that a caller
            can prefix its config path (``groups.text.source_params.``).
        DataError: files are missing or malformed.
        RegistryError: no source is called ``name``.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    factory = SOURCES.get(name)
    sig = inspect.signature(factory)
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    if not accepts_any:
        allowed = [p for p in sig.parameters if p != "seed"]
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ConfigError(
                [
                    f"{p} is not a parameter of source {name!r}; allowed: "
                    f"{', '.join(allowed) or 'none'}"
                    for p in unknown
                ]
            )
        missing = [
            p.name
            for p in sig.parameters.values()
            if p.default is inspect.Parameter.empty
            and p.name != "seed"
            and p.name not in params
            and p.kind is not inspect.Parameter.VAR_POSITIONAL
        ]
        if missing:
            raise ConfigError([f"{p} is required by source {name!r}" for p in missing])
    try:
        data = factory(seed=seed, **params)
    except PrivfedError:
        raise
    except TypeError as exc:  # e.g. a string where a number belongs
        raise ConfigError(f"source {name!r} rejected its parameters {params}: {exc}") from exc
    if not isinstance(data, SourceData):
        raise DataError(f"source {name!r} returned {type(data).__name__}, not SourceData")
    return data


def _image_labels(digit: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Digit identity plus the derived parity and >=5 columns."""
    y = digit.astype(np.int64)
    labels = {"identity": y, "parity": y % 2, "ge5": (y >= 5).astype(np.int64)}
    return labels, {"identity": 10, "parity": 2, "ge5": 2}


def digits_source(*, seed: int) -> SourceData:
    """scikit-learn's bundled 8x8 digits: identity, parity and >=5 on the same images.

    1,797 images, float32 [N, 1, 8, 8] scaled from 0..16 to [0, 1]; no natural owners. The
    data ships inside the scikit-learn wheel (``sklearn.datasets.load_digits``); nothing is
    downloaded.

    Args:
        seed: unused (the data is fixed).
    """
    del seed
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)).astype(np.float32)
    x = x.reshape(-1, 1, 8, 8)
    labels, num_classes = _image_labels(np.asarray(bunch.target))
    return SourceData(
        name="digits",
        x=x,
        labels=labels,
        num_classes=num_classes,
        owner=None,
        meta={"provenance": "sklearn.datasets.load_digits (UCI optdigits test set, bundled)"},
    )


def markov_source(
    *,
    seed: int,
    vocab: int = 16,
    num_owners: int = 20,
    lam: float = 0.9,
    tokens_per_owner: int = 400,
    concentration: float = 0.3,
) -> SourceData:
    """Generated per-owner Markov-chain language: next token and next token group.

    Features are the one-hot previous token (float32 [N, vocab]); ``next`` has ``vocab``
    classes and ``next_group = next // 4`` has ``vocab // 4``. ``owner`` is the generating
    owner. ``meta["bayes_accuracy"][column]`` holds the ``personal`` and ``pooled``
    Bayes-optimal accuracies (means over owners) and their ``personal_per_owner`` /
    ``pooled_per_owner`` lists under the stationary distributions;
    ``meta["bayes_accuracy_empirical"]`` the same under the contexts actually generated.
    See :mod:`privfed.data.markov`.

    Args:
        seed: root seed (stream ``"source:markov"``).
        vocab: vocabulary size, a multiple of 4.
        num_owners: number of owners (natural clients).
        lam: weight of each owner's own chain, in [0, 1].
        tokens_per_owner: records per owner.
        concentration: Dirichlet concentration of the chains' rows.
    """
    rng = numpy_rng(seed, "source:markov")
    lang = markov.make_language(
        vocab=vocab, num_owners=num_owners, lam=lam, concentration=concentration, rng=rng
    )
    smp = markov.sample(lang, tokens_per_owner=tokens_per_owner, rng=rng)
    transitions = lang.transitions
    grouped = markov.group_columns(transitions)
    pis = np.stack([markov.stationary(transitions[k]) for k in range(num_owners)])
    emp = markov.empirical_context(smp, num_owners=num_owners, vocab=vocab)

    def summary(context: np.ndarray) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for col, table in (("next", transitions), ("next_group", grouped)):
            acc = markov.bayes_accuracy(table, context=context)
            out[col] = {
                "personal": acc.personal,
                "pooled": acc.pooled,
                "personal_per_owner": acc.personal_per_owner.tolist(),
                "pooled_per_owner": acc.pooled_per_owner.tolist(),
            }
        return out

    x = np.zeros((smp.prev.shape[0], vocab), dtype=np.float32)
    x[np.arange(smp.prev.shape[0]), smp.prev] = 1.0
    return SourceData(
        name="markov",
        x=x,
        labels={"next": smp.next, "next_group": smp.next // markov.GROUP_SIZE},
        num_classes={"next": vocab, "next_group": vocab // markov.GROUP_SIZE},
        owner=smp.owner,
        meta={
            "provenance": "generated: P_k = (1-lam) G + lam L_k, Dirichlet rows",
            "params": {
                "vocab": vocab,
                "num_owners": num_owners,
                "lam": lam,
                "tokens_per_owner": tokens_per_owner,
                "concentration": concentration,
            },
            "bayes_accuracy": summary(pis),
            "bayes_accuracy_empirical": summary(emp),
        },
    )


def synthetic_source(
    *,
    seed: int,
    alpha: float = 1.0,
    beta: float = 1.0,
    num_owners: int = 30,
    samples_per_owner: int | None = None,
    dim: int = 60,
    num_classes: int = 10,
) -> SourceData:
    """FedProx's Synthetic(alpha, beta) (Li et al. 2020): per-owner softmax-regression data.

    Args:
        seed: root seed (stream ``"source:synthetic"``).
        alpha: how much the owners' models differ (std of their mean).
        beta: how much the owners' inputs differ.
        num_owners: number of owners.
        samples_per_owner: fixed records per owner, or None for the paper's lognormal sizes
            (``int(lognormal(4, 2)) + 50``, capped at 1,000 here to bound memory).
        dim: input dimension (60 in the paper).
        num_classes: number of classes (10 in the paper).
    """
    rng = numpy_rng(seed, "source:synthetic")
    gen = synthetic.generate(
        alpha=alpha,
        beta=beta,
        num_owners=num_owners,
        samples_per_owner=samples_per_owner,
        dim=dim,
        num_classes=num_classes,
        rng=rng,
    )
    return SourceData(
        name="synthetic",
        x=gen.x.astype(np.float32),
        labels={"label": gen.y},
        num_classes={"label": num_classes},
        owner=gen.owner,
        meta={
            "provenance": "generated: FedProx Synthetic(alpha, beta), Li et al. 2020, Sec. 5.1",
            "params": {"alpha": alpha, "beta": beta, "num_owners": num_owners, "dim": dim},
        },
    )


def mnist_source(*, seed: int, path: str | Path, split: str = "all") -> SourceData:
    """MNIST from a local directory of IDX files (``train-*``, ``t10k-*``, optionally ``.gz``).

    Features are float32 [N, 1, 28, 28] in [0, 1]; labels ``identity``, ``parity``, ``ge5``.

    Args:
        seed: unused.
        path: directory holding the IDX files.
        split: ``"train"``, ``"test"`` or ``"all"`` (both, train first).
    """
    del seed
    arrays = loaders.read_mnist(Path(path), split=split)
    x = (arrays.x.astype(np.float32) / np.float32(255.0))[:, None, :, :]
    labels, num_classes = _image_labels(arrays.y)
    return SourceData(
        name="mnist",
        x=x.astype(np.float32),
        labels=labels,
        num_classes=num_classes,
        owner=None,
        meta={"provenance": f"local IDX files in {path}", "files": arrays.files},
    )


def cifar10_source(*, seed: int, path: str | Path, split: str = "all") -> SourceData:
    """CIFAR-10 from a local ``cifar-10-batches-py`` directory (verified, restricted unpickling).

    Features are float32 [N, 3, 32, 32] in [0, 1]; label ``identity`` (10 classes).

    Args:
        seed: unused.
        path: directory holding ``data_batch_1..5``, ``test_batch`` and ``batches.meta``.
        split: ``"train"``, ``"test"`` or ``"all"``.
    """
    del seed
    arrays = loaders.read_cifar10(Path(path), split=split)
    x = (arrays.x.astype(np.float32) / np.float32(255.0)).reshape(-1, 3, 32, 32)
    return SourceData(
        name="cifar10",
        x=x.astype(np.float32),
        labels={"identity": arrays.y},
        num_classes={"identity": 10},
        owner=None,
        meta={
            "provenance": f"local CIFAR-10 python batches in {path}",
            "files": arrays.files,
            "label_names": arrays.label_names,
        },
    )


def leaf_source(*, seed: int, path: str | Path) -> SourceData:
    """LEAF JSON (FEMNIST or Shakespeare) from a local directory; owner = LEAF user.

    FEMNIST gives float32 [N, 1, 28, 28] and label ``label`` (62 classes); Shakespeare gives
    int64 character ids [N, 80] (``meta["input_kind"] == "token_ids"``) and label ``next``.

    Args:
        seed: unused.
        path: directory searched recursively for ``*.json`` files.
    """
    del seed
    leaf = loaders.read_leaf(Path(path))
    meta: dict[str, Any] = {
        "provenance": f"local LEAF JSON in {path}",
        "files": leaf.files,
        "users": leaf.users,
        "kind": leaf.kind,
    }
    x: np.ndarray
    if leaf.kind == "text":
        meta["input_kind"] = "token_ids"
        meta["vocab"] = loaders.LEAF_CHARS
        column = "next"
        x = leaf.x.astype(np.int64)
    else:
        meta["input_kind"] = "features"
        column = "label"
        x = leaf.x.astype(np.float32).reshape(-1, 1, 28, 28)
    return SourceData(
        name="leaf",
        x=x,
        labels={column: leaf.y},
        num_classes={column: leaf.num_classes},
        owner=leaf.owner,
        meta=meta,
    )


SOURCES.register(
    "digits",
    digits_source,
    description=(
        "scikit-learn's bundled 8x8 digits; tasks identity, parity, ge5 on the same images"
    ),
)
SOURCES.register(
    "markov",
    markov_source,
    description=(
        "generated per-owner Markov-chain language; next token / next group, Bayes accuracy known"
    ),
)
SOURCES.register(
    "synthetic",
    synthetic_source,
    description=("FedProx Synthetic(alpha, beta): per-owner softmax regression, d=60, 10 classes"),
)
SOURCES.register(
    "mnist",
    mnist_source,
    description=("MNIST from local IDX files (path=); identity, parity, ge5; never downloads"),
)
SOURCES.register(
    "cifar10",
    cifar10_source,
    description=(
        "CIFAR-10 from local python batches (path=), read as data, never unpickled; never downloads"
    ),
)
SOURCES.register(
    "leaf",
    leaf_source,
    description=(
        "LEAF JSON (FEMNIST / Shakespeare) from a local directory (path=); owner = LEAF user"
    ),
)
