"""Tests for pyhexz.train.progress: the progress line's rates and estimates, on a fake clock."""

from __future__ import annotations

import pytest

from pyhexz.train.progress import PLIES_PER_GAME, Progress, Work, estimate


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_is_measured_from_the_first_moves_not_from_the_start() -> None:
    clock = Clock()
    p = Progress(clock)
    clock.now += 40           # starting the processes: no moves yet
    assert p.moves_per_second(0) is None
    p.observe(16)
    clock.now += 10
    assert p.moves_per_second(16 + 80) == pytest.approx(8.0)


def test_before_any_game_ended_both_estimates_use_the_expected_length() -> None:
    # 2 processes x 8 games, 10 plies each so far, 16 moves/s: a round is 1 s.
    work = Work(moves=160, under_way=16, plies_under_way=160, longest_under_way=10)
    first, nxt = estimate(work, 16.0, pending=0, trigger=4096)
    assert first == pytest.approx(PLIES_PER_GAME - 10)
    assert nxt == pytest.approx((4096 - 160) / 16)


def test_after_games_ended_their_mean_length_counts_and_playout_caps_need_more_moves() -> None:
    work = Work(moves=1000, under_way=10, plies_under_way=100, longest_under_way=30, games=9,
                game_moves=900)   # 100 plies a game
    first, nxt = estimate(work, 20.0, pending=1000, trigger=2000, full_fraction=0.5)
    assert first == pytest.approx((100 - 30) * 10 / 20)
    assert nxt == pytest.approx((1000 / 0.5 - 100) / 20)
    # Enough examples already under way: the checkpoint waits for the games to end.
    assert estimate(work, 20.0, pending=1990, trigger=2000)[1] == first


def test_nothing_is_estimated_before_a_rate_is_measured() -> None:
    assert estimate(Work(under_way=8), None, pending=0, trigger=10) == (None, None)
    assert estimate(Work(), 5.0, pending=0, trigger=10) == (None, None)


def test_the_line_says_moves_and_when_the_first_games_and_checkpoint_come() -> None:
    clock = Clock()
    p = Progress(clock)
    work = Work(moves=8, under_way=8, plies_under_way=8, longest_under_way=1)
    assert p.line(work, checkpoint=0, examples=0, pending=0, trigger=4096).endswith(
        "moves_per_s=? games=0 under_way=8 examples=0 checkpoint=0 pending=0/4096 "
        "first_games_in=? first_checkpoint_in=?")
    clock.now += 15
    work = Work(moves=8 + 120, under_way=8, plies_under_way=128, longest_under_way=16)
    line = p.line(work, checkpoint=0, examples=0, pending=0, trigger=4096)
    assert line.startswith("elapsed=15s moves=128 moves_per_s=8.0 games=0 ")
    # (76 - 16) rounds of 1 s; (4096 - 128) moves at 8/s = 496 s.
    assert "first_games_in=~60s first_checkpoint_in=~8min" in line
    later = Work(moves=2000, under_way=8, plies_under_way=200, longest_under_way=40,
                 games=30, game_moves=1800)
    clock.now += 200
    line = p.line(later, checkpoint=1, examples=1800, pending=1800, trigger=4096)
    assert "first_games_in" not in line and "next_checkpoint_in=~" in line
