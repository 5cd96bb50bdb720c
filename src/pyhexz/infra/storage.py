"""The checkpoint repository: where models and the examples they learned from are kept.

Storage is one small interface (`Storage`: read, exists, write, delete, list of flat keys) with
two backends: `LocalStorage` (a directory) and `GCSStorage` (a Google Cloud Storage bucket and
prefix); `open_storage` picks one from a path or `gs://bucket/prefix` URL. In both, a write is
atomic (readers see the old object or the new one, never part of one) and `if_absent=True`
makes it conditional: it raises CheckpointExistsError if the object exists.

Layout (the same in a local directory and a bucket):

    models/flagz/{name}/checkpoints/{N}/model.pt         pyhexz checkpoint: weights, parameters,
                                                         optimizer state (torch.save)
    models/flagz/{name}/checkpoints/{N}/scriptmodule.pt  TorchScript with the hexz signature
    models/flagz/{name}/checkpoints/{N}/examples/*.zip   the examples checkpoint N was trained from
    models/flagz/{name}/checkpoints/{N}/meta.json        SHA-256 and size of each file, examples
                                                         trained, losses, time; written last

A checkpoint exists once its meta.json exists, and meta.json is created only if absent, so a
half-written checkpoint is never read. Before writing any file, a writer claims checkpoint N by
creating `checkpoints/{N}/.claim` only if absent, so of two writers the loser stops before it
can overwrite the winner's files. A claim without meta.json is left by a writer that died; the
trainer, the one writer of its model, clears it when it starts.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from pyhexz.infra.atomicfile import atomic_write_bytes

MODEL_FILE = "model.pt"
SCRIPT_FILE = "scriptmodule.pt"
ONNX_FILE = "model.onnx"   # the same network for onnxruntime (nn/onnxfile.py)
META_FILE = "meta.json"
CLAIM_FILE = ".claim"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class StorageError(RuntimeError):
    pass


class CheckpointExistsError(StorageError):
    """Another writer published this checkpoint first."""


def validate_model_name(name: str) -> str:
    """Model names become path and key parts; only plain names may escape nothing."""
    if not _NAME_RE.fullmatch(name or "") or ".." in name:
        raise ValueError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '_', '-', '.' "
            f"(starting with a letter or digit)")
    return name


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_key(key: str) -> str:
    """Keys are relative paths; none may climb out of the storage root or prefix."""
    if not key or key.startswith("/") or ".." in key.split("/") or "\0" in key:
        raise ValueError(f"invalid storage key {key!r}")
    return key


class Storage(Protocol):
    """Objects under flat, '/'-separated keys."""

    def read(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError if it does not exist."""

    def exists(self, key: str) -> bool: ...

    def write(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Atomic; with if_absent, CheckpointExistsError if the key exists."""

    def delete(self, key: str) -> None:
        """Removes the object; no error if it does not exist."""

    def list(self, prefix: str) -> list[str]:
        """Names of the immediate children of a 'directory' prefix, sorted, hidden ones left out."""

    def list_holding(self, prefix: str, name: str) -> builtins.list[str]:
        """Like list, only the children that hold an object `name` (one listing on GCS)."""


class LocalStorage:
    """Objects as files under a root directory; writes are atomic (temp file, rename)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{self._path(key)} does not exist") from None

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def write(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not if_absent:
            atomic_write_bytes(path, data)
            return
        # Write a temp file, then hard-link it into place: link() fails if the target exists,
        # which makes the write both atomic and conditional.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        atomic_write_bytes(tmp, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise CheckpointExistsError(f"{path} exists already") from None
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        """Keys of the immediate children of a 'directory' prefix (names only)."""
        path = self._path(prefix.rstrip("/"))
        if not path.is_dir():
            return []
        return sorted(p.name for p in path.iterdir() if not p.name.startswith("."))

    def list_holding(self, prefix: str, name: str) -> builtins.list[str]:
        return [child for child in self.list(prefix)
                if self._path(f"{prefix.rstrip('/')}/{child}/{name}").is_file()]


class GCSStorage:
    """Objects in a Google Cloud Storage bucket under a prefix (google-cloud-storage).

    Every call has a timeout (`timeout` seconds per HTTP request) and a bounded retry
    (transient errors retried with backoff for at most `retry_seconds`): the client's default
    would retry for up to 120 s, stalling the trainer. Objects appear whole when an upload
    completes, so writes are atomic. Conditional writes use `if_generation_match=0`, which GCS
    enforces atomically: of two servers writing one checkpoint's claim, one gets 412. A retried
    conditional upload whose first attempt did succeed also gets 412; it is told apart by
    reading the object back (our bytes: our write).

    The gcp-storage-emulator (tests; STORAGE_EMULATOR_HOST) ignores generation preconditions,
    so a conditional write also checks existence first: that catches a conflict with an
    earlier writer anywhere, and a simultaneous one only on real GCS.
    """

    def __init__(self, bucket: str, prefix: str = "", *, client=None, timeout: float = 30.0,
                 retry_seconds: float = 60.0) -> None:
        from google.cloud import storage as gcs
        from google.cloud.storage.retry import DEFAULT_RETRY
        if not bucket or "/" in bucket:
            raise ValueError(f"invalid bucket name {bucket!r}")
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.client = client or gcs.Client()
        self.bucket = self.client.bucket(bucket)
        self.timeout = timeout
        self.retry = DEFAULT_RETRY.with_timeout(retry_seconds)

    def __repr__(self) -> str:
        return f"GCSStorage('gs://{self.bucket.name}/{self.prefix}')"

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _url(self, key: str) -> str:
        return f"gs://{self.bucket.name}/{self._name(key)}"

    def read(self, key: str) -> bytes:
        from google.api_core.exceptions import NotFound
        try:
            return self.bucket.blob(self._name(key)).download_as_bytes(
                timeout=self.timeout, retry=self.retry)
        except NotFound:
            raise FileNotFoundError(f"{self._url(key)} does not exist") from None

    def exists(self, key: str) -> bool:
        return self.bucket.blob(self._name(key)).exists(timeout=self.timeout, retry=self.retry)

    def write(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        from google.api_core.exceptions import PreconditionFailed
        blob = self.bucket.blob(self._name(key))
        if if_absent and self.exists(key):
            raise CheckpointExistsError(f"{self._url(key)} exists already")
        try:
            # The retry is explicit: the client retries unconditional uploads not at all by
            # default, and ours are idempotent (the same bytes again).
            blob.upload_from_string(data, content_type="application/octet-stream",
                                    if_generation_match=0 if if_absent else None,
                                    timeout=self.timeout, retry=self.retry)
        except PreconditionFailed:
            try:
                if self.read(key) == data:
                    return  # an earlier attempt of this very call succeeded
            except FileNotFoundError:
                pass
            raise CheckpointExistsError(f"{self._url(key)} exists already") from None

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound
        try:
            self.bucket.blob(self._name(key)).delete(timeout=self.timeout, retry=self.retry)
        except NotFound:
            pass

    def list(self, prefix: str) -> list[str]:
        base = self._name(prefix.rstrip("/")) + "/"
        it = self.client.list_blobs(self.bucket, prefix=base, delimiter="/",
                                    timeout=self.timeout, retry=self.retry)
        names = {b.name[len(base):] for b in it}  # iterating fills it.prefixes
        names |= {p[len(base):].rstrip("/") for p in it.prefixes}
        return sorted(n for n in names if n and not n.startswith("."))

    def list_holding(self, prefix: str, name: str) -> builtins.list[str]:
        # One listing of just the `name` objects below the prefix (matchGlob), not a request
        # per child. '**' keeps the prefix itself out of the pattern: it may hold glob
        # characters; the depth is checked here.
        base = self._name(prefix.rstrip("/")) + "/"
        it = self.client.list_blobs(self.bucket, prefix=base, match_glob=f"**/{name}",
                                    timeout=self.timeout, retry=self.retry)
        children = (b.name[len(base):-len(name) - 1] for b in it
                    if b.name.endswith(f"/{name}"))
        return sorted(c for c in children if c and "/" not in c and not c.startswith("."))


def open_storage(url: str | os.PathLike) -> Storage:
    """LocalStorage for a directory path, GCSStorage for gs://bucket[/prefix].

    GCS credentials are the usual Application Default Credentials; with STORAGE_EMULATOR_HOST
    set, the client talks to that emulator without credentials.
    """
    url = str(url)
    if url.startswith("gs://"):
        bucket, _, prefix = url[len("gs://"):].partition("/")
        return GCSStorage(bucket, prefix)
    return LocalStorage(url)


class CheckpointRepo:
    """The checkpoints of one model in a storage."""

    def __init__(self, storage: Storage, name: str) -> None:
        self.storage = storage
        self.name = validate_model_name(name)
        self.prefix = f"models/flagz/{self.name}/checkpoints"

    def key(self, n: int, file: str) -> str:
        return f"{self.prefix}/{n}/{file}"

    def checkpoints(self) -> list[int]:
        """Published checkpoint numbers (those with a meta.json), ascending: one listing."""
        return sorted(int(x) for x in self.storage.list_holding(self.prefix, META_FILE)
                      if x.isdigit())

    def latest(self) -> int | None:
        nums = self.checkpoints()
        return nums[-1] if nums else None

    def meta(self, n: int) -> dict:
        return json.loads(self.storage.read(self.key(n, META_FILE)))

    def read_verified(self, n: int, file: str) -> bytes:
        """A file of published checkpoint n, checked against the SHA-256 in its meta.json.

        FileNotFoundError if checkpoint n is not published (meta.json is read first).
        """
        want = self.meta(n)["sha256"].get(file)
        data = self.storage.read(self.key(n, file))
        if want is not None and sha256(data) != want:
            raise StorageError(f"{self.key(n, file)}: SHA-256 mismatch, the file is corrupt")
        return data

    @contextmanager
    def verified_copy(self, n: int, file: str) -> Iterator[Path]:
        """A checkpoint file, checked against its SHA-256, as a temporary local file.

        torch loads from paths; a copy also keeps a reader safe from a concurrent writer.
        """
        data = self.read_verified(n, file)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / file
            path.write_bytes(data)
            yield path

    def publish(self, n: int, files: dict[str, bytes], meta: dict) -> dict:
        """Writes checkpoint n: every file, then meta.json (if absent) as the commit point."""
        if self.storage.exists(self.key(n, META_FILE)):
            raise CheckpointExistsError(f"checkpoint {n} of {self.name} exists already")
        try:
            self.storage.write(self.key(n, CLAIM_FILE), os.urandom(16).hex().encode(),
                               if_absent=True)
        except CheckpointExistsError:
            raise CheckpointExistsError(
                f"checkpoint {n} of {self.name} is being written by another writer") from None
        for file, data in files.items():
            self.storage.write(self.key(n, file), data)
        meta = dict(meta, model=self.name, checkpoint=n, created=time.time(),
                    sha256={file: sha256(data) for file, data in files.items()},
                    size={file: len(data) for file, data in files.items()})
        self.storage.write(self.key(n, META_FILE), json.dumps(meta, indent=1).encode(),
                           if_absent=True)
        return meta

    def clear_stale_claim(self, n: int) -> None:
        """Drops the claim on an unpublished checkpoint n (left by a writer that died)."""
        if not self.storage.exists(self.key(n, META_FILE)):
            self.storage.delete(self.key(n, CLAIM_FILE))

    def example_archives(self, n: int) -> list[str]:
        return [f for f in self.storage.list(f"{self.prefix}/{n}/examples") if f.endswith(".zip")]
