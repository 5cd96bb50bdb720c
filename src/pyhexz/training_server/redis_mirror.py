"""The Redis copy of the served model (ModelBus: bytes, pointer, announcement).

Storage holds the record; Redis is a fast copy the workers and CPU players follow. A publish
that fails is not an error of the checkpoint: `sync` (called by the trainer thread every
`redis_sync_seconds`) puts the latest checkpoint in Redis whenever Redis lacks it (down,
restarted, emptied).
"""

from __future__ import annotations

import logging

import redis

from pyhexz.infra.modelbus import ModelBus
from pyhexz.infra.storage import ONNX_FILE, SCRIPT_FILE, CheckpointRepo
from pyhexz.training_server.model_files import ModelFiles

log = logging.getLogger(__name__)


class RedisMirror:
    """Keeps the newest checkpoint of one model on its ModelBus."""

    def __init__(self, bus: ModelBus, repo: CheckpointRepo, models: ModelFiles) -> None:
        self.bus = bus
        self.repo = repo
        self.models = models
        self.checkpoint: int | None = None   # the newest checkpoint known to be in Redis

    def publish(self, n: int, data: bytes, examples_trained: int,
                onnx: bytes | None = None) -> None:
        """Copies checkpoint n's TorchScript bytes (and its model.onnx, where it has one) to
        Redis and announces it; a Redis error is logged, and repaired by a later `sync`."""
        try:
            self.bus.publish(n, data, examples_trained=examples_trained, onnx=onnx)
            self.checkpoint = n
            log.info("redis published model=%s checkpoint=%d", self.repo.name, n)
        except redis.RedisError as e:
            # Storage holds the checkpoint; Redis is a copy, brought up to date on a retry.
            log.warning("redis publish failed model=%s checkpoint=%d error=%s (will retry)",
                        self.repo.name, n, e)

    def sync(self, latest: int | None) -> None:
        """Puts checkpoint `latest` in Redis if Redis lacks it."""
        n = latest
        try:
            if n is None or self.bus.latest() == n:
                self.checkpoint = n
                return
        except redis.RedisError as e:
            log.warning("redis unavailable: %s", e)
            return
        try:
            _, n, data, _ = self.models.model_file(None, n, SCRIPT_FILE)
            meta = self.repo.meta(n)
            trained = int(meta.get("examples_trained", 0))
            onnx = (self.models.model_file(None, n, ONNX_FILE)[2]
                    if ONNX_FILE in meta.get("sha256", {}) else None)
        except Exception as e:  # storage unreachable: try again at the next sync
            log.warning("cannot read checkpoint %d for redis: %s", n, e)
            return
        self.publish(n, data, trained, onnx)

    def status(self) -> dict:
        return {"checkpoint": self.checkpoint, "channel": self.bus.channel}
