"""A write-ahead log: acknowledged data survives kill -9 and power loss.

The training server acknowledges examples only once they are in this log on disk. Records are
opaque bytes; a record's *position* is the logical byte offset just after it, a number that
only grows for the life of the log directory, so "trained up to position P" names exactly a
prefix of the log.

Layout of the directory:

    ID                       random id of this log, written once (a checkpoint records it with
                             its position, so a checkpoint of another log never trims this one)
    LOCK                     flock()ed by the one process that owns the log
    {start:020d}.wal         segments; `start` is the logical position of the first record

A segment is the 8-byte header `HXZWAL01`, then records, each framed as

    length (u32 little-endian) | crc32(length bytes + payload) (u32 little-endian) | payload

then zeros: segments are created full size, zero-filled and fsync'ed, and records are written
into them in place. fdatasync() of an append must also journal the file's new size, which made
it 3x slower here (BENCHMARKS.md); overwriting already-allocated blocks flushes only the data.
An all-zero frame never passes its CRC, so the records end where the zeros begin. A helper
thread prepares the next segment while the current one fills.

Group commit: `append` hands its record to one writer thread and waits. The writer takes every
record queued meanwhile, writes them with one write() and makes them durable with one
fdatasync(), then releases all their waiters at once, so N concurrent requests cost one disk
flush, not N. The writer also hands the durable records, in log order, to a `sink` callback:
the server's trainer is fed from there, so it never sees a record the log does not hold, and
sees them in the order their positions say.

Recovery (`open`): segments are complete except possibly the last, whose tail may hold a torn
record from a crash mid-write; the first record whose frame or CRC does not check out ends the
log there, and the torn bytes after it are zeroed. More damage than one group commit can have
written, or a bad record anywhere else, is corruption and raises WALCorruptError rather than
silently dropping acknowledged data.

A segment is rolled (a new file begun) when it would exceed `segment_bytes`; `trim(P)` deletes
segments whose records all lie before P (trained and archived in a checkpoint).
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import struct
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SEGMENT_MAGIC = b"HXZWAL01"
_FRAME = struct.Struct("<II")
# One group commit writes at most this many bytes (frames included): it bounds the latency of
# a commit and the size of a torn tail, which recovery uses to tell a torn write from damage.
_MAX_BATCH_BYTES = 64 << 20
MAX_RECORD_BYTES = _MAX_BATCH_BYTES - _FRAME.size


class WALError(RuntimeError):
    pass


class WALLockedError(WALError):
    """Another process owns this log (a second server on the same state directory)."""


class WALCorruptError(WALError):
    pass


class WALClosedError(WALError):
    pass


@dataclass(frozen=True)
class Record:
    start: int      # logical position of the record's frame
    end: int        # position just after it: "durable up to end"
    payload: bytes


def _frame_header(parts: tuple[bytes, ...]) -> tuple[bytes, int]:
    """The frame header of a payload given in parts (joined they are the payload), its size."""
    size = sum(len(p) for p in parts)
    length = size.to_bytes(4, "little")
    crc = zlib.crc32(length)
    for part in parts:
        crc = zlib.crc32(part, crc)  # releases the GIL for large parts
    return length + crc.to_bytes(4, "little"), size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Pending:
    header: bytes
    parts: tuple[bytes, ...]
    size: int                 # bytes on disk, frame included
    attachment: Any
    done: threading.Event = field(default_factory=threading.Event)
    end: int = -1
    error: BaseException | None = None


def _scan(data: bytes, offset: int) -> Iterator[tuple[int, int, bytes]]:
    """(frame offset, offset after it, payload) of the valid records in data from offset."""
    while offset + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, offset)
        body_at = offset + _FRAME.size
        if length > MAX_RECORD_BYTES or body_at + length > len(data):
            return
        payload = data[body_at:body_at + length]
        if zlib.crc32(payload, zlib.crc32(data[offset:offset + 4])) != crc:
            return
        yield offset, body_at + length, payload
        offset = body_at + length


class WriteAheadLog:
    """An append-only log in a directory owned by this process (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike, *, segment_bytes: int = 64 << 20,
                 sink: Callable[[list[tuple[int, int, Any]]], None] | None = None) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.sink = sink
        self._lock_fd = os.open(self.dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise WALLockedError(
                f"{self.dir} is in use by another process (a second server on the same state "
                f"directory?); stop it or use another --state-dir") from None
        os.ftruncate(self._lock_fd, 0)
        os.write(self._lock_fd, f"{os.getpid()}\n".encode())
        try:
            self.id = self._read_or_create_id()
            self._segments = self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._fd = os.open(self._segment_path(self._segments[-1]), os.O_WRONLY)
        self._cond = threading.Condition()
        self._spare: Path | None = None     # a prepared segment file, for the next roll
        self._spare_wanted = threading.Event()
        self._spare_wanted.set()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._closed = False
        self._failed: BaseException | None = None
        self.commits = 0       # group commits (fdatasync calls), for metrics
        self.records_written = 0
        self._writer = threading.Thread(target=self._write_loop, name="wal-writer", daemon=True)
        self._writer.start()
        self._spare_thread = threading.Thread(target=self._spare_loop, name="wal-spare",
                                              daemon=True)
        self._spare_thread.start()

    def __repr__(self) -> str:
        return f"WriteAheadLog({str(self.dir)!r}, id={self.id}, end={self.end})"

    # ---------------------------------------------------------------- opening and recovery

    def _read_or_create_id(self) -> str:
        path = self.dir / "ID"
        if path.exists():
            return path.read_text().strip()
        from pyhexz.infra.atomicfile import atomic_write_bytes
        wal_id = uuid.uuid4().hex
        atomic_write_bytes(path, wal_id.encode())
        return wal_id

    def _segment_path(self, start: int) -> Path:
        return self.dir / f"{start:020d}.wal"

    def _recover(self) -> list[int]:
        """Segment starts, ascending; zeroes a torn tail; sets self.end."""
        for tmp in self.dir.glob(".*.tmp"):
            tmp.unlink()  # a segment whose preparation never completed
        starts = sorted(int(p.stem) for p in self.dir.glob("*.wal") if p.stem.isdigit())
        if not starts:
            self._install_segment(self._prepare_segment(), 0)
            self.end = 0
            return [0]
        last = starts[-1]
        path = self._segment_path(last)
        data = path.read_bytes()
        # Segments are created whole (temp file + rename), so a bad header is not a torn write.
        if not data.startswith(SEGMENT_MAGIC):
            raise WALCorruptError(f"{path}: not a WAL segment (bad header)")
        valid = len(SEGMENT_MAGIC)   # the end of the last valid record
        for _, record_end, _ in _scan(data, len(SEGMENT_MAGIC)):
            valid = record_end
        torn = len(data[valid:].rstrip(b"\0"))
        if torn > _MAX_BATCH_BYTES:
            # More than one group commit's worth after the bad record: not a torn last write
            # but damage to acknowledged records, which zeroing would throw away.
            raise WALCorruptError(f"{path}: bad record at byte {valid} followed by {torn} "
                                  f"non-zero bytes; refusing to drop them")
        if torn:
            log.warning("wal zeroing torn tail segment=%s bytes=%d", path.name, torn)
            fd = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(fd, bytes(torn), valid)
                os.fsync(fd)
            finally:
                os.close(fd)
        self.end = last + valid - len(SEGMENT_MAGIC)
        return starts

    def _prepare_segment(self) -> Path:
        """A zero-filled segment file under a temporary name, durable on disk."""
        tmp = self.dir / f".next-{uuid.uuid4().hex[:8]}.tmp"
        zeros = bytes(min(self.segment_bytes, 1 << 20))
        with open(tmp, "wb") as f:
            f.write(SEGMENT_MAGIC)
            left = self.segment_bytes
            while left > 0:
                left -= f.write(zeros[:left])
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def _install_segment(self, prepared: Path, start: int) -> None:
        os.rename(prepared, self._segment_path(start))
        _fsync_dir(self.dir)

    def _spare_loop(self) -> None:
        """Keeps one prepared segment ready, so a roll costs a rename, not 64 MiB of zeros."""
        while True:
            self._spare_wanted.wait()
            if self._closed:
                return
            try:
                spare = self._prepare_segment()
            except OSError as e:
                log.warning("wal could not prepare a segment: %s (the writer will retry)", e)
                with self._cond:
                    if not self._closed:
                        self._spare_wanted.clear()
                continue
            with self._cond:
                if not self._closed:  # close() sets _closed under _cond: its wake-up stays set
                    self._spare_wanted.clear()
                if self._closed or self._spare is not None:
                    spare.unlink(missing_ok=True)
                else:
                    self._spare = spare

    # ---------------------------------------------------------------- reading

    def records(self, start: int, stop: int | None = None) -> Iterator[Record]:
        """Durable records with start <= record.start < stop (default: to the end).

        `start` must be a record boundary (0, or a position some record ended at).
        """
        stop = self.end if stop is None else stop
        if start >= stop:
            return
        segments = list(self._segments)
        if start < segments[0]:
            raise WALError(f"{self.dir}: position {start} was trimmed "
                           f"(log starts at {segments[0]})")
        for i, seg in enumerate(segments):
            seg_end = segments[i + 1] if i + 1 < len(segments) else None
            if seg_end is not None and seg_end <= start:
                continue
            if seg >= stop:
                return
            path = self._segment_path(seg)
            data = path.read_bytes()
            offset = max(start, seg) - seg + len(SEGMENT_MAGIC)
            for f_at, after, payload in _scan(data, offset):
                rec = Record(seg + f_at - len(SEGMENT_MAGIC), seg + after - len(SEGMENT_MAGIC),
                             payload)
                if rec.start >= stop:
                    return
                offset = after
                yield rec
            # Every byte up to the segment's logical end must be records.
            logical_end = (seg_end if seg_end is not None else self.end) - seg + len(SEGMENT_MAGIC)
            if offset < min(logical_end, stop - seg + len(SEGMENT_MAGIC)):
                raise WALCorruptError(
                    f"{path}: bad record at byte {offset} (CRC or frame); acknowledged data is "
                    f"damaged, refusing to skip it")

    # ---------------------------------------------------------------- writing

    def append(self, payload: bytes | tuple[bytes, ...], attachment: Any = None) -> int:
        """Writes a record and returns its end position once it is durable (fdatasync'ed).

        `payload`: the record's bytes, or a tuple of parts that joined are the record (written
        without joining them: a request body is not copied once more). `attachment` travels
        with the record to the sink (not to disk). Raises WALClosedError after close(), or the
        OSError of a failed write (then nothing was acknowledged).
        """
        parts = payload if isinstance(payload, tuple) else (payload,)
        header, size = _frame_header(parts)
        if size > MAX_RECORD_BYTES:
            raise ValueError(f"record of {size} bytes exceeds {MAX_RECORD_BYTES}")
        item = _Pending(header, parts, _FRAME.size + size, attachment)
        with self._cond:
            if self._closed:
                raise WALClosedError("the write-ahead log is closed")
            if self._failed is not None:
                raise WALError(f"the write-ahead log failed earlier: {self._failed}")
            self._queue.append(item)
            self._cond.notify_all()
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.end

    def _take_batch(self) -> list[_Pending]:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            batch, size = [], 0
            while self._queue and size + self._queue[0].size <= _MAX_BATCH_BYTES:
                item = self._queue.popleft()
                batch.append(item)
                size += item.size
            return batch

    def _write_loop(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return  # closed and drained
            try:
                results = self._commit(batch)
            except BaseException as e:  # the disk failed: nobody in this batch is acknowledged
                log.error("wal write failed error=%r records=%d", e, len(batch))
                for item in batch:
                    item.error = e
                    item.done.set()
                continue
            if self.sink is not None:
                try:
                    self.sink(results)
                except Exception:
                    log.exception("wal sink failed")
            for item in batch:
                item.done.set()

    def _commit(self, batch: list[_Pending]) -> list[tuple[int, int, Any]]:
        total = sum(item.size for item in batch)
        seg = self._segments[-1]
        if self.end > seg and self.end - seg + total > self.segment_bytes:
            self._roll()
        at = self.end - self._segments[-1] + len(SEGMENT_MAGIC)
        buffers = [b for item in batch for b in (item.header, *item.parts) if b]
        try:
            self._write_buffers(buffers, at)
            os.fdatasync(self._fd)
        except OSError as e:
            # Leave no half batch behind, so the next records are found after the last good one.
            try:
                os.pwrite(self._fd, bytes(total), at)
                os.fdatasync(self._fd)
            except OSError:
                self._failed = e
            raise
        results, pos = [], self.end
        for item in batch:
            start, pos = pos, pos + item.size
            item.end = pos
            results.append((start, pos, item.attachment))
        self.end = pos
        self.commits += 1
        self.records_written += len(batch)
        return results

    def _write_buffers(self, buffers: list, offset: int) -> None:
        """pwritev() of all buffers at offset: one system call, no joined copy."""
        max_iov = 512
        while buffers:
            chunk = buffers[:max_iov]
            n = os.pwritev(self._fd, chunk, offset)
            offset += n
            # A short write (rare: a signal, a full disk) continues where it stopped.
            while chunk and n >= len(chunk[0]):
                n -= len(chunk[0])
                chunk.pop(0)
                buffers.pop(0)
            if chunk and n:
                buffers[0] = memoryview(buffers[0])[n:]

    def _roll(self, start: int | None = None) -> None:
        """Continues in a new segment starting at `start` (default: the end)."""
        start = self.end if start is None else start
        with self._cond:
            spare, self._spare = self._spare, None
        self._install_segment(spare or self._prepare_segment(), start)
        self._spare_wanted.set()
        os.close(self._fd)
        self._fd = os.open(self._segment_path(start), os.O_WRONLY)
        self._segments.append(start)

    def skip_to(self, position: int) -> None:
        """Moves the end forward to `position` (a new segment) before any append.

        For a checkpoint that claims more of this log than the disk holds (a disk that lost
        acknowledged data): new records must get positions after the claim, or they would
        count as trained.
        """
        if position <= self.end:
            return
        log.error("wal end=%d is behind position=%d recorded in a checkpoint; records were lost",
                  self.end, position)
        self._roll(position)
        self.end = position

    def trim(self, position: int) -> int:
        """Deletes segments whose records all end at or before `position`; returns how many."""
        removed = 0
        with self._cond:
            while len(self._segments) > 1 and self._segments[1] <= position:
                self._segment_path(self._segments.pop(0)).unlink(missing_ok=True)
                removed += 1
        if removed:
            _fsync_dir(self.dir)
        return removed

    @property
    def first(self) -> int:
        """The position of the oldest record still held."""
        return self._segments[0]

    def segment_count(self) -> int:
        return len(self._segments)

    def close(self) -> None:
        """Writes what is queued, stops the writer and releases the directory lock."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._spare_wanted.set()
        self._writer.join()
        self._spare_thread.join()  # its temp file must be gone before the next owner recovers
        if self._spare is not None:
            self._spare.unlink(missing_ok=True)
        os.close(self._fd)
        os.close(self._lock_fd)


__all__ = ["WriteAheadLog", "Record", "WALError", "WALLockedError", "WALCorruptError",
           "WALClosedError", "SEGMENT_MAGIC"]
