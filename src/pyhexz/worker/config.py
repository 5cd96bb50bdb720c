"""The worker's settings (`pyhexz worker` flags, HEXZ_* variables in the Cloud Run job).

Apart from the run (job.py), which imports torch and redis, so that the command line can build
its flags from them without loading either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyhexz.infra.config import above, at_least, backend_setting, check_settings, setting
from pyhexz.infra.storage import validate_model_name
from pyhexz.search.driver import SearchConfig


@dataclass
class WorkerConfig:
    server_url: str = setting(help="training server, e.g. http://10.0.0.2:8080")
    redis_url: str | None = setting(None, "Redis with the models (optional; else the server "
                                       "serves them)")
    model_name: str | None = setting(None, "model to play for (required with --redis-url; "
                                        "else learnt from the server)")
    max_seconds: float | None = setting(None, "time budget of the task, uploads included",
                                           check=above(0))
    parallel_games: int = setting(32, "games each process plays at once (the network's batch "
                                  "size)", check=at_least(1))
    search: SearchConfig = field(default_factory=SearchConfig)
    device: str = setting("cpu", "torch device: cpu, cuda, cuda:1, mps")
    backend: str = backend_setting()
    auth_token: str | None = setting(None, "bearer token the training server expects")
    num_workers: int = setting(1, "self-play processes", check=at_least(1))
    grace_seconds: float = setting(8.0, "time to send finished games after SIGTERM or before "
                                   "--max-seconds", check=above(0))
    model_poll_seconds: float = setting(30.0, "re-read the latest model this often (pub/sub may "
                                        "miss announcements)", check=above(0))
    progress_seconds: float = setting(60.0, "progress log interval", check=above(0))
    upload_buffer: int = setting(64, "finished games held while the server is unreachable",
                                 check=at_least(1))
    seed: int | None = setting(None, "random seed (default: fresh entropy)")
    # time.monotonic() when the budget began (the CLI's start, shared by its processes);
    # None: when run_worker is called.
    started: float | None = None

    def __post_init__(self) -> None:
        check_settings(self)
        if self.redis_url and not self.model_name:
            raise ValueError("a model name is required with a Redis URL (it names the Redis keys)")
        if self.model_name:
            validate_model_name(self.model_name)
        if self.max_seconds is not None and self.max_seconds <= self.grace_seconds:
            raise ValueError(f"max_seconds ({self.max_seconds}) must be longer than the "
                             f"grace period ({self.grace_seconds} s) kept for the last uploads")
