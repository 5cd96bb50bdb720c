"""Self-play: games of the network against itself, turned into training examples.

One loop serves every caller (ARCHITECTURE.md): the `selfplay` command writes the games to
files, the local `train` job hands them to its trainer, the cloud worker posts them to the
training server. Only the `sink` differs.

The loop plays `parallel_games` games at once in one process. Every move, each game's tree
gets `runs_per_move` new simulations; the trees are advanced together, so each network call
evaluates a batch of up to `parallel_games * leaves_per_tree` leaves and the time goes into
the network rather than into Python. Moves are sampled in proportion to the visit counts, with
Dirichlet noise at the root: all game long by default (the setting that worked for hexz), or
for the first `sample_plies` plies and the most visited move after them (AlphaZero's
temperature drop), which keeps late random blunders from deciding the result that the value
head learns. Flagz games start from random boards, so the openings stay varied either way.

Playout cap randomization (KataGo; `full_search_fraction` < 1): only that share of moves,
drawn at random, is searched with `runs_per_move` and becomes a training example; the others
are searched with `cheap_runs` simulations, no root noise, and play their most visited move, so
they play well cheaply, and are not recorded, since a policy target from a small search
teaches little. Games then cost less per example recorded, and the value targets come from
more, shorter-searched games. The coin is tossed once per round of moves, for all games at
once: a round lasts as long as its longest search, so with a coin per game nearly every round
would hold a full search and the cheap ones would save nothing.

Every example carries the game's final score difference from its mover's view (`score`), the
target of the network's score head.

With the Gumbel root (`--gumbel`) the move is the search's own survivor instead, and with it or
forced playouts (`--forced-playouts`) the policy recorded is `MCTS.policy_target`, not the
raw visits (search/mcts.pyx says why).

Stopping (a time budget, `should_stop`) is checked between the network batches of a search,
not only between moves: a round of 800 simulations for 32 games takes a minute on a busy core,
and a budget is a promise. The games cut off are returned (`SelfPlayStats.unfinished`), board
and examples so far, so that a caller can keep them and hand them back (`resume`) to be
played on later; train/unfinished.py stores them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pyhexz import hexz_pb2 as pb
from pyhexz.game.board import Board, policy_move_tuple
from pyhexz.game.examples import make_example
from pyhexz.search.driver import (
    Evaluator,
    SearchConfig,
    new_buffers,
    new_forest,
    sample_move,
    search,
)

log = logging.getLogger(__name__)

# Returns the evaluator to use now and the key of its model; asked before every move, which is
# how workers hot-swap to a new checkpoint without stopping.
ModelSource = Callable[[], tuple[Evaluator, pb.ModelKey]]
# Receives each finished game.
GameSink = Callable[[pb.AddTrainingExamplesRequest], None]


@dataclass
class SelfPlayStats:
    games: int = 0
    examples: int = 0
    positions: int = 0      # searched positions, finished games or not
    simulations: int = 0    # leaves evaluated by the network
    nn_seconds: float = 0.0
    nn_calls: int = 0
    transposition_hits: int = 0   # leaves expanded from the evaluation cache, not the network
    solves: int = 0               # leaves the endgame solver proved
    solver_failures: int = 0      # ... and those it gave up on (its budget ran out)
    game_seconds: float = 0.0   # wall time of the finished games, start to end, summed
    resumed: int = 0            # games handed in unfinished (`resume`) and played on
    # The games under way, after every round of moves: how many, and their plies (the
    # progress line's estimate of when the first games end, train/progress.py).
    under_way: int = 0
    plies_under_way: int = 0
    longest_under_way: int = 0
    unfinished: list[Game] = field(default_factory=list)   # cut off when play stopped
    started: float = field(default_factory=time.perf_counter)

    @property
    def cut_off(self) -> int:
        """Games still being played when play stopped (in `unfinished`)."""
        return len(self.unfinished)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def examples_per_second(self) -> float:
        return self.examples / max(self.seconds, 1e-9)

    @property
    def mean_game_seconds(self) -> float | None:
        """How long a game has taken from start to end (None before the first has ended)."""
        return self.game_seconds / self.games if self.games else None

    @property
    def nn_share(self) -> float:
        """Share of wall time spent in the network's forward pass."""
        return self.nn_seconds / max(self.seconds, 1e-9)


# New games stop this many mean game lengths before a deadline. The mean comes from the games
# finished so far, and the first to finish are the short ones, hence the margin.
WIND_DOWN_GAMES = 1.5


def wind_down_before(end: float | None, who: str) -> Callable[[SelfPlayStats], bool]:
    """A `should_start` for run_selfplay that says no once fewer than WIND_DOWN_GAMES mean game
    lengths are left before `end` (a time.monotonic() value; None: never).

    A game cut off at a deadline has no result and is thrown away; with many games in parallel
    that is minutes of play. Starting no new games shortly before lets those under way finish.
    """
    winding_down = False

    def should_start(stats: SelfPlayStats) -> bool:
        nonlocal winding_down
        mean = stats.mean_game_seconds
        if (not winding_down and end is not None and mean is not None
                and time.monotonic() + WIND_DOWN_GAMES * mean >= end):
            winding_down = True
            log.info("%s winding down: no new games, mean_game_seconds=%.1f seconds_left=%.1f",
                     who, mean, end - time.monotonic())
        return not winding_down
    return should_start


def choose_move(visits: np.ndarray, ply: int, config: SearchConfig,
                rng: np.random.Generator, cheap: bool = False) -> int:
    """Self-play's move at `ply` (0-based) of a game: sampled, or past `sample_plies` the
    most visited (ties broken at random, so equal visits do not favour low indices).

    A `cheap` search's (playout caps) move is always its most visited: like KataGo's cheap
    searches, which have no noise either, it plays for strength, since the move is not a
    training example and its few visits would otherwise add randomness to the game's result."""
    if not cheap and (config.sample_plies is None or ply < config.sample_plies):
        return sample_move(visits, rng)
    return int(rng.choice(np.flatnonzero(visits == visits.max())))


@dataclass
class Game:
    """A game under way: its position, and its examples so far (their results come at the
    end). `plies`: moves played in it, recorded or not (the temperature drop counts them)."""

    board: Board
    game_id: str
    examples: list = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    plies: int = 0


def _full_search(config: SearchConfig, rng: np.random.Generator) -> bool:
    """Whether the next round of moves gets the full search (playout cap randomization's
    coin); with every move full, the random stream is not touched."""
    return config.full_search_fraction >= 1 or rng.random() < config.full_search_fraction


def run_selfplay(model: ModelSource, sink: GameSink, config: SearchConfig | None = None, *,
                 parallel_games: int = 16, max_games: int | None = None,
                 max_seconds: float | None = None,
                 should_stop: Callable[[], bool] = lambda: False,
                 should_start: Callable[[SelfPlayStats], bool] = lambda stats: True,
                 seed: int | None = None, execution_id: str | None = None,
                 on_progress: Callable[[SelfPlayStats], None] = lambda s: None,
                 resume: Sequence[Game] = (), start_games: int | None = None) -> SelfPlayStats:
    """Plays games until `max_games` have finished, `max_seconds` passed or `should_stop()`.

    Finished games go to `sink` as one AddTrainingExamplesRequest each. Games still running when
    play stops have no result to learn from: they are returned in `stats.unfinished`.
    `should_start(stats)` is asked before each new game; a caller with a hard deadline says no
    once a game would not fit, and the games under way finish instead of being cut off.
    `resume`: unfinished games of an earlier run, played on first (they count as started).
    `start_games`: play only this many at once at first, and one more each time a game ends,
    up to `parallel_games`, so that the first games end soon (a game's length is its plies
    times the time of a round, and a round of fewer games is shorter). `on_progress` is called
    after every round of moves. No `config`: the defaults of SearchConfig.
    """
    config = config if config is not None else SearchConfig()
    rng = np.random.default_rng(seed)
    execution_id = execution_id or uuid.uuid4().hex
    mcts = new_forest(config, parallel_games, seed=int(rng.integers(2**63)))
    planes, masks = new_buffers(mcts)
    stats = SelfPlayStats()
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    started = 0
    full = _full_search(config, rng)   # this round's searches are full ones
    waiting = list(resume)

    def stop_now() -> bool:
        return should_stop() or (deadline is not None and time.monotonic() >= deadline)

    def may_start() -> bool:
        return ((max_games is None or started < max_games) and not stop_now()
                and should_start(stats))

    def new_game(t: int) -> Game | None:
        nonlocal started
        if not may_start():
            return None
        started += 1
        if waiting:
            g = waiting.pop(0)
            stats.resumed += 1
        else:
            g = Game(Board.new(int(rng.integers(2**63))), uuid.uuid4().hex)
        mcts.set_root(t, g.board, noise=full)
        return g

    opened = parallel_games if start_games is None else min(
        parallel_games, max(start_games, len(waiting)))
    games: list[Game | None] = [new_game(t) if t < opened else None
                                for t in range(parallel_games)]
    while any(games):
        if stop_now():
            break
        evaluate, key = model()
        for t, g in enumerate(games):
            if g is not None:
                mcts.start(t, config.runs_per_move if full else config.cheap_runs)
        if not search(mcts, evaluate, planes, masks, stats, should_stop=stop_now):
            break   # cut off mid-search: no move from a partial search
        recorded, full = full, _full_search(config, rng)   # full: the next round's
        more = 0
        for t, g in enumerate(games):
            if g is None:
                continue
            visits = mcts.visits(t)
            # The Gumbel root plays its survivor; PUCT samples from (or maximises) the visits.
            move = (mcts.gumbel_move(t) if config.gumbel
                    else choose_move(visits, g.plies, config, rng, cheap=not recorded))
            row, col, typ = policy_move_tuple(move)
            if recorded:
                # Forced playouts and the Gumbel root learn a target other than the raw visits.
                target = mcts.policy_target(t) if config.records_policy_target else visits
                board_planes, mask = g.board.encode()
                g.examples.append(make_example(
                    board_planes, mask, target, turn=g.board.turn, move=(row, col, typ),
                    move_number=g.board.move, model_key=key, root_value=mcts.root_value(t),
                    visit_count=int(visits.sum())))
            g.board.play(row, col, typ)
            g.plies += 1
            mcts.play(t, move, noise=full)
            stats.positions += 1
            if g.board.is_over:
                _finish(g, execution_id, sink)
                stats.games += 1
                stats.examples += len(g.examples)
                stats.game_seconds += time.perf_counter() - g.started
                games[t] = new_game(t)
                more += games[t] is not None
        # The ramp: one more game at once for each that ended (after the loop above, which
        # reads only the trees searched this round).
        for _ in range(min(more, parallel_games - opened)):
            games[opened] = new_game(opened)
            opened += 1
        _count_under_way(games, stats)
        on_progress(stats)
    stats.unfinished = [g for g in games if g is not None]
    _count_under_way(games, stats)
    return stats


def _count_under_way(games: list[Game | None], stats: SelfPlayStats) -> None:
    plies = [g.plies for g in games if g is not None]
    stats.under_way, stats.plies_under_way = len(plies), sum(plies)
    stats.longest_under_way = max(plies, default=0)


def _finish(g: Game, execution_id: str, sink: GameSink) -> None:
    """Fills in each example's result and score and hands the game to the sink (unless it
    has no example: every move was a cheap one)."""
    winner = g.board.winner
    score1, score2 = g.board.score
    for ex in g.examples:
        ex.result = 0.0 if winner == 0 else (1.0 if ex.turn == winner else -1.0)
        ex.score = score1 - score2 if ex.turn == 1 else score2 - score1
    if g.examples:
        sink(pb.AddTrainingExamplesRequest(examples=g.examples, execution_id=execution_id,
                                           game_id=g.game_id))
