"""The model bus: the newest model of a training run, in Redis, for workers and CPU players.

Redis holds a fast copy, never the record (ARCHITECTURE.md): the checkpoint repository in
storage is the truth. For a model `{name}` (validated, so no key escapes its prefix):

    pyhexz:models:{name}:latest        string  the latest checkpoint number N, as decimal
    pyhexz:models:{name}:ckpt:{N}      hash    data:    the TorchScript model (scriptmodule.pt)
                                               sha256:  hex SHA-256 of data
                                               onnx, onnx_sha256: the same network as ONNX
                                                        (model.onnx), where the checkpoint
                                                        has one: readers skip the conversion
                                               examples_trained, created (unix seconds)
    pyhexz:models:{name}:announce      pub/sub channel; each message is a checkpoint number N

The trainer publishes in one MULTI/EXEC transaction: store the hash, move the pointer, PUBLISH
N. Only the number travels on the channel, never model bytes. Pub/sub delivers at most once,
so readers re-read the pointer when they start, after every reconnect and periodically.
Older checkpoint hashes expire after `RETAIN_SECONDS`, so a reader that read the pointer just
before a newer checkpoint arrived can still fetch the one it was told about.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from dataclasses import dataclass

import redis

from pyhexz.infra.storage import sha256, validate_model_name

log = logging.getLogger(__name__)

RETAIN_SECONDS = 3600
_TIMEOUT = 5.0


class ModelIntegrityError(RuntimeError):
    """Model bytes in Redis do not match their SHA-256 (or are missing): never run them."""


@dataclass(frozen=True)
class BusModel:
    name: str
    checkpoint: int
    data: bytes
    sha256: str
    onnx: bytes | None = None   # checked against its own SHA-256; None when absent or bad


def keys(name: str) -> dict[str, str]:
    """The Redis key names of a model (for docs, tests and operators)."""
    p = f"pyhexz:models:{validate_model_name(name)}"
    return {"latest": f"{p}:latest", "checkpoint": f"{p}:ckpt:{{n}}", "channel": f"{p}:announce"}


class ModelBus:
    """Publishes and fetches the models of one model name through Redis.

    Calls fail fast (socket timeouts of a few seconds) with redis.ConnectionError or
    redis.TimeoutError; callers decide how to back off.
    """

    def __init__(self, url: str, name: str, *, timeout: float = _TIMEOUT) -> None:
        self.name = validate_model_name(name)
        self.url = url
        k = keys(name)
        self.latest_key, self.channel = k["latest"], k["channel"]
        self._ckpt_key = k["checkpoint"]
        self.redis = redis.Redis.from_url(url, socket_timeout=timeout,
                                          socket_connect_timeout=timeout,
                                          health_check_interval=30)

    def __repr__(self) -> str:
        return f"ModelBus({self.url!r}, {self.name!r})"

    def checkpoint_key(self, n: int) -> str:
        return self._ckpt_key.format(n=int(n))

    def publish(self, n: int, data: bytes, *, examples_trained: int = 0,
                onnx: bytes | None = None) -> str:
        """Stores checkpoint n's TorchScript bytes (and its ONNX form, when given), moves the
        pointer and announces n.

        Returns the SHA-256 stored with the bytes. One transaction: a reader that sees the
        pointer (or the announcement) finds the bytes.
        """
        digest = sha256(data)
        key = self.checkpoint_key(n)
        with self.redis.pipeline(transaction=True) as p:
            p.hset(key, mapping={"data": data, "sha256": digest, "created": f"{time.time():.3f}",
                                 "examples_trained": int(examples_trained)})
            if onnx is not None:
                p.hset(key, mapping={"onnx": onnx, "onnx_sha256": sha256(onnx)})
            p.persist(key)
            previous = self.redis.get(self.latest_key)
            if previous is not None and int(previous) != int(n):
                p.expire(self.checkpoint_key(int(previous)), RETAIN_SECONDS)
            p.set(self.latest_key, int(n))
            p.publish(self.channel, str(int(n)))
            p.execute()
        return digest

    def latest(self) -> int | None:
        """The latest checkpoint number, or None if nothing was published yet."""
        v = self.redis.get(self.latest_key)
        if v is None:
            return None
        try:
            return int(v)
        except ValueError:
            raise ModelIntegrityError(f"{self.latest_key} holds {v[:40]!r}, not a number") from None

    def fetch(self, n: int) -> BusModel:
        """Checkpoint n's model bytes, checked against their SHA-256. Its ONNX bytes come
        along where they were published and pass their own check; ONNX bytes that fail it
        are left out with one log line (the reader converts the TorchScript model instead)."""
        key = self.checkpoint_key(n)
        data, digest, onnx, onnx_digest = self.redis.hmget(
            key, ["data", "sha256", "onnx", "onnx_sha256"])
        # bytes, as the client does not decode responses; None for a missing field.
        if not isinstance(data, bytes) or not isinstance(digest, bytes):
            raise ModelIntegrityError(f"{key} is missing (expired or never published)")
        text = digest.decode("ascii", "replace")
        if sha256(data) != text:
            raise ModelIntegrityError(
                f"{key}: SHA-256 of the model bytes is {sha256(data)[:16]}..., "
                f"expected {text[:16]}...; refusing the corrupt model")
        if not isinstance(onnx, bytes):
            onnx = None
        elif (not isinstance(onnx_digest, bytes)
              or sha256(onnx) != onnx_digest.decode("ascii", "replace")):
            log.warning("onnx bytes ignored key=%s reason='SHA-256 mismatch'", key)
            onnx = None
        return BusModel(self.name, int(n), data, text, onnx)

    def fetch_latest(self) -> BusModel | None:
        n = self.latest()
        return None if n is None else self.fetch(n)

    def announcements(self, poll_seconds: float = 1.0) -> Generator[int | None, None, None]:
        """Checkpoint numbers as they are announced; None every `poll_seconds` without one.

        The None ticks let a caller check its stop flag. Raises redis.ConnectionError when the
        connection drops: the caller reconnects and re-reads the pointer (messages sent while
        it was away are lost).
        """
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel)
            while True:
                msg = pubsub.get_message(timeout=poll_seconds)
                if msg is None or msg.get("type") != "message":
                    yield None
                    continue
                try:
                    yield int(msg["data"])
                except (TypeError, ValueError):
                    continue  # not ours to understand; the pointer is the truth
        finally:
            pubsub.close()
