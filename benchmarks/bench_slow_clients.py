"""Slow clients against the training server: `pyhexz server` (waitress) and, side by side, the
same app under `gunicorn --workers 1 --threads 8 --timeout 0` (what ran before issue 13).

    python benchmarks/bench_slow_clients.py          # defaults: --slow 256 --tries 5

For each server: open `--slow` connections that each send the headers of an upload
(`Content-Length: 100000`) and 7 body bytes, then nothing; then, with all of them open, time
`--tries` GET /healthz and a real upload (a gzip game), each with a 10 s client timeout.
Printed: the median and worst /healthz and upload times, or how many got no answer in 10 s;
and for pyhexz server, how long until the slow requests were answered 408 (--request-timeout).
"""

from __future__ import annotations

import argparse
import gzip
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib  # also puts src/ on the path

CLIENT_TIMEOUT = 10.0
SLOW_HEAD = (b"POST /training/examples HTTP/1.1\r\nHost: x\r\n"
             b"Content-Type: application/x-protobuf\r\nContent-Length: 100000\r\n\r\n1234567")


def _game() -> bytes:
    from pyhexz import hexz_pb2 as pb
    from pyhexz.search.driver import SearchConfig, uniform_evaluator
    from pyhexz.train.selfplay import run_selfplay
    games: list = []
    run_selfplay(lambda: (uniform_evaluator, pb.ModelKey(name="bench", checkpoint=0)),
                 games.append, SearchConfig(runs_per_move=2), parallel_games=1, max_games=1,
                 seed=1)
    return games[0].SerializeToString()


def _start(kind: str, port: int, tmp: Path, request_timeout: float) -> subprocess.Popen:
    env = benchlib.src_env(HEXZ_MODEL_NAME="bench", HEXZ_STORAGE=str(tmp / kind),
                           HEXZ_BLOCKS="1", HEXZ_FILTERS="8", HEXZ_MINIBATCH_SIZE="1000000",
                           HEXZ_EVAL_OPENINGS="0", HEXZ_WAL_SEGMENT_BYTES=str(1 << 20),
                           HEXZ_LOG_LEVEL="WARNING")
    if kind == "pyhexz server":
        argv = [sys.executable, "-m", "pyhexz", "server", "--port", str(port),
                "--request-timeout", str(request_timeout)]
    else:
        argv = [str(Path(sys.executable).with_name("gunicorn")), "--workers", "1", "--threads",
                "8", "--timeout", "0", "--bind", f"127.0.0.1:{port}", "--no-control-socket",
                "pyhexz.training_server:create_app()"]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _request(port: int, data: bytes) -> float | None:
    """Seconds until the answer's first bytes, None if none came within CLIENT_TIMEOUT."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as s:
            s.sendall(data)
            return time.monotonic() - t0 if s.recv(64) else None
    except OSError:
        return None


def _healthy(port: int) -> bool:
    return _request(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") is not None


def _summary(times: list[float | None]) -> str:
    got = [t for t in times if t is not None]
    missing = len(times) - len(got)
    text = (f"median {statistics.median(got) * 1000:7.1f} ms, worst {max(got) * 1000:7.1f} ms"
            if got else "no answer")
    return text + (f", {missing} of {len(times)} without an answer in {CLIENT_TIMEOUT:g} s"
                   if missing else "")


def measure(kind: str, slow: int, tries: int, body: bytes, tmp: Path) -> None:
    port = benchlib.free_port()
    request_timeout = 20.0
    proc = _start(kind, port, tmp, request_timeout)
    conns: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 180
        while not _healthy(port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{kind} did not start")
            time.sleep(0.5)
        opened = time.monotonic()
        for _ in range(slow):
            c = socket.create_connection(("127.0.0.1", port), timeout=60)
            c.sendall(SLOW_HEAD)
            conns.append(c)
        upload = (b"POST /training/examples HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/x-protobuf\r\nContent-Encoding: gzip\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        health = [_request(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                  for _ in range(tries)]
        uploads = [_request(port, upload) for _ in range(tries)]
        print(f"{kind:14s} with {slow} slow connections open:")
        print(f"  /healthz  {_summary(health)}")
        print(f"  upload    {_summary(uploads)}")
        if kind == "pyhexz server":
            answered = []
            for c in conns:
                c.settimeout(request_timeout + 30)
                first = c.recv(64)
                answered.append(first.split(b" ")[1] if first else b"-")
            print(f"  slow requests answered {set(a.decode() for a in answered)} "
                  f"{time.monotonic() - opened:.1f} s after they began "
                  f"(--request-timeout {request_timeout:g})")
    finally:
        for c in conns:
            c.close()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slow", type=int, default=256)
    ap.add_argument("--tries", type=int, default=5)
    a = ap.parse_args()
    print(f"machine: {benchlib.cpu_model()}, {os.cpu_count()} cores")
    body = gzip.compress(_game())
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("pyhexz server", "gunicorn"):
            measure(kind, a.slow, a.tries, body, Path(tmp))


if __name__ == "__main__":
    main()
