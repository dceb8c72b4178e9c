"""Named random streams derived from one root seed.

A run has one root seed. Every consumer of simulation randomness asks for a stream by purpose
and coordinates (round, client, task), so the numbers a client draws do not depend on which
other clients ran before it, on the backend, or on whether the run was resumed.

Cryptographic randomness (keys, masks, shares) never comes from here; see ``privfed.secagg``.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported when a generator is asked for, not with this module
    import torch


def _purpose_words(purpose: str) -> list[int]:
    digest = hashlib.sha256(purpose.encode("utf-8")).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def seed_sequence(root_seed: int, purpose: str, *coords: int) -> np.random.SeedSequence:
    """The SeedSequence for ``purpose`` at integer coordinates ``coords``.

    Args:
        root_seed: the run's seed (non-negative).
        purpose: a short label such as ``"partition"`` or ``"train"``.
        *coords: non-negative integers such as (round, client, task_index).
    """
    if root_seed < 0 or any(c < 0 for c in coords):
        raise ValueError("seeds and coordinates must be non-negative integers")
    return np.random.SeedSequence([root_seed, *_purpose_words(purpose), len(coords), *coords])


def numpy_rng(root_seed: int, purpose: str, *coords: int) -> np.random.Generator:
    """A numpy Generator for ``purpose`` at ``coords``."""
    return np.random.default_rng(seed_sequence(root_seed, purpose, *coords))


def int_seed(root_seed: int, purpose: str, *coords: int) -> int:
    """A 63-bit integer seed for ``purpose`` at ``coords`` (for torch generators)."""
    state = seed_sequence(root_seed, purpose, *coords).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def torch_generator(root_seed: int, purpose: str, *coords: int) -> torch.Generator:
    """A CPU torch.Generator for ``purpose`` at ``coords``."""
    import torch

    gen = torch.Generator()
    gen.manual_seed(int_seed(root_seed, purpose, *coords))
    return gen
