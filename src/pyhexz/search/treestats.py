"""What a finished search's tree looks like: its shape per depth and its root moves.

The hexz Go CPU player answers every move with such statistics (MCTSStats, FLAGZ.md section
9), and the Go game master reads them: the best root move's Q is its "CPU confidence", each
root move's Q its score in the game history. `tree_stats` computes them from the compiled
tree's node arrays (`MCTS.tree_nodes`) with numpy: a breadth-first walk over the children
ranges gives each depth's nodes, so the cost is a few array operations per depth, not a
Python step per node (BENCHMARKS.md, "CPU player: tree statistics", has the figures).

The depth and node counts follow the Go search's definitions, so that numbers from either
player mean the same: every node the tree holds counts, also the children a node got when it
was expanded and that were never visited (the Go tree allocates them the same way); a leaf is
a node without children, a branch one with; depth 0 is the root.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pyhexz.game.board import policy_move_tuple
from pyhexz.search.mcts import MCTS

Move = tuple[int, int, int]


@dataclass
class RootMove:
    """One move at the root and what the search thinks of it."""

    move: Move           # (row, col, cell type)
    visits: int
    prior: float         # the network's probability (uniform in rollout search)
    value: float | None  # mean backed-up value for the player to move, in [-1, 1]; None: unvisited
    exploration: float   # the exploration term the search's rule gives it now (PUCT or UCT)


@dataclass
class TreeStats:
    """The shape of a search tree, per depth (index 0 is the root), and its root moves."""

    size: int                      # nodes in the tree
    leaf_nodes: list[int]          # nodes without children, per depth
    branch_nodes: list[int]        # nodes with children, per depth
    visit_counts: list[dict[int, int]]   # per depth: visit count -> number of nodes with it
    moves: list[RootMove]          # in the tree's order of the root's children

    @property
    def depth_levels(self) -> int:
        """How many depths hold nodes (the root alone: 1)."""
        return len(self.leaf_nodes)


def _levels(first_child: np.ndarray, nchildren: np.ndarray) -> list[np.ndarray]:
    """The node indices at each depth, root first: each depth's nodes are the concatenated
    children ranges [first_child, first_child + nchildren) of the depth above."""
    levels = [np.zeros(1, dtype=np.int64)]
    while True:
        above = levels[-1]
        first, count = first_child[above], nchildren[above]
        expanded = (first >= 0) & (count > 0)
        first, count = first[expanded].astype(np.int64), count[expanded].astype(np.int64)
        if first.size == 0:
            return levels
        # Range starts repeated per child, plus each child's offset within its range.
        ends = np.cumsum(count)
        offsets = np.arange(int(ends[-1]), dtype=np.int64) - np.repeat(ends - count, count)
        levels.append(np.repeat(first, count) + offsets)


def tree_stats(mcts: MCTS, t: int, mover: int, *, rollout: bool) -> TreeStats:
    """The statistics of tree `t` of `mcts` after a search from a position where `mover` is
    to move; `rollout` says which selection rule searched it (UCT or PUCT), for the
    exploration terms."""
    nodes = mcts.tree_nodes(t)
    first_child, nchildren, visits = nodes["first_child"], nodes["nchildren"], nodes["visits"]
    leaf, branch, counts = [], [], []
    for idx in _levels(first_child, nchildren):
        leaves = int(np.count_nonzero(first_child[idx] < 0))
        leaf.append(leaves)
        branch.append(len(idx) - leaves)
        values, numbers = np.unique(visits[idx], return_counts=True)
        counts.append(dict(zip(values.tolist(), numbers.tolist(), strict=True)))
    return TreeStats(int(len(visits)), leaf, branch, counts,
                     _root_moves(nodes, mover, rollout, mcts.c_puct))


def _root_moves(nodes: dict[str, np.ndarray], mover: int, rollout: bool,
                c: float) -> list[RootMove]:
    first, count = int(nodes["first_child"][0]), int(nodes["nchildren"][0])
    if first < 0:
        return []
    parent_visits = max(int(nodes["visits"][0]), 1)
    sign = 1.0 if mover == 1 else -1.0   # value_sum is from player 1's view
    out = []
    for i in range(first, first + count):
        n = int(nodes["visits"][i])
        prior = float(nodes["prior"][i])
        if rollout:   # UCT: c * sqrt(ln N / n); an unvisited move counts as visited once
            explore = c * math.sqrt(math.log(parent_visits) / max(n, 1))
        else:         # PUCT: c * P * sqrt(N) / (1 + n)
            explore = c * prior * math.sqrt(parent_visits) / (1 + n)
        out.append(RootMove(policy_move_tuple(int(nodes["move"][i])), n, prior,
                            sign * float(nodes["value_sum"][i]) / n if n else None, explore))
    return out


__all__ = ["RootMove", "TreeStats", "tree_stats"]
