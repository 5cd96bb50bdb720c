"""Following a training run's model: finding, loading and verifying its checkpoints, and a
watcher thread that swaps in each newer one. Shared by the self-play worker (worker/job.py) and
the CPU player (cpu/player.py).

Sources: the Redis model bus (pointer, announcements, bytes with their SHA-256) and/or the
training server (HEAD/GET /models/...). Bytes that fail their checksum or do not load are never
run: the old model stays.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis
import requests

from pyhexz import hexz_pb2 as pb
from pyhexz.infra.http import Backoff, ServerClient, short_error
from pyhexz.infra.modelbus import ModelBus, ModelIntegrityError
from pyhexz.infra.storage import ONNX_FILE, sha256
from pyhexz.nn import ModelLoadError, Predictor, load_model_bytes

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """The model asked for is not there (yet): no server, no such checkpoint."""


class TokenRefused(ModelUnavailable):
    """The training server refused our auth token (HTTP 401/403). Waiting does not help: a
    first model is not waited for (LiveModel.wait_first raises it), the watcher keeps trying,
    as the token may be rotated on the server."""


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
    is missing or corrupt in Redis, or a Redis that is down, sends the request to the server;
    after a Redis error the server alone is asked for `REDIS_PAUSE_SECONDS`, so that a Redis
    that does not answer (a partition: each try waits for its timeout) does not slow every
    request. Without a server (`client` None) Redis is the only source and its errors are
    raised. Every model is checked against its SHA-256 before it is loaded.
    """

    REDIS_PAUSE_SECONDS = 5.0

    def __init__(self, client: ServerClient | None, bus: ModelBus | None,
                 device: str = "cpu", name: str | None = None, backend: str = "torch") -> None:
        if client is None and bus is None:
            raise ValueError("a model fetcher needs a training server or a Redis model bus")
        self.client = client
        self.bus = bus
        self.device = device
        self.backend = backend
        self.name = name   # the model this worker plays for; None: whatever the server trains
        self._bus_paused_until = 0.0

    def _usable_bus(self) -> ModelBus | None:
        """The bus, unless it failed moments ago and the server can answer instead."""
        if self.client is not None and time.monotonic() < self._bus_paused_until:
            return None
        return self.bus

    def _bus_failed(self) -> None:
        self._bus_paused_until = time.monotonic() + self.REDIS_PAUSE_SECONDS

    def latest(self) -> pb.ModelKey | None:
        """The newest model's key, or None while there is none. Raises if no source answers."""
        bus = self._usable_bus()
        if bus is not None:
            try:
                n = bus.latest()
                if n is not None:
                    return _key(bus.name, n)
                if self.client is None:
                    return None
            except (redis.RedisError, ModelIntegrityError) as e:
                if self.client is None:
                    raise
                if isinstance(e, redis.RedisError):
                    self._bus_failed()
                log.warning("model pointer unreadable in redis error=%s; asking the server",
                            short_error(e))
        # Without a server the bus branch above returned or raised (the constructor requires
        # one of the two).
        assert self.client is not None
        # HEAD: the headers name the model without its bytes travelling.
        r = self.client.request("HEAD", "/models/latest")
        if r.status_code == 404:
            return None
        _raise_for_status(r, "/models/latest")
        name = r.headers.get("X-Model-Name")
        checkpoint = r.headers.get("X-Model-Checkpoint", "")
        if not name or not checkpoint.isdigit():
            raise ModelUnavailable(f"HEAD /models/latest: no X-Model-Name/X-Model-Checkpoint "
                                   f"headers (got {name!r}, {checkpoint!r})")
        if self.name and name != self.name:
            raise ModelUnavailable(f"the server trains model {name!r}, this worker was started "
                                   f"for {self.name!r}")
        return _key(name, int(checkpoint))

    def load(self, key: pb.ModelKey) -> LoadedModel:
        """Loads and verifies checkpoint `key`. Raises ModelUnavailable, ModelIntegrityError,
        ModelLoadError or requests.RequestException; never returns unverified bytes."""
        bus = self._usable_bus()
        if bus is not None and key.name == bus.name:
            ckpt_key = bus.checkpoint_key(key.checkpoint)
            try:
                m = bus.fetch(key.checkpoint)
                return self._build(m.data, m.sha256, key, f"redis {ckpt_key}", m.onnx)
            except ModelIntegrityError as e:
                if self.client is None:
                    raise
                if _exists(bus, ckpt_key):
                    log.error("model refused source=redis key=%s reason=%r; never running it, "
                              "asking the server", ckpt_key, str(e))
                else:
                    log.info("model not in redis key=%s; asking the server", ckpt_key)
            except redis.RedisError as e:
                if self.client is None:
                    raise
                self._bus_failed()
                log.warning("redis unavailable error=%s; asking the server", short_error(e))
        if self.client is None:
            # The constructor requires a server or a bus, so without a server there is a bus.
            assert bus is not None
            raise ModelUnavailable(f"model {key.name}:{key.checkpoint} is not on the model bus "
                                   f"of {bus.name!r}, and there is no server to ask")
        path = f"/models/{key.name}/checkpoints/{key.checkpoint}"
        r = self.client.request("GET", path)
        if r.status_code == 404:
            raise ModelUnavailable(f"the server has no model {key.name}:{key.checkpoint}")
        _raise_for_status(r, path)
        digest = sha256(r.content)
        if r.headers.get("X-Model-SHA256") != digest:
            raise ModelIntegrityError(
                f"GET {path}: SHA-256 of the body is {digest[:16]}..., the server's X-Model-SHA256 "
                f"header says {r.headers.get('X-Model-SHA256')!r}; refusing the model")
        return self._build(r.content, digest, key, f"server {path}", self._server_onnx(path))

    def _server_onnx(self, path: str) -> bytes | None:
        """The checkpoint's model.onnx from the server, checked against its SHA-256, for the
        onnx backends (torch has no use for it); None, and the network is converted here,
        where the checkpoint has none or it does not arrive intact."""
        if self.backend == "torch":
            return None
        assert self.client is not None
        try:
            r = self.client.request("GET", path, params={"file": ONNX_FILE})
        except requests.RequestException as e:
            log.info("model.onnx not fetched path=%s error=%s; converting", path, short_error(e))
            return None
        if r.status_code != 200:
            return None
        if r.headers.get("X-Model-SHA256") != sha256(r.content):
            log.warning("model.onnx ignored path=%s reason='SHA-256 mismatch'", path)
            return None
        return r.content

    def _build(self, data: bytes, digest: str, key: pb.ModelKey, source: str,
               onnx: bytes | None = None) -> LoadedModel:
        module = load_model_bytes(data, self.device, source=source)
        return LoadedModel(Predictor(module, self.device, self.backend, onnx),
                           pb.ModelKey(name=key.name, checkpoint=key.checkpoint), digest, source)


def _exists(bus: ModelBus, redis_key: str) -> bool:
    """Whether Redis holds `redis_key`; False when Redis cannot say."""
    try:
        return bool(bus.redis.exists(redis_key))
    except redis.RedisError:
        return False


def _raise_for_status(r: requests.Response, what: str) -> None:
    if r.status_code in (401, 403):
        raise TokenRefused(f"{what}: HTTP {r.status_code}: the server refused the auth token "
                           f"(--auth-token, HEXZ_AUTH_TOKEN) {r.text[:200]!r}")
    if r.status_code != 200:
        raise ModelUnavailable(f"{what}: HTTP {r.status_code} {r.text[:200]!r}")


_LOAD_ERRORS = (ModelUnavailable, ModelIntegrityError, ModelLoadError, requests.RequestException,
                ValueError)
_CONNECTED = object()   # a watch signal: (re)subscribed, so re-read the pointer
WATCHER_THREAD = "model-watch"


class LiveModel:
    """The model self-play runs now, and the watcher thread that swaps in newer ones.

    `current()` is what self-play calls before every move: it only reads one reference, so a
    swap costs self-play nothing; loading and checking happen on the watcher thread. `role`
    names the follower in its log lines ("worker", "cpu player").
    """

    def __init__(self, fetcher: ModelFetcher, *, poll_seconds: float = 30.0,
                 tick_seconds: float = 1.0, backoff: Backoff | None = None,
                 role: str = "worker") -> None:
        self.fetcher = fetcher
        self.role = role
        self.poll_seconds = poll_seconds
        self.tick_seconds = tick_seconds
        self.backoff = backoff if backoff is not None else Backoff(0.5, 5.0)
        self.model: LoadedModel | None = None
        self.swaps = 0
        self.refused = 0
        self._wanted: tuple[pb.ModelKey, bool] | None = None
        self._not_before: dict[tuple[str, int], tuple[float, int]] = {}  # failed key -> retry time
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._next_check = 0.0   # the next periodic check of the latest model
        self._thread = threading.Thread(target=self._watch, name=WATCHER_THREAD, daemon=True)

    @property
    def label(self) -> str:
        """The current model's name:checkpoint, for logs; "none" before the first."""
        return self.model.label if self.model is not None else "none"

    def current(self) -> tuple[Predictor, pb.ModelKey]:
        m = self.model
        if m is None:
            raise ModelUnavailable("no model loaded yet: wait_first() or set .model first")
        return m.predictor, m.key

    def wait_first(self, stop: threading.Event, backoff: Backoff | None = None) -> bool:
        """Loads the newest model, waiting with backoff while there is none; False if stopped.
        TokenRefused (the server refused the auth token) is raised at once: no wait fixes it."""
        if backoff is None:
            backoff = Backoff(1.0, 15.0)
        attempt = 0
        while not stop.is_set():
            try:
                key = self.fetcher.latest()
                if key is not None:
                    self._install(self.fetcher.load(key))
                    return True
                reason = "no model published yet"
            except TokenRefused:
                raise
            except _LOAD_ERRORS + (redis.RedisError,) as e:
                reason = short_error(e)
            delay = backoff.delay(attempt)
            attempt += 1
            log.info("%s waiting for a model reason=%r retry_in=%.1fs", self.role, reason, delay)
            stop.wait(delay)
        return False

    def offer(self, key: pb.ModelKey, force: bool = False) -> bool:
        """A model named by the server; switch to it if newer (or if `force`, whatever it is).
        Says whether the switch was scheduled: the decision is made here, at once."""
        if not self._wants(key, force):
            return False
        with self._lock:
            self._wanted = (pb.ModelKey(name=key.name, checkpoint=key.checkpoint), force)
        self._wake.set()
        return True

    def start(self) -> LiveModel:
        self._thread.start()
        return self

    def close(self, wait: bool = True) -> None:
        """Stops the watcher: no model is loaded after this. `wait` False returns at once (a
        load under way finishes on the daemon thread, unused: a stopping worker's grace
        period is for its uploads)."""
        self._stop.set()
        self._wake.set()
        if wait:
            self.join(self.tick_seconds + 6)

    def join(self, timeout: float) -> bool:
        """Waits up to `timeout` for the watcher to end after close(); whether it has. A
        process should not exit under a thread that may be inside torch."""
        if self._thread.is_alive():
            self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()

    # --- the watcher thread ---

    def _watch(self) -> None:
        attempt = 0
        self._next_check = time.monotonic() + self.poll_seconds
        while not self._stop.is_set():
            try:
                for signal_ in self._signals():
                    if self._stop.is_set():
                        return
                    now = time.monotonic()
                    if signal_ is _CONNECTED:
                        attempt = 0
                    if signal_ is _CONNECTED or now >= self._next_check:
                        self._next_check = now + self.poll_seconds
                        self._check_latest()
                    # Not elif: an announcement that arrives when a poll is due is still
                    # taken (the pointer may not name it: a republished or forced key).
                    if isinstance(signal_, int):
                        # Only the bus announces numbers (_signals), so there is a bus.
                        bus = self.fetcher.bus
                        assert bus is not None
                        # An announcement means new bytes: retry even a key that failed before.
                        self._not_before.pop((bus.name, signal_), None)
                        self._consider(_key(bus.name, signal_), False)
                    self._take_wanted()
            except redis.RedisError as e:
                delay = self.backoff.delay(attempt)
                attempt += 1
                log.warning("model watch lost redis error=%s; following the server, "
                            "reconnecting in %.1fs", short_error(e), delay)
                self._follow_server(delay)
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
        announcements = bus.announcements(self.tick_seconds)   # close() ends its pubsub
        try:
            first = next(announcements)   # subscribes; the pointer is read after that, so
            yield _CONNECTED              # nothing published in between is missed
            yield first
            yield from announcements
        finally:
            announcements.close()

    def _follow_server(self, seconds: float) -> None:
        """For `seconds`, while Redis cannot be reached: follow as without Redis, taking the
        models named in upload answers at once and checking the latest on the poll interval
        (the fetcher asks the server). A worker must not fall behind for as long as Redis is
        down: games of a model too old for the server are thrown away."""
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            self._take_wanted()
            now = time.monotonic()
            if now >= self._next_check:
                self._next_check = now + self.poll_seconds
                self._check_latest()
            if now >= end:
                return
            self._wake.wait(min(self.tick_seconds, end - now))
            self._wake.clear()

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

    def _wants(self, key: pb.ModelKey, force: bool) -> bool:
        """Whether `key` should replace the current model: another one that is newer, of
        another name, or forced."""
        m = self.model
        return m is None or (key != m.key and (force or key.name != m.key.name
                                               or key.checkpoint > m.key.checkpoint))

    def _consider(self, key: pb.ModelKey, force: bool) -> None:
        if self._stop.is_set() or not self._wants(key, force):
            return   # stopped: no loads after close() (a stopping worker needs its CPU)
        k = (key.name, key.checkpoint)
        not_before, failures = self._not_before.get(k, (0.0, 0))
        if time.monotonic() < not_before:
            return
        try:
            loaded = self.fetcher.load(key)
        except _LOAD_ERRORS as e:
            self.refused += 1
            # The same backoff as reconnecting: a key that keeps failing is asked for less
            # often, and a fleet that all refused it does not ask again in step.
            self._not_before[k] = (time.monotonic() + self.backoff.delay(failures),
                                   failures + 1)
            log.error("model switch refused to=%s:%d error=%r; keeping %s", key.name,
                      key.checkpoint, short_error(e), self.label)
            return
        self._not_before.pop(k, None)
        self._install(loaded)

    def _install(self, loaded: LoadedModel) -> None:
        old, self.model = self.model, loaded
        if old is not None:
            self.swaps += 1
        log.info("%s model=%s sha256=%s... source=%s previous=%s", self.role, loaded.label,
                 loaded.sha256[:12], loaded.source, old.label if old else "none")


__all__ = ["LiveModel", "LoadedModel", "ModelFetcher", "ModelUnavailable", "TokenRefused",
           "WATCHER_THREAD"]
