"""Which optional extra of pyhexz a missing third-party module comes from.

The core install (`pip install pyhexz`) is what `train`, `selfplay`, `arena` and `export` need;
the services import their dependencies (Flask, Redis, ...) only when they run. When one is
missing, the command should say in one line which extra to install instead of ending in a
traceback: `missing_extra_message` turns the ModuleNotFoundError into that line.
"""

from __future__ import annotations

# Top-level module -> the extras of pyproject.toml that install it (the first is named unless
# the command's own extra is among them).
_MODULE_EXTRAS = {
    "flask": ("server",),
    "werkzeug": ("server",),
    "gunicorn": ("server",),
    "prometheus_client": ("server",),
    "redis": ("worker", "server"),
    "requests": ("worker", "server"),
    "google.cloud": ("gcs",),
    "google.api_core": ("gcs",),
    "google.auth": ("gcs",),
}

# The extra each service command is installed with.
_COMMAND_EXTRA = {"server": "server", "cpu-server": "server", "worker": "worker"}


def extras_for_module(module: str) -> tuple[str, ...]:
    """The extras that provide `module` (a dotted name); empty for a module pyhexz does not
    install optionally."""
    for prefix, extras in _MODULE_EXTRAS.items():
        if module == prefix or module.startswith(prefix + "."):
            return extras
    return ()


def missing_extra_message(exc: ModuleNotFoundError, command: str | None = None) -> str | None:
    """One line naming the extra to install for `exc`, or None when the missing module is not
    one of pyhexz's optional dependencies (then the error is a real bug: let it propagate)."""
    module = exc.name or ""
    extras = extras_for_module(module)
    if not extras:
        return None
    own = _COMMAND_EXTRA.get(command or "")
    extra = own if own in extras else extras[0]
    who = f"pyhexz {command}" if command else "pyhexz"
    return f"{who}: error: needs {module!r}, which is not installed: pip install 'pyhexz[{extra}]'"
