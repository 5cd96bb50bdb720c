"""Property tests of the Flagz engine over random games (hypothesis).

Each example is a whole game: a seed for Board.new and a seed for the move choices. At every ply
the engine's counters, next values, legal moves, end-of-game flag and network encoding are
recomputed from the cells alone (FLAGZ.md sections 4-7) and compared with what it reports.
"""

import copy
import pickle
import random

import numpy as np
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from pyhexz.game.board import Board, neighbors

NORMAL, GRASS, ROCK, FLAG = 0, 2, 3, 5
CELLS = [(r, c) for r in range(11) for c in range(10 - r % 2)]
NEIGHBOURS = {cell: neighbors(*cell) for cell in CELLS}
MAX_PLIES = 85      # every move fills one of the 85 initially empty cells

board_seeds = st.integers(min_value=0, max_value=2**64 - 1)
move_seeds = st.integers(min_value=0, max_value=2**32 - 1)


def game_settings(n: int):
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def random_game(board_seed: int, move_seed: int):
    """Yields (board, move that led here or None) for each position of a random game."""
    b = Board.new(board_seed)
    rng = random.Random(move_seed)
    yield b, None
    plies = 0
    while not b.is_over:
        move = rng.choice(b.legal_moves())
        b.play(*move)
        plies += 1
        assert plies <= MAX_PLIES, "the game should have ended"
        yield b, move


def cells_of(b: Board) -> dict:
    return {cell: b.cell(*cell) for cell in CELLS}


def derived_next_value(cells: dict, cell: tuple, player: int) -> int:
    """NV from the cells alone: -1 next to an own 5, else 1 + smallest own neighbour, else 0."""
    own = [cells[n][2] for n in NEIGHBOURS[cell]
           if cells[n][1] == player and cells[n][0] in (NORMAL, FLAG)]
    if 5 in own:
        return -1
    return min(own) + 1 if own else 0


def check_invariants(b: Board) -> None:
    cells = cells_of(b)
    empty = [cell for cell, (t, o, v) in cells.items() if t == NORMAL and o == 0]
    assert b.free_cells == len(empty)
    assert sum(1 for t, _, _ in cells.values() if t == ROCK) == 15
    nv = {}
    for p in (1, 2):
        for cell in empty:
            nv[cell, p] = b.next_value(*cell, p)
            assert nv[cell, p] == derived_next_value(cells, cell, p), (cell, p)
        assert b.normal_moves[p - 1] == sum(1 for cell in empty if nv[cell, p] > 0)
        assert b.score[p - 1] == sum(v for t, o, v in cells.values() if t == NORMAL and o == p)
        on_board = sum(1 for t, o, _ in cells.values() if t == FLAG and o == p)
        assert b.flags_left[p - 1] + on_board == 3
    for t, o, v in cells.values():
        if t == FLAG:
            assert o in (1, 2) and v == 0
        elif t == GRASS:
            assert o == 0 and 1 <= v <= 5
        elif t == NORMAL and o:
            assert 1 <= v <= 5

    # End of game (section 6), from the counters just checked.
    can = {p: b.normal_moves[p - 1] > 0 or (b.free_cells > 0 and b.flags_left[p - 1] > 0)
           for p in (1, 2)}
    s1, s2 = b.score
    over = (b.free_cells == 0 or not (can[1] or can[2])
            or (s1 > s2 and not can[2]) or (s2 > s1 and not can[1]))
    assert b.is_over == over
    if over:
        assert b.winner == (0 if s1 == s2 else 1 if s1 > s2 else 2)
    else:
        assert b.winner == 0
        assert can[b.turn]

    # Legal moves (section 5).
    moves = b.legal_moves()
    assert len(moves) == len(set(moves))
    assert (len(moves) == 0) == b.is_over
    if not b.is_over:
        p = b.turn
        expected = {(r, c, FLAG) for r, c in empty if b.flags_left[p - 1] > 0}
        expected |= {(r, c, NORMAL) for r, c in empty if nv[(r, c), p] > 0}
        assert set(moves) == expected


def expected_planes(b: Board) -> np.ndarray:
    """The 11 input planes of FLAGZ.md section 7, built from cell() and next_value()."""
    planes = np.zeros((11, 11, 10), dtype=np.float32)
    me, opp = b.turn, 3 - b.turn
    for base, p in ((0, me), (5, opp)):
        planes[base + 2] = 1.0                    # invalid or occupied unless found empty
        planes[base + 4] = b.flags_left[p - 1]
    for r, c in CELLS:
        t, o, v = b.cell(r, c)
        if t == GRASS:
            planes[10, r, c] = v
        elif o:
            base = 0 if o == me else 5
            if t == FLAG:
                planes[base, r, c] = 1.0
            else:
                planes[base + 1, r, c] = v
        elif t == NORMAL:
            for base, p in ((0, me), (5, opp)):
                nv = b.next_value(r, c, p)
                planes[base + 2, r, c] = 1.0 if nv == -1 else 0.0
                planes[base + 3, r, c] = max(nv, 0)
    return planes


def check_encoding(b: Board) -> None:
    planes, mask = b.encode()
    assert planes.shape == (11, 11, 10) and planes.dtype == np.float32
    assert mask.shape == (2, 11, 10) and mask.dtype == np.bool_
    np.testing.assert_array_equal(planes, expected_planes(b))
    # Invalid slots (odd row, column 9) are blocked for both and never playable.
    for r in range(1, 11, 2):
        assert planes[2, r, 9] == 1.0 and planes[7, r, 9] == 1.0
        assert not mask[:, r, 9].any()
    legal = set(b.legal_moves())
    want = np.zeros((2, 11, 10), dtype=bool)
    for r, c, t in legal:
        want[0 if t == FLAG else 1, r, c] = True
    np.testing.assert_array_equal(mask, want)


def check_proto_roundtrip(b: Board) -> None:
    msg = b.to_proto()
    assert Board.from_proto(msg).to_proto() == msg
    data = msg.SerializeToString()
    again = Board.from_proto(data)
    assert again.to_proto() == msg
    assert again.to_proto().SerializeToString() == data
    assert str(again) == str(b)


@game_settings(100)
@given(board_seed=board_seeds, move_seed=move_seeds)
def test_invariants_at_every_ply(board_seed, move_seed):
    b = Board.new(board_seed)
    rng = random.Random(move_seed)
    plies = 0
    while True:
        check_invariants(b)
        check_encoding(b)
        check_proto_roundtrip(b)
        if b.is_over:
            break
        mover, before_move, before_score = b.turn, b.move, b.score
        before = cells_of(b)
        r, c, t = move = rng.choice(b.legal_moves())
        value = 0 if t == FLAG else b.next_value(r, c, mover)
        b.play(*move)
        plies += 1
        assert plies <= MAX_PLIES, "the game should have ended"
        assert b.move == before_move + 1
        # The piece gets the next value; captured grass turns into the mover's pieces.
        assert b.cell(r, c) == (t, mover, value)
        after = cells_of(b)
        changed = {cell for cell in CELLS if after[cell] != before[cell]} - {(r, c)}
        for cell in changed:
            gt, _, g = before[cell]
            assert gt == GRASS and after[cell] == (NORMAL, mover, g)
            assert t == NORMAL and g <= 5
        gained = value + sum(before[cell][2] for cell in changed)
        assert b.score[mover - 1] == before_score[mover - 1] + gained
        assert b.score[2 - mover] == before_score[2 - mover]
        if t == FLAG:
            assert not changed                      # flags never capture
        other = 3 - mover
        other_can = b.normal_moves[other - 1] > 0 or (
            b.free_cells > 0 and b.flags_left[other - 1] > 0)
        if not b.is_over:
            assert b.turn == (other if other_can else mover)


@game_settings(30)
@given(board_seed=board_seeds, move_seed=move_seeds)
def test_copy_and_pickle_are_independent(board_seed, move_seed):
    rng = random.Random(move_seed ^ 0x5A5A)
    for b, _ in random_game(board_seed, move_seed):
        msg = b.to_proto()
        for clone in (b.copy(), copy.copy(b), copy.deepcopy(b), pickle.loads(pickle.dumps(b))):
            assert clone is not b
            assert clone.to_proto() == msg
            assert clone.legal_moves() == b.legal_moves()
            assert (clone.turn, clone.move, clone.score, clone.is_over) == \
                (b.turn, b.move, b.score, b.is_over)
            if not clone.is_over:
                clone.play(*rng.choice(clone.legal_moves()))
                assert b.to_proto() == msg              # the original is untouched
        if not b.is_over:
            # A clone replays a move exactly like the original.
            move = rng.choice(b.legal_moves())
            clone = pickle.loads(pickle.dumps(b))
            clone.play(*move)
            twin = b.copy()
            twin.play(*move)
            assert clone.to_proto() == twin.to_proto()


@game_settings(50)
@given(board_seed=board_seeds, move_seed=move_seeds)
def test_game_ends_within_the_board_size(board_seed, move_seed):
    positions = [b.copy() for b, _ in random_game(board_seed, move_seed)]
    plies = len(positions) - 1
    assert 6 <= plies <= MAX_PLIES <= 105
    assert positions[-1].is_over
    assert positions[-1].move == plies
    assert all(not p.is_over for p in positions[:-1])


@game_settings(50)
@given(seed=board_seeds)
def test_new_board_is_reproducible_and_well_formed(seed):
    b = Board.new(seed)
    assert Board.new(seed).to_proto() == b.to_proto()
    cells = cells_of(b)
    kinds = [t for t, _, _ in cells.values()]
    assert kinds.count(ROCK) == 15
    assert sorted(v for t, _, v in cells.values() if t == GRASS) == [1, 2, 3, 4, 5]
    assert sum(1 for t, o, v in cells.values() if (t, o, v) == (NORMAL, 0, 0)) == 85
    assert (b.turn, b.move, b.score, b.flags_left) == (1, 0, (0, 0), (3, 3))
    assert (b.free_cells, b.normal_moves, b.is_over) == (85, (0, 0), False)
    assert all(t == FLAG for _, _, t in b.legal_moves())
    assert len(b.legal_moves()) == 85


def test_new_boards_differ_between_seeds():
    protos = {Board.new(seed).to_proto().SerializeToString() for seed in range(20)}
    assert len(protos) == 20
    assert Board.new().to_proto() != Board.new().to_proto()   # OS entropy without a seed


def outcomes(b: Board, budget: list) -> set:
    """All winners reachable from b by legal play; budget[0] counts down visited positions."""
    budget[0] -= 1
    if budget[0] < 0:
        raise OverflowError
    if b.is_over:
        return {b.winner}
    found = set()
    for move in b.legal_moves():
        child = b.copy()
        child.play(*move)
        found |= outcomes(child, budget)
    return found


@game_settings(30)
@given(board_seed=board_seeds, move_seed=move_seeds)
@example(board_seed=304, move_seed=2461)   # an abrupt end: nothing small to enumerate
def test_playout_is_deterministic_and_consistent(board_seed, move_seed):
    positions = [b.copy() for b, _ in random_game(board_seed, move_seed)]
    final = positions[-1]
    for seed in range(5):
        assert final.playout(seed) == final.winner
    # Walk back from the end while the whole game tree is small enough to enumerate: every
    # playout must end in one of the reachable results.
    checked = 0
    for b in reversed(positions[:-1]):
        try:
            reachable = outcomes(b, [3000])
        except OverflowError:
            break
        msg = b.to_proto()
        for seed in range(12):
            result = b.playout(seed)
            assert result in reachable
            assert b.playout(seed) == result
        assert b.to_proto() == msg                   # playout works on a copy
        checked += 1
    # Deterministic for a seed from any position; random_move likewise, and always legal.
    for b in positions[:: max(1, len(positions) // 6)]:
        assert [b.playout(s) for s in range(8)] == [b.copy().playout(s) for s in range(8)]
        assert all(w in (0, 1, 2) for w in (b.playout(s) for s in range(8)))
        if not b.is_over:
            one, two = b.copy(), b.copy()
            one.random_move(move_seed)
            two.random_move(move_seed)
            assert one.to_proto() == two.to_proto()
            played = [(r, c) for r, c in CELLS
                      if b.cell(r, c) == (NORMAL, 0, 0) and one.cell(r, c) != (NORMAL, 0, 0)]
            assert len(played) == 1
            r, c = played[0]
            t = one.cell(r, c)[0]
            assert (r, c, t) in b.legal_moves()
            replay = b.copy()
            replay.play(r, c, t)
            assert replay.to_proto() == one.to_proto()
    # A game can end abruptly: the position before its last move may still have a game tree
    # too big to enumerate (board 304, moves 2461: 16 moves, over 300,000 positions). Such an
    # example checked no playout against the tree; hypothesis draws another in its place.
    assume(checked >= 1)
