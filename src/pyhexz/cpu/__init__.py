"""The remote CPU player: the HTTP endpoint the hexz Go game server asks for a move.

    app.py     the Flask app; gunicorn runs 'pyhexz.cpu:create_app()' (the older names
               'pyhexz.server:create_app()' of 2023 and 'pyhexz.cpu_server:create_app()' work too)
    player.py  the served model and the search thread
    config.py  CpuServerConfig
"""

from typing import Any


def __getattr__(name: str) -> Any:
    # create_app lives in app.py, which imports Flask and torch; the CLI reads CpuServerConfig
    # for `pyhexz cpu-server --help` without paying for that.
    if name == "create_app":
        from pyhexz.cpu.app import create_app
        return create_app
    raise AttributeError(f"module 'pyhexz.cpu' has no attribute {name!r}")


__all__ = ["create_app"]
