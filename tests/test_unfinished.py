"""Tests for pyhexz.train.unfinished: games cut off at a stop, kept on disk and read back."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from pyhexz import hexz_pb2 as pb
from pyhexz.search.driver import SearchConfig
from pyhexz.search.driver import uniform_evaluator as uniform
from pyhexz.train import unfinished
from pyhexz.train.selfplay import Game, run_selfplay


@pytest.fixture(scope="module")
def cut_off() -> list[Game]:
    """Two real games, cut off after a few moves."""
    calls = []

    def counting(planes, masks):
        calls.append(1)
        return uniform(planes, masks)
    stats = run_selfplay(lambda: (counting, pb.ModelKey(name="u", checkpoint=2)), [].append,
                         SearchConfig(runs_per_move=3), parallel_games=2,
                         should_stop=lambda: len(calls) >= 3 * 7, seed=1)
    assert stats.cut_off == 2
    return stats.unfinished


def test_a_game_survives_the_round_trip(cut_off: list[Game]) -> None:
    for g in cut_off:
        back = unfinished.decode(unfinished.encode(g))
        assert back.game_id == g.game_id and back.plies == g.plies > 0
        assert back.board.to_proto() == g.board.to_proto()
        assert back.board.legal_moves() == g.board.legal_moves()
        assert [ex.SerializeToString() for ex in back.examples] == [
            ex.SerializeToString() for ex in g.examples]


def test_save_then_take_hands_each_game_back_once(tmp_path: Path, cut_off: list[Game]) -> None:
    d = tmp_path / "unfinished"
    assert unfinished.take(d) == []
    assert unfinished.save(d, cut_off) == 2
    (d / ".x.unfinished.gz.abc.tmp").write_bytes(b"half")   # a write that never completed
    taken = [unfinished.decode(data) for data in unfinished.take(d)]
    assert sorted(g.game_id for g in taken) == sorted(g.game_id for g in cut_off)
    assert list(d.iterdir()) == [] and unfinished.take(d) == []


@pytest.mark.parametrize("content", [b"", b"not gzip", gzip.compress(b"other data"),
                                     gzip.compress(unfinished.MAGIC + b"\x01\x00")])
def test_a_file_that_is_no_game_is_skipped_with_a_warning(tmp_path: Path, cut_off, caplog,
                                                          content: bytes) -> None:
    unfinished.save(tmp_path, cut_off[:1])
    (tmp_path / f"bad{unfinished.SUFFIX}").write_bytes(content)
    with caplog.at_level("WARNING", "pyhexz"):
        taken = unfinished.take(tmp_path)
    assert [unfinished.decode(d).game_id for d in taken] == [cut_off[0].game_id]
    assert caplog.text.count("unfinished game skipped") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_or_garbled_game_is_refused(cut_off: list[Game]) -> None:
    raw = gzip.decompress(unfinished.encode(cut_off[0]))
    for bad in (raw[:len(raw) // 2], raw[:len(unfinished.MAGIC) + 12] + b"\xff" * 40):
        with pytest.raises(ValueError):
            unfinished.decode(gzip.compress(bad))
