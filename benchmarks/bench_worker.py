"""What streaming and hot-swapping cost a worker: examples/s of `run_worker` against the same
self-play run locally, on one core.

    python benchmarks/bench_worker.py [--seconds 60] [--repeats 3] [--runs-per-move 16]

Starts a real training server (`pyhexz server`, pinned to another core) that trains every
`--minibatch` examples and publishes each checkpoint to Redis, so the worker streams every
game (one gzip POST each) and hot-swaps a new model every few seconds. The local run is
`run_selfplay` with the same network, search settings and seeds and a sink that drops the
games. Repeats of the two alternate, so background load falls on both alike. The work is
counted in network-evaluated simulations, finished games or not (counting finished games
would measure in steps of a whole round of games); examples/s is that divided by the
simulations per searched position of the local runs (each position becomes one example). Two
figures: per wall-clock second, and per CPU second of the whole process (all the
worker's threads: fetching and loading models, gzip, HTTP, the final drain), which a shared,
busy machine disturbs far less. Target: the worker within 5% of local.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import benchlib  # also puts src/ on the path


def start_server(tmp: Path, args, name: str, core: int) -> tuple[subprocess.Popen, str]:
    import requests

    port = benchlib.free_port()
    env = benchlib.src_env(
        HEXZ_MODEL_NAME=name, HEXZ_STORAGE=str(tmp / "store"), HEXZ_REDIS_URL=args.redis_url,
        HEXZ_BLOCKS=str(args.blocks), HEXZ_FILTERS=str(args.filters),
        HEXZ_MINIBATCH_SIZE=str(args.minibatch), HEXZ_MAX_PENDING=str(100 * args.minibatch),
        HEXZ_EVAL_OPENINGS="0", HEXZ_LOG_LEVEL="WARNING")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyhexz", "server", "--port", str(port)],
        env=env, stdout=(tmp / "server.log").open("ab"), stderr=subprocess.STDOUT,
        preexec_fn=lambda: (os.sched_setaffinity(0, {core})
                            if hasattr(os, "sched_setaffinity") else None))
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the training server did not start; see {tmp / 'server.log'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60, help="self-play time per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs-per-move", type=int, default=16)
    ap.add_argument("--parallel-games", type=int, default=16)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--filters", type=int, default=64)
    ap.add_argument("--minibatch", type=int, default=1000, help="server: examples per checkpoint")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = ap.parse_args()

    pinned = benchlib.pin_to_one_core()
    mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else {0}
    others = sorted(set(range(os.cpu_count() or 1)) - mine) or sorted(mine)
    import requests
    import torch
    torch.set_num_threads(1)
    from pyhexz import hexz_pb2 as pb
    from pyhexz.infra.process import configure_logging
    from pyhexz.nn import Predictor, load_model_bytes
    from pyhexz.search.driver import SearchConfig
    from pyhexz.train.selfplay import run_selfplay
    from pyhexz.worker.config import WorkerConfig
    from pyhexz.worker.job import run_worker
    configure_logging("WARNING")

    name = f"bench-{uuid.uuid4().hex[:8]}"
    search = SearchConfig(runs_per_move=args.runs_per_move)
    print(f"# worker benchmark: python {platform.python_version()}, torch {torch.__version__}, "
          f"net {args.blocks}x{args.filters}, {args.parallel_games} games at once, "
          f"{args.runs_per_move} runs/move, {args.seconds:.0f} s per run, a checkpoint every "
          f"{args.minibatch} examples; {pinned}; server on CPU {others[0]}")
    with tempfile.TemporaryDirectory() as d:
        server, url = start_server(Path(d), args, name, others[0])
        try:
            r = requests.get(f"{url}/models/latest", timeout=30)
            local_model = Predictor(load_model_bytes(r.content))
            key = pb.ModelKey(name=name, checkpoint=0)
            rows: list[dict] = []
            for rep in range(args.repeats):
                cpu = time.process_time()
                stats = run_selfplay(lambda: (local_model, key), lambda req: None, search,
                                     parallel_games=args.parallel_games, max_seconds=args.seconds,
                                     seed=rep)
                row = {"local": stats.simulations / stats.seconds,
                       "local_cpu": stats.simulations / (time.process_time() - cpu),
                       "per_example": stats.simulations / max(1, stats.positions)}

                stop = threading.Event()
                timer = threading.Timer(args.seconds, stop.set)
                cpu = time.process_time()
                timer.start()
                w = run_worker(WorkerConfig(server_url=url, redis_url=args.redis_url,
                                            model_name=name, parallel_games=args.parallel_games,
                                            search=search, seed=rep, progress_seconds=3600), stop)
                timer.cancel()
                # All of the worker's threads count: model fetches, swaps, gzip, HTTP, the drain.
                row["worker_cpu"] = w.simulations / (time.process_time() - cpu)
                row["worker"] = w.simulations / w.play_seconds
                rows.append(row)
                u = w.upload
                print(f"repeat {rep}: simulations/s local {row['local']:7.0f} worker "
                      f"{row['worker']:7.0f} (ratio {row['worker'] / row['local']:.3f}); per CPU-s "
                      f"local {row['local_cpu']:7.0f} worker {row['worker_cpu']:7.0f} (ratio "
                      f"{row['worker_cpu'] / row['local_cpu']:.3f}); worker games={w.games} "
                      f"uploaded={u.games} lost={u.lost} retries={u.retries} swaps={w.swaps} "
                      f"model={w.model}")
        finally:
            server.terminate()
            server.wait(60)
    per_example = statistics.median(r["per_example"] for r in rows)
    print(f"{per_example:.2f} simulations per searched position (= per example), "
          "from the local runs")
    for label, lo, wo in (("wall clock", "local", "worker"),
                          ("per CPU second", "local_cpu", "worker_cpu")):
        ml, mw = (statistics.median(r[k] for r in rows) for k in (lo, wo))
        ratios = [r[wo] / r[lo] for r in rows]
        print(f"{label}: median local {ml / per_example:.2f}, worker {mw / per_example:.2f} "
              f"examples/s; worker/local {mw / ml:.3f}, cost {1 - mw / ml:+.1%} (target < 5%); "
              f"per-repeat ratios {', '.join(f'{x:.3f}' for x in ratios)} "
              f"(median {statistics.median(ratios):.3f})")

if __name__ == "__main__":
    main()
