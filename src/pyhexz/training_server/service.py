"""The training service behind the HTTP server: durable ingestion, one trainer, publishing.

    request thread:  parse + validate -> WAL append (group commit, fdatasync) -> ACCEPTED
    WAL writer:      durable records, in log order -> trainer queue
    trainer thread:  queue -> Trainer (replay window) -> every `trigger_examples` new examples:
                     train -> checkpoint N+1 in storage (meta.json records the WAL position)
                     -> Redis (ModelBus: bytes, pointer, announcement) -> trim the WAL

Crash-safety contract: the server may be killed at any point (kill -9 included) and restarted
with the same state directory and storage. Every example answered ACCEPTED is in the WAL on
disk before the answer is sent. A checkpoint's meta.json records `wal: {id, position}`: every
record before `position` of WAL `id` is in that checkpoint (and its examples archive). On start
the newest checkpoint of this WAL gives the position; the records after it are replayed into
the trainer as pending examples, so nothing acknowledged is lost and nothing is trained twice;
the trigger counts them again exactly as before the crash. A torn tail record is truncated by
the WAL (it was never acknowledged). A checkpoint half-written when the process died has no
meta.json, so it does not exist; its claim is cleared by the Trainer on start.

Why a thread, not a process, trains: torch releases the GIL in its kernels, so request
threads keep running during training; BENCHMARKS.md ("Training server") measures ingestion
latency idle and while training. A thread also dies with the process on kill -9, so a restarted
server can never meet an orphaned trainer still writing checkpoints. Exactly one trainer per
server: the service owns the WAL, whose directory lock (flock) a second server on the same
state directory cannot take; two servers on different state directories but one storage are
kept apart by the checkpoint claims (a losing writer stops, see storage.py).
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from google.protobuf.message import DecodeError

from pyhexz import hexz_pb2 as pb
from pyhexz.game.examples import Arrays, InvalidExampleError, decode
from pyhexz.infra.httpbody import BadRequest, gunzip
from pyhexz.infra.storage import (
    MODEL_FILE,
    SCRIPT_FILE,
    CheckpointExistsError,
    CheckpointRepo,
    open_storage,
    sha256,
    validate_model_name,
)
from pyhexz.train.trainer import NonFiniteError, Trainer
from pyhexz.training_server.config import ServerConfig
from pyhexz.training_server.wal import WALError, WriteAheadLog

log = logging.getLogger(__name__)

Status = pb.AddTrainingExamplesResponse

# WAL payload: one byte telling how the request body is stored, then the body as received
# (a gzip body is kept compressed: less disk, and no CPU spent recompressing).
_RAW, _GZIP = b"\x00", b"\x01"
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")
PROGRESS_SECONDS = 60.0


WORKER_ACTIVE_SECONDS = 300.0
GAMES_REMEMBERED = 200_000   # game ids kept for recognising resent games
GAME_CHECKPOINTS = 20        # newest checkpoints whose games are recalled at start


def _game_key(req: pb.AddTrainingExamplesRequest) -> str:
    """The id a resent game is recognised by, as archive names spell it ('' if it has none)."""
    return _SAFE_ID.sub("_", req.game_id[:64])


def parse_request(data: bytes) -> tuple[pb.AddTrainingExamplesRequest, Arrays]:
    """The request and its decoded, validated examples; BadRequest says what is wrong."""
    try:
        req = pb.AddTrainingExamplesRequest.FromString(data)
    except DecodeError as e:
        raise BadRequest(f"body is not a binary AddTrainingExamplesRequest ({e})") from None
    if not req.examples:
        raise BadRequest("AddTrainingExamplesRequest has no examples")
    try:
        arrays = decode(list(req.examples))
    except InvalidExampleError as e:
        raise BadRequest(f"invalid training example: {e}") from None
    return req, arrays


def _decode_payload(payload: bytes, limit: int) -> pb.AddTrainingExamplesRequest:
    body = payload[1:]
    if payload[:1] == _GZIP:
        body = gunzip(body, limit)
    return pb.AddTrainingExamplesRequest.FromString(body)


class _Rate:
    """Examples per second over the last `seconds`."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.seconds = seconds
        self.events: collections.deque[tuple[float, int]] = collections.deque()
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.events.append((time.monotonic(), n))

    def rate(self, uptime: float) -> float:
        now = time.monotonic()
        with self.lock:
            while self.events and self.events[0][0] < now - self.seconds:
                self.events.popleft()
            total = sum(n for _, n in self.events)
        return total / max(1e-9, min(self.seconds, uptime))


class TrainingService:
    """Ingestion, the trainer thread and model files of one model (see the module docstring)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = cfg = config
        self.started = time.monotonic()
        self.storage = open_storage(cfg.storage)
        self.repo = CheckpointRepo(self.storage, cfg.model_name)
        self.bus = None
        if cfg.redis_url:
            from pyhexz.infra.modelbus import ModelBus
            self.bus = ModelBus(cfg.redis_url, cfg.model_name)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._models: collections.OrderedDict = collections.OrderedDict()  # (name, n, file) -> bytes
        self.latest: Optional[int] = None
        self.pending = 0              # accepted (or recovered), not yet in a checkpoint
        self.received = 0             # examples accepted since start
        self.recovered = 0            # examples replayed from the WAL at start
        self.requests: collections.Counter = collections.Counter()
        self.training = False
        self.training_runs = 0
        self.training_failures = 0
        self.last_stats: dict = {}
        self.bus_checkpoint: Optional[int] = None
        self.failure: Optional[str] = None
        self._rate = _Rate()
        self._workers: dict[str, float] = {}   # execution_id -> last accepted upload
        # game_id -> True once durable (False while its WAL write is in flight): a worker that
        # resends a game whose answer it never got (server crash, timeout) is answered
        # ACCEPTED without storing it again, so no game is trained twice.
        self._games: collections.OrderedDict[str, bool] = collections.OrderedDict()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self.wal = WriteAheadLog(Path(cfg.state_dir), segment_bytes=cfg.segment_bytes,
                                 sink=self._on_durable)
        self.position = 0           # WAL position the trainer has taken in up to
        self.trained_position = 0   # ... and the newest checkpoint holds
        self.trainer: Optional[Trainer] = None
        # Everything that reads storage happens in the trainer thread, before requests are
        # taken: a gunicorn worker must finish booting within its timeout, however many
        # checkpoints a bucket holds.
        self._thread = threading.Thread(target=self._train_loop, name="trainer", daemon=True)
        self._thread.start()
        log.info("server model=%s storage=%s state_dir=%s wal_id=%s wal_end=%d redis=%s",
                 cfg.model_name, cfg.storage, cfg.state_dir, self.wal.id, self.wal.end,
                 "yes" if self.bus else "no")

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
                req = _decode_payload(rec.payload, self.config.max_request_bytes)
                added = self.trainer.add(self._game_name(rec.start, req), req)
                if _game_key(req):
                    self._remember_game(_game_key(req), durable=True)
            except (DecodeError, BadRequest, InvalidExampleError) as e:
                # Validated before it was accepted, so only a change of the rules gets here.
                log.error("wal record at %d no longer valid, skipped: %s", rec.start, e)
                added = 0
            self.position = rec.end
            n += added
        with self._lock:
            self.pending += n
            self.recovered = n
        log.info("wal replay examples=%d positions=%d..%d", n, start, stop)

    @staticmethod
    def _game_name(position: int, req: pb.AddTrainingExamplesRequest) -> str:
        """The archive entry name of a request: its WAL position (unique) and its game id."""
        return f"{position:016x}-{_game_key(req) or 'game'}"

    # ------------------------------------------------------------------ ingestion

    def ingest(self, body: bytes, gzipped: bool) -> tuple[int, pb.AddTrainingExamplesResponse]:
        """Handles a POST /training/examples body: (HTTP status, response message).

        Raises BadRequest for malformed input. ACCEPTED is returned only once the request is
        durable in the WAL.
        """
        cfg = self.config
        data = gunzip(body, cfg.max_request_bytes) if gzipped else body
        req, arrays = parse_request(data)
        if not self._ready.wait(cfg.startup_wait_seconds) or self.failure:
            return 503, self.answer(Status.REJECTED_AT_CAPACITY,
                                     self.failure or "server is starting; retry shortly")
        latest = self.latest
        oldest = latest - cfg.max_model_age
        for ex in req.examples:
            key = ex.model_key
            if key.name != cfg.model_name or not oldest <= key.checkpoint <= latest:
                return 200, self.answer(
                    Status.REJECTED_WRONG_MODEL,
                    f"example from model {key.name}:{key.checkpoint}; this server accepts "
                    f"{cfg.model_name}:{max(0, oldest)}..{latest}")
        n = len(arrays)
        game = _game_key(req)
        with self._lock:
            seen = self._games.get(game) if game else None
            if seen:
                self.requests["duplicate_games"] += 1
            full = seen is None and self.pending + n > cfg.max_pending
            if seen is None and not full:
                self.pending += n
                if game:
                    self._remember_game(game, durable=False)
        if seen:
            return 200, self.answer(Status.ACCEPTED)
        if seen is False:
            return 503, self.answer(Status.REJECTED_AT_CAPACITY,
                                     f"game {game} is being stored by another request; retry")
        if full:
            return 503, self.answer(
                Status.REJECTED_AT_CAPACITY,
                f"{self.pending} examples are waiting for training (limit {cfg.max_pending})")
        try:
            self.wal.append((_GZIP if gzipped else _RAW, body), (req, arrays))
        except (WALError, OSError) as e:
            with self._lock:
                self.pending -= n
                self._games.pop(game, None)
            log.error("wal append failed: %s", e)
            return 503, self.answer(Status.REJECTED_OTHER, f"could not store the examples: {e}")
        with self._lock:
            if game:
                self._games[game] = True
            self.received += n
            if req.execution_id:
                self._workers[req.execution_id] = time.monotonic()
        self._rate.add(n)
        return 200, self.answer(Status.ACCEPTED)

    def answer(self, status: int, error: str = "") -> pb.AddTrainingExamplesResponse:
        with self._lock:
            self.requests[Status.Status.Name(status)] += 1
        resp = pb.AddTrainingExamplesResponse(status=status, error_message=error)
        if self.latest is not None:
            resp.latest_model.name = self.config.model_name
            resp.latest_model.checkpoint = self.latest
        return resp

    def _on_durable(self, records: list[tuple[int, int, Any]]) -> None:
        """WAL writer: durable records, in log order, go to the trainer thread."""
        for start, end, attachment in records:
            self._queue.put((start, end, attachment))

    # ------------------------------------------------------------------ the trainer thread

    def _train_loop(self) -> None:
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
                    st = self.status()
                    log.info("progress model=%s checkpoint=%s received=%d pending=%d "
                             "examples_per_s=%.1f training_runs=%d", st["model"], st["checkpoint"],
                             st["examples"]["received"], st["examples"]["pending"],
                             st["examples"]["per_second"], st["training"]["runs"])
                if self.bus is not None and time.monotonic() >= next_bus_check:
                    next_bus_check = time.monotonic() + self.config.redis_sync_seconds
                    self._sync_bus()
                if self.trainer.ready() and time.monotonic() >= retry_at:
                    if not self._train_once():
                        retry_at = time.monotonic() + 10
        except BaseException as e:
            self.failure = f"trainer stopped: {type(e).__name__}: {e}"
            log.exception("trainer stopped")
        finally:
            self._ready.set()

    def _start(self) -> None:
        """Loads (or creates) the model and replays the WAL; retried while storage fails.

        A storage outage at start should not need a restart by hand; meanwhile /healthz says
        what is wrong and requests are answered 503. A damaged WAL is not retried.
        """
        delay = 1.0
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
                log.error("trainer start failed (retry in %.0f s): %s", delay, self.failure)
                if self._stop.wait(delay):
                    raise
                delay = min(60.0, delay * 2)
        self.failure = None
        self._ready.set()
        log.info("trainer ready model=%s checkpoint=%d pending=%d", self.config.model_name,
                 self.latest, self.pending)

    def _take_queued(self, timeout: float) -> None:
        """Moves durable requests into the trainer, in log order: at most 10,000 a call, so a
        flood of requests cannot keep a training run from starting."""
        for i in range(10_000):
            try:
                item = self._queue.get(timeout=timeout) if i == 0 else self._queue.get_nowait()
            except queue.Empty:
                return
            start, end, (req, arrays) = item
            self.trainer.add(self._game_name(start, req), req, arrays)
            self.position = end

    def _train_once(self) -> bool:
        """One training run and checkpoint; False if it failed (and will be retried)."""
        trainer = self.trainer
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
            self.training_failures += 1
            log.warning("training run discarded model=%s checkpoint=%d reason=%s",
                        self.config.model_name, n, e)
            return False
        except Exception as e:
            self.training_failures += 1
            log.exception("training run failed model=%s checkpoint=%d: %s",
                          self.config.model_name, n, e)
            try:  # our own claim, or the retry would find checkpoint n "being written"
                self.repo.clear_stale_claim(n)
            except Exception as e2:
                log.warning("could not clear the claim on checkpoint %d: %s", n, e2)
            return False
        finally:
            self.training = False
        with self._lock:
            self.pending -= examples
        self.training_runs += 1
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
        with self._lock:
            for file in (SCRIPT_FILE, MODEL_FILE):  # their SHA-256s are in meta already
                self._remember((self.config.model_name, n, file),
                               (files[file], meta["sha256"][file]))
        self.latest = n
        if self.bus is not None:
            self._bus_publish(n, files[SCRIPT_FILE], int(meta.get("examples_trained", 0)))

    def _bus_publish(self, n: int, data: bytes, examples_trained: int) -> None:
        import redis
        try:
            self.bus.publish(n, data, examples_trained=examples_trained)
            self.bus_checkpoint = n
            log.info("redis published model=%s checkpoint=%d", self.config.model_name, n)
        except redis.RedisError as e:
            # Storage holds the checkpoint; Redis is a copy, brought up to date on a retry.
            log.warning("redis publish failed model=%s checkpoint=%d error=%s (will retry)",
                        self.config.model_name, n, e)

    def _sync_bus(self) -> None:
        """Puts the latest checkpoint in Redis if Redis lacks it (down, restarted, emptied)."""
        import redis
        n = self.latest
        try:
            if n is None or self.bus.latest() == n:
                self.bus_checkpoint = n
                return
        except redis.RedisError as e:
            log.warning("redis unavailable: %s", e)
            return
        try:
            _, n, data, _ = self.model_file(None, n, SCRIPT_FILE)
            trained = int(self.repo.meta(n).get("examples_trained", 0))
        except Exception as e:  # storage unreachable: try again at the next sync
            log.warning("cannot read checkpoint %d for redis: %s", n, e)
            return
        self._bus_publish(n, data, trained)

    # ------------------------------------------------------------------ models

    def _remember(self, key: tuple, entry: tuple[bytes, str]) -> None:
        """Caches (bytes, SHA-256) of a model file; caller holds the lock."""
        self._models[key] = entry
        while len(self._models) > 6:
            self._models.popitem(last=False)

    def model_file(self, name: Optional[str], n: Optional[int],
                   file: str = SCRIPT_FILE) -> tuple[str, int, bytes, str]:
        """(name, checkpoint, bytes, SHA-256) of a model file; the latest by default.

        Raises FileNotFoundError when the checkpoint does not exist, ValueError for a bad name.
        """
        name = validate_model_name(name or self.config.model_name)
        if n is None:
            n = self.latest if name == self.config.model_name else None
            if n is None:
                raise FileNotFoundError(f"model {name} has no checkpoint yet")
        key = (name, n, file)
        with self._lock:
            hit = self._models.get(key)
            if hit is not None:
                self._models.move_to_end(key)
        if hit is None:
            repo = self.repo if name == self.config.model_name else CheckpointRepo(self.storage, name)
            try:
                data = repo.read_verified(n, file)
            except FileNotFoundError:
                raise FileNotFoundError(f"model {name} has no checkpoint {n}") from None
            hit = (data, sha256(data))
            with self._lock:
                self._remember(key, hit)
        return name, n, hit[0], hit[1]

    # ------------------------------------------------------------------ status

    def status(self) -> dict:
        uptime = time.monotonic() - self.started
        t = self.trainer
        return {
            "model": self.config.model_name,
            "checkpoint": self.latest,
            "ready": self._ready.is_set() and not self.failure,
            "failure": self.failure,
            "examples": {"received": self.received, "recovered": self.recovered,
                         "pending": self.pending,
                         "trained": t.examples_trained if t else None,
                         "minibatch": self.config.train.trigger_examples,
                         "max_pending": self.config.max_pending,
                         "per_second": round(self._rate.rate(uptime), 1)},
            "training": {"in_progress": self.training, "runs": self.training_runs,
                         "failures": self.training_failures,
                         "window": len(t.window) if t else 0,
                         "last": dict(self.last_stats)},
            "requests": dict(self.requests),
            "workers": {"active": self.active_workers(),
                        "window_seconds": WORKER_ACTIVE_SECONDS},
            "wal": {"id": self.wal.id, "first": self.wal.first, "end": self.wal.end,
                    "trained_position": self.trained_position,
                    "segments": self.wal.segment_count(), "commits": self.wal.commits},
            "redis": None if self.bus is None else {"checkpoint": self.bus_checkpoint,
                                                   "channel": self.bus.channel},
            "uptime_seconds": round(uptime, 1),
        }

    def _remember_game(self, game: str, durable: bool) -> None:
        """Records a game id (caller holds the lock); the oldest are forgotten beyond a cap,
        which only has to outlast a worker's retries (minutes)."""
        self._games[game] = durable
        self._games.move_to_end(game)
        while len(self._games) > GAMES_REMEMBERED:
            self._games.popitem(last=False)

    def _recall_games(self) -> None:
        """After a restart: the game ids of the newest checkpoints (their meta.json names the
        games they were trained from); the WAL replay adds the untrained ones."""
        for n in reversed(self.repo.checkpoints()[-GAME_CHECKPOINTS:]):
            for name in self.repo.meta(n).get("game_names", []):
                _, _, game = name.partition("-")
                if game and game != "game":
                    self._games[game] = True
                    self._games.move_to_end(game, last=False)

    def active_workers(self) -> int:
        """Workers (execution IDs) with an accepted upload in the last few minutes: a worker
        uploads once per finished game, so a quiet one is finished or gone."""
        cutoff = time.monotonic() - WORKER_ACTIVE_SECONDS
        with self._lock:
            for k in [k for k, t in self._workers.items() if t < cutoff]:
                del self._workers[k]
            return len(self._workers)

    def healthy(self) -> bool:
        return self._ready.is_set() and self.failure is None and self._thread.is_alive()

    def close(self, timeout: float = 60.0) -> None:
        """Stops taking examples (queued ones are written), then stops the trainer thread."""
        self.wal.close()
        self._stop.set()
        self._thread.join(timeout)

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        return self._ready.wait(timeout)


__all__ = ["ServerConfig", "TrainingService", "BadRequest", "gunzip", "parse_request"]
