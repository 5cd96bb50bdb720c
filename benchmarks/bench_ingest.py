"""Training server ingestion: examples/s and latency with durable acknowledgement.

    python benchmarks/bench_ingest.py                # defaults: --repeats 3 --seconds 10
    python benchmarks/bench_ingest.py --quick        # smoke run: 1 repeat, 3 s per phase

The server runs as in production (`pyhexz server`: waitress, 8 request threads, configured by
HEXZ_* variables; `--server gunicorn`: create_app() under gunicorn --workers 1 --threads 8, as
before issue 13) on a temporary local storage directory. Client processes (spawned, with
threads on keep-alive connections) post AddTrainingExamplesRequests of 100 real self-play
examples each as fast as the server answers; each answer is ACCEPTED only once its examples
are fdatasync'ed in the write-ahead log. Two phases, interleaved over the repeats, each on a
fresh server:

- idle: the minibatch is too large to ever trigger a training run;
- training: the first minibatch (4096 examples) starts a training run of the default network
  (5 blocks, 64 filters, batch 256), and the clock runs only while /status says the run is in
  progress (checked every 0.25 s; the phase fails if the run ends early).

Printed: per phase the medians over the repeats of examples/s, p50 and p99 latency, and the
ratio training/idle.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import benchlib  # also puts src/ on the path

MODEL = "bench"
EXAMPLES_PER_REQUEST = 100


def make_requests(n: int) -> list[bytes]:
    """n serialized requests of 100 examples each, cut from real self-play games."""
    from pyhexz import hexz_pb2 as pb
    from pyhexz.search.driver import SearchConfig, uniform_evaluator
    from pyhexz.train.selfplay import run_selfplay

    games: list = []
    need = n * EXAMPLES_PER_REQUEST
    key = pb.ModelKey(name=MODEL, checkpoint=0)
    while sum(len(g.examples) for g in games) < need:
        run_selfplay(lambda: (uniform_evaluator, key), games.append, SearchConfig(runs_per_move=2),
                     parallel_games=16, max_games=16, seed=len(games))
    examples = [ex for g in games for ex in g.examples]
    # No game_id: the clients append a unique one to every request they send.
    return [pb.AddTrainingExamplesRequest(
        examples=examples[i * EXAMPLES_PER_REQUEST:(i + 1) * EXAMPLES_PER_REQUEST],
        execution_id="bench").SerializeToString() for i in range(n)]


def client_process(port: int, bodies: list[bytes], threads: int, start: float, stop: float,
                   out) -> None:
    """Posts from `threads` keep-alive connections; sends (t, latency, status) lists back.

    Each request gets a game_id of its own, appended to the body (of a field given twice in
    protobuf bytes, the last wins): the server acknowledges a resent game_id without storing
    it, which would measure no WAL write at all.
    """
    from pyhexz import hexz_pb2 as pb

    def run(i: int, results: list) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        k = i
        while time.time() < start:
            time.sleep(0.001)
        while (t0 := time.time()) < stop:
            body = bodies[k % len(bodies)] + pb.AddTrainingExamplesRequest(
                game_id=f"{os.getpid()}-{k}").SerializeToString()
            k += threads
            conn.request("POST", "/training/examples", body,
                         {"Content-Type": "application/x-protobuf"})
            resp = conn.getresponse()
            data = resp.read()
            status = pb.AddTrainingExamplesResponse.FromString(data).status
            results.append((t0, time.time() - t0, status))

    per_thread: list[list] = [[] for _ in range(threads)]
    ts = [threading.Thread(target=run, args=(i, per_thread[i])) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put([r for rs in per_thread for r in rs])


def get_status(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/status")
    return json.loads(conn.getresponse().read())


def start_server(port: int, root: Path, env: dict, server: str = "pyhexz") -> subprocess.Popen:
    full = {**os.environ, "HEXZ_STORAGE": str(root), "HEXZ_MODEL_NAME": MODEL,
            "HEXZ_LOG_LEVEL": "WARNING", "HEXZ_REPLAY_WINDOW": "50000",
            "HEXZ_EVAL_OPENINGS": "0", "PYTHONPATH": str(benchlib.SRC), **env}
    argv = [sys.executable, "-m", "pyhexz", "server", "--port", str(port)]
    if server == "gunicorn":
        argv = [str(Path(sys.executable).with_name("gunicorn")), "--workers", "1", "--threads",
                "8", "--bind", f"127.0.0.1:{port}", "--no-control-socket",
                "pyhexz.training_server:create_app()"]
    proc = subprocess.Popen(argv, env=full, stdout=subprocess.DEVNULL,
                            stderr=open(root / "server.log", "ab"), start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if get_status(port).get("ready"):
                return proc
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server did not start; see {root / 'server.log'}")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the WAL makes this safe; nothing to wait for
    proc.wait()


def measure(port: int, bodies: list[bytes], procs: int, threads: int, start: float,
            stop: float) -> list:
    from pyhexz.infra.process import spawn_context
    ctx = spawn_context()
    out = ctx.Queue()
    ps = [ctx.Process(target=client_process,
                      args=(port, bodies[i::procs], threads, start, stop, out))
          for i in range(procs)]
    for p in ps:
        p.start()
    results = [r for _ in ps for r in out.get()]
    for p in ps:
        p.join()
    return results


def phase(kind: str, bodies: list[bytes], args, port: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"bench-ingest-{kind}-", dir=args.tmp))
    if kind == "idle":
        env = {"HEXZ_MINIBATCH_SIZE": str(10**9), "HEXZ_MAX_PENDING": str(10**9)}
    else:
        env = {"HEXZ_MINIBATCH_SIZE": "4096", "HEXZ_MAX_PENDING": str(10**9)}
    proc = start_server(port, root, env, args.server)
    try:
        from pyhexz import hexz_pb2 as pb
        if kind == "training":
            # Start the training run, then measure while it lasts.
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for body in bodies[:41]:
                conn.request("POST", "/training/examples", body,
                             {"Content-Type": "application/x-protobuf"})
                conn.getresponse().read()
            deadline = time.time() + 60
            while not get_status(port)["training"]["in_progress"]:
                if time.time() > deadline:
                    raise RuntimeError("the training run did not start")
                time.sleep(0.05)
        start = time.time() + 2.0 + args.warmup
        stop = start + args.seconds
        in_progress: list[bool] = []

        def watch() -> None:
            while time.time() < stop:
                if time.time() >= start:
                    in_progress.append(get_status(port)["training"]["in_progress"])
                time.sleep(0.25)

        watcher = threading.Thread(target=watch)
        watcher.start()
        # Clients start 2 s early (spawn start-up), then warm up; only [start, stop) counts.
        results = measure(port, bodies, args.procs, args.threads, start - args.warmup, stop)
        watcher.join()
        if kind == "training" and not all(in_progress):
            raise RuntimeError("the training run ended during the measurement; use fewer --seconds")
        if get_status(port)["requests"].get("duplicate_games"):
            raise RuntimeError("the server took requests for resent games (not stored)")
    finally:
        stop_server(proc)
        shutil.rmtree(root, ignore_errors=True)
    window = [r for r in results if start <= r[0] < stop]
    bad = [r for r in window if r[2] != pb.AddTrainingExamplesResponse.ACCEPTED]
    if bad:
        raise RuntimeError(f"{len(bad)} requests were not ACCEPTED (status {bad[0][2]})")
    lat = sorted(r[1] for r in window)
    q = statistics.quantiles(lat, n=100)
    return {"examples_per_s": len(window) * EXAMPLES_PER_REQUEST / args.seconds,
            "requests": len(window), "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--threads", type=int, default=4, help="connections per client process")
    ap.add_argument("--tmp", default=None, help="where the servers' storage and WAL go")
    ap.add_argument("--quick", action="store_true", help="1 repeat, 3 s per phase")
    ap.add_argument("--server", choices=("pyhexz", "gunicorn"), default="pyhexz",
                    help="pyhexz server (production) or create_app() under gunicorn")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.seconds = 1, 3.0
    from pyhexz.infra.process import setup_torch
    setup_torch()
    bodies = make_requests(200)
    print(f"{len(bodies)} distinct requests of {EXAMPLES_PER_REQUEST} examples, "
          f"{statistics.mean(map(len, bodies)) / 1024:.0f} KiB each (uncompressed); "
          f"{args.procs} x {args.threads} client connections; {os.cpu_count()} cores "
          f"({benchlib.cpu_model()})", flush=True)
    runs: dict[str, list[dict]] = {"idle": [], "training": []}
    for r in range(args.repeats):
        for kind in ("idle", "training"):
            res = phase(kind, bodies, args, benchlib.free_port())
            runs[kind].append(res)
            print(f"repeat {r + 1} {kind:8s} {res['examples_per_s']:9,.0f} examples/s  "
                  f"p50 {res['p50_ms']:6.1f} ms  p99 {res['p99_ms']:6.1f} ms  "
                  f"({res['requests']} requests)", flush=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in v[0] if m != "requests"}
           for k, v in runs.items()}
    print("\nmedian over repeats:")
    print(f"{'phase':10s} {'examples/s':>12s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for k, m in med.items():
        print(f"{k:10s} {m['examples_per_s']:12,.0f} {m['p50_ms']:8.1f} {m['p99_ms']:8.1f}")
    rate = med['training']['examples_per_s'] / med['idle']['examples_per_s']
    print(f"training/idle: examples/s {rate:.2f}x, "
          f"p50 {med['training']['p50_ms'] / med['idle']['p50_ms']:.2f}x, "
          f"p99 {med['training']['p99_ms'] / med['idle']['p99_ms']:.2f}x "
          f"(targets: idle >= 20,000 examples/s; p99 ratio <= 2)")


if __name__ == "__main__":
    main()
