"""Crash-safe file replacement.

Model checkpoints and TorchScript exports are read by other processes (self-play
workers, the CPU player server) while the trainer keeps overwriting them. Writing
a file in place would let a reader see a half-written file, and a crash or power
loss mid-write would destroy the previous good version. Instead we

1. write the new content to a temporary file in the *same directory* (os.replace
   is only atomic within one file system),
2. flush and ``os.fsync`` it, so the data is on disk before the name points at it
   (otherwise a crash right after the rename can leave an empty file under the
   final name on some file systems),
3. ``os.replace`` it over the destination, which readers observe atomically:
   they see either the old file or the new one, never a mix,
4. ``fsync`` the directory, so the rename itself survives a crash.

If anything fails before the rename, the temporary file is removed and the
destination is untouched.

Notes:
- If ``path`` is a symlink, the link itself is replaced by a regular file.
- The temporary file is created with mode 0o666 minus the process umask, i.e. the
  same permissions ``open(path, "wb")`` would give a new file (unlike
  ``tempfile.mkstemp``, which always uses 0o600).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["atomic_write_bytes", "atomic_writer"]

StrPath = str | os.PathLike[str]

# Temp names start with "." so directory listings and globs like "*.pt" used to
# discover checkpoints do not pick up in-flight files.
_TMP_SUFFIX = ".tmp"


def _create_temp(directory: str, base: str) -> tuple[int, str]:
    """Create a new, empty temp file next to the destination; return (fd, path)."""
    while True:
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}{_TMP_SUFFIX}")
        try:
            # O_EXCL: never clobber another writer's temp file. Mode 0o666 lets
            # the umask decide the final permissions, as for a plain open().
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        return fd, tmp


def _fsync_directory(directory: str) -> None:
    """Persist a rename in ``directory``; a no-op where directories can't be synced."""
    if os.name != "posix":
        # Windows cannot open directories as files; NTFS journals the rename.
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as e:
        # Some file systems (certain FUSE and network mounts) reject fsync on a
        # directory. The data file itself is already synced, so carry on.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: StrPath) -> Iterator[BinaryIO]:
    """Yield a binary file whose content atomically replaces ``path`` on success.

    The destination only changes when the ``with`` block exits without an
    exception; on any error (including KeyboardInterrupt) the temporary file is
    deleted and the exception propagates.
    """
    dest = os.path.abspath(os.fspath(path))
    directory, base = os.path.split(dest)
    fd, tmp = _create_temp(directory, base)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # After the rename the new content is in place; a failure here must not
    # delete anything, so this is outside the cleanup block.
    _fsync_directory(directory)


def atomic_write_bytes(path: StrPath, data: bytes) -> None:
    """Atomically replace ``path`` with ``data`` (see the module docstring)."""
    with atomic_writer(path) as f:
        f.write(data)
