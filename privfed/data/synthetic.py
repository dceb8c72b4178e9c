"""FedProx's Synthetic(alpha, beta) generator of non-IID softmax-regression data.

Li et al. 2020, "Federated Optimization in Heterogeneous Networks", Sec. 5.1, following
Shamir et al. 2014.

For each owner ``k``:

* model: ``u_k ~ N(0, alpha)``, ``W_k[i, j] ~ N(u_k, 1)``, ``b_k[i] ~ N(u_k, 1)``;
* inputs: ``B_k ~ N(0, beta)``, ``v_k[j] ~ N(B_k, 1)``, ``x ~ N(v_k, Sigma)`` with
  ``Sigma`` diagonal, ``Sigma[j, j] = j ** -1.2`` (1-based ``j``);
* label: ``y = argmax(softmax(W_k x + b_k))``.

``alpha`` controls how much the owners' models differ and ``beta`` how much their inputs differ.
As in the FedProx reference code, the second argument of ``N(., .)`` is used as the standard
deviation. Sizes per owner follow the reference code (``int(lognormal(4, 2)) + 50``), capped
here at ``max_samples`` to bound memory, or are fixed.

Caveat (checked in the tests): ``u_k`` adds the same amount ``u_k * (sum(x) + 1)`` to every
logit of owner ``k``, so it never changes the argmax. Given the other draws, ``alpha`` does not
change a single label; the owners' label mixes differ because each owner has its own
independent ``W_k`` and ``b_k`` (at any ``alpha``) and because ``beta`` moves their inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privfed.errors import ConfigError


@dataclass(frozen=True)
class SyntheticData:
    """Generated records.

    Attributes:
        x: float64 [N, dim] inputs.
        y: int64 [N] labels.
        owner: int64 [N] owner of each record.
        weights: float64 [K, dim, num_classes] each owner's ``W_k``.
        biases: float64 [K, num_classes] each owner's ``b_k``.
    """

    x: np.ndarray
    y: np.ndarray
    owner: np.ndarray
    weights: np.ndarray
    biases: np.ndarray


def generate(
    *,
    alpha: float,
    beta: float,
    num_owners: int,
    rng: np.random.Generator,
    samples_per_owner: int | None = None,
    dim: int = 60,
    num_classes: int = 10,
    max_samples: int = 1000,
) -> SyntheticData:
    """Draw Synthetic(alpha, beta).

    Args:
        alpha: std of each owner's model mean ``u_k``, >= 0.
        beta: std of each owner's input mean ``B_k``, >= 0.
        num_owners: number of owners, >= 1.
        rng: source of randomness.
        samples_per_owner: fixed records per owner (>= 1), or None for lognormal sizes.
        dim: input dimension, >= 1.
        num_classes: number of classes, >= 2.
        max_samples: cap on lognormal sizes, >= 50.

    Returns:
        The records and each owner's true model.
    """
    problems = []
    if not alpha >= 0:
        problems.append(f"alpha must be >= 0, got {alpha}")
    if not beta >= 0:
        problems.append(f"beta must be >= 0, got {beta}")
    if num_owners < 1:
        problems.append(f"num_owners must be >= 1, got {num_owners}")
    if samples_per_owner is not None and samples_per_owner < 1:
        problems.append(f"samples_per_owner must be >= 1 or None, got {samples_per_owner}")
    if dim < 1:
        problems.append(f"dim must be >= 1, got {dim}")
    if num_classes < 2:
        problems.append(f"num_classes must be >= 2, got {num_classes}")
    if max_samples < 50:
        problems.append(f"max_samples must be >= 50, got {max_samples}")
    if problems:
        raise ConfigError(problems)
    if samples_per_owner is None:
        sizes = np.minimum(rng.lognormal(4, 2, num_owners).astype(np.int64) + 50, max_samples)
    else:
        sizes = np.full(num_owners, samples_per_owner, dtype=np.int64)
    sigma_sd = np.arange(1, dim + 1, dtype=np.float64) ** (-1.2 / 2)
    u = rng.normal(0.0, alpha, num_owners)
    big_b = rng.normal(0.0, beta, num_owners)
    weights = rng.normal(u[:, None, None], 1.0, (num_owners, dim, num_classes))
    biases = rng.normal(u[:, None], 1.0, (num_owners, num_classes))
    xs, ys = [], []
    for k in range(num_owners):
        v = rng.normal(big_b[k], 1.0, dim)
        x = v + sigma_sd * rng.standard_normal((int(sizes[k]), dim))
        xs.append(x)
        ys.append(np.argmax(x @ weights[k] + biases[k], axis=1).astype(np.int64))
    return SyntheticData(
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        owner=np.repeat(np.arange(num_owners, dtype=np.int64), sizes),
        weights=weights,
        biases=biases,
    )
