"""Data for privfed: offline sources (bundled, generated, local files) and non-IID partitioners.

Start with :func:`load_source` (``SOURCES`` lists what exists) and a partitioner from
``PARTITIONERS`` (or :func:`run_partitioner`, which also checks parameters and the result).
"""

from __future__ import annotations

from privfed.data.partition import (
    PARTITIONERS,
    ClientSplit,
    Partitioner,
    assign_groups,
    check_partition,
    partition_hash,
    run_partitioner,
    split_client,
)
from privfed.data.sources import SOURCES, SourceData, SourceFactory, load_source

__all__ = [
    "PARTITIONERS",
    "SOURCES",
    "ClientSplit",
    "Partitioner",
    "SourceData",
    "SourceFactory",
    "assign_groups",
    "check_partition",
    "load_source",
    "partition_hash",
    "run_partitioner",
    "split_client",
]
