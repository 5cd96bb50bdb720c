"""Board <-> protobuf: the Go server's fixture positions and rejection of malformed states.

Positions must round-trip byte for byte (FLAGZ.md section 8), and `Board.from_proto` must refuse,
with an InvalidStateError naming the problem, any state that is malformed or contradicts itself.
Bad states are made by mutating a real one.
"""

import random

import pytest

from pyhexz import hexz_pb2 as pb
from pyhexz.game.board import Board, InvalidStateError

NORMAL, DEAD, GRASS, ROCK, FIRE, FLAG, PEST, DEATH = range(8)


def flat(row: int, col: int) -> int:
    return 19 * (row // 2) + 10 * (row % 2) + col


def roundtrip(msg: pb.GameEngineState) -> Board:
    board = Board.from_proto(msg)
    assert board.to_proto() == msg
    data = msg.SerializeToString()
    assert Board.from_proto(data).to_proto().SerializeToString() == data
    return board


# ---------------------------------------------------------------------------
# The Go server's initial positions.


def test_fixture_file_has_128_distinct_positions(fixture_records):
    assert len(fixture_records) == 128
    assert len({id_ for id_, _ in fixture_records}) == 128
    assert len({s.SerializeToString() for _, s in fixture_records}) == 128


def test_fixtures_round_trip_exactly(fixture_states):
    for state in fixture_states:
        board = roundtrip(state)
        fz = state.flagz
        assert fz.board.state == pb.Board.RUNNING
        assert (board.turn, board.move, board.score, board.flags_left) == (1, 0, (0, 0), (3, 3))
        assert (board.free_cells, board.normal_moves) == (85, (0, 0))
        types = [f.type for f in fz.board.flat_fields]
        assert types.count(ROCK) == 15
        grass = sorted(f.value for f in fz.board.flat_fields if f.type == GRASS)
        assert grass == [1, 2, 3, 4, 5]
        for f in fz.board.flat_fields:
            assert f.lifetime == (0 if f.type == NORMAL else -1)
            assert list(f.next_val) == [0, 0]


def test_fixture_games_round_trip_at_every_ply(fixture_states):
    rng = random.Random(2024)
    lengths = []
    for state in fixture_states:
        board = Board.from_proto(state)
        while not board.is_over:
            board.play(*rng.choice(board.legal_moves()))
            msg = board.to_proto()
            # Alternate between reading the message and its wire bytes.
            again = Board.from_proto(msg if board.move % 2 else msg.SerializeToString())
            assert again.to_proto() == msg
            assert again.legal_moves() == board.legal_moves()
        assert board.to_proto().flagz.board.state == pb.Board.FINISHED
        lengths.append(board.move)
    assert max(lengths) <= 85
    assert 50 <= sum(lengths) / len(lengths) <= 85   # FLAGZ.md: random games last ~72 plies


# ---------------------------------------------------------------------------
# Bad states, made from good ones.


def biased_move(board: Board, rng: random.Random) -> tuple:
    """A random move, normal moves preferred so that flags stay in hand for a while."""
    moves = board.legal_moves()
    normal = [m for m in moves if m[2] == NORMAL]
    return rng.choice(normal if normal and rng.random() < 0.9 else moves)


@pytest.fixture(scope="module")
def midgame(fixture_states) -> bytes:
    """A running position with pieces of both players, flags on the board and in hand, a
    captured grass and a blocked cell, reached by seeded random play from the first fixture."""
    for seed in range(200):
        rng = random.Random(seed)
        board = Board.from_proto(fixture_states[0])
        while not board.is_over and board.move < 50:
            board.play(*biased_move(board, rng))
            if board.move < 16 or board.is_over:
                continue
            msg = board.to_proto()
            fields = msg.flagz.board.flat_fields
            if (sum(1 for f in fields if f.type == GRASS) < 5
                    and any(blocked_empty(f) for f in fields)
                    and any(lonely_empty(f) for f in fields)
                    and any(reachable_empty(f) for f in fields)
                    and all(0 < n < 3 for n in board.flags_left)
                    and min(board.normal_moves) > 0):
                return msg.SerializeToString()
    pytest.fail("no suitable mid-game position found")


@pytest.fixture(scope="module")
def finished(fixture_states) -> bytes:
    rng = random.Random(7)
    board = Board.from_proto(fixture_states[1])
    while not board.is_over:
        board.play(*rng.choice(board.legal_moves()))
    return board.to_proto().SerializeToString()


def parse(data: bytes) -> pb.GameEngineState:
    msg = pb.GameEngineState()
    msg.ParseFromString(data)
    return msg


def find(msg, pred) -> int:
    """Index of the first cell satisfying pred."""
    for i, f in enumerate(msg.flagz.board.flat_fields):
        if pred(f):
            return i
    raise AssertionError("no such cell in the test position")


def is_empty(f):
    return f.type == NORMAL and f.owner == 0


def lonely_empty(f):
    return is_empty(f) and list(f.next_val) == [0, 0]


def blocked_empty(f):
    return is_empty(f) and f.blocked != 0


def reachable_empty(f):
    return is_empty(f) and f.next_val[0] > 0


def piece(f):
    return f.type == NORMAL and f.owner != 0


def cell(msg, pred):
    return msg.flagz.board.flat_fields[find(msg, pred)]


def set_fields(pred, **values):
    def mutate(msg):
        f = cell(msg, pred)
        for name, value in values.items():
            setattr(f, name, value)
    return mutate


def set_next_val(pred, next_val, blocked=None):
    def mutate(msg):
        f = cell(msg, pred)
        del f.next_val[:]
        f.next_val.extend(next_val)
        if blocked is not None:
            f.blocked = blocked
    return mutate


def on_board(**values):
    def mutate(msg):
        for name, value in values.items():
            setattr(msg.flagz.board, name, value)
    return mutate


def bump(path, delta=1, index=None):
    def mutate(msg):
        obj = msg.flagz
        for name in path[:-1]:
            obj = obj[name] if isinstance(name, int) else getattr(obj, name)
        if index is None:
            setattr(obj, path[-1], getattr(obj, path[-1]) + delta)
        else:
            getattr(obj, path[-1])[index] += delta
    return mutate


def set_flags_left(player, n):
    def mutate(msg):
        msg.flagz.board.resources[player - 1].num_pieces[FLAG] = n
    return mutate


def set_resource(player, index, n):
    def mutate(msg):
        msg.flagz.board.resources[player - 1].num_pieces[index] = n
    return mutate


def drop_cells(n):
    def mutate(msg):
        del msg.flagz.board.flat_fields[len(msg.flagz.board.flat_fields) - n:]
    return mutate


def add_cell(msg):
    msg.flagz.board.flat_fields.add().next_val.extend([0, 0])


def truncate(field, keep):
    def mutate(msg):
        container = msg.flagz if field == "normal_moves" else msg.flagz.board
        del getattr(container, field)[keep:]
    return mutate


def extend(field, extra):
    def mutate(msg):
        container = msg.flagz if field == "normal_moves" else msg.flagz.board
        getattr(container, field).extend(extra)
    return mutate


def drop_resource_count(msg):
    del msg.flagz.board.resources[0].num_pieces[-1]


def other_variant(which):
    def mutate(msg):
        board = pb.Board()
        board.CopyFrom(msg.flagz.board)
        getattr(msg, which).board.CopyFrom(board)
        assert msg.WhichOneof("state") == which
    return mutate


def clear(msg):
    msg.Clear()


def clear_board(msg):
    msg.flagz.ClearField("board")


BAD_STATES = [
    # cell count
    ("one cell missing", drop_cells(1), r"104 cells, expected 105"),
    ("no cells", drop_cells(105), r"0 cells, expected 105"),
    ("one cell too many", add_cell, r"106 cells, expected 105"),
    # cell types not used in Flagz
    ("FIRE", set_fields(lonely_empty, type=FIRE), r"type 4 is not used in Flagz"),
    ("DEAD", set_fields(lonely_empty, type=DEAD), r"type 1 is not used in Flagz"),
    ("PEST", set_fields(lonely_empty, type=PEST), r"type 6 is not used in Flagz"),
    ("DEATH", set_fields(lonely_empty, type=DEATH), r"type 7 is not used in Flagz"),
    ("unknown type", set_fields(lonely_empty, type=9), r"type 9 is not used in Flagz"),
    ("hidden cell", set_fields(lonely_empty, hidden=True), r"hidden"),
    # values
    ("piece value 6", set_fields(piece, value=6),
     r"NORMAL with owner \d and value 6 .*not a Flagz piece"),
    ("piece value 0", set_fields(piece, value=0),
     r"NORMAL with owner \d and value 0 .*not a Flagz piece"),
    ("piece value -1", set_fields(piece, value=-1), r"value -1 .*not a Flagz piece"),
    ("grass value 6", set_fields(lambda f: f.type == GRASS, value=6),
     r"GRASS .*value 6 .*not a Flagz piece"),
    ("grass value 0", set_fields(lambda f: f.type == GRASS, value=0),
     r"GRASS .*value 0 .*not a Flagz piece"),
    ("flag value 1", set_fields(lambda f: f.type == FLAG, value=1),
     r"FLAG .*value 1 .*not a Flagz piece"),
    ("rock value", set_fields(lambda f: f.type == ROCK, value=2),
     r"ROCK .*value 2 .*not a Flagz piece"),
    ("empty cell with a value", set_fields(lonely_empty, value=3),
     r"NORMAL with owner 0 and value 3 .*not a Flagz piece"),
    # owners
    ("piece owner 3", set_fields(piece, owner=3), r"owner 3 .*not a Flagz piece"),
    ("piece owner -1", set_fields(piece, owner=-1), r"owner -1 .*not a Flagz piece"),
    ("flag owner 0", set_fields(lambda f: f.type == FLAG, owner=0),
     r"FLAG with owner 0 .*not a Flagz piece"),
    ("flag owner 3", set_fields(lambda f: f.type == FLAG, owner=3),
     r"FLAG with owner 3 .*not a Flagz piece"),
    ("grass with owner", set_fields(lambda f: f.type == GRASS, owner=1),
     r"GRASS with owner 1 .*not a Flagz piece"),
    ("rock with owner", set_fields(lambda f: f.type == ROCK, owner=2),
     r"ROCK with owner 2 .*not a Flagz piece"),
    # next values
    ("next_val with 1 entry", set_next_val(lonely_empty, [0]), r"next_val \[0\] must be 2 values"),
    ("next_val with 3 entries", set_next_val(lonely_empty, [0, 0, 0]),
     r"next_val \[0, 0, 0\] must be 2 values"),
    ("next_val empty", set_next_val(lonely_empty, []), r"next_val \[\] must be 2 values"),
    ("next_val 6", set_next_val(lonely_empty, [6, 0]),
     r"next_val \[6, 0\] must be 2 values in -1..5"),
    ("next_val -2", set_next_val(lonely_empty, [0, -2]),
     r"next_val \[0, -2\] must be 2 values in -1..5"),
    ("next_val on an occupied cell out of range", set_next_val(piece, [0, 9]), r"must be 2 values"),
    ("next value without a neighbour", set_next_val(lonely_empty, [2, 0]),
     r"next_val is \[2, 0\] but its neighbours give \[0, 0\]"),
    ("next value for player 2 without a neighbour", set_next_val(lonely_empty, [0, 1]),
     r"next_val is \[0, 1\] but its neighbours give \[0, 0\]"),
    ("missing next value", set_next_val(reachable_empty, [0, 0], blocked=0),
     r"next_val is \[0, 0\] but its neighbours give"),
    ("unblocked cell next to a 5", set_next_val(blocked_empty, [1, 1], blocked=0),
     r"next_val is \[1, 1\] but its neighbours give"),
    ("blocked without a 5", set_next_val(lonely_empty, [-1, 0], blocked=1),
     r"next_val is \[-1, 0\] but its neighbours give \[0, 0\]"),
    # blocked bits
    ("blocked bit 0 without -1", set_fields(lonely_empty, blocked=1),
     r"blocked bits 1 contradict next_val \[0, 0\]"),
    ("blocked bit 1 without -1", set_fields(lonely_empty, blocked=2),
     r"blocked bits 2 contradict next_val \[0, 0\]"),
    ("blocked bits cleared", set_fields(blocked_empty, blocked=0),
     r"blocked bits 0 contradict next_val"),
    ("blocked bits on a piece", set_fields(lambda f: piece(f) and f.blocked == 0, blocked=3),
     r"blocked bits 3 contradict"),
    # counters
    ("free_cells too high", bump(["free_cells"], +1), r"free_cells is \d+ but the cells give \d+"),
    ("free_cells too low", bump(["free_cells"], -1), r"free_cells is \d+ but the cells give \d+"),
    ("normal_moves of player 1", bump(["normal_moves"], +1, index=0),
     r"normal_moves is \(\d+, \d+\) but the cells give"),
    ("normal_moves of player 2", bump(["normal_moves"], -1, index=1),
     r"normal_moves is \(\d+, \d+\) but the cells give"),
    ("normal_moves with 1 entry", truncate("normal_moves", 1), r"need 2 entries each"),
    ("normal_moves with 3 entries", extend("normal_moves", [0]), r"need 2 entries each"),
    ("score of player 1", bump(["board", "score"], +1, index=0),
     r"score is \(\d+, \d+\) but the cells give"),
    ("score of player 2", bump(["board", "score"], -3, index=1),
     r"score is \(-?\d+, -?\d+\) but the cells give"),
    ("score with 1 entry", truncate("score", 1), r"need 2 entries each"),
    ("resources with 1 entry", truncate("resources", 1), r"need 2 entries each"),
    # flags and resources
    ("a flag too few left", bump(["board", "resources", 0, "num_pieces"], -1, index=FLAG),
     r"player 1 has \d flags on the board and \d left; these must add up to 3"),
    ("a flag too many left", bump(["board", "resources", 1, "num_pieces"], +1, index=FLAG),
     r"player 2 has \d flags on the board and \d left; these must add up to 3"),
    ("4 flags left", set_flags_left(1, 4), r"resources of player 1 .*0..3 flags"),
    ("negative flags left", set_flags_left(2, -1), r"resources of player 2 .*0..3 flags"),
    ("limited normal pieces", set_resource(1, NORMAL, 20), r"resources of player 1 .*NORMAL = -1"),
    ("7 resource counts", drop_resource_count, r"resources of player 1 .*8 counts"),
    # turn, move counter and game state
    ("turn 0", on_board(turn=0), r"turn is 0, expected 1 or 2"),
    ("turn 3", on_board(turn=3), r"turn is 3, expected 1 or 2"),
    ("turn -1", on_board(turn=-1), r"turn is -1, expected 1 or 2"),
    ("negative move counter", on_board(move=-1), r"move counter is negative"),
    ("state INITIAL", on_board(state=pb.Board.INITIAL), r"game state INITIAL"),
    ("state FINISHED", on_board(state=pb.Board.FINISHED),
     r"state says FINISHED but the position is still running"),
    ("unknown game state", on_board(state=7), r"game state 7"),
    # other messages in the oneof
    ("classic", other_variant("classic"), r"expected a flagz game state, got classic"),
    ("freeform", other_variant("freeform"), r"expected a flagz game state, got freeform"),
    ("empty GameEngineState", clear, r"expected a flagz game state, got none"),
    ("flagz without a board", clear_board, r"no board"),
]


@pytest.mark.parametrize("mutate, problem", [pytest.param(m, p, id=n) for n, m, p in BAD_STATES])
def test_malformed_states_are_rejected(midgame, mutate, problem):
    msg = parse(midgame)
    Board.from_proto(msg)                       # the unmutated state is fine
    mutate(msg)
    with pytest.raises(InvalidStateError, match=problem):
        Board.from_proto(msg)
    with pytest.raises(InvalidStateError, match=problem):
        Board.from_proto(msg.SerializeToString())


@pytest.mark.parametrize("mutate, problem", [
    pytest.param(on_board(state=pb.Board.FINISHED),
                 r"state says FINISHED but the position is still running", id="finished"),
    pytest.param(set_fields(lonely_empty, type=FIRE), r"type 4", id="fire"),
    pytest.param(set_flags_left(1, 2), r"add up to 3", id="flags"),
    pytest.param(bump(["free_cells"], -85), r"free_cells is 0 but the cells give 85", id="free"),
    pytest.param(set_next_val(lonely_empty, [1, 0]), r"neighbours give \[0, 0\]", id="next_val"),
    pytest.param(on_board(state=pb.Board.INITIAL), r"INITIAL", id="initial"),
])
def test_malformed_initial_states_are_rejected(fixture_states, mutate, problem):
    msg = pb.GameEngineState()
    msg.CopyFrom(fixture_states[5])
    mutate(msg)
    with pytest.raises(InvalidStateError, match=problem):
        Board.from_proto(msg)


def test_running_flag_on_a_finished_game_is_rejected(finished):
    msg = parse(finished)
    assert msg.flagz.board.state == pb.Board.FINISHED
    assert Board.from_proto(msg).is_over
    msg.flagz.board.state = pb.Board.RUNNING
    with pytest.raises(InvalidStateError, match=r"state says RUNNING but the position is over"):
        Board.from_proto(msg)


def test_turn_of_a_stuck_player_is_rejected():
    # Player 2 has used its flags and its 5s touch no empty cell: it is player 1's turn.
    board = Board.from_ascii("""
x1  ..  ..  ##  ##  ##  ##  ##  o5  o5
  ##  ##  ##  ##  ##  ##  ##  ##  ##
xF  ##  ##  oF  oF  oF  ##  ##  ##  ##
""", fill="##")
    msg = board.to_proto()
    assert Board.from_proto(msg).turn == 1
    msg.flagz.board.turn = 2
    with pytest.raises(InvalidStateError,
                       match=r"turn is 2 but player 2 cannot move and player 1 can"):
        Board.from_proto(msg)


@pytest.mark.parametrize("data", [
    b"\xff" * 8,
    b"garbage!",
    b"\x00",
    bytes(range(256)),
    b"\x0a\x05\x0a\x03\x08",        # a flagz message whose board is cut short
])
def test_garbage_bytes_are_rejected(data):
    with pytest.raises(InvalidStateError, match=r"not a GameEngineState protobuf"):
        Board.from_proto(data)


@pytest.mark.parametrize("data", [b"", b"\x08\x01", b"\x0a\x00"])
def test_bytes_without_a_flagz_board_are_rejected(data):
    with pytest.raises(InvalidStateError, match=r"flagz game state|no board"):
        Board.from_proto(data)


def test_from_proto_rejects_other_python_types():
    with pytest.raises(TypeError, match="expected hexz_pb2.GameEngineState, got str"):
        Board.from_proto("not a message")
    with pytest.raises(TypeError, match="expected hexz_pb2.GameEngineState, got Board"):
        Board.from_proto(pb.Board())


def test_stale_next_values_on_occupied_cells_travel_unchanged(midgame):
    # The Go server leaves next_val of a cell as it was when the cell became occupied.
    msg = parse(midgame)
    f = cell(msg, piece)
    del f.next_val[:]
    f.next_val.extend([3, -1])
    f.blocked = 2
    board = roundtrip(msg)
    i = find(msg, piece)
    assert list(board.to_proto().flagz.board.flat_fields[i].next_val) == [3, -1]


def test_error_is_a_value_error():
    assert issubclass(InvalidStateError, ValueError)
