"""The training server's settings (`pyhexz server` flags, HEXZ_* variables under gunicorn)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pyhexz.infra.storage import validate_model_name
from pyhexz.train.trainer import TrainConfig


@dataclass
class ServerConfig:
    model_name: str = "flagz"
    storage: str = "runs/server"          # a directory or gs://bucket/prefix
    state_dir: Optional[str] = None       # the WAL; default {storage}/wal/{model_name} (local only)
    redis_url: Optional[str] = None
    auth_token: Optional[str] = None
    device: str = "cpu"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(trigger_examples=4096))
    max_model_age: int = 5                # accept examples of checkpoints >= latest - this
    max_pending: Optional[int] = None     # untrained examples held; default 8 minibatches
    max_request_bytes: int = 32 << 20     # request body, and the body after gunzip
    segment_bytes: int = 64 << 20         # WAL segment size
    startup_wait_seconds: float = 10.0    # how long a request waits for a starting trainer
    redis_sync_seconds: float = 10.0      # how often Redis is checked for the latest model
    trainer_nice: int = 10                # the trainer thread's nice increment (Linux)
    # Matches per new checkpoint for the web UI (evaluation.py). Off unless asked for: the
    # `pyhexz server` flag defaults to 8 openings; library users and tests opt in.
    eval_openings: int = 0
    eval_runs: int = 64
    play_seconds: float = 1.0             # think time of the web UI's Play opponents

    def __post_init__(self) -> None:
        validate_model_name(self.model_name)
        if self.eval_openings < 0 or self.eval_runs < 1 or not self.play_seconds > 0:
            raise ValueError("eval_openings must be >= 0, eval_runs >= 1, play_seconds > 0")
        if self.max_model_age < 0:
            raise ValueError(f"max_model_age must be >= 0, got {self.max_model_age}")
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
