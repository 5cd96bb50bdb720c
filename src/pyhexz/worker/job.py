"""The self-play worker: a stateless Cloud Run job task that streams games to the training server.

    python -m pyhexz worker --server-url URL [--redis-url URL] --model-name NAME --max-seconds S

Lifecycle (docs/worker.md):

1. Start: fetch the newest model, from Redis when configured (pointer, then bytes checked
   against their SHA-256), else from the server's GET /models/latest; wait with backoff while
   there is no server or no model yet.
2. Play: `selfplay.run_selfplay` with many games at once; each finished game goes to the
   `Uploader` (one gzip POST, retried; see uploader.py).
3. Hot-swap: a watcher thread loads newer checkpoints and swaps the reference self-play reads
   before every move, so play never stops. It learns of them from the Redis announcement
   channel, from the pointer (re-read on every (re)connect and every `model_poll_seconds`,
   because pub/sub delivers at most once), and from the latest model named in every upload
   answer. Bytes that fail their checksum or do not load are never run: the old model stays.
4. Stop: on SIGTERM/SIGINT, or `grace_seconds` before `max_seconds` is up, no new network
   batch starts (self-play checks between batches, in the middle of a move's search), no new
   model is loaded, the finished games are sent until `grace_seconds` after the
   signal (Cloud Run allows 10 s after SIGTERM), and the process exits 0. Games still being
   played are dropped (the done line counts them, `cut_off`): they have no result. So that few
   are, the worker winds down first: once
   the time left before that point is less than 1.5 mean game lengths, it starts no new games
   and lets those under way finish. So that the finished ones can all be sent, self-play waits
   while the upload buffer holds what the server can take in half the grace period
   (back-pressure, uploader.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from pyhexz import hexz_pb2 as pb
from pyhexz.infra.http import ServerClient
from pyhexz.infra.modelbus import ModelBus
from pyhexz.infra.process import init_worker_process, spawn_context, start_processes
from pyhexz.infra.redact import redact_url
from pyhexz.nn.follow import WATCHER_THREAD, LiveModel, ModelFetcher, TokenRefused
from pyhexz.train.selfplay import run_selfplay, wind_down_before
from pyhexz.worker.config import WorkerConfig
from pyhexz.worker.uploader import Uploader, UploadStats

log = logging.getLogger(__name__)


class StopSignal(threading.Event):
    """The worker's stop: an Event that remembers when it was first set, because the grace
    period runs from the signal, not from when self-play noticed it."""

    at: float | None = None

    def set(self) -> None:
        if self.at is None:
            self.at = time.monotonic()
        super().set()


@dataclass
class WorkerStats:
    games: int = 0
    examples: int = 0
    cut_off: int = 0            # games under way when play stopped, dropped
    simulations: int = 0        # leaves the network evaluated: the work, finished games or not
    model: str = ""
    swaps: int = 0
    refused: int = 0
    seconds: float = 0.0        # the whole run, the wait for a first model included
    play_seconds: float = 0.0   # self-play alone: what examples/s is measured over
    upload: UploadStats = field(default_factory=UploadStats)


def run_worker(cfg: WorkerConfig, stop: threading.Event | None = None,
               execution_id: str | None = None) -> WorkerStats:
    """Runs one worker until `stop` is set or its time is up; returns what it did.

    `stop` is set by the caller's signal handler (a StopSignal: the grace period counts from
    when it was set). The time budget sets it too, `grace_seconds` before `max_seconds`, so
    the last uploads fit in the budget. TokenRefused when the server refuses the auth token
    (for a first model at once; for an upload after the worker has stopped).
    """
    stop = stop or StopSignal()
    t0 = time.monotonic() if cfg.started is None else cfg.started
    stop_at = None if cfg.max_seconds is None else t0 + cfg.max_seconds - cfg.grace_seconds
    # WorkerConfig requires a model name with a Redis URL.
    bus = ModelBus(cfg.redis_url, cfg.model_name) if cfg.redis_url and cfg.model_name else None
    fetcher = ModelFetcher(ServerClient(cfg.server_url, cfg.auth_token), bus, cfg.device,
                           cfg.model_name, cfg.backend)
    live = LiveModel(fetcher, poll_seconds=cfg.model_poll_seconds)
    stats = WorkerStats()

    def stopping() -> bool:
        if stop_at is not None and not stop.is_set() and time.monotonic() >= stop_at:
            log.info("worker stopping reason=time_budget max_seconds=%.0f", cfg.max_seconds)
            stop.set()
        return stop.is_set()

    def watch_budget() -> None:
        # Self-play checks the budget itself; this covers the wait for a first model.
        while not stop.wait(0.5):
            stopping()
    threading.Thread(target=watch_budget, name="budget", daemon=True).start()
    if not live.wait_first(stop):
        log.info("worker stopped before any model arrived")
        return stats
    live.start()
    refused: list[str] = []   # the server refused the token for an upload: stop, then raise

    def token_refused(message: str) -> None:
        refused.append(message)
        stop.set()
    uploader = Uploader(ServerClient(cfg.server_url, cfg.auth_token),
                        buffer_games=cfg.upload_buffer, on_model=live.offer,
                        on_token_refused=token_refused, grace_seconds=cfg.grace_seconds).start()
    last_report = play_start = time.monotonic()

    def report(final: bool = False) -> None:
        u = uploader.stats
        play = stats.play_seconds or time.monotonic() - play_start
        log.info("worker %s elapsed=%.0fs games=%d cut_off=%d examples=%d examples_per_s=%.2f "
                 "model=%s swaps=%d uploaded=%d uploaded_examples=%d buffered=%d "
                 "upload_retries=%d at_capacity=%d wrong_model_dropped=%d rejected=%d lost=%d "
                 "self_play_waited=%.0fs", "done" if final else "progress",
                 time.monotonic() - t0, stats.games, stats.cut_off, stats.examples,
                 stats.examples / max(play, 1e-9), live.label, live.swaps, u.games, u.examples,
                 uploader.pending, u.retries, u.at_capacity, u.wrong_model, u.rejected, u.lost,
                 u.waited)

    def model_source():
        nonlocal last_report
        if time.monotonic() - last_report >= cfg.progress_seconds:
            last_report = time.monotonic()
            report()
        predictor, key = live.current()

        def evaluate(planes: np.ndarray, masks: np.ndarray):
            stats.simulations += len(planes)
            return predictor(planes, masks)
        return evaluate, key

    def sink(req: pb.AddTrainingExamplesRequest) -> None:
        stats.games += 1
        stats.examples += len(req.examples)
        uploader.put(req, stopping)

    log.info("worker started server=%s redis=%s model=%s parallel_games=%d runs_per_move=%d "
             "max_seconds=%s", redact_url(cfg.server_url), "yes" if bus else "no", live.label,
             cfg.parallel_games, cfg.search.runs_per_move, cfg.max_seconds)
    try:
        played = run_selfplay(model_source, sink, cfg.search, parallel_games=cfg.parallel_games,
                              should_stop=stopping,
                              should_start=wind_down_before(stop_at, "worker"),
                              seed=cfg.seed, execution_id=execution_id)
        stats.cut_off = played.cut_off
    finally:
        stats.play_seconds = time.monotonic() - play_start
        stop.set()
        stopped_at = getattr(stop, "at", None) or time.monotonic()
        # No model loads in the grace period: it is for the uploads (a load in progress is
        # left to the daemon thread, its result unused).
        live.close(wait=False)
        deadline = stopped_at + cfg.grace_seconds
        uploader.close(deadline=deadline)
        # The watcher ends within a tick unless a load was under way; what is left of the
        # grace period is its to finish in.
        if not live.join(deadline - time.monotonic()):
            log.warning("model watcher still busy at the deadline; exiting anyway")
    stats.model, stats.swaps, stats.refused = live.label, live.swaps, live.refused
    stats.seconds, stats.upload = time.monotonic() - t0, uploader.stats
    report(final=True)
    if refused:   # with Redis the models come without a token: the first upload is the test
        raise TokenRefused(refused[0])
    return stats


def _play(cfg: WorkerConfig, stop: threading.Event, execution_id: str) -> int:
    """run_worker, as an exit code: 0, or 2 when the server refused the auth token (said in
    one ERROR line; no retry fixes a wrong token, so the worker stops at once)."""
    try:
        run_worker(cfg, stop, execution_id)
    except TokenRefused as e:
        log.error("worker stopping: token refused by the training server error=%r", str(e))
        return 2
    return 0


def _exit_if_a_load_is_running(code: int) -> None:
    """Ends the process at once (logs flushed) if the model watcher is still inside a load
    begun before the stop: the interpreter's exit under a thread in torch can abort ("terminate
    called without an active exception"), and a stopping worker must exit with `code`."""
    if any(t.name == WATCHER_THREAD and t.is_alive() for t in threading.enumerate()):
        logging.shutdown()
        os._exit(code)


def _execution_id(index: int) -> str:
    """Names this run in every upload; Cloud Run's execution and task index when there are."""
    execution = os.environ.get("CLOUD_RUN_EXECUTION")
    task = os.environ.get("CLOUD_RUN_TASK_INDEX", "0")
    base = f"{execution}-{task}" if execution else uuid.uuid4().hex[:16]
    return f"{base}-{index}"


# How often a worker process looks at the parent's stop flag. A flag, not a multiprocessing
# Event: a process that ends inside an Event's wait() (its play over, a refused token) leaves
# the Event's next set() waiting for it forever, and that set() is the parent's.
RELAY_SECONDS = 0.1


def _child(cfg: WorkerConfig, stop, index: int, log_level: int) -> None:
    init_worker_process(log_level=log_level)
    event = StopSignal()
    signal.signal(signal.SIGTERM, lambda s, f: event.set())

    def relay_stop() -> None:   # the parent's stop (a shared flag), as this process's own event
        while not stop.value:
            time.sleep(RELAY_SECONDS)
        event.set()
    threading.Thread(target=relay_stop, daemon=True).start()
    seed = None if cfg.seed is None else cfg.seed + index
    code = _play(dataclasses.replace(cfg, seed=seed, num_workers=1), event, _execution_id(index))
    _exit_if_a_load_is_running(code)
    sys.exit(code)


def run(cfg: WorkerConfig) -> int:
    """The `worker` command: one or `num_workers` worker processes; 0 unless one failed.

    SIGTERM and SIGINT stop it gracefully (see the module docstring).
    """
    stop = StopSignal()

    def on_signal(signum, frame) -> None:
        log.info("worker stopping reason=signal signal=%s", signal.Signals(signum).name)
        stop.set()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if cfg.num_workers == 1:
            code = _play(cfg, stop, _execution_id(0))
            _exit_if_a_load_is_running(code)
            return code
        ctx = spawn_context()
        shared_stop = ctx.RawValue("b", 0)   # see RELAY_SECONDS
        level = logging.getLogger("pyhexz").getEffectiveLevel()
        procs = [ctx.Process(target=_child, args=(cfg, shared_stop, i, level), name=f"worker-{i}")
                 for i in range(cfg.num_workers)]
        start_processes(procs)
        while any(p.is_alive() for p in procs):
            if stop.wait(0.1):   # the children's grace periods start when they hear it
                shared_stop.value = 1
            if any(p.exitcode not in (None, 0) for p in procs) and not shared_stop.value:
                log.error("worker stopping: a worker process failed exit_codes=%s",
                          [p.exitcode for p in procs])
                shared_stop.value = 1   # the others wind down (they upload what they finished)
            for p in procs:
                p.join(timeout=0)
        codes = [p.exitcode for p in procs]
        if all(c == 0 for c in codes):
            return 0
        return 2 if 2 in codes else 1   # 2: a refused token (_play), as with one process
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
