"""Round time, throughput, start-up and memory on the serial, process and Ray backends.

Equivalent to ``privfed bench round``; see ``privfed/bench_round.py`` for the workloads and
what each figure measures, and ``round.sh`` for the exact commands behind
``docs/performance.md``.
"""

import sys

from privfed.bench_round import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
