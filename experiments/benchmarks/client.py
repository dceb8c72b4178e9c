"""Local DP training: privfed's per-participation loop vs a bare Opacus loop (same run).

Equivalent to ``privfed bench client``; see ``privfed/bench.py`` for what each side does.
"""

import sys

from privfed.bench import client_main

if __name__ == "__main__":
    sys.exit(client_main(sys.argv[1:]))
