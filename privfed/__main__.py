"""``python -m privfed ...``: the same command line as the ``privfed`` console script."""

import sys

from privfed.cli import main

if __name__ == "__main__":
    sys.exit(main())
