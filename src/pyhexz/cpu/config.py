"""Settings of the CPU player service (pyhexz.cpu.app), apart from the service itself so
that the `pyhexz` command line can make its `cpu-server` flags from them without loading Flask.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional


def _opt(default: Any, help: str, parse: Callable = str):
    return field(default=default, metadata={"help": help, "parse": parse})


@dataclass
class CpuServerConfig:
    """Settings of the CPU player service; each is the HEXZ_* variable of its upper-case name
    (model_path: HEXZ_MODEL_PATH) and the flag of `pyhexz cpu-server` (--model-path)."""

    model_path: Optional[str] = _opt(
        None, "the model: checkpoint or TorchScript file, checkpoints directory, storage "
        "directory or URL (gs://bucket/prefix); the newest checkpoint. None: rollout MCTS")
    model_name: Optional[str] = _opt(
        None, "model name: picks the model in a storage root and names the Redis keys")
    redis_url: Optional[str] = _opt(
        None, "follow a training run: load every checkpoint announced in this Redis")
    server_url: Optional[str] = _opt(
        None, "follow a training run through its training server (GET /models/latest)")
    auth_token: Optional[str] = _opt(
        None, "bearer token for the training server (prefer the variable: flags show in ps)")
    device: str = _opt("cpu", "torch device: cpu, cuda, cuda:1, mps")
    max_think_ms: int = _opt(10_000, "longest think time a request may ask for", int)
    default_think_ms: int = _opt(1_000, "think time of a request that asks for none (0)", int)
    max_iterations: int = _opt(0, "most simulations per request, 0: no cap", int)
    search_slots: int = _opt(8, "positions searched at once; more requests wait", int)
    leaves_per_round: int = _opt(8, "network leaves per position and round at most", int)
    max_tree_nodes: int = _opt(4_000_000, "search tree size cap per position (40 bytes per "
                               "node; grows by doubling)", int)
    think_margin_ms: int = _opt(5, "the search ends this much before the think time is up, "
                                "for the answer's way back", int)
    model_poll_seconds: float = _opt(30.0, "re-read the model pointer this often when "
                                     "following (pub/sub can miss messages)", float)

    def __post_init__(self) -> None:
        for name in ("max_think_ms", "default_think_ms", "search_slots", "leaves_per_round",
                     "max_tree_nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_iterations", "think_margin_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.model_poll_seconds <= 0:
            raise ValueError(f"model_poll_seconds must be > 0, got {self.model_poll_seconds}")
        if self.redis_url and not self.model_name:
            raise ValueError("following a Redis needs a model name (HEXZ_MODEL_NAME): it names "
                             "the Redis keys")

    @staticmethod
    def env_name(name: str) -> str:
        return "HEXZ_" + name.upper()

    @classmethod
    def from_env(cls, environ: Optional[dict] = None) -> "CpuServerConfig":
        """The settings from HEXZ_* variables; unset ones keep their defaults."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(cls.env_name(f.name))
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError:
                raise ValueError(f"{cls.env_name(f.name)}={raw!r} is not a valid "
                                 f"{f.metadata['parse'].__name__}") from None
        return cls(**values)


__all__ = ["CpuServerConfig"]
