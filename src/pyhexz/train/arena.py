"""Matches between players over fixed openings, with the score's confidence and Elo.

Flagz favours the first player strongly, so players are only compared over the same openings
played from both seats: every opening of the hexz fixture file is played once with each player
moving first.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator, Optional

from google.protobuf import json_format

from pyhexz import hexz_pb2 as pb
from pyhexz.game.board import Board
from pyhexz.search.players import Player

log = logging.getLogger(__name__)


def default_openings_path() -> Path:
    return Path(str(resources.files("pyhexz") / "data" / "flagz_initial_v1.jsonl"))


def load_openings(path: Optional[Path] = None) -> list[Board]:
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
    player1: str
    player2: str
    games: int
    wins: int       # games player1 won
    draws: int
    losses: int
    score: float    # player1's mean score (win 1, draw 0.5)
    score_low: float
    score_high: float
    elo: float      # player1's Elo advantage
    elo_low: float
    elo_high: float
    seconds: float

    def summary(self) -> str:
        return (f"{self.player1} vs {self.player2}: {self.games} games, +{self.wins} ={self.draws} "
                f"-{self.losses}, score {self.score:.3f} [{self.score_low:.3f}, "
                f"{self.score_high:.3f}], Elo {_fmt_elo(self.elo)} "
                f"[{_fmt_elo(self.elo_low)}, {_fmt_elo(self.elo_high)}] (95%), {self.seconds:.0f} s")


def _fmt_elo(x: float) -> str:
    return "inf" if x == math.inf else "-inf" if x == -math.inf else f"{x:+.0f}"


def elo(score: float) -> float:
    if score <= 0:
        return -math.inf
    if score >= 1:
        return math.inf
    return -400 * math.log10(1 / score - 1)


def summarize(p1: str, p2: str, outcomes: list[float], seconds: float) -> MatchResult:
    """outcomes: player1's score per game (1, 0.5, 0)."""
    n = len(outcomes)
    mean = sum(outcomes) / n
    var = sum((x - mean) ** 2 for x in outcomes) / max(1, n - 1)
    half = 1.96 * math.sqrt(var / n)
    lo, hi = max(0.0, mean - half), min(1.0, mean + half)
    return MatchResult(p1, p2, n, outcomes.count(1.0), outcomes.count(0.5), outcomes.count(0.0),
                       mean, lo, hi, elo(mean), elo(lo), elo(hi), seconds)


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
                for b, m in zip(mine, who.choose(mine)):
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
    return summarize(p1.name, p2.name, outcomes, time.perf_counter() - t0)


def result_json(r: MatchResult) -> str:
    d = asdict(r)
    for k in ("elo", "elo_low", "elo_high"):
        if math.isinf(d[k]):
            d[k] = None
    return json.dumps(d)


def random_positions(openings: Iterable[Board], plies: Iterable[int],
                     rng: random.Random) -> Iterator[Board]:
    """Each opening after its number of uniformly random plies (openings zipped with `plies`,
    drawn lazily), keeping the positions whose game is still running: test and benchmark
    positions beyond the openings."""
    for opening, n in zip(openings, plies):
        b = opening.copy()
        for _ in range(n):
            if b.is_over:
                break
            b.play(*rng.choice(b.legal_moves()))
        if not b.is_over:
            yield b
