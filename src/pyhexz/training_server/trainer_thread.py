"""The one trainer of a training server, on its own thread (why a thread: service.py).

    start:  load (or create) the model -> recall the games of the newest checkpoints
            -> replay the WAL's untrained records (retried with backoff while storage fails)
    loop:   durable WAL records (queue) -> Trainer (replay window) -> every `trigger_examples`
            new examples: train -> checkpoint N+1 in storage (meta.json records the WAL
            position) -> serve it, copy it to Redis -> trim the WAL

Everything that reads storage happens here, before requests are taken: a gunicorn worker must
finish booting within its timeout, however many checkpoints a bucket holds.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf.message import DecodeError

from pyhexz.game.examples import InvalidExampleError
from pyhexz.infra.http import Backoff
from pyhexz.infra.httpbody import BadRequest
from pyhexz.infra.storage import (
    MODEL_FILE,
    ONNX_FILE,
    SCRIPT_FILE,
    CheckpointExistsError,
    CheckpointRepo,
)
from pyhexz.train.trainer import NonFiniteError, Trainer
from pyhexz.training_server.config import ServerConfig
from pyhexz.training_server.ingestion import ExampleLedger, decode_payload, game_key, game_name
from pyhexz.training_server.model_files import ModelFiles
from pyhexz.training_server.redis_mirror import RedisMirror
from pyhexz.training_server.wal import WALError, WriteAheadLog

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 60.0
GAME_CHECKPOINTS = 20         # newest checkpoints whose games are recalled at start
RETRY_TRAINING_SECONDS = 10.0
QUEUE_BATCH = 10_000          # durable records moved into the trainer per loop turn
# A storage outage at start is retried without a restart by hand: quickly at first, then at
# most once a minute.
START_BACKOFF = Backoff(base=1.0, cap=60.0)


class DurableRecords:
    """Records the WAL made durable, in log order, on their way to the trainer thread: the
    WAL's `sink`, so the trainer never sees a record the log does not hold."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()

    def sink(self, records: list[tuple[int, int, Any]]) -> None:
        """WAL writer thread: (start, end, attachment) of each record just made durable."""
        for record in records:
            self._queue.put(record)

    def take(self, timeout: float, limit: int) -> Iterator[tuple[int, int, Any]]:
        """Up to `limit` records: waits `timeout` for the first, takes only what is there
        after it."""
        for i in range(limit):
            try:
                yield self._queue.get(timeout=timeout) if i == 0 else self._queue.get_nowait()
            except queue.Empty:
                return


class TrainerThread:
    """Feeds durable records to the Trainer and publishes each checkpoint it makes.

    `latest`, `failure` and `wait_ready` are what ingestion checks before accepting examples.
    """

    def __init__(self, config: ServerConfig, repo: CheckpointRepo, wal: WriteAheadLog,
                 durable: DurableRecords, ledger: ExampleLedger, models: ModelFiles,
                 mirror: RedisMirror | None,
                 progress: Callable[[], dict], start_backoff: Backoff = START_BACKOFF) -> None:
        self.config = config
        self.repo = repo
        self.wal = wal
        self.ledger = ledger
        self.models = models
        self.mirror = mirror
        self.progress = progress       # the status dict, for the progress log line
        self.start_backoff = start_backoff
        self.durable = durable
        self.trainer: Trainer | None = None
        self.latest: int | None = None
        self.failure: str | None = None
        self.position = 0           # WAL position the trainer has taken in up to
        self.trained_position = 0   # ... and the newest checkpoint holds
        self.training = False
        self.runs = 0
        self.failures = 0
        self.last_stats: dict = {}
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="trainer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.ready.wait(timeout)

    def healthy(self) -> bool:
        return self.ready.is_set() and self.failure is None and self._thread.is_alive()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @property
    def _trainer(self) -> Trainer:
        """The trainer, for the trainer thread's own use after `_start` made it."""
        assert self.trainer is not None, "the trainer is used before _start made it"
        return self.trainer

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        if self.config.trainer_nice:
            # Linux nice values are per thread: requests keep their CPU, training yields it.
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                               os.getpriority(os.PRIO_PROCESS, 0) + self.config.trainer_nice)
            except (OSError, AttributeError) as e:
                log.warning("cannot lower the trainer's priority: %s", e)
        try:
            self._start()
            retry_at = 0.0
            next_bus_check = 0.0
            next_progress = time.monotonic() + PROGRESS_SECONDS
            while not self._stop.is_set():
                self._take_queued(timeout=0.2)
                if time.monotonic() >= next_progress:
                    next_progress = time.monotonic() + PROGRESS_SECONDS
                    self._log_progress()
                if self.mirror is not None and time.monotonic() >= next_bus_check:
                    next_bus_check = time.monotonic() + self.config.redis_sync_seconds
                    self.mirror.sync(self.latest)
                if self._trainer.ready() and time.monotonic() >= retry_at:
                    if not self._train_once():
                        retry_at = time.monotonic() + RETRY_TRAINING_SECONDS
        except BaseException as e:
            self.failure = f"trainer stopped: {type(e).__name__}: {e}"
            log.exception("trainer stopped")
        finally:
            self.ready.set()

    def _log_progress(self) -> None:
        st = self.progress()
        log.info("progress model=%s checkpoint=%s received=%d pending=%d "
                 "examples_per_s=%.1f training_runs=%d", st["model"], st["checkpoint"],
                 st["examples"]["received"], st["examples"]["pending"],
                 st["examples"]["per_second"], st["training"]["runs"])

    def _start(self) -> None:
        """Loads (or creates) the model and replays the WAL; retried while storage fails.

        A storage outage at start should not need a restart by hand; meanwhile /healthz says
        what is wrong and requests are answered 503. A damaged WAL is not retried.
        """
        attempt = 0
        while True:
            try:
                self.trainer = Trainer(self.repo, self.config.train, self.config.device,
                                       on_published=self._on_published)
                self.latest = self.trainer.checkpoint
                self._recall_games()
                self._replay()
                break
            except WALError:
                raise
            except Exception as e:
                self.failure = f"starting: {type(e).__name__}: {e}"
                delay = self.start_backoff.delay(attempt)
                attempt += 1
                log.error("trainer start failed (retry in %.1f s): %s", delay, self.failure)
                if self._stop.wait(delay):
                    raise
        self.failure = None
        self.ready.set()
        log.info("trainer ready model=%s checkpoint=%d pending=%d", self.config.model_name,
                 self.latest, self.ledger.pending)

    # ------------------------------------------------------------------ recovery

    def _trained_position(self) -> int:
        """The WAL position the newest checkpoint of this WAL was trained up to.

        Checkpoints of another WAL (a previous state directory, or the local `train` job) say
        nothing about this one, so the search goes back to the newest checkpoint of ours;
        usually the newest of all, one read.
        """
        for n in reversed(self.repo.checkpoints()):
            wal = self.repo.meta(n).get("wal") or {}
            if wal.get("id") == self.wal.id:
                return int(wal["position"])
        return self.wal.first

    def _replay(self) -> None:
        """Untrained records of the WAL (from before this start) into the trainer.

        Runs before requests are taken, so the WAL's end is the end of what came before.
        """
        start = self.position = self.trained_position = self._trained_position()
        self.wal.skip_to(start)
        stop = self.wal.end
        n = 0
        for rec in self.wal.records(start, stop):
            try:
                req = decode_payload(rec.payload, self.config.max_request_bytes)
                added = self._trainer.add(game_name(rec.start, req), req)
                if game_key(req):
                    self.ledger.remember_durable(game_key(req))
            except (DecodeError, BadRequest, InvalidExampleError) as e:
                # Validated before it was accepted, so only a change of the rules gets here.
                log.error("wal record at %d no longer valid, skipped: %s", rec.start, e)
                added = 0
            self.position = rec.end
            n += added
        self.ledger.recovered_examples(n)
        log.info("wal replay examples=%d positions=%d..%d", n, start, stop)

    def _recall_games(self) -> None:
        """After a restart: the game ids of the newest checkpoints (their meta.json names the
        games they were trained from); the WAL replay adds the untrained ones."""
        for n in reversed(self.repo.checkpoints()[-GAME_CHECKPOINTS:]):
            for name in self.repo.meta(n).get("game_names", []):
                _, _, game = name.partition("-")
                if game and game != "game":   # "game": an id-less game, as named before
                    self.ledger.recall_trained(game)

    # ------------------------------------------------------------------ training

    def _take_queued(self, timeout: float) -> None:
        """Moves durable requests into the trainer, in log order: at most QUEUE_BATCH a call,
        so a flood of requests cannot keep a training run from starting."""
        for start, end, (req, arrays) in self.durable.take(timeout, QUEUE_BATCH):
            self._trainer.add(game_name(start, req), req, arrays)
            self.position = end

    def _train_once(self) -> bool:
        """One training run and checkpoint; False if it failed (and will be retried)."""
        trainer = self._trainer
        examples, position = trainer.pending_examples, self.position
        n = trainer.checkpoint + 1
        log.info("training model=%s checkpoint=%d new_examples=%d window=%d",
                 self.config.model_name, n, examples, len(trainer.window))
        self.training = True
        try:
            stats = trainer.train_and_publish(
                meta={"wal": {"id": self.wal.id, "position": position}})
        except CheckpointExistsError:
            raise  # another server writes this model: stop training, loudly
        except NonFiniteError as e:
            self.failures += 1
            log.warning("training run discarded model=%s checkpoint=%d reason=%s",
                        self.config.model_name, n, e)
            return False
        except Exception as e:
            self.failures += 1
            log.exception("training run failed model=%s checkpoint=%d: %s",
                          self.config.model_name, n, e)
            try:  # our own claim, or the retry would find checkpoint n "being written"
                self.repo.clear_stale_claim(n)
            except Exception as e2:
                log.warning("could not clear the claim on checkpoint %d: %s", n, e2)
            return False
        finally:
            self.training = False
        self.ledger.trained(examples)
        self.runs += 1
        self.last_stats = stats
        self.trained_position = position
        trimmed = self.wal.trim(position)
        log.info("checkpoint model=%s checkpoint=%d examples_trained=%d policy_loss=%.4f "
                 "value_loss=%.4f train_seconds=%.1f wal_segments_trimmed=%d",
                 self.config.model_name, n, trainer.examples_trained, stats["policy_loss"],
                 stats["value_loss"], stats["seconds"], trimmed)
        return True

    def _on_published(self, n: int, files: dict, meta: dict) -> None:
        """Trainer hook: checkpoint n is in storage. Serve it, then copy it to Redis."""
        for file in (SCRIPT_FILE, MODEL_FILE, ONNX_FILE):  # their SHA-256s are in meta already
            if file in files:
                self.models.remember(self.config.model_name, n, file, files[file],
                                     meta["sha256"][file])
        self.latest = n
        if self.mirror is not None:
            self.mirror.publish(n, files[SCRIPT_FILE], int(meta.get("examples_trained", 0)),
                                files.get(ONNX_FILE))
