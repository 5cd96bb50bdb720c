"""Tests for pyhexz.train.selfplay: games to examples, with a tiny real network."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from conftest import model_device
from pyhexz import hexz_pb2 as pb
from pyhexz.game.board import Board, policy_index, policy_move_tuple
from pyhexz.game.examples import decode
from pyhexz.nn import HexzNet, Predictor
from pyhexz.search import driver
from pyhexz.search.driver import SearchConfig, sample_move
from pyhexz.search.driver import uniform_evaluator as uniform
from pyhexz.search.mcts import MCTS
from pyhexz.train import selfplay
from pyhexz.train.selfplay import run_selfplay

RUNS = 8


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.manual_seed(0)
    return Predictor(HexzNet(2, 16), model_device())   # HEXZ_TEST_DEVICE, default cpu


class _RecordingBoard:
    """Stands in for selfplay.Board to remember every initial position created."""

    created: list

    @staticmethod
    def new(seed=None) -> Board:
        b = Board.new(seed)
        _RecordingBoard.created.append(b.copy())
        return b


@pytest.fixture(scope="module")
def played(predictor: Predictor):
    """Two games with the tiny network: (requests, initial boards, model calls)."""
    mp = pytest.MonkeyPatch()
    _RecordingBoard.created = []
    mp.setattr(selfplay, "Board", _RecordingBoard)
    calls = []

    def source():
        calls.append(1)
        return predictor, pb.ModelKey(name="tiny", checkpoint=3)

    games: list[pb.AddTrainingExamplesRequest] = []
    try:
        stats = run_selfplay(source, games.append, SearchConfig(runs_per_move=RUNS),
                             parallel_games=2, max_games=2, seed=11, execution_id="exec-1")
    finally:
        mp.undo()
    return games, list(_RecordingBoard.created), len(calls), stats


def test_two_games_finish(played) -> None:
    games, initial, ncalls, stats = played
    assert len(games) == 2 and len(initial) == 2
    assert stats.games == 2
    assert stats.examples == sum(len(g.examples) for g in games)
    assert {g.execution_id for g in games} == {"exec-1"}
    assert len({g.game_id for g in games}) == 2 and all(g.game_id for g in games)
    # The model source is asked once per move of the longest game (both start together).
    assert ncalls == max(len(g.examples) for g in games)


def test_every_example_decodes_with_legal_probs(played) -> None:
    games = played[0]
    for g in games:
        a = decode(list(g.examples))
        sums = a.probs.reshape(len(a), -1).sum(1)
        np.testing.assert_allclose(sums, 1.0, atol=1e-5)
        assert not (a.probs[~a.masks] > 0).any()
        for ex, probs in zip(g.examples, a.probs, strict=True):
            # probs are visit counts / total: integral multiples of 1/visit_count.
            counts = probs.reshape(-1) * ex.visit_count
            np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
            # The move played was searched.
            assert probs.reshape(-1)[policy_index(ex.move.row, ex.move.col, ex.move.cell_type)] > 0


def test_visit_count_at_least_runs_per_move_minus_one(played) -> None:
    for g in played[0]:
        for ex in g.examples:
            assert ex.visit_count >= RUNS - 1


def test_visit_count_equals_runs_per_move(played) -> None:
    counts = [ex.visit_count for g in played[0] for ex in g.examples]
    assert counts == [RUNS] * len(counts)


def test_replay_matches_examples_and_results(played) -> None:
    """Replays each game from its initial position: boards, turns, moves and results agree."""
    games, initial, _, _ = played
    init_planes = [b.encode()[0] for b in initial]
    for g in games:
        a = decode(list(g.examples))
        i = next(i for i, p in enumerate(init_planes) if np.array_equal(p, a.boards[0]))
        board = initial[i].copy()
        for k, ex in enumerate(g.examples):
            planes, mask = board.encode()
            np.testing.assert_array_equal(a.boards[k], planes)
            np.testing.assert_array_equal(a.masks[k], mask)
            assert ex.turn == board.turn == ex.move.player_num
            assert ex.move.move == board.move == k  # move numbers increase from 0
            assert ex.model_key == pb.ModelKey(name="tiny", checkpoint=3)
            move = (ex.move.row, ex.move.col, ex.move.cell_type)
            assert move in board.legal_moves()
            board.play(*move)
        assert board.is_over
        winner = board.winner
        s1, s2 = board.score
        assert winner == (0 if s1 == s2 else 1 if s1 > s2 else 2)
        for ex in g.examples:
            want = 0.0 if winner == 0 else (1.0 if ex.turn == winner else -1.0)
            assert ex.result == want
            # The score head's target: the final difference, from the mover's view.
            assert ex.HasField("score") and ex.score == (s1 - s2 if ex.turn == 1 else s2 - s1)


def test_results_consistent_with_turn(played) -> None:
    for g in played[0]:
        by_turn = {}
        for ex in g.examples:
            assert ex.result in (-1.0, 0.0, 1.0)
            by_turn.setdefault(ex.turn, set()).add(ex.result)
        assert all(len(v) == 1 for v in by_turn.values())
        r1, r2 = by_turn[1].pop(), by_turn[2].pop()
        assert r1 == -r2


def test_hot_swap_model_key_per_move() -> None:
    """The source is asked before every move; each example carries that move's key."""
    keys = []
    used = {0: [], 1: []}  # evaluator -> number of keys handed out when it was called

    def evaluator(which: int):
        def evaluate(planes, masks):
            used[which].append(len(keys))
            return uniform(planes, masks)
        return evaluate

    old, new = evaluator(0), evaluator(1)

    def source():
        k = pb.ModelKey(name="m", checkpoint=0 if len(keys) < 10 else 1 + len(keys) // 20)
        keys.append(k)
        return (old if k.checkpoint == 0 else new), k

    games = []
    run_selfplay(source, games.append, SearchConfig(runs_per_move=4), parallel_games=2,
                 max_games=2, seed=3)
    assert len(games) == 2
    for g in games:
        for ex in g.examples:
            assert ex.model_key == keys[ex.move.move]
        assert g.examples[0].model_key.checkpoint == 0
        assert g.examples[-1].model_key.checkpoint >= 2  # games last ~72 plies
    assert len(keys) == max(len(g.examples) for g in games)
    # After the swap only the new evaluator runs.
    assert used[0] and max(used[0]) <= 10
    assert used[1] and min(used[1]) > 10


def test_max_games_with_more_parallel_slots() -> None:
    games = []
    stats = run_selfplay(lambda: (uniform, pb.ModelKey(name="u")), games.append,
                         SearchConfig(runs_per_move=2), parallel_games=3, max_games=1, seed=5)
    assert len(games) == 1 and stats.games == 1


class _Clock:
    """time.monotonic for the module under test, advanced by the evaluator: the budget is then
    counted in network calls, whatever the machine's speed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str):   # perf_counter and the rest stay real
        return getattr(time, name)


def test_max_seconds_is_kept_within_one_network_batch(monkeypatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(selfplay, "time", clock)

    def ticking(planes, masks):
        clock.now += 1 / 64   # each network call "takes" 1/64 s (exact in binary)
        return uniform(planes, masks)

    games = []
    stats = run_selfplay(lambda: (ticking, pb.ModelKey(name="u")), games.append,
                         SearchConfig(runs_per_move=16), parallel_games=2, max_seconds=0.5, seed=1)
    # One call expands the two roots, then 16 calls a move. The deadline is checked between
    # the network batches of a search, so play stops right after the 32nd call (0.5 s), in the
    # middle of the second move's search, not at the end of it; that move is not played.
    assert stats.nn_calls == 32 and stats.positions == 2
    # Both games are cut off, none half-sent; they come back with their example so far.
    assert games == [] and stats.games == 0 and stats.cut_off == 2
    assert [len(g.examples) for g in stats.unfinished] == [1, 1]
    assert all(g.plies == 1 and g.board.move == 1 for g in stats.unfinished)


def test_should_stop_stops_within_a_search() -> None:
    calls = []

    def counting(planes, masks):
        calls.append(len(planes))
        return uniform(planes, masks)

    games = []
    stats = run_selfplay(lambda: (counting, pb.ModelKey(name="u")), games.append,
                         SearchConfig(runs_per_move=50), parallel_games=2,
                         should_stop=lambda: len(calls) >= 10, seed=2)
    # A round of moves is 50 network calls; the stop is heard after the 10th, not the 50th.
    assert len(calls) == 10 and stats.positions == 0
    assert games == [] and stats.games == 0 and stats.cut_off == 2


def test_should_stop_before_start_plays_nothing() -> None:
    games = []
    called = []
    stats = run_selfplay(lambda: called.append(1) or (uniform, pb.ModelKey()), games.append,
                         SearchConfig(runs_per_move=2), parallel_games=2, should_stop=lambda: True)
    assert games == [] and called == [] and stats.games == 0


def test_search_config_rejects_zero_runs() -> None:
    with pytest.raises(ValueError, match="runs_per_move"):
        SearchConfig(runs_per_move=0)


def test_sample_move_follows_visits() -> None:
    rng = np.random.default_rng(0)
    visits = np.zeros(220, np.int32)
    visits[[3, 117, 200]] = [10, 30, 60]
    draws = np.array([sample_move(visits, rng) for _ in range(4000)])
    assert set(draws) <= {3, 117, 200}
    freq = {m: np.mean(draws == m) for m in (3, 117, 200)}
    assert freq[3] == pytest.approx(0.1, abs=0.03)
    assert freq[117] == pytest.approx(0.3, abs=0.03)
    assert freq[200] == pytest.approx(0.6, abs=0.03)
    only = np.zeros(220, np.int32)
    only[42] = 1
    assert all(sample_move(only, rng) == 42 for _ in range(20))


def test_policy_move_tuple_inverts_policy_index() -> None:
    for idx in (0, 9, 10, 109, 110, 115, 219):
        r, c, t = policy_move_tuple(idx)
        assert t in (0, 5)
        assert policy_index(r, c, t) == idx


def test_past_sample_plies_the_most_visited_move_is_played(predictor: Predictor) -> None:
    games: list[pb.AddTrainingExamplesRequest] = []
    run_selfplay(lambda: (predictor, pb.ModelKey(name="tiny")), games.append,
                 SearchConfig(runs_per_move=RUNS, sample_plies=4), parallel_games=2,
                 max_games=2, seed=3)
    assert len(games) == 2
    for g in games:
        probs = decode(list(g.examples)).probs.reshape(len(g.examples), -1)
        for ply, ex in enumerate(g.examples):
            played = probs[ply, policy_index(ex.move.row, ex.move.col, ex.move.cell_type)]
            if ply >= 4:
                assert played == probs[ply].max(), f"ply {ply}"


def test_search_config_rejects_negative_sample_plies() -> None:
    with pytest.raises(ValueError, match="sample_plies"):
        SearchConfig(sample_plies=-1)


def test_should_start_stops_new_games_and_lets_those_under_way_finish() -> None:
    games: list[pb.AddTrainingExamplesRequest] = []
    asked = []

    def should_start(stats: selfplay.SelfPlayStats) -> bool:
        asked.append(stats.games)
        return stats.games == 0
    stats = run_selfplay(lambda: (uniform, pb.ModelKey()), games.append,
                         SearchConfig(runs_per_move=2), parallel_games=3, should_start=should_start,
                         seed=0)
    # Three games start together; once one has ended, no slot is refilled.
    assert len(games) == stats.games == 3 and asked[:3] == [0, 0, 0] and asked[3:] == [1, 2, 3]
    assert stats.mean_game_seconds is not None and stats.mean_game_seconds > 0


def test_wind_down_says_no_once_the_games_would_not_fit(caplog):
    """No new game once fewer than WIND_DOWN_GAMES mean game lengths are left before the end,
    and from then on never again (the mean may drop as short games finish, the end does not
    move); no end, or no finished game to measure, never winds down."""
    now = time.monotonic()
    stats = selfplay.SelfPlayStats(games=2, game_seconds=20.0)   # 10 s a game
    assert selfplay.wind_down_before(None, "x")(stats)
    assert selfplay.wind_down_before(now + 1, "x")(selfplay.SelfPlayStats())
    assert selfplay.wind_down_before(now + 60, "x")(stats)
    late = selfplay.wind_down_before(now + 14, "x")      # 1.5 x 10 s > 14 s left
    with caplog.at_level("INFO", "pyhexz"):
        assert not late(stats)
        stats.games, stats.game_seconds = 4, 4.0           # now 1 s a game: still no
        assert not late(stats)
    assert caplog.text.count("x winding down: no new games, mean_game_seconds=10.0") == 1


# ---------------------------------------------------------------------------
# Playout cap randomization


class _SpyMCTS(MCTS):
    """The real forest, remembering the simulations asked of each search, whether its root
    had noise, and which round of moves (searches between two network batches) it was in."""

    def __init__(self, *args, **kwargs) -> None:
        self.noise: dict[int, bool] = {}
        self.searches: list[tuple[int, bool]] = []   # (simulations, noise) per start
        self.rounds: list[set[int]] = []             # the simulations asked in each round
        self.moves: list[tuple[bool, bool]] = []     # (noise, most visited?) per move played
        self.searching = False

    def collect(self, planes, masks):
        self.searching = True
        return super().collect(planes, masks)

    def set_root(self, t, board, noise=True):
        self.noise[t] = noise
        super().set_root(t, board, noise)

    def play(self, t, move, keep_stats=False, noise=True):
        visits = self.visits(t)
        self.moves.append((self.noise[t], bool(visits[move] == visits.max())))
        self.noise[t] = noise
        super().play(t, move, keep_stats, noise)

    def start(self, t, simulations):
        if self.searching or not self.rounds:
            self.rounds.append(set())
            self.searching = False
        self.rounds[-1].add(simulations)
        self.searches.append((simulations, self.noise[t]))
        super().start(t, simulations)


def _capped_selfplay(monkeypatch, config: SearchConfig, max_games: int = 2):
    spy: list[_SpyMCTS] = []

    def make(*args, **kwargs) -> _SpyMCTS:
        spy.append(_SpyMCTS(*args, **kwargs))
        return spy[-1]
    monkeypatch.setattr(driver, "MCTS", make)   # new_forest builds the forest
    games: list[pb.AddTrainingExamplesRequest] = []
    stats = run_selfplay(lambda: (uniform, pb.ModelKey(name="u")), games.append, config,
                         parallel_games=2, max_games=max_games, seed=4)
    return games, stats, spy[0]


def test_playout_caps_record_only_the_full_searches(monkeypatch) -> None:
    """A quarter of the rounds of moves get the full budget, with root noise, and become
    examples; the others get the cheap budget, without noise, play their most visited move
    (even while full searches sample theirs), and are not recorded. All searches of a round
    have the same budget, so that a cheap round is not held up by one full search."""
    config = SearchConfig(runs_per_move=8, cheap_runs_per_move=2, full_search_fraction=0.25,
                          dirichlet_alpha=0.3)
    assert config.sample_plies is None   # full searches sample all game long
    games, stats, spy = _capped_selfplay(monkeypatch, config)
    searches, moves = spy.searches, spy.moves
    assert all(len(budgets) == 1 for budgets in spy.rounds)
    assert {budget for budgets in spy.rounds for budget in budgets} == {8, 2}
    assert len(games) == stats.games == 2
    assert set(searches) == {(8, True), (2, False)}
    full = sum(sims == 8 for sims, _ in searches)
    examples = [ex for g in games for ex in g.examples]
    assert len(examples) == stats.examples == full
    assert stats.positions == len(searches)   # every move searched, recorded or not
    assert 0.1 < full / len(searches) < 0.45
    # The network was called once per simulation of the round's budget, not of the largest
    # budget of any game: the cheap rounds saved their calls. (+1: the roots' first evaluation;
    # a round may take fewer calls where a tree reaches the end of its game.)
    assert stats.nn_calls <= 1 + sum(max(b) for b in spy.rounds) < 8 * len(spy.rounds)
    assert all(ex.visit_count == 8 for ex in examples)
    assert all(most_visited for noise, most_visited in moves if not noise)
    assert not all(most_visited for noise, most_visited in moves if noise)
    for g in games:
        moves = [ex.move.move for ex in g.examples]
        assert moves == sorted(moves) and len(set(moves)) == len(moves)
        # Results and scores still come from the game's end, whichever moves were recorded.
        a = decode(list(g.examples))
        assert (np.sign(a.scores) == a.results).all()


def test_without_playout_caps_every_move_is_full_and_recorded(monkeypatch) -> None:
    games, stats, spy = _capped_selfplay(monkeypatch, SearchConfig(runs_per_move=4))
    searches = spy.searches
    assert set(searches) == {(4, True)}
    assert stats.examples == len(searches) == sum(len(g.examples) for g in games)


def test_a_game_without_a_full_search_is_not_sent(monkeypatch) -> None:
    """A game all of whose moves were cheap has no example; it counts, but the sink never sees
    an empty request (a game file or upload must hold examples)."""
    config = SearchConfig(runs_per_move=4, cheap_runs_per_move=1, full_search_fraction=1e-9)
    games, stats, spy = _capped_selfplay(monkeypatch, config)
    assert games == [] and stats.games == 2 and stats.examples == 0
    assert {sims for sims, _ in spy.searches} == {1}


def test_playout_cap_settings_are_checked() -> None:
    assert SearchConfig(runs_per_move=100).cheap_runs == 25
    assert SearchConfig(runs_per_move=2).cheap_runs == 1
    assert SearchConfig(runs_per_move=100, cheap_runs_per_move=10).cheap_runs == 10
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"full_search_fraction must be in \(0, 1\]"):
            SearchConfig(full_search_fraction=bad)
    with pytest.raises(ValueError, match=r"cheap_runs_per_move \(200\) must not exceed "
                                         r"runs_per_move \(100\)"):
        SearchConfig(runs_per_move=100, cheap_runs_per_move=200)
    with pytest.raises(ValueError, match="cheap_runs_per_move must be >= 1"):
        SearchConfig(cheap_runs_per_move=0)


# ---------------------------------------------------------------------------
# Starting few games at once, and playing on unfinished ones


def test_start_games_opens_one_more_slot_each_time_a_game_ends() -> None:
    rounds: list[tuple[int, int]] = []   # (games finished, games under way) after each round
    games: list[pb.AddTrainingExamplesRequest] = []
    stats = run_selfplay(lambda: (uniform, pb.ModelKey()), games.append,
                         SearchConfig(runs_per_move=2), parallel_games=4, start_games=1,
                         max_games=8, seed=4,
                         on_progress=lambda s: rounds.append((s.games, s.under_way)))
    assert stats.games == len(games) == 8
    assert rounds[0] == (0, 1)
    # Never more at once than the games started: one, plus one per game ended, at most four.
    assert all(under_way <= min(4, 1 + finished) for finished, under_way in rounds)
    assert max(under_way for _, under_way in rounds) == 4


def test_cut_off_games_are_played_on_from_where_they_stopped() -> None:
    calls = []

    def counting(planes, masks):
        calls.append(1)
        return uniform(planes, masks)
    first = run_selfplay(lambda: (counting, pb.ModelKey(name="u")), [].append,
                         SearchConfig(runs_per_move=4), parallel_games=2,
                         should_stop=lambda: len(calls) >= 4 * 5, seed=6)
    cut = first.unfinished
    assert len(cut) == 2 and all(len(g.examples) == g.plies > 0 for g in cut)
    before = {g.game_id: [ex.SerializeToString() for ex in g.examples] for g in cut}

    games: list[pb.AddTrainingExamplesRequest] = []
    stats = run_selfplay(lambda: (uniform, pb.ModelKey(name="u")), games.append,
                         SearchConfig(runs_per_move=4), parallel_games=2, max_games=2,
                         resume=cut, seed=7)
    assert stats.resumed == 2 and stats.games == 2
    assert {g.game_id for g in games} == set(before)
    for g in games:
        earlier = before[g.game_id]
        assert len(g.examples) > len(earlier)
        # The earlier moves come first, then the game goes on from the position they left.
        for old, ex in zip(earlier, g.examples, strict=False):
            assert pb.TrainingExample.FromString(old).move == ex.move
        assert [ex.move.move for ex in g.examples] == list(range(len(g.examples)))
        assert {ex.result for ex in g.examples} <= {-1.0, 0.0, 1.0}


# ---------------------------------------------------------------------------
# The `selfplay` command's time budget


@pytest.mark.slow
def test_selfplay_command_keeps_its_budget_in_the_middle_of_a_search(tmp_path) -> None:
    """`--max-seconds=N` (the 2023 form, two processes of two games): a move of ten million
    simulations cannot end within any budget, so a process only reports (exit 0, well before
    the guard timeout) if its search heeds the budget between network batches; then both its
    games are cut off. A process still starting at the budget's end is ended instead, and
    said so. How many started in time depends on the machine's speed; that the count of
    games cut off is told, and right, does not."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from conftest import child_env
    out = tmp_path / "games"
    r = subprocess.run(
        [sys.executable, "-m", "pyhexz.hexz", "--mode=selfplay", "--num-workers=2",
         "--max-seconds=10", "--runs-per-move=10000000", "--parallel-games=2",
         f"--output-dir={out}"],
        cwd=Path(__file__).resolve().parents[1], env=child_env(), capture_output=True,
        text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = re.search(r"selfplay: 0 games, 0 examples in \d+ s .*, (\d+) games cut off "
                        r"unfinished", r.stdout)
    assert summary, r.stdout + r.stderr[-3000:]
    # Each process that reported says how many it cut off: all of its games, or none when
    # the budget ran out before it started playing.
    reported = [int(n) for n in re.findall(r"selfplay done games=0 examples=0 cut_off=(\d+)",
                                           r.stderr)]
    assert set(reported) <= {0, 2} and sum(reported) == int(summary[1]), r.stderr[-3000:]
    ended = re.search(r"(\d) of 2 processes ended without a report", r.stderr)
    assert len(reported) + (int(ended[1]) if ended else 0) == 2, r.stderr[-3000:]
    assert list(out.iterdir()) == []
