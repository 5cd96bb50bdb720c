"""Scenario tests of the Flagz rules (FLAGZ.md sections 1, 4, 5 and 6) on tiny ASCII boards.

Boards are drawn as `str(board)` draws them: `..` empty, `##` rock, `g3` grass 3, `x3` / `o3` a 3
of player 1 / 2, `xF` / `oF` flags. Odd rows sit half a cell to the right (indented by two
spaces), so (1, 0) touches (0, 0), (0, 1), (2, 0) and (2, 1). Rows that are not drawn are rocks
(fill="##"), which keeps each scenario down to the few cells that matter.

Every scenario also checks that its positions survive a to_proto -> from_proto round trip, since
from_proto cross-checks all counters and next values against the cells.
"""

import collections

import pytest

from pyhexz import hexz_pb2
from pyhexz.game.board import Board, IllegalMoveError, neighbors, policy_index

NORMAL, GRASS, ROCK, FLAG = 0, 2, 3, 5
EMPTY = (NORMAL, 0, 0)


def tiny(text: str, **kwargs) -> Board:
    """A board from a picture; rows left out are rocks."""
    return Board.from_ascii(text, fill="##", **kwargs)


def flat(row: int, col: int) -> int:
    return 19 * (row // 2) + 10 * (row % 2) + col


def all_cells():
    return [(r, c) for r in range(11) for c in range(10 - r % 2)]


def roundtrip(board: Board) -> Board:
    """Checks that the board survives to_proto -> from_proto (message and bytes) unchanged."""
    msg = board.to_proto()
    again = Board.from_proto(msg)
    assert again.to_proto() == msg
    assert Board.from_proto(msg.SerializeToString()).to_proto() == msg
    assert str(again) == str(board)
    for name in ("turn", "move", "score", "flags_left", "free_cells", "normal_moves",
                 "is_over", "winner"):
        assert getattr(again, name) == getattr(board, name), name
    assert again.legal_moves() == board.legal_moves()
    return again


def nv(board: Board, row: int, col: int) -> tuple:
    """Next values of a cell for (player 1, player 2)."""
    return board.next_value(row, col, 1), board.next_value(row, col, 2)


def assert_illegal(board: Board, move: tuple, reason: str) -> None:
    """The move raises IllegalMoveError whose message matches reason; the board is unchanged."""
    before = board.to_proto()
    before_text = str(board)
    with pytest.raises(IllegalMoveError, match=reason):
        board.play(*move)
    assert board.to_proto() == before
    assert str(board) == before_text


# ---------------------------------------------------------------------------
# Section 1: the board.


def test_valid_cells():
    cells = all_cells()
    assert len(cells) == 105
    assert sum(1 for r, c in cells if r % 2 == 0) == 60
    for bad in [(1, 9), (3, 9), (9, 9), (-1, 0), (11, 0), (0, 10), (0, -1), (10, 10)]:
        not_a_cell = rf"^\({bad[0]}, {bad[1]}\) is not a cell of the board$"
        with pytest.raises(ValueError, match=not_a_cell):
            neighbors(*bad)
        with pytest.raises(ValueError, match=not_a_cell):
            Board.new(1).cell(*bad)


@pytest.mark.parametrize(
    "cell, expected",
    [
        ((0, 0), [(0, 1), (1, 0)]),
        ((1, 0), [(1, 1), (0, 1), (0, 0), (2, 0), (2, 1)]),
        ((4, 4), [(4, 5), (3, 4), (3, 3), (4, 3), (5, 3), (5, 4)]),
        ((5, 4), [(5, 5), (4, 5), (4, 4), (5, 3), (6, 4), (6, 5)]),
        ((10, 9), [(9, 8), (10, 8)]),
    ],
)
def test_neighbours_in_go_server_order(cell, expected):
    assert neighbors(*cell) == expected


def test_neighbour_formula_for_every_cell():
    valid = set(all_cells())
    for r, c in valid:
        s = r % 2
        formula = [(r, c + 1), (r - 1, c + s), (r - 1, c - 1 + s), (r, c - 1),
                   (r + 1, c - 1 + s), (r + 1, c + s)]
        assert neighbors(r, c) == [x for x in formula if x in valid]


def test_neighbourhood_is_symmetric():
    for cell in all_cells():
        for other in neighbors(*cell):
            assert cell in neighbors(*other)


def test_degree_histogram():
    degrees = collections.Counter(len(neighbors(r, c)) for r, c in all_cells())
    assert degrees == {6: 67, 5: 10, 4: 16, 3: 8, 2: 4}


@pytest.mark.parametrize("cell", [(0, 0), (0, 9), (1, 0), (1, 8), (2, 0), (5, 4), (9, 8),
                                  (10, 0), (10, 9)])
def test_flat_index_formula(cell):
    r, c = cell
    rows = []
    for rr in range(11):
        tokens = [".."] * (10 - rr % 2)
        if rr == r:
            tokens[c] = "g3"
        rows.append(("  " if rr % 2 else "") + "  ".join(tokens))
    board = Board.from_ascii("\n".join(rows))
    fields = board.to_proto().flagz.board.flat_fields
    assert len(fields) == 105
    grass = [i for i, f in enumerate(fields) if f.type == GRASS]
    assert grass == [flat(r, c)]
    assert fields[flat(r, c)].value == 3


def test_flat_order_is_row_major():
    assert [flat(r, 0) for r in range(11)] == [0, 10, 19, 29, 38, 48, 57, 67, 76, 86, 95]
    assert [flat(r, c) for r, c in all_cells()] == list(range(105))
    board = Board.new(12345)
    fields = board.to_proto().flagz.board.flat_fields
    for r, c in all_cells():
        f = fields[flat(r, c)]
        assert board.cell(r, c) == (f.type, f.owner, f.value)


def test_policy_index():
    assert policy_index(0, 0, FLAG) == 0
    assert policy_index(3, 7, FLAG) == 37
    assert policy_index(0, 0, NORMAL) == 110
    assert policy_index(10, 9, NORMAL) == 219


# ---------------------------------------------------------------------------
# Section 4: next values and blocking.


def test_next_value_is_one_more_than_smallest_adjacent_own_value():
    b = tiny("""
x3  ..  x1  ##  ##  ##  ##  ##  ##  ##
  ..  ##  ##  ##  ##  ##  ##  ##  ##
""")
    assert nv(b, 0, 1) == (2, 0)   # next to the 3 and the 1
    assert nv(b, 1, 0) == (4, 0)   # next to the 3 only
    assert b.normal_moves == (2, 0)
    roundtrip(b)


def test_flags_count_as_zero():
    b = tiny("""
xF  ..  x1  ##  ##  ##  ##  ##  ##  ##
  ..  ##  ##  ##  ##  ##  ##  ##  ##
""")
    assert nv(b, 0, 1) == (1, 0)
    assert nv(b, 1, 0) == (1, 0)
    roundtrip(b)


def test_opponent_pieces_do_not_matter():
    b = tiny("""
x4  ..  o1  ##  ##  ##  ##  ##  ##  ##
  ..  ##  ##  ##  ##  ##  ##  ##  ##
""")
    assert nv(b, 0, 1) == (5, 2)
    assert nv(b, 1, 0) == (5, 0)
    roundtrip(b)


def test_cell_without_own_neighbour_has_no_next_value():
    b = tiny("""
x1  ..  ..  ##  ##  ##  ##  ##  ##  ##
""")
    assert nv(b, 0, 1) == (2, 0)
    assert nv(b, 0, 2) == (0, 0)
    assert (0, 2, NORMAL) not in b.legal_moves()
    roundtrip(b)


def test_next_values_follow_the_moves():
    b = tiny("""
x2  ..  ..  ..  x1  ##  ##  ##  ##  ..
""")
    assert [nv(b, 0, c)[0] for c in (1, 2, 3)] == [3, 0, 2]
    b.play(0, 1)                      # player 1 places a 3
    assert b.cell(0, 1) == (NORMAL, 1, 3)
    assert nv(b, 0, 2) == (4, 0)      # new next value: 3 + 1
    roundtrip(b)
    b.play(0, 9, FLAG)                # player 2, far away
    b.play(0, 3)                      # player 1 places a 2 on the other side
    assert b.cell(0, 3) == (NORMAL, 1, 2)
    assert nv(b, 0, 2) == (3, 0)      # lowered to min(4, 2 + 1)
    assert b.score == (2 + 1 + 3 + 2, 0)
    roundtrip(b)


def test_a_flag_gives_next_value_one():
    b = tiny("""
..  ..  x3  ##  ##  ##  ##  ##  ##  ..
""")
    assert nv(b, 0, 1) == (4, 0)
    b.play(0, 0, FLAG)
    assert b.cell(0, 0) == (FLAG, 1, 0)
    assert nv(b, 0, 1) == (1, 0)
    roundtrip(b)


def test_a_five_blocks_only_its_owner():
    b = tiny("""
x5  ..  o1  ##  ##  ##  ##  ##  ##  ##
  ..  ##  ##  ##  ##  ##  ##  ##  ##
""")
    assert nv(b, 0, 1) == (-1, 2)      # next to x5: blocked for x even though x has no other piece
    assert nv(b, 1, 0) == (-1, 0)
    fields = b.to_proto().flagz.board.flat_fields
    assert fields[flat(0, 1)].blocked == 1
    assert list(fields[flat(0, 1)].next_val) == [-1, 2]
    assert b.normal_moves == (0, 1)
    roundtrip(b)


def test_a_five_blocks_even_next_to_a_lower_own_piece():
    b = tiny("""
x5  ..  x1  ##  ##  ##  ##  ##  ##  ##
""")
    assert nv(b, 0, 1) == (-1, 0)
    roundtrip(b)


def test_blocking_is_permanent():
    b = tiny("""
x4  ..  ..  ..  ##  ##  ##  ##  ..  ..
  ##  ##  ..  ##  ##  ##  ##  ##  ##
""")
    # (0, 2) touches (0, 1), (0, 3), (1, 2) and rocks.
    assert nv(b, 0, 1) == (5, 0)
    assert nv(b, 0, 2) == (0, 0)
    b.play(0, 1)                          # a 5: blocks (0, 2) for player 1
    assert b.cell(0, 1) == (NORMAL, 1, 5)
    assert nv(b, 0, 2) == (-1, 0)
    b.play(0, 9, FLAG)                    # player 2, far away
    b.play(0, 3, FLAG)                    # a flag (value 0) next to the blocked cell ...
    assert nv(b, 0, 2) == (-1, 0)         # ... does not unblock it
    assert nv(b, 1, 2) == (1, 0)          # while an unblocked neighbour of the flag gets 1
    b.play(0, 8, FLAG)                    # player 2
    assert b.turn == 1
    assert nv(b, 0, 2) == (-1, 0)
    assert_illegal(b, (0, 2, NORMAL), "blocked")
    assert b.to_proto().flagz.board.flat_fields[flat(0, 2)].blocked == 1
    roundtrip(b)


def test_flag_next_to_own_five_is_legal_but_normal_move_is_not():
    b = tiny("""
x5  ..  ##  ##  ##  ##  ##  ##  ##  ..
""")
    assert nv(b, 0, 1) == (-1, 0)
    assert (0, 1, NORMAL) not in b.legal_moves()
    assert (0, 1, FLAG) in b.legal_moves()
    assert_illegal(b, (0, 1, NORMAL), "blocked")
    b.play(0, 1, FLAG)
    assert b.cell(0, 1) == (FLAG, 1, 0)
    assert b.flags_left == (2, 3)
    roundtrip(b)


# ---------------------------------------------------------------------------
# Section 5: moves.


def test_initial_position_allows_only_flags():
    b = Board.new(7)
    moves = b.legal_moves()
    empty = [(r, c) for r, c in all_cells() if b.cell(r, c) == EMPTY]
    assert len(empty) == 85
    assert sorted(moves) == sorted((r, c, FLAG) for r, c in empty)
    assert b.normal_moves == (0, 0)


def test_turns_alternate_and_the_move_counter_counts_plies():
    b = Board.new(3)
    assert (b.turn, b.move) == (1, 0)
    r, c, t = b.legal_moves()[0]
    b.play(r, c, t)
    assert (b.turn, b.move) == (2, 1)
    assert b.cell(r, c) == (FLAG, 1, 0)
    r, c, t = b.legal_moves()[-1]
    b.play(r, c, t)
    assert (b.turn, b.move) == (1, 2)
    assert b.cell(r, c) == (FLAG, 2, 0)
    assert b.flags_left == (2, 2)
    assert b.score == (0, 0)
    roundtrip(b)


def test_flags_go_on_any_empty_cell_while_flags_are_left():
    b = tiny("""
x5  ..  ..  ##  o2  ..  ##  ##  ##  ##
  ..  ##  ##  ##  ##  ##  ##  ##  ##
""")
    empty = [(0, 1), (0, 2), (0, 5), (1, 0)]
    # blocked, unreachable, next to the opponent, blocked: flags go anywhere.
    assert sorted(m for m in b.legal_moves() if m[2] == FLAG) == [(r, c, FLAG) for r, c in empty]
    b.play(0, 2, FLAG)
    assert b.flags_left == (2, 3)
    assert b.score == (5, 2)               # a flag scores nothing
    assert b.move == 3
    roundtrip(b)


def test_no_flag_moves_once_the_flags_are_used_up():
    b = tiny("""
x1  ..  ..  ##  ##  ##  ##  ##  ##  ##
  ##  ##  ##  ##  ##  ##  ##  ##  ##
xF  xF  xF  ##  ##  ##  ##  ##  ##  ##
""")
    assert b.flags_left == (0, 3)
    assert b.legal_moves() == [(0, 1, NORMAL)]
    assert_illegal(b, (0, 2, FLAG), "no flags left")
    assert_illegal(b, (0, 1, FLAG), "no flags left")
    roundtrip(b)


def test_the_piece_gets_the_next_value():
    b = tiny("""
x3  ..  ..  x1  ##  ##  ##  ##  ##  ##
""")
    # play() has no value argument: the mover cannot choose.
    assert nv(b, 0, 1) == (4, 0)
    assert nv(b, 0, 2) == (2, 0)
    b.play(0, 1)
    assert b.cell(0, 1) == (NORMAL, 1, 4)
    assert b.score == (3 + 1 + 4, 0)       # a normal move scores its value
    assert nv(b, 0, 2) == (2, 0)
    roundtrip(b)


@pytest.mark.parametrize(
    "grass, captured",
    [("g1", True), ("g2", True), ("g3", False), ("g5", False)],
)
def test_grass_is_captured_only_by_a_value_at_least_its_own(grass, captured):
    b = tiny(f"""
x1  ..  {grass}  ##  ##  ##  ##  ##  ##  ##
""")
    g = int(grass[1])
    b.play(0, 1)                            # a 2 next to the grass
    assert b.cell(0, 1) == (NORMAL, 1, 2)
    if captured:
        assert b.cell(0, 2) == (NORMAL, 1, g)
        assert b.score == (1 + 2 + g, 0)
    else:
        assert b.cell(0, 2) == (GRASS, 0, g)
        assert b.score == (1 + 2, 0)
    assert b.move == 2                      # a capture is not a move
    roundtrip(b)


def test_flags_never_capture():
    b = tiny("""
..  g1  ##  ##  ##  ##  ##  ##  ##  ..
  ..  ##  ##  ##  ##  ##  ##  ##  ##
""")
    b.play(0, 0, FLAG)
    assert b.cell(0, 1) == (GRASS, 0, 1)
    assert b.score == (0, 0)
    roundtrip(b)


def test_captures_chain():
    b = tiny("""
x4  ..  g5  g3  ..  ##  ##  ##  ##  ##
  ##  ##  ..  ##  ##  ##  ##  ##  ##
""")
    # (0, 1) touches x4 and g5; g5 touches g3 and (1, 2); g3 touches (0, 4) and (1, 2).
    assert nv(b, 0, 1) == (5, 0)
    assert nv(b, 1, 2) == (0, 0)
    assert nv(b, 0, 4) == (0, 0)
    b.play(0, 1)                            # a 5 captures the g5, whose 5 captures the g3
    assert b.cell(0, 1) == (NORMAL, 1, 5)
    assert b.cell(0, 2) == (NORMAL, 1, 5)
    assert b.cell(0, 3) == (NORMAL, 1, 3)
    assert b.score == (4 + 5 + 5 + 3, 0)    # captured grass counts
    # The captured 5 blocks (1, 2) for the capturer (although the captured 3 touches it too),
    # the captured 3 gives (0, 4) a next value of 4.
    assert nv(b, 1, 2) == (-1, 0)
    assert nv(b, 0, 4) == (4, 0)
    assert b.to_proto().flagz.board.flat_fields[flat(1, 2)].blocked == 1
    assert (b.move, b.turn, b.free_cells, b.normal_moves) == (2, 2, 2, (1, 0))
    roundtrip(b)


def test_a_capture_belongs_to_the_capturing_player():
    b = tiny("""
o1  ..  g2  ##  ##  ##  ##  ##  ##  ..
  ##  ##  ..  ##  ##  ##  ##  ##  ##
""", turn=2)
    assert b.turn == 2
    b.play(0, 1)                            # player 2 places a 2 and captures the g2
    assert b.cell(0, 2) == (NORMAL, 2, 2)
    assert b.score == (0, 1 + 2 + 2)
    assert nv(b, 1, 2) == (0, 3)            # the captured 2 acts as player 2's piece
    roundtrip(b)


# ---------------------------------------------------------------------------
# Section 6: turns and the end of the game.

STUCK = """
x1  ..  ..  ..  ..  ..  ##  ##  o5  o5
  ##  ##  ##  ##  ##  ##  ##  ##  ##
xF  xF  ##  oF  oF  oF  ##  ##  ##  ##
"""


def test_a_stuck_player_is_skipped():
    # Player 2 has no flags and its 5s touch no empty cell: it can never move again.
    b = tiny(STUCK)
    assert (b.turn, b.score, b.flags_left, b.normal_moves) == (1, (1, 10), (1, 0), (1, 0))
    assert not b.is_over                    # player 2 is stuck but leads: the game goes on
    roundtrip(b)
    start = b.move
    for c, value, score in [(1, 2, 3), (2, 3, 6), (3, 4, 10)]:
        b.play(0, c)
        assert b.cell(0, c) == (NORMAL, 1, value)
        assert b.score == (score, 10)
        assert b.turn == 1                  # player 2 is skipped
        assert not b.is_over                # player 1 trails, then ties: not over
        assert b.winner == 0
        assert b.move == start + c
        assert (0, c + 1, NORMAL) in b.legal_moves()
        roundtrip(b)


def test_stuck_player_given_the_turn_is_skipped():
    b = tiny(STUCK, turn=2)
    assert b.turn == 1
    assert not b.is_over


def test_game_ends_when_the_stuck_players_opponent_leads_and_can_still_move():
    b = tiny(STUCK)
    for c in (1, 2, 3):
        b.play(0, c)
    assert b.score == (10, 10) and not b.is_over
    b.play(0, 4)                            # a 5: 15 against 10
    assert b.score == (15, 10)
    # Player 1 could still move (a flag on (0, 5)) but player 2 cannot and trails.
    assert b.flags_left[0] == 1 and b.free_cells == 1
    assert nv(b, 0, 5) == (-1, 0)
    assert b.is_over
    assert b.winner == 1
    assert b.legal_moves() == []
    assert b.to_proto().flagz.board.state == hexz_pb2.Board.FINISHED
    roundtrip(b)


def test_game_ends_when_the_mover_gets_stuck_and_the_opponent_leads():
    b = tiny("""
x1  ..  ##  ##  ##  ##  o5  ##  ##  ..
  ##  ##  ##  ##  ##  ##  ##  ##  ##
xF  xF  xF  ##  oF  oF  ##  ##  ##  ##
""")
    assert (b.score, b.flags_left) == ((1, 5), (0, 1))
    assert not b.is_over
    roundtrip(b)
    b.play(0, 1)                            # player 1's last move: a 2
    assert b.score == (3, 5)
    assert b.normal_moves == (0, 0)
    assert b.free_cells == 1                # player 2 could place its last flag on (0, 9)
    assert b.is_over
    assert b.winner == 2
    roundtrip(b)


def test_game_ends_when_no_empty_cell_is_left():
    b = tiny("""
x1  ..  ##  ##  ##  ##  ##  ##  ##  ##
""")
    assert b.flags_left == (3, 3) and not b.is_over
    b.play(0, 1)
    assert b.free_cells == 0
    assert b.is_over
    assert b.score == (3, 0)
    assert b.winner == 1
    assert b.legal_moves() == []
    roundtrip(b)


def test_draw_when_the_board_fills_up_with_equal_scores():
    b = tiny("""
x1  ..  ##  o3  ##  ##  ##  ##  ##  ##
""")
    b.play(0, 1)
    assert (b.free_cells, b.score) == (0, (3, 3))
    assert b.is_over
    assert b.winner == 0
    roundtrip(b)


def test_game_ends_when_neither_player_can_move():
    b = tiny("""
x4  ..  ..  ##  ##  ##  ##  ##  o5  o4
  ##  ##  ##  ##  ##  ##  ##  ##  ##
xF  xF  xF  ##  oF  oF  oF  ##  ##  ##
""")
    assert (b.score, b.flags_left, b.normal_moves) == ((4, 9), (0, 0), (1, 0))
    assert not b.is_over                    # player 2 is stuck and leads, but player 1 can move
    roundtrip(b)
    b.play(0, 1)                            # a 5, which blocks player 1's last empty cell
    assert b.score == (9, 9)
    assert b.free_cells == 1                # (0, 2) stays empty
    assert nv(b, 0, 2) == (-1, 0)
    assert b.is_over                        # nobody leads, but nobody can move
    assert b.winner == 0
    roundtrip(b)


def test_winner_is_zero_while_the_game_runs():
    b = tiny("""
x5  ..  ..  ##  ##  ##  ##  ##  ##  ##
""")
    assert b.score == (5, 0)
    assert not b.is_over
    assert b.winner == 0


# ---------------------------------------------------------------------------
# Illegal moves: IllegalMoveError (a ValueError) saying why, board unchanged.

ILLEGAL = """
x5  ..  ..  g2  ##  xF  o1  ..  ..  ..
  ..  ##  ##  ##  ##  ##  ##  ##  ##
"""


def test_illegal_move_error_is_a_value_error():
    assert issubclass(IllegalMoveError, ValueError)


@pytest.mark.parametrize(
    "move, reason",
    [
        ((0, 0, NORMAL), r"occupied.*a 5 of player 1"),
        ((0, 0, FLAG), r"occupied"),
        ((0, 3, NORMAL), r"occupied.*grass 2"),
        ((0, 4, FLAG), r"occupied.*rock"),
        ((0, 5, NORMAL), r"occupied.*flag of player 1"),
        ((0, 6, NORMAL), r"occupied.*of player 2"),
        ((1, 9, NORMAL), r"not a cell"),
        ((1, 9, FLAG), r"not a cell"),
        ((-1, 0, FLAG), r"not a cell"),
        ((11, 0, NORMAL), r"not a cell"),
        ((0, 10, NORMAL), r"not a cell"),
        ((0, -1, FLAG), r"not a cell"),
        ((0, 1, NORMAL), r"blocked"),
        ((1, 0, NORMAL), r"blocked"),
        ((0, 2, NORMAL), r"no piece next to"),
        ((0, 9, NORMAL), r"no piece next to"),
        ((0, 7, NORMAL), r"no piece next to"),   # only the opponent's 1 is next to it
        ((0, 8, 1), r"must be 0 \(NORMAL\) or 5 \(FLAG\)"),
        ((0, 8, GRASS), r"must be 0 \(NORMAL\) or 5 \(FLAG\)"),
        ((0, 8, ROCK), r"must be 0 \(NORMAL\) or 5 \(FLAG\)"),
        ((0, 8, -1), r"must be 0 \(NORMAL\) or 5 \(FLAG\)"),
        ((0, 8, 7), r"must be 0 \(NORMAL\) or 5 \(FLAG\)"),
    ],
)
def test_illegal_moves(move, reason):
    b = tiny(ILLEGAL)
    assert b.turn == 1 and b.flags_left == (2, 3)
    assert nv(b, 0, 7) == (0, 2)
    assert_illegal(b, move, reason)
    assert move not in b.legal_moves()
    roundtrip(b)
    # The board still plays normally afterwards.
    b.play(0, 8, FLAG)
    assert b.cell(0, 8) == (FLAG, 1, 0)


def test_no_moves_after_the_game_is_over():
    b = tiny("""
x1  ..  ##  ##  ##  ##  ##  ##  ##  ##
""")
    b.play(0, 1)
    assert b.is_over
    for move in [(0, 1, NORMAL), (0, 1, FLAG), (0, 2, FLAG), (1, 9, NORMAL), (0, 0, 3)]:
        assert_illegal(b, move, "game is over")


def test_game_over_with_empty_cells_left_refuses_moves():
    b = tiny("""
x4  ..  ..  ##  ##  ##  ##  ##  o5  o4
  ##  ##  ##  ##  ##  ##  ##  ##  ##
xF  xF  xF  ##  oF  oF  oF  ##  ##  ##
""")
    b.play(0, 1)
    assert b.is_over and b.free_cells == 1
    assert_illegal(b, (0, 2, FLAG), "game is over")
    assert_illegal(b, (0, 2, NORMAL), "game is over")
    with pytest.raises(IllegalMoveError, match="game is over"):
        b.random_move(1)


@pytest.mark.parametrize("move", [(2**31, 0, FLAG), (0, -2**31 - 1, FLAG), (0, 8, 2**32),
                                  (2**70, 2**70, NORMAL)])
def test_far_off_board_moves_are_illegal_moves(move):
    # Coordinates and types beyond the C int range are still just illegal moves.
    assert_illegal(tiny(ILLEGAL), move, r"not a cell|not a move on this board|must be 0")
