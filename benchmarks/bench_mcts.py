#!/usr/bin/env python3
"""Speed of the compiled search (pyhexz.search.mcts) on one core.

Measures, interleaved so that every repeat of every figure sees the same machine weather:

  tree 64x1     the PUCT tree alone: 64 trees from fresh Board.new positions, 800 simulations
                each, one leaf per tree per batch, driven by collect()/apply() with a constant
                evaluator (uniform priors, value 0; the numpy arrays are made once and reused).
                Only the collect/apply loop is timed.
  tree 8x8      the same with 8 trees and leaves_per_tree=8 (virtual loss).
  rollouts new  run_rollouts(): UCT with random playouts, the whole search in compiled code,
                20,000 simulations from each of 3 fresh Board.new positions.
  rollouts mid  the same from 3 mid-game positions (30 random plies in).

Every repeat searches the same positions, so the spread over repeats is the machine's noise.

A simulation is one leaf selected, then evaluated (tree) or played out (rollouts), or scored
exactly when the game is over there, and backed up; a fresh root's own evaluation counts as one.
Figures are simulations per second; the median and the range over --repeats rounds are printed.
Run from the repository root after building the extensions:

    python setup.py build_ext --build-lib=src
    python benchmarks/bench_mcts.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

import benchlib  # noqa: F401  (puts src/ on the path)
import pyhexz.search.mcts as mcts_module
from benchlib import cpu_model, cython_version, pin_to_one_core
from pyhexz.game.board import Board
from pyhexz.search.mcts import MCTS

TREE_TARGET = 100_000     # simulations/s of the tree alone
ROLLOUT_TARGET = 30_000   # simulations/s of rollout MCTS
GO_RATE = 42_000  # the hexz Go engine's rollout MCTS, simulations/s on one Apple M1 core





def midgame_position(seed: int, plies: int = 30) -> Board:
    """A position `plies` random moves into a game that is still running there."""
    attempt = 0
    while True:
        b = Board.new(seed * 7919 + attempt)
        for k in range(plies):
            if b.is_over:
                break
            b.random_move((seed * 7919 + attempt) * 1000 + k)
        if not b.is_over:
            return b
        attempt += 1


class ConstantEvaluator:
    """Uniform priors and value 0 for every leaf, from arrays made once."""

    def __init__(self, batch_size: int):
        self.probs = np.ones((batch_size, 220), dtype=np.float32)
        self.values = np.zeros(batch_size, dtype=np.float32)
        self.planes = np.zeros((batch_size, 11, 11, 10), dtype=np.float32)
        self.masks = np.zeros((batch_size, 2, 11, 10), dtype=np.uint8)


def bench_tree(trees: int, leaves_per_tree: int, sims: int, **options):
    """Returns (simulations, seconds, batches) for one full search of every tree; `options`
    go to MCTS (bench_search_options.py times the search options this way)."""
    m = MCTS(trees, leaves_per_tree=leaves_per_tree, seed=0, **options)
    for t in range(trees):
        m.set_root(t, Board.new(1_000_003 + t))
        m.start(t, sims)
    ev = ConstantEvaluator(m.batch_size)
    planes, masks, probs, values = ev.planes, ev.masks, ev.probs, ev.values
    collect, apply, busy = m.collect, m.apply, m.busy
    batches = 0
    start = time.perf_counter()
    while busy():
        n = collect(planes, masks)
        apply(probs[:n], values[:n])
        batches += 1
    elapsed = time.perf_counter() - start
    done = sum(m.root_visits(t) for t in range(trees))
    return done, elapsed, batches


def bench_rollouts(boards: list, sims: int):
    """Returns (simulations, seconds, mean tree size) for one rollout search per position."""
    done = 0
    elapsed = 0.0
    sizes = []
    for i, board in enumerate(boards):
        m = MCTS(1, seed=i)
        m.set_root(0, board)
        start = time.perf_counter()
        done += m.run_rollouts(0, sims)
        elapsed += time.perf_counter() - start
        sizes.append(m.tree_size(0))
    return done, elapsed, statistics.mean(sizes)


def fmt(x: float) -> str:
    return f"{x:,.0f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=None,
                    help="repeats per measurement (default 7, or 2 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 16 trees x 100 simulations, 4,000 rollout simulations")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one core")
    args = ap.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 7)
    if repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.quick:
        big_trees, tree_sims, rollout_sims = 16, 100, 4_000
    else:
        big_trees, tree_sims, rollout_sims = 64, 800, 20_000
    small_trees, small_lpt = 8, 8

    pinned = "not pinned (--no-pin)" if args.no_pin else pin_to_one_core()
    print("pyhexz search benchmark (benchmarks/bench_mcts.py)")
    print(f"  date      {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"  python    {platform.python_implementation()} {platform.python_version()}")
    print(f"  numpy     {np.__version__}")
    print(f"  cython    {cython_version(mcts_module)}")
    print(f"  cpu       {cpu_model()}, {os.cpu_count()} logical CPUs")
    print(f"  affinity  {pinned}")
    print(f"  plan      {repeats} repeats, interleaved: tree {big_trees}x1 and "
          f"{small_trees}x{small_lpt} at {tree_sims} simulations per tree; rollouts "
          f"{rollout_sims} simulations per position{' (--quick)' if args.quick else ''}")
    sys.stdout.flush()

    new_positions = [Board.new(2_000_003 + i) for i in range(3)]
    mid_positions = [midgame_position(i) for i in range(3)]
    # Warm up (first calls, allocator, CPU frequency) before anything is timed.
    bench_tree(8, 1, 50)
    bench_rollouts([Board.new(999)], 1_000)

    names = [f"tree {big_trees}x1", f"tree {small_trees}x{small_lpt}", "rollouts new",
             "rollouts mid"]
    targets = dict(zip(names, (TREE_TARGET, TREE_TARGET, ROLLOUT_TARGET, ROLLOUT_TARGET),
                       strict=True))
    rates: dict[str, list[float]] = {k: [] for k in names}
    batch_sizes: list[float] = []
    tree_sizes: dict[str, float] = {}
    for rep in range(repeats):
        n, t, batches = bench_tree(big_trees, 1, tree_sims)
        rates[names[0]].append(n / t)
        batch_sizes.append(n / batches)
        n, t, _ = bench_tree(small_trees, small_lpt, tree_sims)
        rates[names[1]].append(n / t)
        n, t, tree_sizes["rollouts new"] = bench_rollouts(new_positions, rollout_sims)
        rates["rollouts new"].append(n / t)
        n, t, tree_sizes["rollouts mid"] = bench_rollouts(mid_positions, rollout_sims)
        rates["rollouts mid"].append(n / t)
        print(f"  repeat {rep + 1}/{repeats}: "
              + ", ".join(f"{k} {fmt(v[-1])}/s" for k, v in rates.items()), flush=True)

    print()
    print(f"{'measurement':<14} {'median':>12} {'min':>12} {'max':>12}  {'unit':<7} target")
    for name, xs in rates.items():
        med = statistics.median(xs)
        goal = targets[name]
        ok = "met" if med >= goal else "MISSED"
        print(f"{name:<14} {fmt(med):>12} {fmt(min(xs)):>12} {fmt(max(xs)):>12}  sims/s  "
              f">= {fmt(goal)}: {ok} ({med / goal:.1f}x)")
    print()
    print(f"tree {big_trees}x1: {statistics.mean(batch_sizes):.1f} leaves per collect on average")
    for name, size in tree_sizes.items():
        print(f"{name}: {size:,.0f} tree nodes after {fmt(rollout_sims)} simulations "
              f"(mean over the positions)")
    for name in ("rollouts new", "rollouts mid"):
        med = statistics.median(rates[name])
        print(f"{name}: {med / GO_RATE:.2f}x the hexz Go engine's ~{fmt(GO_RATE)}/s "
              f"(Apple M1 core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
