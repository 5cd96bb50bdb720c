"""`python -m pyhexz ...` and the `pyhexz` console script: pyhexz.cli, plus one clear line
(not a traceback) when a command needs an optional extra that is not installed."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named in `argv` (the first argument that is one), for the message."""
    try:
        from pyhexz.cli import build_parser

        parser = build_parser()
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        names = set(sub.choices or ())
    except Exception:   # the parser itself needs the missing module: the services' names
        names = {"server", "cpu-server", "worker"}
    return next((a for a in argv if a in names), None)


def main(argv: Sequence[str] | None = None) -> int:
    from pyhexz.cli import main as cli_main
    from pyhexz.infra.extras import missing_extra_message

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return cli_main(args)
    except ModuleNotFoundError as e:
        message = missing_extra_message(e, _command(args))
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
