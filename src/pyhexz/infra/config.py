"""Settings: one declaration per setting, giving its command-line flag, its HEXZ_* variable,
its help text and its validation.

A config dataclass declares its settings with `setting()`:

    @dataclass
    class SearchConfig:
        runs_per_move: int = setting(800, "MCTS simulations per move", check=at_least(1))

        def __post_init__(self) -> None:
            check_settings(self)

and from that alone

- `ConfigParser.add_config(SearchConfig)` adds the flag `--runs-per-move` (the field name,
  dashes for underscores; `flag=` where it differs) whose default is HEXZ_RUNS_PER_MOVE when
  set (HEXZ_ + the flag, upper case; `env=` where it differs), and after parsing puts the
  SearchConfig built from the flags on the namespace;
- `from_env(SearchConfig)` builds it from the variables alone, for processes that have no
  command line (gunicorn);
- `environ_for(config)` gives the variables that make `from_env` rebuild a config (the CLI
  hands its settings to gunicorn that way).

A field whose type is a config dataclass is nested: its settings are flags of the same
command (ServerConfig.train's --blocks), and the parent's default for it sets their defaults
(LocalConfig's train runs 100 simulations a move, WorkerConfig's 800). `command_default=` is
the default of the flag and variable where it differs from the dataclass's own (which library
callers and tests get). A boolean is a store_true flag: `--json` for a default of False,
`--no-augment` for augment=True. An empty variable leaves a text or optional setting at its
default (a compose file writes `HEXZ_REDIS_URL: ""` for none); a number or switch must parse.

A bad value (flag or variable) is argparse's one-line usage error and exit 2; a ValueError of
the dataclass itself (a field's check, or __post_init__ relating settings) is that error too.
Validation lives in the dataclass only: the flags run the same field checks.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING
from typing import Any

_KEY = "pyhexz.setting"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


# --------------------------------------------------------------------------
# Declaring settings
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Check:
    """A condition a setting's value must meet; None (an optional setting unset) always does."""

    test: Callable[[Any], bool]
    wants: str    # what the message says a value must be: ">= 1"

    def __call__(self, name: str, value: Any) -> None:
        if value is not None and not self.test(value):
            raise ValueError(f"{name} must be {self.wants}, got {value}")


def at_least(n: float) -> Check:
    return Check(lambda v: v >= n, f">= {n}")


def above(n: float) -> Check:
    return Check(lambda v: v > n, f"> {n}")


@dataclasses.dataclass(frozen=True)
class Setting:
    """What `setting()` stores in a field's metadata."""

    help: str
    parse: Callable[[str], Any] | None   # text -> value; None: from the field's type
    flag: str | None                      # e.g. "--minibatch-size"; None: from the name
    env: str | None                       # e.g. "HEXZ_AUTH_TOKEN"; None: from the flag
    check: Check | None
    positional: bool
    command_default: Any


def setting(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING,
            parse: Callable[[str], Any] | None = None, flag: str | None = None,
            env: str | None = None, check: Check | None = None,
            positional: bool = False, command_default: Any = MISSING) -> Any:
    """A dataclass field that is a setting: a flag of the commands that use its dataclass, and a
    HEXZ_* variable. No default: required (positional=True: a positional argument, which has
    no variable). `parse` turns the text into the value (default: the field's type; 'all' for
    None is `plies`); `check` is the field's validation, run by check_settings and on every
    flag and variable. The help of a True boolean describes its --no- flag."""
    meta = {_KEY: Setting(help, parse, flag, env, check, positional, command_default)}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def check_settings(config: Any) -> None:
    """Runs every field check of a config dataclass (call it first in __post_init__)."""
    for f in dataclasses.fields(config):
        s = f.metadata.get(_KEY)
        if s is not None and s.check is not None:
            s.check(f.name, getattr(config, f.name))


def plies(text: str) -> int | None:
    """A ply count, or 'all' (None): for SearchConfig.sample_plies."""
    return None if text == "all" else int(text)


# The inference backends (pyhexz.nn.backends), named here so that configs need no torch.
BACKENDS = ("auto", "torch", "onnx", "int8")


def backend_setting() -> Any:
    """The --backend setting (HEXZ_BACKEND), declared once for every config that plays: it sits
    beside each `device`. `auto` on the command line; library callers and tests get torch,
    the reference."""
    return setting("torch", "inference backend: auto (the fastest one exact enough, measured "
                   "at start-up), torch, onnx (onnxruntime), int8 (onnxruntime, quantized)",
                   check=Check(lambda v: v in BACKENDS, "one of " + ", ".join(BACKENDS)),
                   command_default="auto")


# --------------------------------------------------------------------------
# The settings of a dataclass tree, flattened
# --------------------------------------------------------------------------


class _NotParsed(ValueError):
    """A text that the setting's parser does not accept."""


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting of a config, nested ones included, as its command sees it."""

    path: tuple[str, ...]       # field names from the root config: ("train", "seed")
    setting: Setting
    parse: Callable[[str], Any]
    kind: str                   # what a value is, for messages: "int"
    optional: bool              # None is a value (unset)
    negated: bool               # a True default, so the flag switches it off: --no-augment
    default: Any                # the flag's value when not given; MISSING: required

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def flag(self) -> str:
        if self.setting.positional:
            return self.name
        prefix = "--no-" if self.negated else "--"
        return self.setting.flag or prefix + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str | None:
        if self.setting.positional:
            return None
        return self.setting.env or "HEXZ_" + self.dest.upper()

    @property
    def switch(self) -> bool:
        return self.parse is parse_bool

    def field_value(self, flag_value: Any) -> Any:
        return (not flag_value) if self.negated else flag_value

    def from_text(self, text: str) -> Any:
        """The flag's value for a text; _NotParsed or the field check's ValueError if bad."""
        if text == "" and not self.switch and (self.optional or self.parse is str):
            return None if self.default is MISSING else self.default
        try:
            value = self.parse(text)
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            raise _NotParsed(f"not a valid {self.kind}") from None
        if self.setting.check is not None:
            self.setting.check(self.name, self.field_value(value))
        return value


def parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in _TRUE or t in _FALSE:
        return t in _TRUE
    raise ValueError(text)


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """(X, True) for Optional[X] and X | None; (hint, False) otherwise."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else hint), True
    return hint, False


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _is_config(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def options(cls: type, base: Any = None, _path: tuple[str, ...] = ()) -> list[Option]:
    """The settings of a config dataclass and the configs nested in it. `base`: an instance
    whose values are the defaults (a parent's default for a nested config)."""
    hints = typing.get_type_hints(cls)
    out: list[Option] = []
    for f in dataclasses.fields(cls):
        hint, optional = _unwrap_optional(hints[f.name])
        s = f.metadata.get(_KEY)
        if s is None and _is_config(hint):
            nested_base = getattr(base, f.name) if base is not None else _field_default(f)
            out += options(hint, None if nested_base is MISSING else nested_base,
                           _path + (f.name,))
            continue
        if s is None:
            continue   # an internal field, not a setting
        if base is not None:
            default = getattr(base, f.name)
        elif s.command_default is not MISSING:
            default = s.command_default
        else:
            default = _field_default(f)
        parse = s.parse or (parse_bool if hint is bool else hint)
        if not callable(parse):
            raise TypeError(f"{cls.__name__}.{f.name}: give parse= for type {hint}")
        negated = hint is bool and default is True
        out.append(Option(
            path=_path + (f.name,), setting=s, parse=parse,
            kind="switch (1, true, yes, on; 0, false, no, off)" if parse is parse_bool
            else getattr(parse, "__name__", "value"), optional=optional or default is None,
            negated=negated, default=(not default) if negated else default))
    return out


def _build(cls: type, values: Mapping[tuple[str, ...], Any], base: Any = None) -> Any:
    """The config from field values by path (nested configs from their part of `values`)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        hint, _ = _unwrap_optional(hints[f.name])
        if f.metadata.get(_KEY) is None and _is_config(hint):
            part = {p[1:]: v for p, v in values.items() if p[0] == f.name}
            if part:
                nested_base = getattr(base, f.name) if base is not None else _field_default(f)
                kwargs[f.name] = _build(hint, part, None if nested_base is MISSING else nested_base)
        elif (f.name,) in values:
            kwargs[f.name] = values[(f.name,)]
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def _required(o: Option) -> str:
    return f"{o.flag} (or {o.env}) is required" if o.env else f"{o.flag} is required"


# --------------------------------------------------------------------------
# Processes without a command line
# --------------------------------------------------------------------------


def from_env(cls: type, environ: Mapping[str, str] | None = None) -> Any:
    """The config from HEXZ_* variables alone, with the defaults its flags have; unset ones keep
    them. ValueError names the variable of a bad value."""
    environ = os.environ if environ is None else environ
    values = {}
    for o in options(cls):
        raw = environ.get(o.env) if o.env else None
        if raw is None:
            value = o.default
        else:
            try:
                value = o.from_text(raw)
            except _NotParsed:
                raise ValueError(f"{o.env}={raw!r} is not a valid {o.kind}") from None
            except ValueError as e:
                raise ValueError(f"{o.env}={raw!r}: {e}") from None
        if value is MISSING or (value is None and o.default is MISSING):
            raise ValueError(f"{o.env or o.flag} is required")
        values[o.path] = o.field_value(value)
    return _build(cls, values)


def environ_for(config: Any) -> dict[str, str | None]:
    """The HEXZ_* variables from which `from_env` builds this config again: name -> text, or
    None for a variable that must be unset (a setting that is None)."""
    out: dict[str, str | None] = {}
    for o in options(type(config)):
        if o.env is None:
            continue
        value = config
        for name in o.path:
            value = getattr(value, name)
        if value is None:
            out[o.env] = None
        elif o.switch:
            out[o.env] = "1" if o.field_value(value) else "0"
        else:
            out[o.env] = str(value)
    return out


class FromEnv:
    """Mixin of a config dataclass read from the environment (`ServerConfig.from_env()`)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None):
        return from_env(cls, environ)


# --------------------------------------------------------------------------
# Command lines
# --------------------------------------------------------------------------


def _shown(value: Any) -> str:
    if value is MISSING:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


class ConfigParser(argparse.ArgumentParser):
    """An ArgumentParser whose flags come from config dataclasses (`add_config`); parsing puts
    the built configs on the namespace. Use it as the parser_class of subparsers too."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._configs: list[tuple[str, type, list[Option]]] = []
        # Bad HEXZ_* values, said when this parser's command is the one run: a variable
        # meant for `worker` must not be blamed on `train`, nor stop `arena`.
        self._env_errors: list[str] = []

    def add_config(self, cls: type, dest: str = "config") -> list[Option]:
        """Adds the flags of a config dataclass; after parsing, namespace.<dest> is the config."""
        opts = options(cls)
        for o in opts:
            self._add_option(o)
        self._configs.append((dest, cls, opts))
        return opts

    def _add_option(self, o: Option) -> None:
        default = o.default
        raw = os.environ.get(o.env) if o.env else None
        if raw is not None:
            try:
                default = o.from_text(raw)
            except ValueError as e:
                self._env_errors.append(f"{o.env}={raw!r} is not a valid value for {o.flag}: {e}")
        text = o.setting.help.replace("%", "%%")
        text += f" (default: {_shown(default)})"
        if o.env:
            text += f" [{o.env}]"
        if o.setting.positional:
            self.add_argument(o.flag, type=self._parser_for(o), help=text)
        elif o.switch:
            self.add_argument(o.flag, dest=o.dest, action="store_true", default=default, help=text)
        else:
            self.add_argument(o.flag, dest=o.dest, type=self._parser_for(o), help=text,
                              default=None if default is MISSING else default,
                              metavar=o.dest.upper())

    @staticmethod
    def _parser_for(o: Option) -> Callable[[str], Any]:
        def parse(text: str) -> Any:
            try:
                return o.from_text(text)
            except _NotParsed:
                raise argparse.ArgumentTypeError(f"{text!r} is not a valid {o.kind}") from None
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
        parse.__name__ = o.kind
        return parse

    def parse_known_args(  # type: ignore[override]
            self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        if self._env_errors:
            self.error(self._env_errors[0])
        ns, rest = super().parse_known_args(args, namespace)
        for dest, cls, opts in self._configs:
            values = {}
            for o in opts:
                value = getattr(ns, o.dest)
                if value is None and o.default is MISSING:
                    self.error(_required(o))
                values[o.path] = o.field_value(value)
            try:
                setattr(ns, dest, _build(cls, values))
            except ValueError as e:
                self.error(str(e))
        return ns, rest


__all__ = ["BACKENDS", "Check", "ConfigParser", "FromEnv", "Option", "Setting", "above",
           "at_least", "backend_setting", "check_settings", "environ_for", "from_env", "options",
           "parse_bool", "plies", "setting"]
