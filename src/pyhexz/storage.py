"""The checkpoint repository: where models and the examples they learned from are kept.

Layout (the same in a local directory and, later, a bucket):

    models/flagz/{name}/checkpoints/{N}/model.pt         pyhexz checkpoint: weights, parameters,
                                                         optimizer state (torch.save)
    models/flagz/{name}/checkpoints/{N}/scriptmodule.pt  TorchScript with the hexz signature
    models/flagz/{name}/checkpoints/{N}/examples/*.zip   the examples checkpoint N was trained from
    models/flagz/{name}/checkpoints/{N}/meta.json        SHA-256 of each file, examples trained,
                                                         losses, time; written last

A checkpoint exists once its meta.json exists, and meta.json is created only if absent, so a
half-written checkpoint is never read. Before writing any file, a writer claims checkpoint N by
creating `checkpoints/{N}/.claim` only if absent, so of two writers the loser stops before it
can overwrite the winner's files. A claim without meta.json is left by a writer that died; the
trainer, the one writer of its model, clears it when it starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from pyhexz.atomicfile import atomic_write_bytes

MODEL_FILE = "model.pt"
SCRIPT_FILE = "scriptmodule.pt"
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


class LocalStorage:
    """Objects as files under a root directory; writes are atomic (temp file, rename)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / key

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


def open_storage(url: str | os.PathLike) -> LocalStorage:
    """Storage for a local directory path (gs:// buckets come with the training server)."""
    url = str(url)
    if url.startswith("gs://"):
        raise NotImplementedError("Google Cloud Storage is not supported yet; use a directory")
    return LocalStorage(url)


class CheckpointRepo:
    """The checkpoints of one model in a storage."""

    def __init__(self, storage: LocalStorage, name: str) -> None:
        self.storage = storage
        self.name = validate_model_name(name)
        self.prefix = f"models/flagz/{self.name}/checkpoints"

    def key(self, n: int, file: str) -> str:
        return f"{self.prefix}/{n}/{file}"

    def checkpoints(self) -> list[int]:
        """Published checkpoint numbers, ascending."""
        nums = [int(x) for x in self.storage.list(self.prefix) if x.isdigit()]
        return sorted(n for n in nums if self.storage.exists(self.key(n, META_FILE)))

    def latest(self) -> Optional[int]:
        nums = self.checkpoints()
        return nums[-1] if nums else None

    def meta(self, n: int) -> dict:
        return json.loads(self.storage.read(self.key(n, META_FILE)))

    def read_verified(self, n: int, file: str) -> bytes:
        """A checkpoint file, checked against the SHA-256 recorded in meta.json."""
        data = self.storage.read(self.key(n, file))
        want = self.meta(n)["sha256"].get(file)
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
                    sha256={file: sha256(data) for file, data in files.items()})
        self.storage.write(self.key(n, META_FILE), json.dumps(meta, indent=1).encode(),
                           if_absent=True)
        return meta

    def clear_stale_claim(self, n: int) -> None:
        """Drops the claim on an unpublished checkpoint n (left by a writer that died)."""
        if not self.storage.exists(self.key(n, META_FILE)):
            self.storage.delete(self.key(n, CLAIM_FILE))

    def example_archives(self, n: int) -> list[str]:
        return [f for f in self.storage.list(f"{self.prefix}/{n}/examples") if f.endswith(".zip")]
