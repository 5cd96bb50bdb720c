"""The cost of the Go player's tree statistics (MCTSStats) after a CPU player's search.

    python benchmarks/bench_tree_stats.py [--seconds 1] [--positions 5] [--model PATH]

Each JSON answer of the CPU player carries per-depth node counts and visit-count histograms
of the whole tree (FLAGZ.md section 9). They are computed in the search thread after the
search ends, so their time delays the answer and every other search. A second of rollout
search grows a tree of millions of nodes; neural search a few ten thousand. For positions
searched `--seconds` each (rollout MCTS, and neural MCTS with a 3 x 32 network or `--model`),
this prints the median tree size and the median time of

- `tree_stats` as served: the compiled one-pass `MCTS.depth_stats` plus the root moves, and
- the numpy alternative: `MCTS.tree_nodes` (the tree as arrays) and a breadth-first walk over
  the children ranges with `np.unique` per depth,

both measured on the same trees in one run, with their ratio and their share of the think time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import benchlib


def numpy_shape(mcts, t: int) -> tuple[list[int], list[int], list[dict[int, int]]]:
    """The per-depth shape from the node arrays with numpy (the alternative measured)."""
    import numpy as np
    nodes = mcts.tree_nodes(t)
    first_child, nchildren, visits = nodes["first_child"], nodes["nchildren"], nodes["visits"]
    level = np.zeros(1, dtype=np.int64)
    leaf, branch, counts = [], [], []
    while level.size:
        fc, nc = first_child[level], nchildren[level]
        leaves = int(np.count_nonzero(fc < 0))
        leaf.append(leaves)
        branch.append(len(level) - leaves)
        values, numbers = np.unique(visits[level], return_counts=True)
        counts.append(dict(zip(values.tolist(), numbers.tolist(), strict=True)))
        keep = (fc >= 0) & (nc > 0)
        fc, nc = fc[keep].astype(np.int64), nc[keep].astype(np.int64)
        if not fc.size:
            break
        ends = np.cumsum(nc)
        level = np.repeat(fc, nc) + np.arange(int(ends[-1])) - np.repeat(ends - nc, nc)
    return leaf, branch, counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="think time per position")
    ap.add_argument("--positions", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="timings per tree")
    ap.add_argument("--model", help="the network of neural search (default: a 3 x 32 HexzNet)")
    a = ap.parse_args()
    pinned = benchlib.pin_to_one_core()

    import random

    import torch
    torch.set_num_threads(1)
    from pyhexz.nn import HexzNet, Predictor
    from pyhexz.search.players import resolve_model_path
    from pyhexz.search.timed import TimedSearch, think
    from pyhexz.search.treestats import tree_stats
    from pyhexz.train.arena import load_openings, random_positions

    rng = random.Random(3)
    boards = list(random_positions(load_openings(), (rng.randrange(0, 30) for _ in range(100)),
                                   rng))[:a.positions]
    net = Predictor.from_path(resolve_model_path(a.model), "cpu") if a.model else \
        Predictor(HexzNet(3, 32).eval(), "cpu")
    print(f"# {benchlib.cpu_model()}; {pinned}; {a.positions} positions, {a.seconds:g} s each")
    print("| search | tree nodes | served: depth_stats + root moves | numpy: tree_nodes + walk "
          "| ratio | served / think time |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, evaluate in (("rollout", None), ("neural", net)):
        searcher = TimedSearch(1, evaluate)
        sizes, served, alternative = [], [], []
        for b in boards:
            think(searcher, b, a.seconds)
            sizes.append(searcher.mcts.tree_size(0))
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                stats = tree_stats(searcher.mcts, 0, rollout=evaluate is None)
                t1 = time.perf_counter()
                shape = numpy_shape(searcher.mcts, 0)
                t2 = time.perf_counter()
                served.append(t1 - t0)
                alternative.append(t2 - t1)
            assert shape == (stats.leaf_nodes, stats.branch_nodes, stats.visit_counts)
        s, n = statistics.median(served), statistics.median(alternative)
        print(f"| {label} | {statistics.median(sizes):,.0f} | {s * 1e3:.1f} ms | "
              f"{n * 1e3:.1f} ms | {n / s:.1f}x | {s / a.seconds:.1%} |")


if __name__ == "__main__":
    main()
