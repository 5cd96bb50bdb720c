"""Tests for pyhexz.game.examples: TrainingExample encoding, validation and game files."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest

from pyhexz import hexz_pb2 as pb
from pyhexz.game.board import Board
from pyhexz.game.examples import (
    BOARD_SHAPE,
    GAME_FILE_SUFFIX,
    MASK_SHAPE,
    MAX_SCORE,
    Arrays,
    InvalidExampleError,
    decode,
    encode_array,
    make_example,
    read_game_file,
    write_game_file,
)

KEY = pb.ModelKey(name="unit", checkpoint=7)


def position(seed: int = 1, plies: int = 6) -> Board:
    b = Board.new(seed)
    for i in range(plies):
        b.random_move(seed * 100 + i)
    return b


def visits_for(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """(220,) int32 visit counts on some legal moves only."""
    rng = np.random.default_rng(seed)
    legal = np.flatnonzero(mask.reshape(-1))
    v = np.zeros(220, np.int32)
    chosen = rng.choice(legal, size=min(5, len(legal)), replace=False)
    v[chosen] = rng.integers(1, 10, size=len(chosen))
    return v


def example(seed: int = 1, result: float = 1.0) -> tuple[pb.TrainingExample, tuple]:
    b = position(seed)
    planes, mask = b.encode()
    visits = visits_for(mask, seed)
    legal = b.legal_moves()
    ex = make_example(planes, mask, visits, turn=b.turn, move=legal[0], move_number=b.move,
                      model_key=KEY, root_value=0.25)
    ex.result = result
    return ex, (planes, mask, visits, b, legal[0])


def test_make_example_decode_round_trip() -> None:
    ex, (planes, mask, visits, b, move) = example(3, result=-1.0)
    # Through the wire and back, as examples travel between processes.
    ex2 = pb.TrainingExample.FromString(ex.SerializeToString())
    a = decode([ex2])
    assert isinstance(a, Arrays) and len(a) == 1
    assert a.boards.shape == (1,) + BOARD_SHAPE and a.boards.dtype == np.float32
    assert a.masks.shape == (1,) + MASK_SHAPE and a.masks.dtype == np.bool_
    assert a.probs.shape == (1,) + MASK_SHAPE and a.probs.dtype == np.float32
    np.testing.assert_array_equal(a.boards[0], planes)
    np.testing.assert_array_equal(a.masks[0], mask)
    np.testing.assert_allclose(a.probs[0].reshape(-1), visits / visits.sum(), rtol=1e-6)
    assert a.results[0] == -1.0
    assert ex2.visit_count == visits.sum()
    assert ex2.turn == b.turn
    assert (ex2.move.row, ex2.move.col, ex2.move.cell_type) == move
    assert ex2.move.player_num == b.turn and ex2.move.move == b.move
    assert ex2.model_key == KEY
    assert ex2.root_value == pytest.approx(0.25)
    assert ex2.encoding == pb.TrainingExample.NUMPY
    assert ex2.unix_micros > 0


def test_decode_many_and_concat() -> None:
    exs = [example(s, result=r)[0] for s, r in ((1, 1.0), (2, 0.0), (3, -1.0))]
    a = decode(exs)
    assert len(a) == 3
    np.testing.assert_array_equal(a.results, [1.0, 0.0, -1.0])
    both = Arrays.concat([decode(exs[:1]), decode(exs[1:])])
    for f in ("boards", "masks", "probs", "results", "scores"):
        np.testing.assert_array_equal(getattr(both, f), getattr(a, f))
    empty = Arrays.concat([])
    assert len(empty) == 0 and empty.boards.shape == (0,) + BOARD_SHAPE
    assert len(decode([])) == 0


def _with(ex: pb.TrainingExample, **fields) -> pb.TrainingExample:
    out = pb.TrainingExample()
    out.CopyFrom(ex)
    for k, v in fields.items():
        setattr(out, k, v)
    return out


def _bad_cases():
    ex, (planes, mask, visits, _, _) = example(5)
    probs = (visits / visits.sum()).astype(np.float32).reshape(MASK_SHAPE)
    illegal = np.flatnonzero(~mask.reshape(-1))[0]
    on_illegal = probs.reshape(-1).copy()
    on_illegal[np.flatnonzero(on_illegal)[0]] = 0
    on_illegal[illegal] = 1 - on_illegal.sum()
    nan_board = planes.copy()
    nan_board[3, 4, 5] = np.nan
    inf_probs = probs.copy()
    inf_probs.reshape(-1)[np.flatnonzero(probs.reshape(-1))[0]] = np.inf
    neg_probs = probs.reshape(-1).copy()
    nz = np.flatnonzero(neg_probs)
    neg_probs[nz[0]] += 0.5
    neg_probs[nz[1]] -= 0.5  # still sums to 1, one entry negative
    # Planes and masks that are no Flagz position (each with a policy on its legal moves, so
    # only the position check can catch it).
    grass_on_flag = planes.copy()
    r, c = np.argwhere(planes[0] == 1)[0]
    grass_on_flag[10, r, c] = 3
    next_value_off = planes.copy()
    r, c = np.argwhere(mask[1])[0]
    next_value_off[3, r, c] = 4 if planes[3, r, c] != 4 else 2
    extra_flags = planes.copy()
    extra_flags[4] = 3   # 3 flags left besides those on the board
    loose_mask = mask.copy()
    r, c = np.argwhere(~mask[1] & (planes[3] == 0))[0]
    loose_mask[1, r, c] = True   # a normal move where the planes give no next value
    return ex, [
        ("board shape", dict(board=encode_array(planes[:10])),
         r"board.*expected float32 \(11, 11, 10\)"),
        ("board dtype", dict(board=encode_array(planes.astype(np.float64))), r"board.*float64"),
        ("board channels-last",
         dict(board=encode_array(np.ascontiguousarray(planes.transpose(1, 2, 0)))),
         r"board.*\(11, 10, 11\)"),
        ("mask dtype", dict(action_mask=encode_array(mask.astype(np.uint8))),
         r"action_mask.*uint8"),
        ("mask shape", dict(action_mask=encode_array(mask.reshape(-1))), r"action_mask.*\(220,\)"),
        ("probs shape", dict(move_probs=encode_array(probs.reshape(-1))), r"move_probs.*\(220,\)"),
        ("probs dtype", dict(move_probs=encode_array(probs.astype(np.float64))),
         r"move_probs.*float64"),
        ("board garbage", dict(board=b"\x93NUMPY garbage"), r"board: not an np.save array"),
        ("mask empty bytes", dict(action_mask=b""), r"action_mask: not an np.save array"),
        ("probs garbage", dict(move_probs=bytes(range(256))), r"move_probs: not an np.save array"),
        ("pickled object array", dict(board=_pickled_object_array()),
         r"board: not an np.save array"),
        ("board nan", dict(board=encode_array(nan_board)), r"non-finite"),
        ("probs inf", dict(move_probs=encode_array(inf_probs)), r"non-finite"),
        ("probs sum", dict(move_probs=encode_array(probs * 0.5)), r"sum to 1 \(sum 0\.5"),
        ("probs all zero", dict(move_probs=encode_array(np.zeros(MASK_SHAPE, np.float32))),
         r"sum to 1"),
        ("probs negative", dict(move_probs=encode_array(neg_probs.reshape(MASK_SHAPE))),
         r"non-negative"),
        ("weight on illegal", dict(move_probs=encode_array(on_illegal.reshape(MASK_SHAPE))),
         r"illegal moves"),
        ("empty mask", dict(action_mask=encode_array(np.zeros(MASK_SHAPE, bool))),
         r"no legal move"),
        ("result > 1", dict(result=1.5), r"result 1\.5 is not -1, 0 or 1"),
        ("result < -1", dict(result=-2.0), r"result -2\.0 is not -1, 0 or 1"),
        ("result between", dict(result=0.5), r"result 0\.5 is not -1, 0 or 1"),
        ("result nan", dict(result=float("nan")), r"result nan is not"),
        ("result inf", dict(result=float("inf")), r"result inf is not"),
        ("board all zeros", dict(board=encode_array(np.zeros(BOARD_SHAPE, np.float32))),
         r"not a Flagz position: the player to move has 0 flags on the board and 0 left"),
        ("board not one-hot", dict(board=encode_array(grass_on_flag)),
         r"not a Flagz position: cell \(\d+, \d+\) holds several things at once "
         r"\(own flags, uncaptured grass\)"),
        ("next value off", dict(board=encode_array(next_value_off)),
         r"plane 3 \(own next value\) at \(\d+, \d+\) is \d where the position gives \d"),
        ("flags left off", dict(board=encode_array(extra_flags)),
         r"the player to move has \d flags on the board and 3 left"),
        ("mask not the legal moves", dict(action_mask=encode_array(loose_mask)),
         r"action_mask says a normal move at \(\d+, \d+\) is legal, the position says "
         r"illegal"),
        ("score too big", dict(score=MAX_SCORE + 1), rf"score {MAX_SCORE + 1}\.0 outside"),
        ("score nan", dict(score=float("nan")), r"score nan outside"),
        ("score against result", dict(score=-3.0), r"score -3\.0 disagrees with result 1\.0"),
        ("draw with a score", dict(result=0.0, score=2.0), r"score 2\.0 disagrees with result 0"),
    ]


def _pickled_object_array() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize("case", [c[0] for c in _bad_cases()[1]])
def test_decode_rejects(case: str) -> None:
    ex, cases = _bad_cases()
    _, fields, match = next(c for c in cases if c[0] == case)
    good = example(9)[0]
    # The bad example is second: the message must name it ("example 1").
    with pytest.raises(InvalidExampleError, match=r"^example 1\b.*" + match):
        decode([good, _with(ex, **fields)])


def test_score_travels_and_old_examples_have_none() -> None:
    """The score goes over the wire with the example; an example recorded before scores were
    (no field 14 in its bytes) decodes with the score unknown (NaN), as do Arrays built
    without scores."""
    won, lost = example(1, result=1.0)[0], example(2, result=-1.0)[0]
    won.score, lost.score = 12.0, -7.0
    old = example(3, result=1.0)[0]
    wire = [pb.TrainingExample.FromString(e.SerializeToString()) for e in (won, lost, old)]
    assert not wire[2].HasField("score")
    a = decode(wire)
    np.testing.assert_array_equal(a.scores[:2], [12.0, -7.0])
    assert np.isnan(a.scores[2]) and a.scores.dtype == np.float32
    plain = Arrays(a.boards, a.masks, a.probs, a.results)
    assert plain.scores.shape == (3,) and np.isnan(plain.scores).all()
    # Indexing keeps the rows of every array together.
    picked = a[np.array([2, 0])]
    np.testing.assert_array_equal(picked.results, [1.0, 1.0])
    assert np.isnan(picked.scores[0]) and picked.scores[1] == 12.0
    np.testing.assert_array_equal(picked.boards[1], a.boards[0])
    np.testing.assert_array_equal(a[1:].scores, [-7.0, np.nan])


def test_invalid_example_error_is_value_error() -> None:
    assert issubclass(InvalidExampleError, ValueError)


def test_decode_accepts_small_rounding_in_probs() -> None:
    ex, (_, _, visits, _, _) = example(4)
    probs = (visits / visits.sum()).astype(np.float32).reshape(MASK_SHAPE) * np.float32(1.0002)
    assert len(decode([_with(ex, move_probs=encode_array(probs))])) == 1


def _request(n_examples: int = 3) -> pb.AddTrainingExamplesRequest:
    return pb.AddTrainingExamplesRequest(
        examples=[example(s, result=1.0 if s % 2 else -1.0)[0] for s in range(1, n_examples + 1)],
        execution_id="exec", game_id="game-1")


def test_game_file_round_trip(tmp_path: Path) -> None:
    req = _request()
    path = tmp_path / f"exec-game-1{GAME_FILE_SUFFIX}"
    write_game_file(path, req)
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files
    assert gzip.decompress(path.read_bytes()) == req.SerializeToString()
    back = read_game_file(path)
    assert back == req
    a = decode(list(back.examples))
    np.testing.assert_array_equal(a.results, [1.0, -1.0, 1.0])
    # Overwriting is atomic and complete.
    req2 = _request(1)
    write_game_file(path, req2)
    assert read_game_file(path) == req2


@pytest.mark.parametrize("content", [
    b"",
    b"not gzip at all",
    gzip.compress(b"\xff\xff\xff\xff garbage protobuf", mtime=0),
    None,  # truncated gzip
], ids=["empty", "not-gzip", "garbage-protobuf", "truncated-gzip"])
def test_read_game_file_corrupt(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / f"bad{GAME_FILE_SUFFIX}"
    if content is None:
        content = gzip.compress(_request().SerializeToString())[:-20]
    path.write_bytes(content)
    with pytest.raises(InvalidExampleError,
                       match=r"bad\.pb\.gz: not a gzip AddTrainingExamplesRequest"):
        read_game_file(path)


def test_read_game_file_missing(tmp_path: Path) -> None:
    with pytest.raises((InvalidExampleError, FileNotFoundError), match="missing"):
        read_game_file(tmp_path / "missing.pb.gz")
