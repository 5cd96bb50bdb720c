"""Self-play: games of the network against itself, turned into training examples.

One loop serves every caller (ARCHITECTURE.md): the `selfplay` command writes the games to
files, the local `train` job hands them to its trainer, the cloud worker posts them to the
training server. Only the `sink` differs.

The loop plays `parallel_games` games at once in one process. Every move, each game's tree
gets `runs_per_move` new simulations; the trees are advanced together, so each network call
evaluates a batch of up to `parallel_games * leaves_per_tree` leaves and the time goes into
the network rather than into Python. Moves are sampled in proportion to the visit counts all
game long, with Dirichlet noise at the root (the settings that worked for hexz).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from pyhexz import hexz_pb2 as pb
from pyhexz.board import Board
from pyhexz.examples import make_example
from pyhexz.mcts import MCTS

log = logging.getLogger(__name__)

# Evaluates a batch: (planes (n, 11, 11, 10) float32, masks (n, 2, 11, 10) bool) ->
# (move probabilities (n, 220), values (n,) for the player to move).
Evaluator = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
# Returns the evaluator to use now and the key of its model; asked before every move, which is
# how workers hot-swap to a new checkpoint without stopping.
ModelSource = Callable[[], tuple[Evaluator, pb.ModelKey]]
# Receives each finished game.
GameSink = Callable[[pb.AddTrainingExamplesRequest], None]


@dataclass
class SearchConfig:
    runs_per_move: int = 800
    c_puct: float = 1.5
    dirichlet_alpha: float = 0.55
    dirichlet_weight: float = 0.25
    leaves_per_tree: int = 1

    def __post_init__(self) -> None:
        if self.runs_per_move < 1:
            raise ValueError(f"runs_per_move must be >= 1, got {self.runs_per_move}")


@dataclass
class SelfPlayStats:
    games: int = 0
    examples: int = 0
    positions: int = 0      # searched positions, finished games or not
    simulations: int = 0    # leaves evaluated by the network
    nn_seconds: float = 0.0
    nn_calls: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def examples_per_second(self) -> float:
        return self.examples / max(self.seconds, 1e-9)

    @property
    def nn_share(self) -> float:
        """Share of wall time spent in the network's forward pass."""
        return self.nn_seconds / max(self.seconds, 1e-9)


def uniform_evaluator(planes: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal priors over the legal moves and value 0: search without a network, for tests."""
    m = masks.reshape(len(masks), -1).astype(np.float32)
    return m / np.maximum(m.sum(1, keepdims=True), 1), np.zeros(len(masks), np.float32)


def search(mcts: MCTS, evaluate: Evaluator, planes: np.ndarray, masks: np.ndarray,
           stats: Optional[SelfPlayStats] = None) -> None:
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
        mcts.apply(np.ascontiguousarray(probs, np.float32), np.ascontiguousarray(values, np.float32))


def new_buffers(mcts: MCTS) -> tuple[np.ndarray, np.ndarray]:
    """Network input buffers big enough for one `collect` of this forest."""
    b = mcts.batch_size
    return np.zeros((b, 11, 11, 10), np.float32), np.zeros((b, 2, 11, 10), np.bool_)


def sample_move(visits: np.ndarray, rng: np.random.Generator) -> int:
    """A policy index drawn in proportion to the visit counts."""
    return int(rng.choice(len(visits), p=visits / visits.sum()))


def policy_move_tuple(index: int) -> tuple[int, int, int]:
    t, rc = divmod(index, 110)
    return rc // 10, rc % 10, (5 if t == 0 else 0)


@dataclass
class _Game:
    board: Board
    game_id: str
    examples: list = field(default_factory=list)


def run_selfplay(model: ModelSource, sink: GameSink, config: SearchConfig = SearchConfig(), *,
                 parallel_games: int = 16, max_games: Optional[int] = None,
                 max_seconds: Optional[float] = None,
                 should_stop: Callable[[], bool] = lambda: False,
                 seed: Optional[int] = None, execution_id: Optional[str] = None,
                 on_progress: Callable[[SelfPlayStats], None] = lambda s: None) -> SelfPlayStats:
    """Plays games until `max_games` have finished, `max_seconds` passed or `should_stop()`.

    Finished games go to `sink` as one AddTrainingExamplesRequest each. Games still running when
    time is up are dropped: an unfinished game has no result to learn from.
    """
    rng = np.random.default_rng(seed)
    execution_id = execution_id or uuid.uuid4().hex
    mcts = MCTS(parallel_games, c_puct=config.c_puct, dirichlet_alpha=config.dirichlet_alpha,
                dirichlet_weight=config.dirichlet_weight, leaves_per_tree=config.leaves_per_tree,
                seed=int(rng.integers(2**63)))
    planes, masks = new_buffers(mcts)
    stats = SelfPlayStats()
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    started = 0

    def may_start() -> bool:
        return ((max_games is None or started < max_games) and not should_stop()
                and (deadline is None or time.monotonic() < deadline))

    def new_game(t: int) -> Optional[_Game]:
        nonlocal started
        if not may_start():
            return None
        started += 1
        g = _Game(Board.new(int(rng.integers(2**63))), uuid.uuid4().hex)
        mcts.set_root(t, g.board)
        return g

    games: list[Optional[_Game]] = [new_game(t) for t in range(parallel_games)]
    while any(games):
        if should_stop() or (deadline is not None and time.monotonic() >= deadline):
            break
        evaluate, key = model()
        for t, g in enumerate(games):
            if g is not None:
                mcts.start(t, config.runs_per_move)
        search(mcts, evaluate, planes, masks, stats)
        for t, g in enumerate(games):
            if g is None:
                continue
            visits = mcts.visits(t)
            move = sample_move(visits, rng)
            board_planes, mask = g.board.encode()
            row, col, typ = policy_move_tuple(move)
            g.examples.append(make_example(
                board_planes, mask, visits, turn=g.board.turn, move=(row, col, typ),
                move_number=g.board.move, model_key=key, root_value=mcts.root_value(t)))
            g.board.play(row, col, typ)
            mcts.play(t, move)
            stats.positions += 1
            if g.board.is_over:
                _finish(g, execution_id, sink)
                stats.games += 1
                stats.examples += len(g.examples)
                on_progress(stats)
                games[t] = new_game(t)
    return stats


def _finish(g: _Game, execution_id: str, sink: GameSink) -> None:
    winner = g.board.winner
    for ex in g.examples:
        ex.result = 0.0 if winner == 0 else (1.0 if ex.turn == winner else -1.0)
    sink(pb.AddTrainingExamplesRequest(examples=g.examples, execution_id=execution_id,
                                       game_id=g.game_id))
