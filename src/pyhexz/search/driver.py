"""The search driver: runs the scheduled simulations of a forest of trees (pyhexz.search.mcts)
with one network call per batch of leaves.

Self-play, the timed search of the CPU player and the players of matches all search through
`search()`; only how many simulations they schedule, and what they do with the visits, differs.

The options of the tree (mcts.pyx's docstring says what each does) are settings here, so each
is a flag and a HEXZ_* variable: `TreeConfig` holds those that serve every searcher (first play
urgency reduction, the evaluation cache, the endgame solver); `SearchConfig`, self-play's,
adds the two that only make sense where the search's result becomes a training target
(forced playouts with policy target pruning, the Gumbel root). All are off by default.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
class TreeConfig:
    """Options of the tree for every searcher: self-play, match players, the CPU player."""

    fpu_reduction: float = setting(
        0.0, "first play urgency reduction below the root: an unvisited move is valued at its "
        "parent's Q minus this times sqrt(prior mass of the visited moves) (KataGo 0.2, Leela "
        "0.25); 0: the parent's Q", check=at_least(0))
    fpu_reduction_root: float = setting(
        0.0, "first play urgency reduction at the root (KataGo 0.1; 0 with root noise)",
        check=at_least(0))
    eval_cache: int = setting(
        0, "evaluation cache: positions whose network outputs each game's tree keeps, so that "
        "a position reached by another move order is not evaluated again (about 300 bytes "
        "each); 0: none", check=at_least(0))
    solver_moves: int = setting(
        0, "endgame solver: solve a new leaf exactly when at most this many legal moves are "
        "left, both players' together (12 solves about 9 in 10 there); 0: no solver",
        check=at_least(0))
    solver_budget: int = setting(5000, "positions the endgame solver may make per leaf "
                                 "before it gives up", check=at_least(1))

    def __post_init__(self) -> None:
        check_settings(self)

    def mcts_options(self) -> dict[str, Any]:
        """The MCTS constructor's keyword arguments for these options."""
        return dataclasses.asdict(self)


@dataclass
class SearchConfig:
    runs_per_move: int = setting(800, "MCTS simulations per move", check=at_least(1))
    c_puct: float = setting(1.5, "PUCT exploration constant", check=above(0))
    dirichlet_alpha: float = setting(0.55, "root noise concentration")
    dirichlet_weight: float = setting(0.25, "root noise weight")
    leaves_per_tree: int = 1
    sample_plies: int | None = setting(
        None, "sample moves by visit count for this many plies of a self-play game, then play "
        "the most visited; 'all': sample all game long (the Gumbel root plays its own "
        "survivor instead)", parse=plies, check=at_least(0))
    # Playout cap randomization (KataGo; train/selfplay.py): self-play only.
    full_search_fraction: float = setting(
        1.0, "share of self-play moves searched with --runs-per-move and recorded as training "
        "examples; the others get --cheap-runs-per-move, no root noise, and no example (KataGo's "
        "playout cap randomization; 1: every move)", check=Check(lambda v: 0 < v <= 1, "in (0, 1]"))
    cheap_runs_per_move: int | None = setting(
        None, "simulations of a self-play move that is not recorded (none: a quarter of "
        "--runs-per-move)", check=at_least(1))
    tree: TreeConfig = field(default_factory=TreeConfig)
    forced_playouts: float = setting(
        0.0, "forced playouts at the root, KataGo's k (2): a visited move gets at least "
        "sqrt(k * prior * visits); the policy target takes them out again (policy target "
        "pruning); 0: off", check=at_least(0))
    gumbel: int = setting(
        0, "Gumbel root instead of PUCT and Dirichlet noise: this many moves considered "
        "(Gumbel-top-k, sequential halving; mctx's 16); the search's survivor is played and "
        "the improved policy learned; 0: off", check=at_least(0))

    def __post_init__(self) -> None:
        check_settings(self)
        if self.cheap_runs_per_move is not None and self.cheap_runs_per_move > self.runs_per_move:
            raise ValueError(f"cheap_runs_per_move ({self.cheap_runs_per_move}) must not exceed "
                             f"runs_per_move ({self.runs_per_move})")
        if self.gumbel and self.forced_playouts:
            raise ValueError("--gumbel and --forced-playouts exclude each other: forced "
                             "playouts steer the PUCT root, which the Gumbel root replaces "
                             "(with --gumbel, pass --forced-playouts 0)")

    @property
    def cheap_runs(self) -> int:
        """Simulations of a cheap (unrecorded) self-play move."""
        return self.cheap_runs_per_move or max(1, self.runs_per_move // 4)

    @property
    def records_policy_target(self) -> bool:
        """Whether self-play learns `MCTS.policy_target` rather than the raw visits."""
        return bool(self.gumbel or self.forced_playouts)


def new_forest(config: SearchConfig, num_trees: int, seed: int | None = None) -> MCTS:
    """The search trees of self-play: `num_trees` games, with every option of `config`."""
    return MCTS(num_trees, c_puct=config.c_puct, dirichlet_alpha=config.dirichlet_alpha,
                dirichlet_weight=config.dirichlet_weight, leaves_per_tree=config.leaves_per_tree,
                seed=seed, forced_playouts=config.forced_playouts, gumbel_k=config.gumbel,
                **config.tree.mcts_options())


def uniform_evaluator(planes: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal priors over the legal moves and value 0: search without a network, for tests."""
    m = masks.reshape(len(masks), -1).astype(np.float32)
    return m / np.maximum(m.sum(1, keepdims=True), 1), np.zeros(len(masks), np.float32)


def search(mcts: MCTS, evaluate: Evaluator, planes: np.ndarray, masks: np.ndarray,
           stats: SelfPlayStats | None = None,
           should_stop: Callable[[], bool] | None = None) -> bool:
    """Runs the scheduled simulations of every tree, one network call per batch of leaves.

    `should_stop` is asked after every batch: one round of moves can take a minute (800
    simulations of 32 games on a busy core), and a time budget or Ctrl-C must be kept within
    a batch, not a round. Returns False when it said stop before the simulations were done;
    the trees then hold a partial search, and only `set_root` makes them usable again.
    """
    masks_u8 = masks.view(np.uint8)
    hits, solves, failures = mcts.transposition_hits, mcts.solves, mcts.solver_failures
    try:
        return _run_batches(mcts, evaluate, planes, masks, masks_u8, stats, should_stop)
    finally:
        if stats is not None:
            stats.transposition_hits += mcts.transposition_hits - hits
            stats.solves += mcts.solves - solves
            stats.solver_failures += mcts.solver_failures - failures


def _run_batches(mcts: MCTS, evaluate: Evaluator, planes: np.ndarray, masks: np.ndarray,
                 masks_u8: np.ndarray, stats: SelfPlayStats | None,
                 should_stop: Callable[[], bool] | None) -> bool:
    while mcts.busy():
        if should_stop is not None and should_stop():
            return False
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
    return True


def new_buffers(mcts: MCTS) -> tuple[np.ndarray, np.ndarray]:
    """Network input buffers big enough for one `collect` of this forest."""
    b = mcts.batch_size
    return np.zeros((b, *BOARD_SHAPE), np.float32), np.zeros((b, *MASK_SHAPE), np.bool_)


def sample_move(visits: np.ndarray, rng: np.random.Generator) -> int:
    """A policy index drawn in proportion to the visit counts."""
    return int(rng.choice(len(visits), p=visits / visits.sum()))
