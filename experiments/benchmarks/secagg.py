"""Benchmark: secure aggregation against a plain numpy sum and bare keystream, same run.

The logic lives in :mod:`privfed.secagg.bench` (``privfed bench secagg`` calls the same
``main``); this script is the entry point used by ``experiments/benchmarks/secagg.sh``.

Usage::

    python experiments/benchmarks/secagg.py --clients 100 --length 1048576 --graph complete
    python experiments/benchmarks/secagg.py --clients 1000 --length 262144 --graph harary \
        --dropout 0.1 --json results/secagg/harary_n1000_d10.json
"""

from __future__ import annotations

from privfed.secagg import bench


def main(argv: list[str] | None = None) -> int:
    """Run the secure-aggregation benchmark; see ``--help``."""
    return bench.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
