"""The 2023 command form, kept working: `python3 -m pyhexz.hexz --mode=selfplay --model=...`.

`--mode=NAME` picks the subcommand of `pyhexz` (pyhexz.cli); every other flag is passed on.
`--help` without a mode prints this form's usage and then pyhexz's full help (the commands);
`--mode=NAME --help` the command's flags.
"""

import sys
from collections.abc import Sequence

from pyhexz.cli import build_parser
from pyhexz.cli import main as cli_main

USAGE = "usage: python -m pyhexz.hexz --mode=selfplay|train|arena|export [flags]"


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
        if "-h" in rest or "--help" in rest:
            print(USAGE + "\n(--mode=NAME is the command NAME of `pyhexz`; "
                  "--mode=NAME --help lists its flags)\n")
            build_parser().print_help()
            return 0
        print(USAGE, file=sys.stderr)
        return 2
    return cli_main([mode] + rest)


if __name__ == "__main__":
    sys.exit(main())
