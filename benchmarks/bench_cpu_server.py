"""The CPU player service: overhead over the think time, throughput, and playing strength.

    python benchmarks/bench_cpu_server.py overhead   [--model PATH] [--think-ms 50 100 200 500 1000]
    python benchmarks/bench_cpu_server.py throughput [--model PATH] [--clients 8] [--think-ms 100]
    python benchmarks/bench_cpu_server.py strength   --model PATH [--seconds-per-move 1]
                                                     [--openings 128] [--processes 16]
    python benchmarks/bench_cpu_server.py backends   [--model PATH | --net 5x64]
                                                     [--backend torch onnx int8 auto]
    python benchmarks/bench_cpu_server.py cache      [--model default] [--games 2]

overhead and throughput run the service as it is deployed (gunicorn, one worker process, 8
threads; `pyhexz.cpu_server:create_app()`) and time real HTTP requests (protobuf) from this
process: overhead = the client's wall time less the requested think time, sequential requests;
throughput = requests/s with N clients asking at once, next to 1 client. `--model` none plays
rollout MCTS. Positions: fixture openings and positions 10 to 50 random plies into them.

backends measures the CPU player's simulations within a think (1 s) for each inference
backend, in this process with the service's search (TimedSearch, one position at a time, up
to --leaves network leaves a round: batches of 1 to 8), side by side in turns, as ratios to
the first backend.

cache measures what the evaluation cache kept across searches buys the CPU player in a game
(search/timed.py, `served_tree_config`): the positions of one side of a game (the shipped model
at 200 simulations against itself, from fixture openings), searched one after the other as the
service is asked for them, each for --think-ms, by the service's search with the cache kept
(as served), with a cache emptied before each search (transpositions within a search only) and
with none; the three in turns, position by position. Prints simulations per move (median) and
network evaluations per simulation.

strength plays the service's players in this process (the same TimedSearch, no HTTP): neural
MCTS with the model against rollout MCTS, each thinking `--seconds-per-move`, over the first
`--openings` fixture openings from both seats, split across `--processes` processes (one core
each; the think time is per core).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchlib  # noqa: E402  (also puts src/ on the path)


def positions(n: int, seed: int = 0) -> list:
    """Openings and positions 10..50 random plies into them, all running."""
    from pyhexz.train.arena import load_openings, random_positions
    rng = random.Random(seed)
    plies = (0 if i % 3 == 0 else rng.randrange(10, 50) for i in itertools.count())
    return list(itertools.islice(random_positions(load_openings(), plies, rng), n))


class Service:
    """gunicorn with the CPU player, as deployed, on a free local port."""

    def __init__(self, model: str | None, max_think_ms: int = 10_000) -> None:
        self.port = benchlib.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = benchlib.src_env(HEXZ_MAX_THINK_MS=str(max_think_ms), HEXZ_LOG_LEVEL="WARNING")
        if model:
            env["HEXZ_MODEL_PATH"] = model
        else:   # rollout MCTS, also where a model ships
            env["HEXZ_ROLLOUT"] = "1"
        gunicorn = Path(sys.executable).parent / "gunicorn"
        self.proc = subprocess.Popen(
            [str(gunicorn), "--bind", f"127.0.0.1:{self.port}", "--workers", "1", "--threads",
             "8", "--timeout", "0", "pyhexz.cpu_server:create_app()"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self) -> Service:
        import requests
        end = time.monotonic() + 120
        while time.monotonic() < end:
            try:
                if requests.get(self.url + "/healthz", timeout=5).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.3)
        raise RuntimeError("the service did not start")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def status(self) -> dict:
        import requests
        return requests.get(self.url + "/status", timeout=10).json()


def suggest(session, url: str, board, think_ms: int) -> tuple[float, int]:
    """One request; (wall seconds, simulations)."""
    from pyhexz import hexz_pb2 as pb
    body = pb.SuggestMoveRequest(max_think_time_ms=think_ms,
                                 game_engine_state=board.to_proto()).SerializeToString()
    t0 = time.perf_counter()
    r = session.post(url + "/hexz/cpu/suggest", data=body, timeout=60,
                     headers={"Content-Type": "application/x-protobuf"})
    wall = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text}")
    return wall, int(r.headers["X-Hexz-Iterations"])


def describe(svc: Service) -> str:
    s = svc.status()
    model = s["model"]
    return s["player"] + (f" {model['name']}:{model['checkpoint']}" if model else "")


def cmd_overhead(a: argparse.Namespace) -> None:
    import requests
    boards = positions(a.repeats)
    with Service(a.model) as svc, requests.Session() as http:
        print(f"# overhead: {describe(svc)}; {a.repeats} requests per think time, one at a "
              f"time; interleaved over think times")
        suggest(http, svc.url, boards[0], 50)   # warm-up
        walls: dict[int, list[float]] = {t: [] for t in a.think_ms}
        sims: dict[int, list[int]] = {t: [] for t in a.think_ms}
        for i in range(a.repeats):
            for t in a.think_ms:
                w, n = suggest(http, svc.url, boards[i % len(boards)], t)
                walls[t].append(w)
                sims[t].append(n)
    print("| think time | wall median | overhead median | overhead min | overhead max | "
          "wall / think | simulations median |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for t in a.think_ms:
        over = [(w - t / 1000) * 1000 for w in walls[t]]
        med = statistics.median(walls[t])
        print(f"| {t} ms | {med * 1000:.1f} ms | {statistics.median(over):+.1f} ms | "
              f"{min(over):+.1f} ms | {max(over):+.1f} ms | {med / (t / 1000):.3f} | "
              f"{statistics.median(sims[t]):,.0f} |")


def _load(clients: int, url: str, boards, think_ms: int, seconds: float):
    import requests
    end = time.monotonic() + seconds
    walls: list[float] = []
    sims: list[int] = []

    def client(k: int) -> None:
        with requests.Session() as http:
            i = k
            while time.monotonic() < end:
                w, n = suggest(http, url, boards[i % len(boards)], think_ms)
                walls.append(w)
                sims.append(n)
                i += clients
    t0 = time.monotonic()
    with ThreadPoolExecutor(clients) as ex:
        list(ex.map(client, range(clients)))
    return len(walls) / (time.monotonic() - t0), walls, sims


def cmd_throughput(a: argparse.Namespace) -> None:
    boards = positions(32)
    with Service(a.model) as svc:
        print(f"# throughput: {describe(svc)}; think time {a.think_ms} ms; {a.seconds:.0f} s "
              f"per measurement, {a.repeats} repeats interleaved")
        _load(1, svc.url, boards, a.think_ms, 2)   # warm-up
        rows: dict[int, list] = {1: [], a.clients: []}
        for _ in range(a.repeats):
            for c in rows:
                rows[c].append(_load(c, svc.url, boards, a.think_ms, a.seconds))
    print("| clients | requests/s median | min | max | wall median | wall p90 | "
          "simulations per request median |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    med = {}
    for c, runs in rows.items():
        rates = [r for r, _, _ in runs]
        walls = sorted(w for _, ws, _ in runs for w in ws)
        sims = [n for _, _, ns in runs for n in ns]
        med[c] = statistics.median(rates)
        print(f"| {c} | {med[c]:.1f} | {min(rates):.1f} | {max(rates):.1f} | "
              f"{statistics.median(walls) * 1000:.0f} ms | "
              f"{walls[int(0.9 * (len(walls) - 1))] * 1000:.0f} ms | "
              f"{statistics.median(sims):,.0f} |")
    ideal = a.clients * 1000 / a.think_ms
    print(f"\n{a.clients} clients / 1 client: {med[a.clients] / med[1]:.2f}x requests/s; "
          f"{med[a.clients] / ideal:.0%} of the {ideal:.0f}/s that {a.clients} clients could ask "
          f"for at {a.think_ms} ms each")


def _strength_part(model: str, seconds: float, indices: list[int], max_tree_nodes: int, q):
    from pyhexz.infra.process import init_worker_process
    init_worker_process()
    from pyhexz.cpu.player import load_served_model
    from pyhexz.search.timed import TimedPlayer
    from pyhexz.train.arena import load_openings, play_match
    openings = load_openings()
    m = load_served_model(model)
    neural = TimedPlayer(seconds, m.predictor, name=f"{m.key.name}:{m.key.checkpoint}@{seconds:g}s",
                         max_tree_nodes=max_tree_nodes)
    rollout = TimedPlayer(seconds, None, max_tree_nodes=max_tree_nodes, seed=indices[0])
    r = play_match(neural, rollout, [openings[i] for i in indices])
    q.put((r.player1, r.player2, r.outcomes,
           statistics.median(neural.iterations), statistics.median(rollout.iterations)))


def cmd_strength(a: argparse.Namespace) -> None:
    from pyhexz.infra.process import spawn_context
    from pyhexz.train.arena import summarize
    ctx = spawn_context()
    q = ctx.Queue()
    parts = [list(range(a.openings))[i::a.processes] for i in range(a.processes)]
    parts = [p for p in parts if p]
    t0 = time.monotonic()
    procs = [ctx.Process(target=_strength_part, args=(a.model, a.seconds_per_move, p,
                                                      a.max_tree_nodes, q)) for p in parts]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    # Each part's outcomes come opening by opening, both seats together, so the concatenation
    # keeps the pairs the paired interval is computed over.
    outcomes = [x for r in results for x in r[2]]
    res = summarize(results[0][0], results[0][1], outcomes, time.monotonic() - t0,
                    games_per_opening=2)
    print(f"# strength: {a.openings} openings x 2 seats, {a.seconds_per_move:g} s per move, "
          f"{len(parts)} processes")
    print(res.summary())
    print(f"simulations per move, median over the processes' medians: neural "
          f"{statistics.median(r[3] for r in results):,.0f}, rollout "
          f"{statistics.median(r[4] for r in results):,.0f}")


def cmd_backends(a: argparse.Namespace) -> None:
    benchlib.pin_to_one_core()
    import torch

    from pyhexz.nn import HexzNet, Predictor
    from pyhexz.search.timed import TimedSearch, think
    if a.model:
        from pyhexz.search.players import resolve_model_path
        path = resolve_model_path(a.model)
        predictors = {b: Predictor.from_path(path, backend=b) for b in a.backend}
        what = str(path)
    else:
        blocks, _, filters = a.net.partition("x")
        torch.manual_seed(0)
        net = HexzNet(int(blocks), int(filters))
        predictors = {b: Predictor(net, backend=b) for b in a.backend}
        what = f"a fresh {a.net} network"
    boards = positions(a.positions, seed=1)
    print(f"# CPU player simulations in a {a.think_ms} ms think, {what}, {len(boards)} "
          f"positions, one core")
    print(f"| leaves a round | backend (runs as) | simulations/s, median | vs {a.backend[0]} |\n"
          f"|---:|---|---:|---:|")
    for leaves in a.leaves:
        rates: dict[str, list[float]] = {b: [] for b in a.backend}
        for board in boards:
            for b, predictor in predictors.items():
                searcher = TimedSearch(1, predictor, leaves_per_round=leaves, seed=0)
                r = think(searcher, board, a.think_ms / 1000)
                rates[b].append(r.iterations / r.seconds)
        base = statistics.median(rates[a.backend[0]])
        for b in a.backend:
            rate = statistics.median(rates[b])
            print(f"| {leaves} | {b} ({predictors[b].backend.name}) | {rate:,.0f} | "
                  f"{rate / base:.2f}x |", flush=True)


def cmd_cache(a: argparse.Namespace) -> None:
    benchlib.pin_to_one_core()
    from pyhexz.nn import Predictor
    from pyhexz.search.driver import TreeConfig
    from pyhexz.search.players import NeuralPlayer, resolve_model_path
    from pyhexz.search.timed import SERVED_EVAL_CACHE, TimedSearch, think
    from pyhexz.train.arena import load_openings
    path = resolve_model_path(a.model)
    predictor = Predictor.from_path(path, backend=a.backend)
    rows = [0]

    def counted(planes, masks):
        rows[0] += len(planes)
        return predictor(planes, masks)
    variants = {"kept (served)": (SERVED_EVAL_CACHE, False), "emptied each search":
                (SERVED_EVAL_CACHE, True), "none": (0, False)}
    sims: dict[str, list[int]] = {v: [] for v in variants}
    evals: dict[str, list[int]] = {v: [] for v in variants}
    mover = NeuralPlayer(predictor, 200, max_games=1)
    print(f"# CPU player in a game: {a.think_ms} ms a move, {path} "
          f"({predictor.backend.name}), {a.games} games x {a.moves} moves of one side, one core")
    for opening in load_openings()[:a.games]:
        searchers = {v: TimedSearch(1, counted, seed=0, tree=TreeConfig(eval_cache=cache))
                     for v, (cache, _) in variants.items()}
        board, ply = opening.copy(), 0
        while not board.is_over and ply < 2 * a.moves:
            if ply % 2 == 0:
                for v, s in searchers.items():
                    if variants[v][1]:
                        s.mcts.clear_caches()
                    rows[0] = 0
                    r = think(s, board, a.think_ms / 1000)
                    sims[v].append(r.iterations)
                    evals[v].append(rows[0])
            board.play(*mover.choose([board])[0])
            ply += 1
    base = statistics.median(sims["none"])
    print("| evaluation cache | simulations a move, median | vs none | network evaluations "
          "per simulation |\n|---|---:|---:|---:|")
    for v in variants:
        med = statistics.median(sims[v])
        print(f"| {v} | {med:,.0f} | {med / base:.2f}x | "
              f"{sum(evals[v]) / max(sum(sims[v]), 1):.3f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("overhead")
    p.add_argument("--model", help="HEXZ_MODEL_PATH for the service (default: rollout MCTS)")
    p.add_argument("--think-ms", type=int, nargs="+", default=[50, 100, 200, 500, 1000])
    p.add_argument("--repeats", type=int, default=7)
    p.set_defaults(func=cmd_overhead)
    p = sub.add_parser("throughput")
    p.add_argument("--model", help="HEXZ_MODEL_PATH for the service (default: rollout MCTS)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--think-ms", type=int, default=100)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.set_defaults(func=cmd_throughput)
    p = sub.add_parser("strength")
    p.add_argument("--model", required=True, help="checkpoint, TorchScript file or directory")
    p.add_argument("--seconds-per-move", type=float, default=1.0)
    p.add_argument("--openings", type=int, default=128)
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    p.add_argument("--max-tree-nodes", type=int, default=4_000_000,
                   help="the service's default (HEXZ_MAX_TREE_NODES)")
    p.set_defaults(func=cmd_strength)
    p = sub.add_parser("backends")
    p.add_argument("--model", help="checkpoint, TorchScript file or directory")
    p.add_argument("--net", default="5x64", help="BLOCKSxFILTERS of a fresh net (no --model)")
    p.add_argument("--backend", nargs="+", default=["torch", "onnx", "int8", "auto"],
                   choices=["torch", "onnx", "int8", "auto"])
    p.add_argument("--leaves", type=int, nargs="+", default=[1, 8],
                   help="network leaves per round (the service's --leaves-per-round)")
    p.add_argument("--think-ms", type=int, default=1000)
    p.add_argument("--positions", type=int, default=6)
    p.set_defaults(func=cmd_backends)
    p = sub.add_parser("cache")
    p.add_argument("--model", default="default", help="checkpoint, directory or default")
    p.add_argument("--backend", default="auto", choices=["torch", "onnx", "int8", "auto"])
    p.add_argument("--think-ms", type=int, default=1000)
    p.add_argument("--games", type=int, default=2, help="fixture openings, one game each")
    p.add_argument("--moves", type=int, default=20, help="searched moves a game (one side)")
    p.set_defaults(func=cmd_cache)
    a = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    print(f"# {benchlib.cpu_model()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    a.func(a)


if __name__ == "__main__":
    main()
