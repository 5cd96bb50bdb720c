"""`python -m pyhexz ...` is the `pyhexz` command (see pyhexz.cli)."""

import sys

from pyhexz.cli import main

sys.exit(main())
