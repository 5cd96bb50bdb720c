"""The progress line of `pyhexz train`: work done, and when the first games and the next
checkpoint should arrive.

A new run plays for minutes before its first game ends and its first checkpoint is written;
without a sign of life the command looks dead. The self-play processes publish, after every
round of moves, how many moves they have played and the games under way (SelfPlayStats), and
the line estimates from the measured moves per second:

- the first games: all games of a process advance one ply a round, so the longest game under
  way ends after (expected plies - its plies) rounds, a round taking (games under way / moves
  per second);
- the next checkpoint: it waits for `trigger - pending` more examples, and every move played
  becomes one (a `full_search_fraction` share of them, with playout caps), the moves of the
  games under way among them; the games must end first, so never before the first games.

The expected game length is the mean of the games ended so far, or before any, the mean of
learn3's 11,339 games (BENCHMARKS.md). The clock is injected, so tests need no waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Plies of a self-play game (learn3: 859,258 examples from 11,339 games).
PLIES_PER_GAME = 76


@dataclass
class Work:
    """What the self-play processes have done, summed over them."""

    moves: int = 0             # moves played, in finished games or not
    under_way: int = 0         # games under way
    plies_under_way: int = 0   # their plies, summed
    longest_under_way: int = 0  # plies of the longest one
    games: int = 0             # games finished (received by the trainer)
    game_moves: int = 0        # their moves


class Progress:
    """Measures moves per second from the first move seen, and makes the progress line."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self._first: tuple[float, int] | None = None   # (when, moves) of the first moves seen

    def observe(self, moves: int) -> None:
        """Notes the first moves seen: the rate is measured from then, so that the start of
        the processes (importing torch, loading the model) does not count as slow play."""
        if self._first is None and moves > 0:
            self._first = (self.clock(), moves)

    def moves_per_second(self, moves: int) -> float | None:
        """Moves per second since moves were first observed (None until measurable)."""
        self.observe(moves)
        if self._first is None:
            return None
        when, first = self._first
        now = self.clock()
        return (moves - first) / (now - when) if now > when and moves > first else None

    def line(self, work: Work, *, checkpoint: int, examples: int, pending: int, trigger: int,
             full_fraction: float = 1.0) -> str:
        """key=value fields of the progress line."""
        rate = self.moves_per_second(work.moves)
        fields = [f"elapsed={self.clock() - self.started:.0f}s", f"moves={work.moves}",
                  f"moves_per_s={rate:.1f}" if rate else "moves_per_s=?",
                  f"games={work.games}", f"under_way={work.under_way}",
                  f"examples={examples}", f"checkpoint={checkpoint}",
                  f"pending={pending}/{trigger}"]
        first, nxt = estimate(work, rate, pending=pending, trigger=trigger,
                              full_fraction=full_fraction)
        if work.games == 0:
            fields.append(f"first_games_in={_eta(first)}")
        fields.append(f"{'first' if checkpoint == 0 else 'next'}_checkpoint_in={_eta(nxt)}")
        return " ".join(fields)


def estimate(work: Work, moves_per_second: float | None, *, pending: int, trigger: int,
             full_fraction: float = 1.0) -> tuple[float | None, float | None]:
    """Seconds until the longest game under way ends, and until enough examples for the next
    checkpoint have arrived (the training itself not counted); None: not measured yet."""
    if not moves_per_second or work.under_way == 0:
        return None, None
    plies = work.game_moves / work.games if work.games else PLIES_PER_GAME
    round_seconds = work.under_way / moves_per_second
    first = max(0.0, plies - work.longest_under_way) * round_seconds
    moves_needed = max(0, trigger - pending) / full_fraction - work.plies_under_way
    return first, max(first, moves_needed / moves_per_second)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"~{seconds:.0f}s" if seconds < 120 else f"~{seconds / 60:.0f}min"
