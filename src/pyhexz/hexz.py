"""The 2023 command form, kept working: `python3 -m pyhexz.hexz --mode=selfplay --model=...`.

`--mode=NAME` picks the subcommand of `pyhexz` (pyhexz.cli); every other flag is passed on.
"""

import sys
from collections.abc import Sequence

from pyhexz.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    mode = None
    rest = []
    it = iter(argv)
    for arg in it:
        if arg.startswith("--mode="):
            mode = arg.split("=", 1)[1]
        elif arg == "--mode":
            mode = next(it, None)
        else:
            rest.append(arg)
    if not mode:
        print("usage: python -m pyhexz.hexz --mode=selfplay|train|arena|export [flags]",
              file=sys.stderr)
        return 2
    return cli_main([mode] + rest)


if __name__ == "__main__":
    sys.exit(main())
