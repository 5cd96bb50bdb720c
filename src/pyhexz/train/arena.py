"""Matches between players over fixed openings, with the score's confidence and Elo.

Flagz favours the first player strongly, so players are only compared over the same openings
played from both seats: every opening of the hexz fixture file is played once with each player
moving first. The score's interval is therefore paired by opening (the mean of an opening's two
games is one observation), beside the unpaired per-game interval kept for comparison.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from google.protobuf import json_format

from pyhexz import hexz_pb2 as pb
from pyhexz.game.board import Board
from pyhexz.search.players import Player

log = logging.getLogger(__name__)


def default_openings_path() -> Path:
    return Path(str(resources.files("pyhexz") / "data" / "flagz_initial_v1.jsonl"))


def load_openings(path: Path | None = None) -> list[Board]:
    """Initial positions from a JSONL file of {"id", "state": GameEngineState as JSON}."""
    path = Path(path or default_openings_path())
    boards = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                state = json_format.ParseDict(json.loads(line)["state"], pb.GameEngineState())
                boards.append(Board.from_proto(state))
            except (ValueError, KeyError, TypeError, AttributeError, json_format.ParseError) as e:
                raise ValueError(f"{path}:{lineno}: not an opening ({e})") from None
    if not boards:
        raise ValueError(f"{path}: no openings in the file")
    return boards


@dataclass
class MatchResult:
    """A match's outcome and the score's 95% intervals.

    Two intervals: `score_low`/`score_high` (and the Elo fields) treat every game as
    independent; `score_paired_low`/`score_paired_high` treat each opening's games (one from
    each seat) as one observation, their mean score. Flagz favours the first player, so the
    two games of an opening are strongly linked and the paired interval is the one to quote:
    a seat advantage that cancels over an opening's two games widens only the unpaired one.
    """
    player1: str
    player2: str
    games: int
    wins: int       # games player1 won
    draws: int
    losses: int
    score: float    # player1's mean score (win 1, draw 0.5)
    score_low: float    # unpaired: normal interval over the games
    score_high: float
    elo: float      # player1's Elo advantage
    elo_low: float      # Elo of score_low / score_high
    elo_high: float
    seconds: float
    openings: int = 0   # the games are `games // openings` consecutive games per opening
    score_paired_low: float = 0.0   # paired by opening: t interval over the openings' means
    score_paired_high: float = 1.0
    # player1's score per game, opening by opening: from seat 1, then from seat 2.
    outcomes: list[float] = field(default_factory=list)

    @property
    def elo_paired_low(self) -> float:
        return elo(self.score_paired_low)

    @property
    def elo_paired_high(self) -> float:
        return elo(self.score_paired_high)

    def summary(self) -> str:
        return (f"{self.player1} vs {self.player2}: {self.games} games, +{self.wins} ={self.draws} "
                f"-{self.losses}, score {self.score:.3f} [{self.score_paired_low:.3f}, "
                f"{self.score_paired_high:.3f}] paired over {self.openings} openings "
                f"([{self.score_low:.3f}, {self.score_high:.3f}] unpaired), Elo "
                f"{_fmt_elo(self.elo)} [{_fmt_elo(self.elo_paired_low)}, "
                f"{_fmt_elo(self.elo_paired_high)}] paired (95%), {self.seconds:.0f} s")


def _fmt_elo(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return "+0" if round(x) == 0 else f"{x:+.0f}"   # elo(0.5) is -0.0


def elo(score: float) -> float:
    if score <= 0:
        return -math.inf
    if score >= 1:
        return math.inf
    return -400 * math.log10(1 / score - 1)


# Student's t, two-sided 95% (the 0.975 quantile), for 1..30 degrees of freedom.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_Z975 = 1.959964


def t975(df: int) -> float:
    """Student's t 0.975 quantile: the table up to 30 degrees of freedom, then the
    Cornish-Fisher expansion around the normal (Abramowitz and Stegun 26.7.5), exact to 1e-4
    there. Few openings make few paired observations, where the normal 1.96 is too narrow."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def _mean_var(xs: list[float]) -> tuple[float, float]:
    """Mean and sample variance (0 for a single value)."""
    n = len(xs)
    mean = sum(xs) / n
    return mean, sum((x - mean) ** 2 for x in xs) / max(1, n - 1)


def _clip(lo: float, hi: float) -> tuple[float, float]:
    return max(0.0, lo), min(1.0, hi)


def paired_interval(outcomes: list[float], games_per_opening: int) -> tuple[float, float]:
    """The score's 95% interval with the games paired by opening.

    `outcomes` holds `games_per_opening` consecutive games per opening; each opening's mean
    score is one observation and the interval is Student's t over them. Fewer than two
    openings say nothing about the spread: the whole range [0, 1].
    """
    means = [sum(outcomes[i:i + games_per_opening]) / games_per_opening
             for i in range(0, len(outcomes), games_per_opening)]
    if len(means) < 2:
        return 0.0, 1.0
    mean, var = _mean_var(means)
    half = t975(len(means) - 1) * math.sqrt(var / len(means))
    return _clip(mean - half, mean + half)


def summarize(p1: str, p2: str, outcomes: list[float], seconds: float,
              games_per_opening: int = 1) -> MatchResult:
    """outcomes: player1's score per game (1, 0.5, 0), `games_per_opening` consecutive games
    per opening (play_match: 2, one from each seat; 1: every game its own opening)."""
    n = len(outcomes)
    if games_per_opening < 1:
        raise ValueError(f"games_per_opening must be >= 1, got {games_per_opening}")
    if n == 0 or n % games_per_opening:
        raise ValueError(f"need a positive multiple of {games_per_opening} games, got {n}")
    outcomes = [float(x) for x in outcomes]
    mean, var = _mean_var(outcomes)
    half = 1.96 * math.sqrt(var / n)
    lo, hi = _clip(mean - half, mean + half)
    paired_lo, paired_hi = paired_interval(outcomes, games_per_opening)
    return MatchResult(p1, p2, n, outcomes.count(1.0), outcomes.count(0.5), outcomes.count(0.0),
                       mean, lo, hi, elo(mean), elo(lo), elo(hi), seconds,
                       n // games_per_opening, paired_lo, paired_hi, outcomes)


def play_match(p1: Player, p2: Player, openings: list[Board],
               progress: bool = False) -> MatchResult:
    """Plays every opening twice, once with each player moving first, all games at once."""
    t0 = time.perf_counter()
    # (board, which player object plays as player 1 of the board)
    games = [(o.copy(), swap) for o in openings for swap in (False, True)]
    players = {False: (p1, p2), True: (p2, p1)}
    last_report = t0
    while True:
        if all(b.is_over for b, _ in games):
            break
        for who in (p1, p2):
            mine = [b for b, swap in games if not b.is_over and players[swap][b.turn - 1] is who]
            if mine:
                for b, m in zip(mine, who.choose(mine), strict=True):
                    b.play(*m)
        if progress and time.perf_counter() - last_report > 10:
            last_report = time.perf_counter()
            log.info("arena games_running=%d of %d", sum(not b.is_over for b, _ in games),
                     len(games))
    outcomes = []
    for b, swap in games:
        w = b.winner
        seat = 2 if swap else 1   # p1's seat in this game
        outcomes.append(0.5 if w == 0 else (1.0 if w == seat else 0.0))
    return summarize(p1.name, p2.name, outcomes, time.perf_counter() - t0, games_per_opening=2)


def result_json(r: MatchResult) -> str:
    """The result as one JSON object: every field, plus the paired interval's Elo; an infinite
    Elo (all games won or lost) is null, as JSON has no infinity."""
    d = asdict(r)
    d["elo_paired_low"], d["elo_paired_high"] = r.elo_paired_low, r.elo_paired_high
    for k in ("elo", "elo_low", "elo_high", "elo_paired_low", "elo_paired_high"):
        if math.isinf(d[k]):
            d[k] = None
    return json.dumps(d)


def random_positions(openings: Iterable[Board], plies: Iterable[int],
                     rng: random.Random) -> Iterator[Board]:
    """Each opening after its number of uniformly random plies (openings zipped with `plies`,
    drawn lazily), keeping the positions whose game is still running: test and benchmark
    positions beyond the openings."""
    # Not strict: the shorter of the two ends it (callers pass endless plies, or fewer plies
    # than openings).
    for opening, n in zip(openings, plies, strict=False):
        b = opening.copy()
        for _ in range(n):
            if b.is_over:
                break
            b.play(*rng.choice(b.legal_moves()))
        if not b.is_over:
            yield b
