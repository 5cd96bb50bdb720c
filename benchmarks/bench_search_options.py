#!/usr/bin/env python3
"""What each search option of issue 15 costs and saves, measured side by side.

    python benchmarks/bench_search_options.py [--model PATH] [--games 4] [--runs-per-move 100]

Two parts, each interleaving its variants so that every variant sees the same machine weather:

1. The compiled tree alone (bench_mcts.py's "tree 64x1": 64 trees from fresh positions, one
   leaf per tree per batch, a constant evaluator with uniform priors and value 0) with every
   option alone and with all off: simulations per second, median over --repeats rounds. This is
   what an option costs the search itself; in self-play the network takes 97-99% of the time.
   (The options change the trees too: FPU narrows them, the Gumbel root follows its schedule.)
2. Self-play (`run_selfplay`, sample_plies 20) with a network: by default the hexz model in
   ../shared/fixtures, a trained network, so that priors and trees have the shapes of real
   play (an untrained network's flat priors make shallow trees with few transpositions);
   `--model` names another model file, `--model fresh` uses an untrained 3 x 32 network. Each
   of --repeats rounds plays --games games per variant (all options off, the evaluation
   cache, the endgame solver, both), every variant from the same seeds. Per searched position
   (move), summed over the rounds: the leaves the network evaluated, the leaves served by the
   cache (transposition hits), proved by the solver (solves) or given up on (unsolved), and
   the seconds spent outside the network (the search's own work, the solver's included),
   next to the wall time per move (the median over the rounds).

3. `--arena RUNS` (alone): a match's budget player (arena, benchmarks/strength.py), --model
   against itself at RUNS simulations over the first --openings fixture openings, with each
   tree's evaluation cache kept across moves against emptied every move: network leaves, the
   match's wall time, and whether the games came out the same.

Run from the repository root after building the extensions (python setup.py build_ext
--build-lib=src).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import benchlib  # noqa: F401  (puts src/ on the path)
from bench_mcts import bench_tree
from benchlib import cpu_model, pin_to_one_core

HEXZ_MODEL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / \
    "hexz_conv2d_scriptmodule.pt"

TREE_VARIANTS = {
    "all off": {},
    "fpu 0.2/0.1": {"fpu_reduction": 0.2, "fpu_reduction_root": 0.1},
    "forced k=2": {"forced_playouts": 2.0},
    "cache 8192": {"eval_cache": 8192},
    "solver 12": {"solver_moves": 12},
    "gumbel 16": {"gumbel_k": 16},
}


def tree_part(repeats: int, trees: int, sims: int) -> None:
    print(f"\n## 1. the tree alone: {trees} trees x {sims} simulations, constant evaluator, "
          f"{repeats} interleaved repeats")
    bench_tree(8, 1, 50)   # warm up
    rates: dict[str, list[float]] = {k: [] for k in TREE_VARIANTS}
    for _ in range(repeats):
        for name, options in TREE_VARIANTS.items():
            n, t, _ = bench_tree(trees, 1, sims, **options)
            rates[name].append(n / t)
    base = statistics.median(rates["all off"])
    print(f"{'variant':<14} {'median sims/s':>14} {'min':>10} {'max':>10}  vs all off")
    for name, xs in rates.items():
        med = statistics.median(xs)
        print(f"{name:<14} {med:>14,.0f} {min(xs):>10,.0f} {max(xs):>10,.0f}  {med / base:.2f}x")


def selfplay_part(model: str, games: int, runs: int, repeats: int) -> None:
    import torch
    torch.set_num_threads(1)
    from pyhexz import hexz_pb2 as pb
    from pyhexz.nn import HexzNet, Predictor
    from pyhexz.search.driver import SearchConfig, TreeConfig
    from pyhexz.train.selfplay import run_selfplay

    if model == "fresh":
        torch.manual_seed(0)
        predictor = Predictor(HexzNet(3, 32))
    else:
        predictor = Predictor.from_path(model)
    key = pb.ModelKey(name="bench", checkpoint=0)
    variants = {
        "all off": TreeConfig(),
        "cache 8192": TreeConfig(eval_cache=8192),
        "solver 12": TreeConfig(solver_moves=12),
        "cache+solver": TreeConfig(eval_cache=8192, solver_moves=12),
    }
    print(f"\n## 2. self-play: model {model}, {games} games at once, {runs} runs per move, "
          f"sample_plies 20, {repeats} interleaved rounds, the same seeds for every variant")
    # moves, network leaves, cache hits, solves, solver failures, seconds outside the network
    totals = {name: [0, 0, 0, 0, 0, 0.0] for name in variants}
    walls: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):
        for name, tree in variants.items():
            config = SearchConfig(runs_per_move=runs, sample_plies=20, tree=tree)
            t0 = time.perf_counter()
            stats = run_selfplay(lambda: (predictor, key), lambda req: None, config,
                                 parallel_games=games, max_games=games, seed=r)
            wall = time.perf_counter() - t0
            t = totals[name]
            t[0] += stats.positions
            t[1] += stats.simulations
            t[2] += stats.transposition_hits
            t[3] += stats.solves
            t[4] += stats.solver_failures
            t[5] += wall - stats.nn_seconds
            walls[name].append(wall / max(stats.positions, 1))
        print(f"  round {r + 1}/{repeats} done", flush=True)
    print(f"{'variant':<13} {'moves':>6} {'network leaves':>15} {'cache hits':>11} "
          f"{'solves':>8} {'unsolved':>9} {'search s':>9} {'wall s':>8}   (per move)")
    for name, (moves, leaves, hits, solves, failures, search_s) in totals.items():
        n = max(moves, 1)
        print(f"{name:<13} {moves:>6} {leaves / n:>15.1f} {hits / n:>11.2f} {solves / n:>8.2f} "
              f"{failures / n:>9.2f} {search_s / n:>9.4f} {statistics.median(walls[name]):>8.3f}")


def arena_part(model: str, openings: int, runs: int, repeats: int) -> None:
    """A match's budget player (arena, strength.py) with its trees' caches kept across moves
    against emptied every move: the same games, fewer network leaves."""
    import torch
    torch.set_num_threads(1)
    from pyhexz.nn import Predictor
    from pyhexz.search.driver import TreeConfig
    from pyhexz.search.players import NeuralPlayer, resolve_model_path
    from pyhexz.search.timed import served_tree_config
    from pyhexz.train.arena import load_openings, play_match

    predictor = Predictor.from_path(resolve_model_path(model), backend="auto")
    boards = load_openings()[:openings]
    tree: TreeConfig = served_tree_config()
    print(f"\n## 3. a match's budget player: {model} ({predictor.backend.name}) at {runs} "
          f"simulations against itself, the first {openings} openings x 2 seats, "
          f"{repeats} interleaved rounds, cache of {tree.eval_cache} as served")
    leaves: dict[bool, int] = {True: 0, False: 0}
    walls: dict[bool, list[float]] = {True: [], False: []}
    outcomes: dict[bool, list] = {True: [], False: []}

    def counted(keep: bool):
        def evaluate(planes, masks):
            leaves[keep] += len(planes)
            return predictor(planes, masks)
        return evaluate
    for _ in range(repeats):
        for keep in (True, False):
            p1 = NeuralPlayer(counted(keep), runs, "a", tree=tree, keep_cache=keep)
            p2 = NeuralPlayer(counted(keep), runs, "b", tree=tree, keep_cache=keep)
            t0 = time.perf_counter()
            result = play_match(p1, p2, boards)
            walls[keep].append(time.perf_counter() - t0)
            outcomes[keep].append(result.outcomes)
    print(f"{'caches':<22} {'network leaves':>15} {'match wall s (median)':>22}")
    for keep, name in ((False, "emptied every move"), (True, "kept across moves")):
        wall = statistics.median(walls[keep])
        print(f"{name:<22} {leaves[keep] / repeats:>15,.0f} {wall:>22.1f}")
    print(f"leaves kept/emptied: {leaves[True] / max(leaves[False], 1):.3f}; wall: "
          f"{statistics.median(walls[True]) / statistics.median(walls[False]):.3f}; "
          f"same outcomes: {outcomes[True] == outcomes[False]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(HEXZ_MODEL),
                    help="model file for part 2, or 'fresh' (default: the hexz fixture model)")
    ap.add_argument("--games", type=int, default=4)
    ap.add_argument("--runs-per-move", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of parts 1 and 2")
    ap.add_argument("--skip-selfplay", action="store_true", help="part 1 only")
    ap.add_argument("--arena", type=int, metavar="RUNS",
                    help="part 3 only: a match of --model (a path or default) against itself "
                         "at RUNS simulations, caches kept across moves against emptied")
    ap.add_argument("--openings", type=int, default=4, help="part 3's fixture openings")
    args = ap.parse_args(argv)
    if args.games < 1 or args.runs_per_move < 1 or args.repeats < 1:
        ap.error("--games, --runs-per-move and --repeats must be >= 1")
    if (not args.skip_selfplay and args.model not in ("fresh", "default")
            and not os.path.exists(args.model)):
        ap.error(f"--model {args.model}: no such file")
    pinned = pin_to_one_core()
    print("pyhexz search options benchmark (benchmarks/bench_search_options.py)")
    print(f"  date      {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"  python    {platform.python_version()}, cpu {cpu_model()}, {pinned}")
    if args.arena:
        arena_part(args.model, args.openings, args.arena, args.repeats)
        return 0
    tree_part(args.repeats, 64, 200)
    if not args.skip_selfplay:
        selfplay_part(args.model, args.games, args.runs_per_move, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
