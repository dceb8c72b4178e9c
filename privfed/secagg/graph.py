"""Who shares masks and secrets with whom.

* ``complete``: every pair of clients (Bonawitz et al. 2017).
* ``harary``: the k-regular Harary graph H_(k,n) over a pseudo-random permutation of the clients
  (Bell et al. 2020, Sec. 3: random k-regular communication graph with k = O(log n)). The
  permutation sorts clients by SHA-256(session || id), so every party computes the same graph
  from the session id without trusting the server to choose it.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from functools import lru_cache
from types import MappingProxyType


def complete_graph(ids: Iterable[int]) -> dict[int, frozenset[int]]:
    """Every client is a neighbour of every other."""
    members = frozenset(ids)
    return {c: members - {c} for c in members}


def harary_graph(ids: Iterable[int], *, degree: int, session: bytes) -> dict[int, frozenset[int]]:
    """The Harary graph H_(degree, n) over a session-keyed permutation of ``ids``.

    Position ``i`` is joined to positions ``i +- 1 .. i +- floor(degree/2)`` (mod n); for odd
    ``degree`` also to ``i + n/2`` (n even) or, for odd n, the standard Harary construction's
    diameter edges, which leave one vertex with degree + 1.
    """
    order = sorted(ids, key=lambda c: hashlib.sha256(session + struct.pack(">I", c)).digest())
    n = len(order)
    if degree >= n - 1:
        return complete_graph(order)
    adj: dict[int, set[int]] = {c: set() for c in order}

    def link(i: int, j: int) -> None:
        a, b = order[i % n], order[j % n]
        if a != b:
            adj[a].add(b)
            adj[b].add(a)

    half = degree // 2
    for i in range(n):
        for d in range(1, half + 1):
            link(i, i + d)
    if degree % 2:
        if n % 2 == 0:
            for i in range(n // 2):
                link(i, i + n // 2)
        else:
            for i in range((n + 1) // 2):
                link(i, i + (n - 1) // 2)
    return {c: frozenset(v) for c, v in adj.items()}


def build_graph(
    ids: Iterable[int], *, kind: str, degree: int, session: bytes
) -> Mapping[int, frozenset[int]]:
    """The communication graph of ``kind`` over ``ids`` (open neighbourhoods).

    The result is a pure function of its arguments and is cached, so a simulation in which
    every party derives the same graph builds it once. Do not mutate it.
    """
    return _cached_graph(tuple(sorted(ids)), kind, degree, session)


@lru_cache(maxsize=8)
def _cached_graph(
    ids: tuple[int, ...], kind: str, degree: int, session: bytes
) -> Mapping[int, frozenset[int]]:
    if kind == "complete":
        return MappingProxyType(complete_graph(ids))
    if kind == "harary":
        return MappingProxyType(harary_graph(ids, degree=degree, session=session))
    raise ValueError(f"unknown graph kind {kind!r}; use 'complete' or 'harary'")
