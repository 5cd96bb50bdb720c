"""What a finished search's tree looks like: its shape per depth and its root moves.

The hexz Go CPU player answers every move with such statistics (MCTSStats, FLAGZ.md section
9), and the Go game master reads them: the best root move's Q is its "CPU confidence", each
root move's Q its score in the game history. The shape comes from one compiled pass over the
tree (`MCTS.depth_stats`): a second of rollout search grows a tree of millions of nodes, too
many to copy out as arrays and walk in numpy in the time of a request (BENCHMARKS.md, "CPU
player: tree statistics", has the figures).

The depth and node counts follow the Go search's definitions, so that numbers from either
player mean the same: every node the tree holds counts, also the children a node got when it
was expanded and that were never visited (the Go tree allocates them the same way); a leaf is
a node without children, a branch one with; depth 0 is the root.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyhexz.game.board import policy_index
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
    moves: list[RootMove]          # every legal move at the root, by policy index

    @property
    def depth_levels(self) -> int:
        """How many depths hold nodes (the root alone: 1)."""
        return len(self.leaf_nodes)


def tree_stats(mcts: MCTS, t: int, *, rollout: bool) -> TreeStats:
    """The statistics of tree `t` of `mcts` after a search; `rollout` says which selection
    rule searched it (UCT or PUCT), for the exploration terms."""
    shape = mcts.depth_stats(t)
    return TreeStats(mcts.tree_size(t), shape["leaf"], shape["branch"], shape["visits"],
                     _root_moves(mcts, t, rollout))


def _root_moves(mcts: MCTS, t: int, rollout: bool) -> list[RootMove]:
    visits, priors, values = mcts.visits(t), mcts.priors(t), mcts.root_values(t)
    parent_visits = max(mcts.root_visits(t), 1)
    c = mcts.c_puct
    out = []
    for move in sorted(mcts.root_board(t).legal_moves(), key=lambda m: policy_index(*m)):
        i = policy_index(*move)
        n, prior = int(visits[i]), float(priors[i])
        if rollout:   # UCT: c * sqrt(ln N / n); an unvisited move counts as visited once
            explore = c * math.sqrt(math.log(parent_visits) / max(n, 1))
        else:         # PUCT: c * P * sqrt(N) / (1 + n)
            explore = c * prior * math.sqrt(parent_visits) / (1 + n)
        out.append(RootMove(move, n, prior, float(values[i]) if n else None, explore))
    return out


__all__ = ["RootMove", "TreeStats", "tree_stats"]
