"""The training service behind the HTTP server: durable ingestion, one trainer, publishing.

One part per job, each its own module; TrainingService composes them:

    ingestion.py       parse, validate, dedupe (the game-id ledger), WAL append, answer counts
    trainer_thread.py  the trainer thread: recovery at start, training, checkpoints, WAL trim
    model_files.py     checkpoint files served to workers (GET /models/...)
    redis_mirror.py    the Redis copy of the newest model (ModelBus)
    status.py          the status dict and its rate counters

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

import logging
import time
from pathlib import Path

from pyhexz import hexz_pb2 as pb
from pyhexz.infra.httpbody import BadRequest, gunzip
from pyhexz.infra.modelbus import ModelBus
from pyhexz.infra.storage import SCRIPT_FILE, CheckpointRepo, open_storage
from pyhexz.training_server.config import ServerConfig
from pyhexz.training_server.ingestion import ExampleLedger, Ingestion, parse_request
from pyhexz.training_server.model_files import ModelFiles
from pyhexz.training_server.redis_mirror import RedisMirror
from pyhexz.training_server.status import service_status
from pyhexz.training_server.trainer_thread import DurableRecords, TrainerThread
from pyhexz.training_server.wal import WriteAheadLog

log = logging.getLogger(__name__)


class TrainingService:
    """Ingestion, the trainer thread and model files of one model (see the module docstring)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = cfg = config
        self.started = time.monotonic()
        self.storage = open_storage(cfg.storage)
        self.repo = CheckpointRepo(self.storage, cfg.model_name)
        # "Latest" is the trainer thread's (made below: it puts each checkpoint it publishes
        # into these files, so they come first).
        self.models = ModelFiles(self.storage, self.repo, lambda: self.trainer_thread.latest)
        self.mirror: RedisMirror | None = None
        if cfg.redis_url:
            self.mirror = RedisMirror(ModelBus(cfg.redis_url, cfg.model_name), self.repo,
                                      self.models)
        self.ledger = ExampleLedger()
        durable = DurableRecords()
        # Takes the state directory's lock: a second server on it fails here, loudly.
        assert cfg.state_dir is not None   # ServerConfig.__post_init__ fills in the default
        self.wal = WriteAheadLog(Path(cfg.state_dir), segment_bytes=cfg.segment_bytes,
                                 sink=durable.sink)
        self.trainer_thread = TrainerThread(cfg, self.repo, self.wal, durable, self.ledger,
                                            self.models, self.mirror, progress=self.status)
        self.ingestion = Ingestion(cfg, self.wal, self.ledger, self.trainer_thread)
        self.trainer_thread.start()
        log.info("server model=%s storage=%s state_dir=%s wal_id=%s wal_end=%d redis=%s",
                 cfg.model_name, cfg.storage, cfg.state_dir, self.wal.id, self.wal.end,
                 "yes" if self.mirror else "no")

    @property
    def latest(self) -> int | None:
        """The newest published checkpoint (None until the trainer has started)."""
        return self.trainer_thread.latest

    @property
    def failure(self) -> str | None:
        """Why the trainer is not serving (starting, or stopped), or None."""
        return self.trainer_thread.failure

    def ingest(self, body: bytes, gzipped: bool) -> tuple[int, pb.AddTrainingExamplesResponse]:
        """Handles a POST /training/examples body: (HTTP status, response message).

        Raises BadRequest for malformed input. ACCEPTED is returned only once the request is
        durable in the WAL.
        """
        return self.ingestion.ingest(body, gzipped)

    def answer(self, status: pb.AddTrainingExamplesResponse.Status,
               error: str = "") -> pb.AddTrainingExamplesResponse:
        """A response message naming the latest model, counted by its status."""
        return self.ingestion.answer(status, error)

    def model_file(self, name: str | None, n: int | None,
                   file: str = SCRIPT_FILE) -> tuple[str, int, bytes, str]:
        """(name, checkpoint, bytes, SHA-256) of a model file; the latest by default.

        Raises FileNotFoundError when the checkpoint does not exist, ValueError for a bad name.
        """
        return self.models.model_file(name, n, file)

    def status(self) -> dict:
        return service_status(self)

    def active_workers(self) -> int:
        return self.ingestion.workers.count()

    def healthy(self) -> bool:
        return self.trainer_thread.healthy()

    def close(self, timeout: float = 60.0) -> None:
        """Stops taking examples (queued ones are written), then stops the trainer thread."""
        self.wal.close()
        self.trainer_thread.stop(timeout)

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.trainer_thread.wait_ready(timeout)


__all__ = ["ServerConfig", "TrainingService", "BadRequest", "gunzip", "parse_request"]
