"""The write-ahead log: positions, group commit, recovery of torn tails, locking, trimming."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from pyhexz.training_server.wal import (
    SEGMENT_MAGIC,
    WALClosedError,
    WALCorruptError,
    WALError,
    WALLockedError,
    WriteAheadLog,
)

FRAME = 8
SEG = 1 << 16  # small segments: each is zero-filled when created


def payloads(n: int, size: int = 10) -> list[bytes]:
    return [f"r{i:04d}".encode().ljust(size, b".") for i in range(n)]


def read_all(wal: WriteAheadLog, start: int = 0) -> list[bytes]:
    return [r.payload for r in wal.records(start)]


def test_positions_records_and_sink_order(tmp_path) -> None:
    seen = []
    wal = WriteAheadLog(tmp_path, segment_bytes=SEG,
                        sink=lambda batch: seen.extend((end, a) for _, end, a in batch))
    data = payloads(5, 10) + [b""]
    ends = [wal.append(p, attachment=i) for i, p in enumerate(data[:4])]
    ends.append(wal.append((data[4][:3], b"", data[4][3:]), attachment=4))  # in parts
    ends.append(wal.append(data[5], attachment=5))
    assert ends == [18, 36, 54, 72, 90, 98]  # 8-byte frame + payload each
    assert wal.end == 98 and seen == list(zip(ends, range(6), strict=True))
    recs = list(wal.records(0))
    assert [r.payload for r in recs] == data
    assert [(r.start, r.end) for r in recs] == list(zip([0] + ends[:-1], ends, strict=True))
    assert read_all(wal, 36) == data[2:]
    assert [r.payload for r in wal.records(18, 54)] == data[1:3]
    wal.close()
    with pytest.raises(WALClosedError, match="the write-ahead log is closed"):
        wal.append(b"late")
    again = WriteAheadLog(tmp_path, segment_bytes=SEG)  # positions continue after a restart
    assert again.id == wal.id and again.end == 98 and read_all(again) == data
    assert again.append(b"x") == 98 + FRAME + 1
    again.close()


def test_group_commit_one_flush_for_concurrent_appends(tmp_path) -> None:
    """While one commit is in progress, every append that arrives joins the next one."""
    first_batch_in, release = threading.Event(), threading.Event()
    batches = []

    def sink(batch):
        batches.append([a for _, _, a in batch])
        first_batch_in.set()
        release.wait(10)

    wal = WriteAheadLog(tmp_path, segment_bytes=SEG, sink=sink)
    t0 = threading.Thread(target=wal.append, args=(b"first", "first"))
    t0.start()
    assert first_batch_in.wait(10)  # the writer is inside commit 1
    threads = [threading.Thread(target=wal.append, args=(b"x" * i, i)) for i in range(12)]
    for t in threads:
        t.start()
    while len(wal._queue) < 12:
        threading.Event().wait(0.01)
    release.set()
    for t in [t0, *threads]:
        t.join(10)
    assert wal.commits == 2 and wal.records_written == 13
    assert batches[0] == ["first"] and sorted(batches[1]) == list(range(12))
    wal.close()


def test_torn_tail_is_zeroed_and_appending_continues(tmp_path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=4096)
    data = payloads(3)
    for p in data:
        wal.append(p)
    good_end = wal.end
    wal.close()
    seg = tmp_path / f"{0:020d}.wal"
    size = seg.stat().st_size
    assert size == len(SEGMENT_MAGIC) + 4096  # created full size, zero-filled
    at = len(SEGMENT_MAGIC) + good_end
    for torn in (b"\x05\x00", (100).to_bytes(4, "little") + b"\x00\x00\x00\x00" + b"short",
                 (3).to_bytes(4, "little") + b"\xde\xad\xbe\xef" + b"abc"):  # partial / bad CRC
        with open(seg, "r+b") as f:  # what a crash in the middle of a write leaves
            f.seek(at)
            f.write(torn)
        wal = WriteAheadLog(tmp_path, segment_bytes=4096)
        assert wal.end == good_end and seg.stat().st_size == size
        assert seg.read_bytes()[at:] == bytes(size - at)  # the torn bytes are gone
        assert read_all(wal) == data
        wal.close()
    wal = WriteAheadLog(tmp_path, segment_bytes=4096)
    assert wal.append(b"after") == good_end + FRAME + 5
    assert read_all(wal) == data + [b"after"]
    wal.close()


def test_damage_larger_than_a_torn_write_is_refused(tmp_path, monkeypatch) -> None:
    import pyhexz.training_server.wal as walmod
    monkeypatch.setattr(walmod, "_MAX_BATCH_BYTES", 100)  # a small limit instead of 64 MiB
    wal = WriteAheadLog(tmp_path, segment_bytes=4096)
    ends = [wal.append(p) for p in payloads(10, 20)]
    wal.close()
    seg = tmp_path / f"{0:020d}.wal"
    raw = bytearray(seg.read_bytes())
    raw[len(SEGMENT_MAGIC) + ends[1] + FRAME] ^= 0xFF  # the third of ten records: 196 bytes follow
    seg.write_bytes(bytes(raw))
    with pytest.raises(WALCorruptError, match="refusing to drop them"):
        WriteAheadLog(tmp_path, segment_bytes=4096)


def test_damage_before_the_tail_is_refused(tmp_path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=60)
    for p in payloads(8, 20):
        wal.append(p)
    wal.close()
    first = sorted(tmp_path.glob("*.wal"))[0]
    raw = bytearray(first.read_bytes())
    raw[len(SEGMENT_MAGIC) + FRAME + 3] ^= 0xFF  # a bit flip inside the first record
    first.write_bytes(bytes(raw))
    # Only the last segment is scanned when opening.
    wal = WriteAheadLog(tmp_path, segment_bytes=SEG)
    with pytest.raises(WALCorruptError, match="bad record at byte 8"):
        list(wal.records(0))
    wal.close()


def test_a_second_owner_is_refused(tmp_path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=SEG)
    with pytest.raises(WALLockedError, match="in use by another process"):
        WriteAheadLog(tmp_path, segment_bytes=SEG)
    # Also from another process (flock is per open file, so this is what servers meet).
    code = (f"from pyhexz.training_server.wal import WriteAheadLog, WALLockedError\n"
            f"try:\n    WriteAheadLog({str(tmp_path)!r})\n"
            "except WALLockedError:\n    print('locked')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "locked", out.stderr
    wal.close()
    WriteAheadLog(tmp_path, segment_bytes=SEG).close()


def test_segments_roll_and_trim_keeps_untrained_records(tmp_path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=100)
    data = payloads(20, 30)   # 38 bytes framed: 2 records per segment
    ends = [wal.append(p) for p in data]
    assert wal.segment_count() == 10
    assert wal.trim(ends[4]) == 2        # segments holding records 0-3 are fully trained
    assert wal.first == ends[3] and read_all(wal, ends[4]) == data[5:]
    with pytest.raises(WALError, match="was trimmed"):
        list(wal.records(0))
    assert wal.trim(wal.end) == 9 - 2 and wal.segment_count() == 1  # never the active one
    wal.close()
    wal = WriteAheadLog(tmp_path, segment_bytes=100)
    assert wal.first == ends[-3] and wal.end == ends[-1]
    assert read_all(wal, ends[-3]) == data[-2:]
    wal.close()


def test_skip_to_moves_the_end_forward(tmp_path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=SEG)
    wal.append(b"a")
    wal.skip_to(5)    # behind the end: nothing happens
    assert wal.end == 9
    wal.skip_to(1000)
    assert wal.end == 1000 and wal.append(b"b") == 1000 + FRAME + 1
    assert [r.start for r in wal.records(1000)] == [1000]
    wal.close()
    wal = WriteAheadLog(tmp_path, segment_bytes=SEG)
    assert wal.end == 1009
    wal.close()


_WRITER = """
import sys
from pyhexz.training_server.wal import WriteAheadLog
wal = WriteAheadLog(sys.argv[1], segment_bytes=4096)
i = 0
while True:
    end = wal.append(b"r%06d" % i * 20)
    print(i, end, flush=True)
    i += 1
"""


def test_acknowledged_records_survive_kill_9(tmp_path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    acked = []
    try:
        for line in proc.stdout:
            acked.append(tuple(map(int, line.split())))
            if len(acked) >= 300:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    wal = WriteAheadLog(tmp_path, segment_bytes=4096)
    recs = list(wal.records(0))
    assert len(recs) >= len(acked)
    for (i, end), rec in zip(acked, recs, strict=False):   # recs may hold more than acked
        assert rec.end == end and rec.payload == b"r%06d" % i * 20
    wal.close()
