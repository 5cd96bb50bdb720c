"""`python -m pyhexz ...` and the `pyhexz` console script: the command line of pyhexz.cli."""

import sys

from pyhexz.cli import main

if __name__ == "__main__":
    sys.exit(main())
