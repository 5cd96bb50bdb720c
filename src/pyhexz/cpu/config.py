"""Settings of the CPU player service (pyhexz.cpu.app), apart from the service itself so
that the `pyhexz` command line can make its `cpu-server` flags from them without loading Flask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyhexz.infra.config import FromEnv, above, at_least, backend_setting, check_settings, setting
from pyhexz.search.driver import TreeConfig
from pyhexz.search.timed import served_tree_config


@dataclass
class CpuServerConfig(FromEnv):
    """Settings of the CPU player service; each is the HEXZ_* variable of its upper-case name
    (model_path: HEXZ_MODEL_PATH, read by `CpuServerConfig.from_env()` under gunicorn) and the
    flag of `pyhexz cpu-server` (--model-path)."""

    model_path: str | None = setting(
        None, "the model: checkpoint or TorchScript file, checkpoints directory, storage "
        "directory or URL (gs://bucket/prefix); the newest checkpoint. None or 'default': the "
        "model that ships with pyhexz")
    rollout: bool = setting(
        False, "play rollout MCTS (no network) instead of the shipped model when no model path "
        "is given")
    model_name: str | None = setting(
        None, "model name: picks the model in a storage root and names the Redis keys")
    redis_url: str | None = setting(
        None, "follow a training run: load every checkpoint announced in this Redis")
    server_url: str | None = setting(
        None, "follow a training run through its training server (GET /models/latest)")
    auth_token: str | None = setting(
        None, "bearer token this server requires on /hexz/cpu/suggest, /status and the UI's "
        "data (not /healthz); none: open, as the hexz Go server sends none (prefer the "
        "variable: flags show in ps)")
    server_auth_token: str | None = setting(
        None, "bearer token for the training server of --server-url (none: --auth-token)")
    device: str = setting("cpu", "torch device: cpu, cuda, cuda:1, mps")
    backend: str = backend_setting()
    max_think_ms: int = setting(10_000, "longest think time a request may ask for",
                                check=at_least(1))
    default_think_ms: int = setting(1_000, "think time of a request that asks for none (0)",
                                    check=at_least(1))
    max_iterations: int = setting(0, "most simulations per request, 0: no cap", check=at_least(0))
    search_slots: int = setting(8, "positions searched at once; more requests wait",
                                check=at_least(1))
    leaves_per_round: int = setting(8, "network leaves per position and round at most",
                                    check=at_least(1))
    max_tree_nodes: int = setting(4_000_000, "search tree size cap per position (40 bytes per "
                                  "node; grows by doubling)", check=at_least(1))
    think_margin_ms: int = setting(5, "the search ends this much before the think time is up, "
                                   "for the answer's way back", check=at_least(0))
    model_poll_seconds: float = setting(30.0, "re-read the model pointer this often when "
                                        "following (pub/sub can miss messages)", check=above(0))
    # The neural search's tree options (served_tree_config: an evaluation cache kept across
    # searches).
    tree: TreeConfig = field(default_factory=served_tree_config)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.rollout and self.model_path:
            raise ValueError("rollout plays without a model: give a model path or rollout, "
                             "not both")
        if self.redis_url and not self.model_name:
            raise ValueError("following a Redis needs a model name (HEXZ_MODEL_NAME): it names "
                             "the Redis keys")


__all__ = ["CpuServerConfig"]
