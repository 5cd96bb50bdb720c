"""The checkpoint files workers download (GET /models/...), with the newest few kept in memory:
every worker fetches each new checkpoint once, so the bytes are read from storage once."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from pyhexz.infra.storage import (
    META_FILE,
    SCRIPT_FILE,
    CheckpointRepo,
    Storage,
    sha256,
    validate_model_name,
)

CACHED_FILES = 6


class ModelFiles:
    """(bytes, SHA-256) of model files by (name, checkpoint, file), least recently used out."""

    def __init__(self, storage: Storage, repo: CheckpointRepo,
                 latest: Callable[[], int | None]) -> None:
        self.storage = storage
        self.repo = repo            # the served model's checkpoints
        self._latest = latest       # its newest published checkpoint (None before the first)
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[tuple, tuple[bytes, str]] = collections.OrderedDict()

    def remember(self, name: str, n: int, file: str, data: bytes, digest: str) -> None:
        """A file just published (its SHA-256 is known already): served without a read."""
        with self._lock:
            self._put((name, n, file), (data, digest))

    def _put(self, key: tuple, entry: tuple[bytes, str]) -> None:
        """Caller holds the lock."""
        self._cache[key] = entry
        while len(self._cache) > CACHED_FILES:
            self._cache.popitem(last=False)

    def model_file(self, name: str | None, n: int | None,
                   file: str = SCRIPT_FILE) -> tuple[str, int, bytes, str]:
        """(name, checkpoint, bytes, SHA-256) of a model file; the latest by default.

        Raises FileNotFoundError when the checkpoint does not exist, ValueError for a bad name.
        """
        own = self.repo.name
        name = validate_model_name(name or own)
        if n is None:
            n = self._latest() if name == own else None
            if n is None:
                raise FileNotFoundError(f"model {name} has no checkpoint yet")
        key = (name, n, file)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
        if hit is None:
            repo = self.repo if name == own else CheckpointRepo(self.storage, name)
            try:
                data = repo.read_verified(n, file)
            except FileNotFoundError:
                # No checkpoint, or one without this file (model.onnx needs the `onnx` extra):
                # the meta is read again only to say which.
                what = (f"checkpoint {n} of model {name} has no {file}"
                        if repo.storage.exists(repo.key(n, META_FILE))
                        else f"model {name} has no checkpoint {n}")
                raise FileNotFoundError(what) from None
            hit = (data, sha256(data))
            with self._lock:
                self._put(key, hit)
        return name, n, hit[0], hit[1]
