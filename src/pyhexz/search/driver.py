"""The search driver: runs the scheduled simulations of a forest of trees (pyhexz.search.mcts)
with one network call per batch of leaves.

Self-play, the timed search of the CPU player and the players of matches all search through
`search()`; only how many simulations they schedule, and what they do with the visits, differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pyhexz.game.board import BOARD_SHAPE, MASK_SHAPE
from pyhexz.infra.config import Check, above, at_least, check_settings, plies, setting
from pyhexz.search.mcts import MCTS

if TYPE_CHECKING:
    from pyhexz.train.selfplay import SelfPlayStats

# Evaluates a batch: (planes (n, *BOARD_SHAPE) float32, masks (n, *MASK_SHAPE) bool) ->
# (move probabilities (n, 220), values (n,) for the player to move).
Evaluator = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

@dataclass
class SearchConfig:
    runs_per_move: int = setting(800, "MCTS simulations per move", check=at_least(1))
    c_puct: float = setting(1.5, "PUCT exploration constant", check=above(0))
    dirichlet_alpha: float = setting(0.55, "root noise concentration")
    dirichlet_weight: float = setting(0.25, "root noise weight")
    leaves_per_tree: int = 1
    sample_plies: int | None = setting(
        None, "sample moves by visit count for this many plies of a self-play game, then play "
        "the most visited; 'all': sample all game long", parse=plies, check=at_least(0))
    # Playout cap randomization (KataGo; train/selfplay.py): self-play only.
    full_search_fraction: float = setting(
        1.0, "share of self-play moves searched with --runs-per-move and recorded as training "
        "examples; the others get --cheap-runs-per-move, no root noise, and no example (KataGo's "
        "playout cap randomization; 1: every move)", check=Check(lambda v: 0 < v <= 1, "in (0, 1]"))
    cheap_runs_per_move: int | None = setting(
        None, "simulations of a self-play move that is not recorded (none: a quarter of "
        "--runs-per-move)", check=at_least(1))

    def __post_init__(self) -> None:
        check_settings(self)
        if self.cheap_runs_per_move is not None and self.cheap_runs_per_move > self.runs_per_move:
            raise ValueError(f"cheap_runs_per_move ({self.cheap_runs_per_move}) must not exceed "
                             f"runs_per_move ({self.runs_per_move})")

    @property
    def cheap_runs(self) -> int:
        """Simulations of a cheap (unrecorded) self-play move."""
        return self.cheap_runs_per_move or max(1, self.runs_per_move // 4)


def uniform_evaluator(planes: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal priors over the legal moves and value 0: search without a network, for tests."""
    m = masks.reshape(len(masks), -1).astype(np.float32)
    return m / np.maximum(m.sum(1, keepdims=True), 1), np.zeros(len(masks), np.float32)


def search(mcts: MCTS, evaluate: Evaluator, planes: np.ndarray, masks: np.ndarray,
           stats: SelfPlayStats | None = None) -> None:
    """Runs the scheduled simulations of every tree, one network call per batch of leaves."""
    masks_u8 = masks.view(np.uint8)
    while mcts.busy():
        n = mcts.collect(planes, masks_u8)
        if n == 0:
            continue
        t0 = time.perf_counter()
        probs, values = evaluate(planes[:n], masks[:n])
        if stats is not None:
            stats.nn_seconds += time.perf_counter() - t0
            stats.nn_calls += 1
            stats.simulations += n
        mcts.apply(np.ascontiguousarray(probs, np.float32),
                   np.ascontiguousarray(values, np.float32))


def new_buffers(mcts: MCTS) -> tuple[np.ndarray, np.ndarray]:
    """Network input buffers big enough for one `collect` of this forest."""
    b = mcts.batch_size
    return np.zeros((b, *BOARD_SHAPE), np.float32), np.zeros((b, *MASK_SHAPE), np.bool_)


def sample_move(visits: np.ndarray, rng: np.random.Generator) -> int:
    """A policy index drawn in proportion to the visit counts."""
    return int(rng.choice(len(visits), p=visits / visits.sum()))
