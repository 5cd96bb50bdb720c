"""Search within a time budget: positions searched until a deadline or a simulation cap.

Self-play and fixed-run players search a known number of simulations; a CPU player is given
time instead ("think for 1 s"). `TimedSearch` searches several positions at once, each until
its own deadline or simulation cap, in rounds: every round gives each running position the
same small share of work (a few network leaves, or a few milliseconds of rollouts), so
positions that arrive together share one core fairly and a position stops within about one
round of its deadline. In neural mode one round is one network batch over all running
positions, which is cheaper per leaf than a batch per position.

Rounds are kept short (`round_seconds`: 20 ms for network rounds, whose batches need a few
leaves per position to pay off, 5 ms for rollout rounds) by scaling the leaves per position to
the measured cost of a leaf, and a position stops early when the next round would overrun its
deadline, so the wall time tracks the think time instead of exceeding it by a round.

`TimedPlayer` plays a whole game this way (`Player` protocol, for timed matches).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from pyhexz.game.board import Board, policy_move_tuple
from pyhexz.search.driver import Evaluator, TreeConfig, new_buffers, search
from pyhexz.search.mcts import MCTS
from pyhexz.search.treestats import TreeStats, tree_stats

Move = tuple[int, int, int]
# run_rollouts takes a C int.
_MAX_SIMS = 2**31 - 1
# Smoothing of the measured round and leaf costs (weight of the newest measurement).
_EMA = 0.3
# Positions a slot's evaluation cache keeps across searches (about 40 bytes plus 4 per legal
# move each, so at most about 25 MB a slot): more than two searches of 1 s evaluate, so the
# positions the last search evaluated below the next one are still there.
SERVED_EVAL_CACHE = 65_536


def served_tree_config() -> TreeConfig:
    """The tree options of the CPU player's search (cpu/config.py) and of timed match players,
    which play as it serves: an evaluation cache that outlives each search. In a game a search
    finds about 6 in 10 of its positions evaluated already, by another move order or by the
    search of an earlier move, so it runs about twice the simulations of one without
    (BENCHMARKS.md, "CPU player")."""
    return TreeConfig(eval_cache=SERVED_EVAL_CACHE)


@dataclass
class SearchResult:
    """What a search found: the move it plays and the statistics behind it."""

    move: Move
    iterations: int       # simulations run
    visits: np.ndarray    # (220,) visit counts of the root moves, by policy index
    priors: np.ndarray    # (220,) priors of the root moves (uniform for rollout search)
    value: float          # mean value at the root, +1 = the player to move wins
    seconds: float        # from `add` to the end of the search
    tree: TreeStats | None = None   # the tree's shape and root moves, when asked for (`add`)

    def scored_moves(self) -> list[tuple[Move, float, float]]:
        """(move, visit share, prior) of every root move, the most visited first."""
        total = max(int(self.visits.sum()), 1)
        idx = np.flatnonzero((self.visits > 0) | (self.priors > 0))
        idx = idx[np.argsort(-self.visits[idx], kind="stable")]
        return [(policy_move_tuple(int(i)), float(self.visits[i]) / total, float(self.priors[i]))
                for i in idx]


@dataclass
class _Position:
    deadline: float       # time.monotonic()
    cap: int              # simulation cap
    started: float
    forced: bool          # a single legal move: one round for its statistics is enough
    tree_stats: bool      # the result describes the tree (TreeStats)
    iterations: int = 0


class TimedSearch:
    """Up to `slots` positions searched at once, each until its deadline or simulation cap.

    `evaluate` None means rollout MCTS (UCT with random playouts, constant `uct_c`), else
    neural MCTS (PUCT with `c_puct`, no root noise, and the options of `tree`: FPU reduction,
    the evaluation cache, the endgame solver). Not thread-safe: one thread calls
    `add` and `step`. The evaluator may be replaced between rounds (`evaluate`): a new
    network then continues the searches already running.

    A slot's evaluation cache (`tree.eval_cache`) outlives its searches: the positions of a
    game come one by one, and what the search of one move evaluated below the next position
    (the reply it expected, and the positions after) costs no network call in the next
    search. A new evaluator empties the caches.
    """

    def __init__(self, slots: int, evaluate: Evaluator | None = None, *, c_puct: float = 1.5,
                 uct_c: float = 1.0, leaves_per_round: int = 8,
                 round_seconds: float | None = None, max_tree_nodes: int = 4_000_000,
                 seed: int | None = None, tree: TreeConfig | None = None) -> None:
        if round_seconds is None:
            round_seconds = 0.005 if evaluate is None else 0.02
        if slots < 1 or leaves_per_round < 1 or round_seconds <= 0 or max_tree_nodes < 1000:
            raise ValueError("need slots >= 1, leaves_per_round >= 1, round_seconds > 0 and "
                             "max_tree_nodes >= 1000")
        self.rollout = evaluate is None
        self._evaluate = evaluate
        self.leaves_per_round = leaves_per_round
        self.round_seconds = round_seconds
        self.max_tree_nodes = max_tree_nodes
        if self.rollout:
            self.mcts = MCTS(slots, c_puct=uct_c, seed=seed)
        else:
            self.mcts = MCTS(slots, c_puct=c_puct, leaves_per_tree=leaves_per_round, seed=seed,
                             **(tree or TreeConfig()).mcts_options())
        if not self.rollout:
            self.planes, self.masks = new_buffers(self.mcts)
        self._positions: dict[int, _Position] = {}
        self._round_ema: float | None = None
        self._leaf_seconds: float | None = None
        self.rounds = 0

    @property
    def evaluate(self) -> Evaluator | None:
        return self._evaluate

    @evaluate.setter
    def evaluate(self, evaluate: Evaluator) -> None:
        if self.rollout:
            raise ValueError("a rollout search has no evaluator to replace")
        if evaluate is not self._evaluate:
            self.mcts.clear_caches()   # the old network's outputs
        self._evaluate = evaluate

    @property
    def slots(self) -> int:
        return self.mcts.num_trees

    @property
    def running(self) -> int:
        return len(self._positions)

    @property
    def free_slots(self) -> int:
        return self.slots - len(self._positions)

    def add(self, board: Board, deadline: float, max_iterations: int = 0,
            tree_stats: bool = False) -> int:
        """Starts searching `board` until `deadline` (time.monotonic()) or `max_iterations`
        simulations (0: no cap); returns its slot. Every position gets at least one round.
        `tree_stats`: the result carries the tree's statistics (`SearchResult.tree`), computed
        when the search ends, before the slot's tree is reused."""
        if board.is_over:
            raise ValueError("the game is over: there is no move to search for")
        if max_iterations < 0:
            raise ValueError(f"max_iterations must be >= 0, got {max_iterations}")
        slot = next((t for t in range(self.slots) if t not in self._positions), None)
        if slot is None:
            raise RuntimeError(f"all {self.slots} search slots are busy")
        self.mcts.set_root(slot, board, keep_cache=True)
        self._positions[slot] = _Position(
            deadline, min(max_iterations or _MAX_SIMS, _MAX_SIMS), time.monotonic(),
            forced=len(board.legal_moves()) == 1, tree_stats=tree_stats)
        return slot

    def step(self) -> dict[int, SearchResult]:
        """One round for every running position; returns the results of those that finished
        (their slots are free again)."""
        if not self._positions:
            return {}
        t0 = time.monotonic()
        if self.rollout:
            self._rollout_round()
        else:
            self._neural_round()
        now = time.monotonic()
        took = now - t0
        self._round_ema = took if self._round_ema is None else (
            self._round_ema + _EMA * (took - self._round_ema))
        self.rounds += 1
        done = {}
        for slot, p in list(self._positions.items()):
            if (p.forced or p.iterations >= p.cap or now + self._round_ema >= p.deadline
                    or self.mcts.tree_size(slot) >= self.max_tree_nodes):
                done[slot] = self._result(slot, now)
                del self._positions[slot]
        return done

    def cancel_all(self) -> None:
        """Forgets every running position (after a failed round)."""
        self._positions.clear()

    def _neural_round(self) -> None:
        per = self.leaves_per_round
        if self._leaf_seconds:
            fit = self.round_seconds / (self._leaf_seconds * len(self._positions))
            per = max(1, min(per, int(fit)))
        leaves = 0
        for slot, p in self._positions.items():
            k = min(per, p.cap - p.iterations)
            self.mcts.start(slot, k)
            p.iterations += k
            leaves += k
        assert self.evaluate is not None   # neural rounds only run with an evaluator
        t0 = time.monotonic()
        search(self.mcts, self.evaluate, self.planes, self.masks)
        cost = (time.monotonic() - t0) / max(leaves, 1)
        self._leaf_seconds = cost if self._leaf_seconds is None else (
            self._leaf_seconds + _EMA * (cost - self._leaf_seconds))

    def _rollout_round(self) -> None:
        share = self.round_seconds / len(self._positions)
        for slot, p in self._positions.items():
            # max_seconds=0 would mean "no time limit" to run_rollouts.
            seconds = max(1e-4, min(share, p.deadline - time.monotonic()))
            # A rollout search's first simulation only expands the root; like the root's
            # evaluation in neural search, it is not one of the simulations asked for, so
            # that `max_iterations` simulations give that many visits to the root's moves.
            root = self.mcts.root_visits(slot)
            todo = p.cap - p.iterations + (1 if root == 0 else 0)
            self.mcts.run_rollouts(slot, min(todo, _MAX_SIMS), seconds)
            p.iterations = self.mcts.root_visits(slot) - 1

    def _result(self, slot: int, now: float) -> SearchResult:
        p = self._positions[slot]
        return SearchResult(
            move=policy_move_tuple(self.mcts.best_move(slot)), iterations=p.iterations,
            visits=self.mcts.visits(slot), priors=self.mcts.priors(slot),
            value=float(self.mcts.root_value(slot)), seconds=now - p.started,
            tree=tree_stats(self.mcts, slot, rollout=self.rollout)
            if p.tree_stats else None)


def think(searcher: TimedSearch, board: Board, seconds: float,
          max_iterations: int = 0) -> SearchResult:
    """Searches one position for `seconds` (or `max_iterations` simulations) and returns the
    result; the searcher must have a free slot and nothing else running."""
    slot = searcher.add(board, time.monotonic() + seconds, max_iterations)
    while True:
        results = searcher.step()
        if slot in results:
            return results[slot]


class TimedPlayer:
    """A fixed think time per move, as the CPU player service plays: for timed matches."""

    def __init__(self, seconds: float, evaluate: Evaluator | None = None, *,
                 name: str | None = None, **search_options) -> None:
        if seconds <= 0:
            raise ValueError(f"think time must be > 0 s, got {seconds}")
        self.seconds = seconds
        self.name = name or f"{'rollout' if evaluate is None else 'neural'}@{seconds:g}s"
        self.searcher = TimedSearch(1, evaluate, **search_options)
        self.iterations: list[int] = []

    def choose(self, boards: list[Board]) -> list[Move]:
        out = []
        for b in boards:
            r = think(self.searcher, b, self.seconds)
            self.iterations.append(r.iterations)
            out.append(r.move)
        return out


__all__ = ["SearchResult", "TimedSearch", "TimedPlayer", "think", "served_tree_config",
           "SERVED_EVAL_CACHE"]
