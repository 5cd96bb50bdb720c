"""Tests for pyhexz.train.arena, pyhexz.search.players and the command line (pyhexz.cli,
pyhexz.hexz)."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import child_env
from pyhexz import cli
from pyhexz.game.board import Board
from pyhexz.game.examples import GAME_FILE_SUFFIX, decode, read_game_file
from pyhexz.infra.storage import MODEL_FILE, CheckpointRepo, LocalStorage
from pyhexz.nn import HexzNet, load_model, save_checkpoint
from pyhexz.search.players import RandomPlayer, make_player, resolve_model_path
from pyhexz.train.arena import (
    MatchResult,
    default_openings_path,
    elo,
    load_openings,
    paired_interval,
    play_match,
    result_json,
    summarize,
    t975,
)
from pyhexz.train.config import TrainConfig
from pyhexz.train.trainer import Trainer

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def restore_process_state(monkeypatch):
    """cli.main configures logging and torch threads for the whole process; undo that, and
    run torch with one thread meanwhile (busy cores make the default pool very slow)."""
    for k in [k for k in os.environ if k.startswith("HEXZ_")]:
        monkeypatch.delenv(k)
    root = logging.getLogger()
    pyhexz_log = logging.getLogger("pyhexz")
    saved = (root.handlers[:], root.level, pyhexz_log.level, torch.get_num_threads())
    torch.set_num_threads(1)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    pyhexz_log.setLevel(saved[2])
    torch.set_num_threads(saved[3])


@pytest.fixture(scope="module")
def openings() -> list[Board]:
    return load_openings()


# --------------------------------------------------------------------------
# Scores and Elo
# --------------------------------------------------------------------------


def test_elo_values() -> None:
    assert elo(0.5) == 0
    assert elo(1.0) == math.inf and elo(0.0) == -math.inf
    assert elo(0.75) == pytest.approx(400 * math.log10(3))
    assert elo(0.25) == pytest.approx(-elo(0.75))
    xs = [elo(s) for s in (0.1, 0.3, 0.5, 0.7, 0.9)]
    assert xs == sorted(xs)


def test_summarize_all_wins() -> None:
    r = summarize("a", "b", [1.0] * 8, 1.5)
    assert (r.games, r.wins, r.draws, r.losses) == (8, 8, 0, 0)
    assert r.score == 1.0 and r.elo == math.inf
    assert r.score_low == r.score_high == 1.0
    d = json.loads(result_json(r))
    assert d["elo"] is None and d["score"] == 1.0  # JSON has no inf
    assert "inf" in r.summary()


def test_summarize_all_losses() -> None:
    r = summarize("a", "b", [0.0] * 4, 0)
    assert r.score == 0 and r.elo == -math.inf and r.losses == 4


def test_summarize_even() -> None:
    r = summarize("a", "b", [1.0, 0.0, 0.5, 0.5, 1.0, 0.0], 2)
    assert (r.wins, r.draws, r.losses) == (2, 2, 2)
    assert r.score == 0.5 and r.elo == 0
    assert r.score_low < 0.5 < r.score_high
    assert r.elo_low < 0 < r.elo_high
    assert r.elo_low == pytest.approx(-r.elo_high)


@pytest.mark.parametrize("outcomes", [[1.0, 0.0], [1.0, 1.0, 0.0], [1.0] * 9 + [0.0],
                                      [0.5] * 5, [0.0, 0.5, 0.5, 1.0, 1.0, 1.0, 0.0]])
def test_summarize_confidence_interval(outcomes) -> None:
    r = summarize("a", "b", outcomes, 0)
    assert r.score == pytest.approx(sum(outcomes) / len(outcomes))
    assert 0.0 <= r.score_low <= r.score <= r.score_high <= 1.0
    assert r.elo_low <= r.elo <= r.elo_high
    n = len(outcomes)
    sd = np.std(outcomes, ddof=1)
    assert r.score_high == pytest.approx(min(1.0, r.score + 1.96 * sd / math.sqrt(n)))


# Paired by opening: play_match's outcomes hold each opening's two games side by side,
# player1 first from seat 1, then from seat 2.


def test_seat_advantage_cancels_in_the_paired_interval() -> None:
    # Player 1 wins every opening from seat 1 and loses it from seat 2: dead even, and the
    # pairing sees no spread at all, whereas game by game it looks like coin flips.
    r = summarize("a", "b", [1.0, 0.0] * 8, 0, games_per_opening=2)
    assert (r.games, r.openings, r.wins, r.losses, r.score) == (16, 8, 8, 8, 0.5)
    assert r.score_paired_low == r.score_paired_high == 0.5
    assert r.elo_paired_low == r.elo_paired_high == 0
    assert r.score_low == pytest.approx(0.5 - 1.96 * math.sqrt(0.25 * 16 / 15 / 16))
    assert r.score_low < 0.3 and r.score_high > 0.7
    assert "[0.500, 0.500] paired over 8 openings" in r.summary()
    assert "Elo +0 [+0, +0] paired" in r.summary()


def test_paired_interval_by_hand() -> None:
    # Six openings, means 1, 1, 0.5, 0.5, 0.5, 0.5: mean 2/3, sample variance
    # (2 * (1/3)^2 + 4 * (1/6)^2) / 5 = 1/15, standard error sqrt(1/15 / 6) = 0.105409,
    # t(5) = 2.571: [0.6667 - 0.2710, 0.6667 + 0.2710].
    outcomes = [1, 1, 1, 1, 1, 0, 0, 1, 0.5, 0.5, 1, 0]
    r = summarize("a", "b", outcomes, 0, games_per_opening=2)
    half = 2.571 * math.sqrt(1 / 15 / 6)
    assert r.score == pytest.approx(2 / 3) and r.openings == 6
    assert (r.score_paired_low, r.score_paired_high) == pytest.approx((2 / 3 - half, 2 / 3 + half))
    assert (r.wins, r.draws, r.losses) == (7, 2, 3)
    # Unpaired: the 12 games one by one, normal interval.
    sd = np.std(outcomes, ddof=1)
    assert r.score_low == pytest.approx(2 / 3 - 1.96 * sd / math.sqrt(12))


def test_paired_interval_of_unpaired_games_is_the_t_interval() -> None:
    # One game per opening: the paired interval is the per-game one with t instead of 1.96.
    outcomes = [1.0, 0.0, 0.5, 1.0, 1.0]
    lo, hi = paired_interval(outcomes, 1)
    half = t975(4) * np.std(outcomes, ddof=1) / math.sqrt(5)
    assert (lo, hi) == pytest.approx((0.7 - half, min(1.0, 0.7 + half)))
    r = summarize("a", "b", outcomes, 0)
    assert r.openings == 5 and (r.score_paired_low, r.score_paired_high) == (lo, hi)
    assert r.score_paired_high - r.score_paired_low > r.score_high - r.score_low


def test_paired_interval_needs_two_openings() -> None:
    assert paired_interval([1.0, 0.0], 2) == (0.0, 1.0)
    assert paired_interval([1.0, 1.0], 2) == (0.0, 1.0)
    r = summarize("a", "b", [1.0, 1.0], 0, games_per_opening=2)
    assert r.score_low == r.score_high == 1.0 and r.openings == 1
    assert (r.score_paired_low, r.score_paired_high) == (0.0, 1.0)


def test_t975() -> None:
    assert t975(1) == 12.706 and t975(10) == 2.228 and t975(30) == 2.042
    assert t975(31) == pytest.approx(2.0395, abs=1e-4)     # expansion, just past the table
    assert t975(60) == pytest.approx(2.0003, abs=1e-4)
    assert t975(127) == pytest.approx(1.9788, abs=1e-4)    # 128 openings
    assert t975(10**6) == pytest.approx(1.96, abs=1e-4)
    assert all(t975(d) > t975(d + 1) for d in range(1, 200))
    with pytest.raises(ValueError, match="degrees of freedom must be >= 1, got 0"):
        t975(0)


@pytest.mark.parametrize("outcomes, per_opening, message", [
    ([], 2, "need a positive multiple of 2 games, got 0"),
    ([1.0, 0.0, 1.0], 2, "need a positive multiple of 2 games, got 3"),
    ([1.0], 0, "games_per_opening must be >= 1, got 0"),
])
def test_summarize_refuses_unpairable_outcomes(outcomes, per_opening, message) -> None:
    with pytest.raises(ValueError, match=message):
        summarize("a", "b", outcomes, 0, games_per_opening=per_opening)


def test_result_json_has_both_intervals() -> None:
    r = summarize("a", "b", [1.0, 0.0, 1.0, 1.0, 0.5, 1.0], 2.0, games_per_opening=2)
    d = json.loads(result_json(r))
    assert d["outcomes"] == [1.0, 0.0, 1.0, 1.0, 0.5, 1.0] and d["openings"] == 3
    assert (d["score_paired_low"], d["score_paired_high"]) == (r.score_paired_low,
                                                               r.score_paired_high)
    assert d["elo_paired_low"] == pytest.approx(elo(r.score_paired_low))
    assert d["elo_paired_high"] is None      # score_paired_high is 1: infinite Elo
    for k in ("score_low", "score_high", "elo", "elo_low", "elo_high", "seconds"):
        assert k in d
    assert MatchResult(**{k: v for k, v in d.items() if not k.startswith("elo_paired")}) \
        .score == r.score


# --------------------------------------------------------------------------
# Matches
# --------------------------------------------------------------------------


class Recording(RandomPlayer):
    """A random player that remembers the positions it was asked to move in."""

    def __init__(self, name: str, seed: int) -> None:
        super().__init__(seed)
        self.name = name
        self.first_moves: list[bytes] = []
        self.calls = 0

    def choose(self, boards):
        self.calls += 1
        for b in boards:
            assert not b.is_over
            if b.move == 0:
                self.first_moves.append(b._state_bytes())
        return super().choose(boards)


def test_play_match_both_seats(openings) -> None:
    ops = openings[:4]
    snapshot = [o._state_bytes() for o in ops]
    a, b = Recording("a", 1), Recording("b", 2)
    r = play_match(a, b, ops)
    assert r.games == 8 and r.wins + r.draws + r.losses == 8
    assert (r.player1, r.player2) == ("a", "b")
    # Each opening's first move was made once by each player.
    assert sorted(a.first_moves) == sorted(snapshot) == sorted(b.first_moves)
    # The openings themselves are not played on.
    assert [o._state_bytes() for o in ops] == snapshot
    # Batched: far fewer calls than moves.
    assert a.calls < 8 * 40


class ByPosition:
    """A deterministic player: its move is a function of the position alone, so the two games
    of an opening, one from each seat, are the same game."""

    def __init__(self, name: str = "by-position") -> None:
        self.name = name

    def choose(self, boards):
        out = []
        for b in boards:
            moves = b.legal_moves()
            out.append(moves[zlib.crc32(b._state_bytes()) % len(moves)])
        return out


class Seats:
    """Wraps a player and records the seats (1 or 2) it was asked to move from."""

    def __init__(self, player) -> None:
        self.player, self.name, self.seats = player, player.name, set()

    def choose(self, boards):
        self.seats.update(b.turn for b in boards)
        return self.player.choose(boards)


def assert_paired_result(r, n_openings: int) -> None:
    """What every match result holds: two games per opening, counts and score from them."""
    assert (r.games, r.openings, len(r.outcomes)) == (2 * n_openings, n_openings, 2 * n_openings)
    assert set(r.outcomes) <= {0.0, 0.5, 1.0}
    assert (r.wins, r.draws, r.losses) == (r.outcomes.count(1.0), r.outcomes.count(0.5),
                                           r.outcomes.count(0.0))
    assert r.score == pytest.approx(sum(r.outcomes) / r.games)
    assert r.score_paired_low <= r.score <= r.score_paired_high


def test_play_match_same_player_object_is_even(openings) -> None:
    # The same object in both seats, moving by position only: every opening's two games are
    # identical, so player1 wins one exactly when it loses the other (or draws both). The match
    # is even with no spread at all: score 0.5 and a paired interval of [0.5, 0.5].
    p = ByPosition()
    r = play_match(p, p, openings[:3])
    assert_paired_result(r, 3)
    pairs = list(zip(r.outcomes[0::2], r.outcomes[1::2], strict=True))
    assert all(a + b == 1.0 for a, b in pairs), pairs
    assert r.wins == r.losses and r.score == 0.5 and r.elo == 0
    assert r.score_paired_low == r.score_paired_high == 0.5
    assert (r.player1, r.player2) == ("by-position", "by-position")


def test_play_match_same_random_player_object_moves_in_every_game(openings) -> None:
    # A random player as both sides: one choose() call covers every game where it is to move,
    # whichever seat it holds, and every game runs to its end.
    p = Seats(RandomPlayer(3))
    r = play_match(p, p, openings[:3])
    assert_paired_result(r, 3)
    assert p.seats == {1, 2}


def test_play_match_outcomes_follow_the_seats(openings) -> None:
    # Two copies of one deterministic player play the same game from each seat, so the seat
    # decides: from seat 1 player1 gets the result seat 1 got; from seat 2, the other one.
    a, b = ByPosition("a"), ByPosition("b")
    r = play_match(a, b, openings[:4])
    assert_paired_result(r, 4)
    for k, o in enumerate(openings[:4]):
        game = o.copy()
        while not game.is_over:
            game.play(*a.choose([game])[0])
        seat1 = 0.5 if game.winner == 0 else (1.0 if game.winner == 1 else 0.0)
        assert r.outcomes[2 * k: 2 * k + 2] == [seat1, 1.0 - seat1]


def test_rollout_200_beats_random(openings) -> None:
    r = play_match(make_player("rollout:200", seed=1), make_player("random", seed=2), openings[:4])
    assert r.games == 8
    assert r.wins >= 7, r.summary()
    assert r.score_low > 0.5


def test_rollout_with_few_runs_is_not_lowest_index(openings) -> None:
    from pyhexz.game.board import policy_index
    p = make_player("rollout:50", seed=1)
    moves = p.choose([o.copy() for o in openings[:8]])
    lowest = [min(o.legal_moves(), key=lambda m: policy_index(*m)) for o in openings[:8]]
    assert moves != lowest


# --------------------------------------------------------------------------
# Openings files
# --------------------------------------------------------------------------


def test_load_openings_default(openings, fixtures_dir: Path) -> None:
    assert len(openings) == 128
    fixture = fixtures_dir / "flagz_initial_v1.jsonl"
    assert default_openings_path().read_bytes() == fixture.read_bytes()
    assert all(o.move == 0 and o.turn == 1 and not o.is_over for o in openings)


GOOD_LINE = default_openings_path().read_text().splitlines()[0]


@pytest.mark.parametrize("line, match", [
    ("hello", "not an opening"),
    ('{"id": 1}', "not an opening"),
    ('{"id": 1, "state": "abc"}', "not an opening"),
    ('{"id": 1, "state": {"flagz": {"bogus": 1}}}', "not an opening"),
    ('[1, 2]', "not an opening"),
    ('{"id": 1, "state": {}}', ""),
    ('{"id": 1, "state": {"flagz": {}}}', ""),
])
def test_load_openings_bad_line(tmp_path: Path, line: str, match: str) -> None:
    path = tmp_path / "openings.jsonl"
    path.write_text(GOOD_LINE + "\n\n" + line + "\n")
    with pytest.raises(ValueError, match=rf"openings\.jsonl:3: .*{match}"):
        load_openings(path)


def test_load_openings_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"No such file or directory: .*nope\.jsonl"):
        load_openings(tmp_path / "nope.jsonl")


def test_load_openings_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    path.write_text("\n" + GOOD_LINE + "\n   \n" + GOOD_LINE + "\n")
    assert len(load_openings(path)) == 2


# --------------------------------------------------------------------------
# Command line, in process
# --------------------------------------------------------------------------


def test_cli_arena_json(capsys) -> None:
    rc = cli.main(["arena", "random", "random", "--games", "2", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    d = json.loads(out)
    assert d["games"] == 4 and d["player1"] == "random" and d["player2"] == "random"
    assert d["wins"] + d["draws"] + d["losses"] == 4
    assert 0 <= d["score_low"] <= d["score"] <= d["score_high"] <= 1


def test_cli_arena_text(capsys) -> None:
    assert cli.main(["arena", "rollout:20", "random", "--games", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("rollout:20 vs random: 2 games")


def test_cli_arena_empty_openings(tmp_path: Path, capsys) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    rc = cli.main(["arena", "random", "random", "--openings", str(path)])
    assert rc == 2 and "empty.jsonl" in capsys.readouterr().err


def test_cli_arena_bad_openings_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("garbage\n")
    assert cli.main(["arena", "random", "random", "--openings", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pyhexz arena: error:" in err and "bad.jsonl:1" in err


def test_cli_arena_missing_model(tmp_path: Path, capsys) -> None:
    assert cli.main(["arena", str(tmp_path / "nothing"), "random", "--games", "1"]) == 2
    assert "nothing" in capsys.readouterr().err


def test_env_sets_default_and_flag_wins(monkeypatch) -> None:
    monkeypatch.setenv("HEXZ_RUNS_PER_MOVE", "17")
    p = cli.build_parser()
    assert p.parse_args(["selfplay", "--output-dir", "x"]).runs_per_move == 17
    assert p.parse_args(["train"]).runs_per_move == 17
    args = p.parse_args(["selfplay", "--output-dir", "x", "--runs-per-move", "5"])
    assert args.runs_per_move == 5
    monkeypatch.delenv("HEXZ_RUNS_PER_MOVE")
    p = cli.build_parser()
    assert p.parse_args(["selfplay", "--output-dir", "x"]).runs_per_move == 800
    assert p.parse_args(["train"]).runs_per_move == 100


def test_env_other_kinds(monkeypatch) -> None:
    monkeypatch.setenv("HEXZ_JSON", "true")
    monkeypatch.setenv("HEXZ_C_PUCT", "2.5")
    monkeypatch.setenv("HEXZ_DIR", "/tmp/somewhere")
    monkeypatch.setenv("HEXZ_MODEL_NAME", "m1")
    p = cli.build_parser()
    a = p.parse_args(["arena", "random", "random"])
    assert a.json is True
    t = p.parse_args(["train"])
    assert t.c_puct == 2.5 and t.dir == Path("/tmp/somewhere") and t.model_name == "m1"
    monkeypatch.setenv("HEXZ_JSON", "0")
    assert cli.build_parser().parse_args(["arena", "random", "random"]).json is False


def test_env_named_in_help(capsys) -> None:
    with pytest.raises(SystemExit, match="^0$"):
        cli.build_parser().parse_args(["selfplay", "--help"])
    assert "[HEXZ_RUNS_PER_MOVE]" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["abc", "0", "-3", "1.5", ""])
def test_env_bad_value(monkeypatch, capsys, value: str) -> None:
    monkeypatch.setenv("HEXZ_RUNS_PER_MOVE", value)
    parser = cli.build_parser()   # said when a command that reads it runs, not before
    with pytest.raises(SystemExit, match="^2$") as e:
        parser.parse_args(["selfplay", "--output-dir", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"selfplay: error: HEXZ_RUNS_PER_MOVE={value!r} is not a valid value for " \
           "--runs-per-move" in err


@pytest.mark.parametrize("argv", [["selfplay", "--output-dir", "x", "--runs-per-move", "0"],
                                  ["train", "--minutes", "-1"], ["arena", "random"],
                                  ["train", "--parallel-games", "x"]])
def test_bad_flags_exit(argv, capsys) -> None:
    with pytest.raises(SystemExit, match="^2$") as e:
        cli.build_parser().parse_args(argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


# --------------------------------------------------------------------------
# Export and model players
# --------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, HexzNet]:
    torch.manual_seed(0)
    net = HexzNet(2, 16).eval()
    path = tmp_path / "ckpt" / "model.pt"
    path.parent.mkdir()
    save_checkpoint(path, net, model_name="unit", checkpoint=0)
    return path, net


def _random_inputs(n: int = 3):
    rng = np.random.default_rng(0)
    boards = torch.from_numpy(rng.integers(0, 6, (n, 11, 11, 10)).astype(np.float32))
    masks = torch.from_numpy(rng.random((n, 2, 11, 10)) < 0.3)
    masks[:, 0, 0, 0] = True
    return boards, masks


def test_cli_export(checkpoint, tmp_path: Path, capsys) -> None:
    path, net = checkpoint
    out = tmp_path / "export" / "model.pt"
    out.parent.mkdir()
    assert cli.main(["export", str(path), str(out)]) == 0
    assert "exported" in capsys.readouterr().out
    m = load_model(out)
    assert isinstance(m, torch.jit.ScriptModule)
    b, mk = _random_inputs()
    with torch.no_grad():
        for x, y in zip(m(b, mk), net(b, mk), strict=True):
            torch.testing.assert_close(x, y)
    assert cli.main(["export", str(tmp_path / "missing.pt"), str(tmp_path / "x.pt")]) == 2


def test_cli_export_from_model_directory(tmp_path: Path) -> None:
    repo = CheckpointRepo(LocalStorage(tmp_path / "d"), "unit")
    t = Trainer(repo, TrainConfig(blocks=2, filters=16))
    out = tmp_path / "out.pt"
    assert cli.main(["export", str(tmp_path / "d/models/flagz/unit"), str(out)]) == 0
    b, mk = _random_inputs()
    with torch.no_grad():
        torch.testing.assert_close(load_model(out)(b, mk)[0], t.net.eval()(b, mk)[0])


def test_cli_arena_with_checkpoint_player(checkpoint, tmp_path: Path, capsys) -> None:
    path, _ = checkpoint
    spec = f"{path}:4"
    assert cli.main(["arena", spec, "random", "--games", "1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["player1"] == spec and d["games"] == 2


def test_timed_players_think_for_their_time(checkpoint, capsys) -> None:
    """`PLAYER@SECONDS`: the search of the CPU player service, stopped by a think time per move
    rather than a simulation count (matches at equal think time); an '@' that is not followed
    by a time is part of a path; a think time of 0 is refused in one line."""
    from pyhexz.search.timed import TimedPlayer

    path, _ = checkpoint
    for spec, seconds, neural in (("rollout@0.02s", 0.02, False), ("rollout@0.5", 0.5, False),
                                  (f"{path}@0.01s", 0.01, True)):
        p = make_player(spec)
        assert isinstance(p, TimedPlayer) and p.name == spec and p.seconds == seconds
        assert p.searcher.rollout is not neural
    assert cli.main(["arena", f"{path}@0.01s", "rollout@0.01s", "--games", "1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["player1"], d["player2"], d["games"]) == (f"{path}@0.01s", "rollout@0.01s", 2)
    assert cli.main(["arena", "rollout@0s", "random"]) == 2
    assert "pyhexz arena: error: player 'rollout@0s': the think time must be > 0 seconds" \
        in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no@where"):
        make_player("no@where")


def test_timed_neural_players_search_with_the_arenas_options(checkpoint) -> None:
    """`MODEL@SECONDS` takes the search options (FPU reduction, cache, solver) as `MODEL:RUNS`
    does; they were once dropped, so a match at equal think time searched without them."""
    from pyhexz.search.driver import TreeConfig

    path, _ = checkpoint
    tree = TreeConfig(fpu_reduction=0.2, fpu_reduction_root=0.1, eval_cache=512,
                      solver_moves=9)
    from pyhexz.search.players import KEPT_SEARCHES
    for spec, cache in ((f"{path}@0.01s", 512), (f"{path}:3", KEPT_SEARCHES * 4)):
        p = make_player(spec, tree=tree)
        mcts = p.searcher.mcts if hasattr(p, "searcher") else p.mcts
        # (a budget player's cache, kept across moves, holds a few searches: of runs + 1 each)
        assert (mcts.fpu_reduction, mcts.fpu_reduction_root, mcts.eval_cache,
                mcts.solver_moves) == pytest.approx((0.2, 0.1, cache, 9)), spec
    assert make_player("rollout@0.01s", tree=tree).searcher.mcts.solver_moves == 0


def test_arena_with_torchscript_and_directory_players(checkpoint, tmp_path: Path,
                                                      openings) -> None:
    path, _ = checkpoint
    ts = tmp_path / "ts.pt"
    assert cli.main(["export", str(path), str(ts)]) == 0
    repo = CheckpointRepo(LocalStorage(tmp_path / "d"), "unit")
    Trainer(repo, TrainConfig(blocks=2, filters=16))
    a = Seats(make_player(f"{ts}:3", max_games=2))
    b = Seats(make_player(f"{tmp_path / 'd/models/flagz/unit'}:3", max_games=2))
    r = play_match(a, b, openings[:1])
    assert_paired_result(r, 1)
    assert (r.player1, r.player2) == (f"{ts}:3", f"{tmp_path / 'd/models/flagz/unit'}:3")
    assert a.seats == b.seats == {1, 2}, "each player moved from both seats"


def test_arena_with_hexz_fixture_model(fixtures_dir: Path, openings) -> None:
    model = fixtures_dir / "hexz_conv2d_scriptmodule.pt"
    if not model.exists():
        pytest.skip("hexz fixture model missing")
    a, b = Seats(make_player(f"{model}:2", max_games=2)), Seats(make_player("random", seed=0))
    r = play_match(a, b, openings[:1])
    assert_paired_result(r, 1)
    assert (r.player1, r.player2) == (f"{model}:2", "random")
    assert a.seats == b.seats == {1, 2}, "each player moved from both seats"


def test_resolve_model_path(tmp_path: Path, checkpoint) -> None:
    path, _ = checkpoint
    assert resolve_model_path(path) == path
    repo = CheckpointRepo(LocalStorage(tmp_path / "d"), "unit")
    Trainer(repo, TrainConfig(blocks=2, filters=16))
    model_dir = tmp_path / "d/models/flagz/unit"
    want = model_dir / "checkpoints/0" / MODEL_FILE
    assert resolve_model_path(model_dir) == want
    assert resolve_model_path(model_dir / "checkpoints") == want
    assert resolve_model_path(model_dir / "checkpoints/0") == want   # one checkpoint's folder
    with pytest.raises(FileNotFoundError,
                       match="empty-nothing: no model file and no checkpoints/N/model.pt below it"):
        resolve_model_path(tmp_path / "empty-nothing")


def test_resolve_model_path_ignores_unpublished_checkpoint(tmp_path: Path) -> None:
    repo = CheckpointRepo(LocalStorage(tmp_path / "d"), "unit")
    Trainer(repo, TrainConfig(blocks=2, filters=16))
    model_dir = tmp_path / "d/models/flagz/unit"
    half = model_dir / "checkpoints/1" / MODEL_FILE
    half.parent.mkdir(parents=True)
    half.write_bytes((model_dir / "checkpoints/0" / MODEL_FILE).read_bytes())
    assert repo.checkpoints() == [0]
    assert resolve_model_path(model_dir) == model_dir / "checkpoints/0" / MODEL_FILE


# --------------------------------------------------------------------------
# The 2023 command form, as a real process
# --------------------------------------------------------------------------


def test_hexz_mode_selfplay_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "games"
    env = child_env()
    r = subprocess.run(
        [sys.executable, "-m", "pyhexz.hexz", "--mode=selfplay", "--num-workers=1",
         "--max-games=1", "--runs-per-move=4", "--parallel-games=1", f"--output-dir={out}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    files = list(out.iterdir())
    assert len(files) == 1 and files[0].name.endswith(GAME_FILE_SUFFIX), files
    req = read_game_file(files[0])
    a = decode(list(req.examples))
    assert len(a) > 10
    assert files[0].name == f"{req.execution_id}-{req.game_id}{GAME_FILE_SUFFIX}"
    assert {ex.model_key.name for ex in req.examples} == {"random-init"}
    assert set(a.results.tolist()) <= {-1.0, 0.0, 1.0}
    assert [ex.move.move for ex in req.examples] == list(range(len(a)))
    assert "selfplay: 1 games" in r.stdout


def test_hexz_mode_missing(capsys) -> None:
    from pyhexz import hexz
    assert hexz.main([]) == 2
    assert "usage" in capsys.readouterr().err
