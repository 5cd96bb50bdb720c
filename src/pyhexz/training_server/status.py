"""The training server's state as one dict (GET /status, the UI, /metrics, the progress log),
and the counters behind its rates: examples and games per second, and active workers."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyhexz.training_server.service import TrainingService

WORKER_ACTIVE_SECONDS = 300.0


class Rate:
    """Events (examples, games) per second over the last `seconds`; `clock` is injectable so
    tests need not wait."""

    def __init__(self, seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.events: collections.deque[tuple[float, int]] = collections.deque()
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.events.append((self.clock(), n))

    def rate(self, uptime: float) -> float:
        now = self.clock()
        with self.lock:
            while self.events and self.events[0][0] < now - self.seconds:
                self.events.popleft()
            total = sum(n for _, n in self.events)
        return total / max(1e-9, min(self.seconds, uptime))


class ActiveWorkers:
    """Workers (execution IDs) with an accepted upload in the last few minutes: a worker
    uploads once per finished game, so a quiet one is finished or gone."""

    def __init__(self, seconds: float = WORKER_ACTIVE_SECONDS) -> None:
        self.seconds = seconds
        self._last: dict[str, float] = {}   # execution_id -> last accepted upload
        self._lock = threading.Lock()

    def seen(self, execution_id: str) -> None:
        with self._lock:
            self._last[execution_id] = time.monotonic()

    def count(self) -> int:
        cutoff = time.monotonic() - self.seconds
        with self._lock:
            for k in [k for k, t in self._last.items() if t < cutoff]:
                del self._last[k]
            return len(self._last)


def service_status(service: TrainingService) -> dict:
    """The status dict: GET /status's body, and what /metrics reads."""
    cfg = service.config
    ledger, trainer_thread, wal = service.ledger, service.trainer_thread, service.wal
    uptime = time.monotonic() - service.started
    t = trainer_thread.trainer
    return {
        "model": cfg.model_name,
        "checkpoint": trainer_thread.latest,
        "ready": trainer_thread.ready.is_set() and not trainer_thread.failure,
        "failure": trainer_thread.failure,
        "examples": {"received": ledger.received, "recovered": ledger.recovered,
                     "pending": ledger.pending,
                     "trained": t.examples_trained if t else None,
                     "minibatch": cfg.train.trigger_examples,
                     "max_pending": cfg.max_pending,
                     "per_second": round(ledger.rate.rate(uptime), 1)},
        "games": {"received": ledger.games_received,
                  "per_second": round(ledger.game_rate.rate(uptime), 3)},
        "training": {"in_progress": trainer_thread.training, "runs": trainer_thread.runs,
                     "failures": trainer_thread.failures,
                     "window": len(t.window) if t else 0,
                     "last": dict(trainer_thread.last_stats)},
        "requests": service.ingestion.request_counts(),
        "workers": {"active": service.ingestion.workers.count(),
                    "window_seconds": WORKER_ACTIVE_SECONDS},
        "wal": {"id": wal.id, "first": wal.first, "end": wal.end,
                "trained_position": trainer_thread.trained_position,
                "segments": wal.segment_count(), "commits": wal.commits},
        "redis": None if service.mirror is None else service.mirror.status(),
        "uptime_seconds": round(uptime, 1),
    }
