"""The training server's settings (`pyhexz server` flags, HEXZ_* variables under gunicorn;
both made from the dataclass by pyhexz.infra.config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pyhexz.infra.config import FromEnv, above, at_least, backend_setting, check_settings, setting
from pyhexz.infra.storage import validate_model_name
from pyhexz.train.config import TrainConfig


@dataclass
class ServerConfig(FromEnv):
    """`ServerConfig.from_env()`: the settings the `pyhexz server` flags would give, from their
    HEXZ_* variables (gunicorn's create_app())."""

    model_name: str = setting("flagz", "model name (a plain name)")
    storage: str = setting("runs/server", "checkpoints: a directory or gs://bucket/prefix")
    state_dir: str | None = setting(
        None, "write-ahead log directory, on a local persistent disk (default "
        "STORAGE/wal/NAME; required with gs:// storage)")
    redis_url: str | None = setting(None, "publish models and announcements to this Redis")
    auth_token: str | None = setting(
        None, "require 'Authorization: Bearer TOKEN' (prefer the environment variable: flags "
        "show in ps)")
    device: str = setting("cpu", "torch device: cpu, cuda, cuda:1, mps")
    backend: str = backend_setting()
    train: TrainConfig = field(default_factory=lambda: TrainConfig(trigger_examples=4096))
    max_model_age: int = setting(5, "accept examples from the latest checkpoint and this many "
                                 "before it", check=at_least(0))
    max_pending: int | None = setting(None, "untrained examples held before "
                                         "REJECTED_AT_CAPACITY (none: 8 minibatches)",
                                         check=at_least(1))
    max_request_bytes: int = setting(32 << 20, "request body limit, also after gunzip",
                                     check=at_least(1))
    segment_bytes: int = setting(64 << 20, "size of a write-ahead log segment (preallocated)",
                                 flag="--wal-segment-bytes", check=at_least(1))
    startup_wait_seconds: float = 10.0    # how long a request waits for a starting trainer
    redis_sync_seconds: float = 10.0      # how often Redis is checked for the latest model
    trainer_nice: int = setting(10, "nice increment of the trainer thread, so that answering "
                                "requests comes first (0: none)")
    # Matches per new checkpoint for the web UI (evaluation.py). Off unless asked for: the
    # `pyhexz server` flag (and gunicorn's variable) defaults to 8 openings; library users and
    # tests opt in.
    eval_openings: int = setting(
        0, "after each checkpoint, a match over this many fixture openings (x2 seats) against "
        "the previous one and rollout MCTS, for the web UI's Elo curve, in a background "
        "process; 0: off", check=at_least(0), command_default=8)
    eval_runs: int = setting(64, "simulations per move in those matches (the rollout baseline "
                             "gets 200)", check=at_least(1))
    play_seconds: float = setting(1.0, "think time per move of the web UI's Play page "
                                  "opponents", check=above(0))

    def __post_init__(self) -> None:
        check_settings(self)
        validate_model_name(self.model_name)
        if self.max_pending is None:
            self.max_pending = 8 * self.train.trigger_examples
        if self.max_pending < self.train.trigger_examples:
            raise ValueError(f"max_pending ({self.max_pending}) must be at least the minibatch "
                             f"size ({self.train.trigger_examples}), or training never starts")
        if self.state_dir is None:
            if str(self.storage).startswith("gs://"):
                raise ValueError("with gs:// storage, set --state-dir (HEXZ_STATE_DIR) to a "
                                 "local persistent directory for the write-ahead log")
            self.state_dir = str(Path(self.storage) / "wal" / self.model_name)
