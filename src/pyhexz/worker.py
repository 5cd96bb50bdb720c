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
4. Stop: on SIGTERM/SIGINT, or `grace_seconds` before `max_seconds` is up, no new search step
   starts, the finished games are sent for at most `grace_seconds` (Cloud Run allows 10 s after
   SIGTERM), and the process exits 0. Games still being played are dropped: they have no result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np
import redis
import requests

from pyhexz import hexz_pb2 as pb
from pyhexz.model import ModelLoadError, Predictor, load_model_bytes
from pyhexz.modelbus import ModelBus, ModelIntegrityError
from pyhexz.process import init_worker_process, spawn_context
from pyhexz.selfplay import SearchConfig, run_selfplay
from pyhexz.storage import validate_model_name
from pyhexz.uploader import Backoff, ServerClient, UploadStats, Uploader, short_error

log = logging.getLogger(__name__)


@dataclass
class WorkerConfig:
    server_url: str
    redis_url: Optional[str] = None
    model_name: Optional[str] = None   # required with Redis; else learnt from the server
    max_seconds: Optional[float] = None
    parallel_games: int = 32
    search: SearchConfig = field(default_factory=SearchConfig)
    device: str = "cpu"
    auth_token: Optional[str] = None
    num_workers: int = 1
    grace_seconds: float = 8.0
    model_poll_seconds: float = 30.0
    progress_seconds: float = 60.0
    upload_buffer: int = 64
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        if self.redis_url and not self.model_name:
            raise ValueError("a model name is required with a Redis URL (it names the Redis keys)")
        if self.model_name:
            validate_model_name(self.model_name)
        if self.max_seconds is not None and self.max_seconds <= self.grace_seconds:
            raise ValueError(f"max_seconds ({self.max_seconds}) must be longer than the "
                             f"grace period ({self.grace_seconds} s) kept for the last uploads")


class ModelUnavailable(RuntimeError):
    """The model asked for is not there (yet): no server, no such checkpoint."""


@dataclass(frozen=True)
class LoadedModel:
    predictor: Predictor
    key: pb.ModelKey
    sha256: str
    source: str

    @property
    def label(self) -> str:
        return f"{self.key.name}:{self.key.checkpoint}"


def _key(name: str, n: int) -> pb.ModelKey:
    return pb.ModelKey(name=name, checkpoint=int(n))


class ModelFetcher:
    """Finds and loads models: Redis first when configured, the training server otherwise.

    Redis is a fast copy, the server's storage the record (ARCHITECTURE.md): a checkpoint that
    is missing or corrupt in Redis, or a Redis that is down, sends the request to the server.
    Every model is checked against its SHA-256 before it is loaded.
    """

    def __init__(self, client: ServerClient, bus: Optional[ModelBus], device: str = "cpu",
                 name: Optional[str] = None) -> None:
        self.client = client
        self.bus = bus
        self.device = device
        self.name = name   # the model this worker plays for; None: whatever the server trains

    def latest(self) -> Optional[pb.ModelKey]:
        """The newest model's key, or None while there is none. Raises if no source answers."""
        if self.bus is not None:
            try:
                n = self.bus.latest()
                if n is not None:
                    return _key(self.bus.name, n)
            except (redis.RedisError, ModelIntegrityError) as e:
                log.warning("model pointer unreadable in redis error=%s; asking the server", e)
        # HEAD: the headers name the model without its bytes travelling.
        r = self.client.request("HEAD", "/models/latest")
        if r.status_code == 404:
            return None
        _raise_for_status(r, "/models/latest")
        name, n = r.headers.get("X-Model-Name"), r.headers.get("X-Model-Checkpoint", "")
        if not name or not n.isdigit():
            raise ModelUnavailable(f"HEAD /models/latest: no X-Model-Name/X-Model-Checkpoint "
                                   f"headers (got {name!r}, {n!r})")
        if self.name and name != self.name:
            raise ModelUnavailable(f"the server trains model {name!r}, this worker was started "
                                   f"for {self.name!r}")
        return _key(name, int(n))

    def load(self, key: pb.ModelKey) -> LoadedModel:
        """Loads and verifies checkpoint `key`. Raises ModelUnavailable, ModelIntegrityError,
        ModelLoadError or requests.RequestException; never returns unverified bytes."""
        if self.bus is not None and key.name == self.bus.name:
            ckpt_key = self.bus.checkpoint_key(key.checkpoint)
            try:
                m = self.bus.fetch(key.checkpoint)
                return self._build(m.data, m.sha256, key, f"redis {ckpt_key}")
            except ModelIntegrityError as e:
                if self._exists(ckpt_key):
                    log.error("model refused source=redis key=%s reason=%r; never running it, "
                              "asking the server", ckpt_key, str(e))
                else:
                    log.info("model not in redis key=%s; asking the server", ckpt_key)
            except redis.RedisError as e:
                log.warning("redis unavailable error=%s; asking the server", e)
        path = f"/models/{key.name}/checkpoints/{key.checkpoint}"
        r = self.client.request("GET", path)
        if r.status_code == 404:
            raise ModelUnavailable(f"the server has no model {key.name}:{key.checkpoint}")
        _raise_for_status(r, path)
        digest = hashlib.sha256(r.content).hexdigest()
        if r.headers.get("X-Model-SHA256") != digest:
            raise ModelIntegrityError(
                f"GET {path}: SHA-256 of the body is {digest[:16]}..., the server's X-Model-SHA256 "
                f"header says {r.headers.get('X-Model-SHA256')!r}; refusing the model")
        return self._build(r.content, digest, key, f"server {path}")

    def _exists(self, redis_key: str) -> bool:
        try:
            return bool(self.bus.redis.exists(redis_key))
        except redis.RedisError:
            return False

    def _build(self, data: bytes, digest: str, key: pb.ModelKey, source: str) -> LoadedModel:
        module = load_model_bytes(data, self.device, source=source)
        return LoadedModel(Predictor(module, self.device), pb.ModelKey(name=key.name,
                           checkpoint=key.checkpoint), digest, source)


def _raise_for_status(r: requests.Response, what: str) -> None:
    if r.status_code != 200:
        raise ModelUnavailable(f"{what}: HTTP {r.status_code} {r.text[:200]!r}")


_LOAD_ERRORS = (ModelUnavailable, ModelIntegrityError, ModelLoadError, requests.RequestException,
                ValueError)
_CONNECTED = object()   # a watch signal: (re)subscribed, so re-read the pointer


class LiveModel:
    """The model self-play runs now, and the watcher thread that swaps in newer ones.

    `current()` is what self-play calls before every move: it only reads one reference, so a
    swap costs self-play nothing; loading and checking happen on the watcher thread.
    """

    def __init__(self, fetcher: ModelFetcher, *, poll_seconds: float = 30.0,
                 tick_seconds: float = 1.0, backoff: Backoff = Backoff(0.5, 5.0)) -> None:
        self.fetcher = fetcher
        self.poll_seconds = poll_seconds
        self.tick_seconds = tick_seconds
        self.backoff = backoff
        self.model: Optional[LoadedModel] = None
        self.swaps = 0
        self.refused = 0
        self._wanted: Optional[tuple[pb.ModelKey, bool]] = None
        self._not_before: dict[tuple[str, int], tuple[float, int]] = {}  # failed key -> retry time
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="model-watch", daemon=True)

    def current(self) -> tuple[Predictor, pb.ModelKey]:
        m = self.model
        return m.predictor, m.key

    def wait_first(self, stop: threading.Event, backoff: Backoff = Backoff(1.0, 15.0)) -> bool:
        """Loads the newest model, waiting with backoff while there is none; False if stopped."""
        attempt = 0
        while not stop.is_set():
            try:
                key = self.fetcher.latest()
                if key is not None:
                    self._install(self.fetcher.load(key))
                    return True
                reason = "no model published yet"
            except _LOAD_ERRORS + (redis.RedisError,) as e:
                reason = short_error(e)
            delay = backoff.delay(attempt)
            attempt += 1
            log.info("worker waiting for a model reason=%r retry_in=%.1fs", reason, delay)
            stop.wait(delay)
        return False

    def offer(self, key: pb.ModelKey, force: bool = False) -> None:
        """A model named by the server; switch to it if newer (or if `force`, whatever it is)."""
        m = self.model
        if m is not None and key == m.key:
            return
        if force or m is None or key.name != m.key.name or key.checkpoint > m.key.checkpoint:
            with self._lock:
                self._wanted = (pb.ModelKey(name=key.name, checkpoint=key.checkpoint), force)
            self._wake.set()

    def start(self) -> "LiveModel":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self.tick_seconds + 6)

    # --- the watcher thread ---

    def _watch(self) -> None:
        attempt = 0
        next_check = time.monotonic() + self.poll_seconds
        while not self._stop.is_set():
            try:
                for signal_ in self._signals():
                    if self._stop.is_set():
                        return
                    now = time.monotonic()
                    if signal_ is _CONNECTED:
                        attempt = 0
                    if signal_ is _CONNECTED or now >= next_check:
                        next_check = now + self.poll_seconds
                        self._check_latest()
                    elif isinstance(signal_, int):
                        # An announcement means new bytes: retry even a key that failed before.
                        self._not_before.pop((self.fetcher.bus.name, signal_), None)
                        self._consider(_key(self.fetcher.bus.name, signal_), False)
                    self._take_wanted()
            except redis.RedisError as e:
                delay = self.backoff.delay(attempt)
                attempt += 1
                log.warning("model watch lost redis error=%s; reconnecting in %.1fs", short_error(e), delay)
                self._stop.wait(delay)
            except Exception:
                # The watcher must outlive any surprise: self-play goes on with the old model.
                log.exception("model watch failed; restarting it")
                self._stop.wait(self.backoff.cap)

    def _signals(self) -> Iterator[object]:
        """Announced checkpoint numbers, _CONNECTED after each subscribe, None on quiet ticks."""
        bus = self.fetcher.bus
        if bus is None:
            yield _CONNECTED
            while not self._stop.is_set():
                self._wake.wait(self.tick_seconds)
                self._wake.clear()
                yield None
            return
        announcements = bus.announcements(self.tick_seconds)
        try:
            first = next(announcements)   # subscribes; the pointer is read after that, so
            yield _CONNECTED              # nothing published in between is missed
            yield first
            yield from announcements
        finally:
            announcements.close()

    def _check_latest(self) -> None:
        try:
            key = self.fetcher.latest()
        except _LOAD_ERRORS + (redis.RedisError,) as e:
            log.info("model check failed error=%r", short_error(e))
            return
        if key is not None:
            self._consider(key, False)

    def _take_wanted(self) -> None:
        with self._lock:
            wanted, self._wanted = self._wanted, None
        if wanted is not None:
            self._consider(*wanted)

    def _consider(self, key: pb.ModelKey, force: bool) -> None:
        m = self.model
        if key == m.key or not (force or key.name != m.key.name or key.checkpoint > m.key.checkpoint):
            return
        k = (key.name, key.checkpoint)
        not_before, failures = self._not_before.get(k, (0.0, 0))
        if time.monotonic() < not_before:
            return
        try:
            loaded = self.fetcher.load(key)
        except _LOAD_ERRORS as e:
            self.refused += 1
            self._not_before[k] = (time.monotonic() + self.backoff.base * 2 ** min(failures, 6),
                                   failures + 1)
            log.error("model switch refused to=%s:%d error=%r; keeping %s", key.name,
                      key.checkpoint, short_error(e), m.label)
            return
        self._not_before.pop(k, None)
        self._install(loaded)

    def _install(self, loaded: LoadedModel) -> None:
        old, self.model = self.model, loaded
        if old is not None:
            self.swaps += 1
        log.info("worker model=%s sha256=%s... source=%s previous=%s", loaded.label,
                 loaded.sha256[:12], loaded.source, old.label if old else "none")


class _Stopped(Exception):
    """Raised from the evaluator to end a search step at once when the worker must stop."""


@dataclass
class WorkerStats:
    games: int = 0
    examples: int = 0
    simulations: int = 0        # leaves the network evaluated: the work, finished games or not
    model: str = ""
    swaps: int = 0
    refused: int = 0
    seconds: float = 0.0        # the whole run, the wait for a first model included
    play_seconds: float = 0.0   # self-play alone: what examples/s is measured over
    upload: UploadStats = field(default_factory=UploadStats)


def run_worker(cfg: WorkerConfig, stop: Optional[threading.Event] = None,
               execution_id: Optional[str] = None) -> WorkerStats:
    """Runs one worker until `stop` is set or its time is up; returns what it did.

    `stop` is set by the caller's signal handler. The time budget sets it too, `grace_seconds`
    before `max_seconds`, so the last uploads fit in the budget.
    """
    stop = stop or threading.Event()
    t0 = time.monotonic()
    stop_at = None if cfg.max_seconds is None else t0 + cfg.max_seconds - cfg.grace_seconds
    bus = ModelBus(cfg.redis_url, cfg.model_name) if cfg.redis_url else None
    fetcher = ModelFetcher(ServerClient(cfg.server_url, cfg.auth_token), bus, cfg.device,
                           cfg.model_name)
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
    uploader = Uploader(ServerClient(cfg.server_url, cfg.auth_token), buffer_games=cfg.upload_buffer,
                        on_model=live.offer).start()
    last_report = play_start = time.monotonic()

    def report(final: bool = False) -> None:
        u = uploader.stats
        play = stats.play_seconds or time.monotonic() - play_start
        log.info("worker %s elapsed=%.0fs games=%d examples=%d examples_per_s=%.2f model=%s "
                 "swaps=%d uploaded=%d uploaded_examples=%d buffered=%d upload_retries=%d "
                 "at_capacity=%d wrong_model_dropped=%d rejected=%d lost=%d",
                 "done" if final else "progress", time.monotonic() - t0, stats.games,
                 stats.examples, stats.examples / max(play, 1e-9), live.model.label, live.swaps,
                 u.games, u.examples, uploader.pending, u.retries, u.at_capacity, u.wrong_model,
                 u.rejected, u.lost)

    def model_source():
        nonlocal last_report
        if time.monotonic() - last_report >= cfg.progress_seconds:
            last_report = time.monotonic()
            report()
        predictor, key = live.current()

        def evaluate(planes: np.ndarray, masks: np.ndarray):
            if stopping():
                raise _Stopped
            stats.simulations += len(planes)
            return predictor(planes, masks)
        return evaluate, key

    def sink(req: pb.AddTrainingExamplesRequest) -> None:
        stats.games += 1
        stats.examples += len(req.examples)
        uploader.put(req, stopping)

    log.info("worker started server=%s redis=%s model=%s parallel_games=%d runs_per_move=%d "
             "max_seconds=%s", cfg.server_url, "yes" if bus else "no", live.model.label,
             cfg.parallel_games, cfg.search.runs_per_move, cfg.max_seconds)
    try:
        run_selfplay(model_source, sink, cfg.search, parallel_games=cfg.parallel_games,
                     should_stop=stopping, seed=cfg.seed, execution_id=execution_id)
    except _Stopped:
        pass
    finally:
        stats.play_seconds = time.monotonic() - play_start
        stop.set()
        uploader.close(cfg.grace_seconds)
        live.close()
    stats.model, stats.swaps, stats.refused = live.model.label, live.swaps, live.refused
    stats.seconds, stats.upload = time.monotonic() - t0, uploader.stats
    report(final=True)
    return stats


def _execution_id(index: int) -> str:
    """Names this run in every upload; Cloud Run's execution and task index when there are."""
    execution = os.environ.get("CLOUD_RUN_EXECUTION")
    task = os.environ.get("CLOUD_RUN_TASK_INDEX", "0")
    base = f"{execution}-{task}" if execution else uuid.uuid4().hex[:16]
    return f"{base}-{index}"


def _child(cfg: WorkerConfig, stop, index: int, log_level: int) -> None:
    init_worker_process(log_level=log_level)
    event = threading.Event()
    signal.signal(signal.SIGTERM, lambda s, f: event.set())
    threading.Thread(target=lambda: (stop.wait(), event.set()), daemon=True).start()
    seed = None if cfg.seed is None else cfg.seed + index
    run_worker(dataclasses.replace(cfg, seed=seed, num_workers=1), event, _execution_id(index))


def run(cfg: WorkerConfig) -> int:
    """The `worker` command: one or `num_workers` worker processes; 0 unless one failed.

    SIGTERM and SIGINT stop it gracefully (see the module docstring).
    """
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        log.info("worker stopping reason=signal signal=%s", signal.Signals(signum).name)
        stop.set()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if cfg.num_workers == 1:
            run_worker(cfg, stop, _execution_id(0))
            return 0
        ctx = spawn_context()
        shared_stop = ctx.Event()
        level = logging.getLogger("pyhexz").getEffectiveLevel()
        procs = [ctx.Process(target=_child, args=(cfg, shared_stop, i, level), name=f"worker-{i}")
                 for i in range(cfg.num_workers)]
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            if stop.wait(0.5):
                shared_stop.set()
            for p in procs:
                p.join(timeout=0)
        return 0 if all(p.exitcode == 0 for p in procs) else 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
