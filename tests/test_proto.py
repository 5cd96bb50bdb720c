"""The wire formats: generated code is current, and the field numbers are those of FLAGZ.md 8.

The game-state and CPU-player messages must keep the hexz Go server's field numbers so that bytes
interoperate; the training messages keep the numbers of the hexz project where it had them.
"""

import re
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor as FD

from pyhexz import hexz_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "proto" / "hexz.proto"

OPT, REP = "optional", "repeated"


def _label(field) -> str:
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:                  # older runtimes only have `label`
        repeated = field.label == FD.LABEL_REPEATED
    return REP if repeated else OPT


def _default_json_name(name: str) -> str:
    """protoc's default JSON name: lowerCamelCase of the field name."""
    out, upper = [], False
    for ch in name:
        if ch == "_":
            upper = True
        else:
            out.append(ch.upper() if upper else ch)
            upper = False
    return "".join(out)


def _normalize(fdp: descriptor_pb2.FileDescriptorProto) -> None:
    """Drops what the Python generator leaves out of serialized_pb: source info and default
    JSON names (a custom json_name is kept, and compared)."""
    fdp.ClearField("source_code_info")

    def strip(messages):
        for m in messages:
            for f in list(m.field) + list(m.extension):
                if f.HasField("json_name") and f.json_name == _default_json_name(f.name):
                    f.ClearField("json_name")
            strip(m.nested_type)

    strip(fdp.message_type)
    for f in fdp.extension:
        if f.HasField("json_name") and f.json_name == _default_json_name(f.name):
            f.ClearField("json_name")


def _version(text: str) -> tuple:
    """(major, minor, patch) of a version string such as 7.36.2 or 7.36.0rc1."""
    parts = re.findall(r"\d+", text)[:3]
    return tuple(int(p) for p in parts + ["0"] * (3 - len(parts)))


def test_generated_module_matches_the_proto_file(tmp_path):
    protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools is not installed")
    out = tmp_path / "hexz.desc"
    rc = protoc.main(["protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={out}", str(PROTO)])
    assert rc == 0, f"protoc failed on {PROTO}"
    fresh_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    assert len(fresh_set.file) == 1
    fresh = fresh_set.file[0]
    generated = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    _normalize(fresh)
    _normalize(generated)
    assert generated == fresh, (
        "src/pyhexz/hexz_pb2.py is stale: regenerate it with `python tools/gen_proto.py`")


def test_generated_code_is_not_newer_than_the_runtime():
    import google.protobuf

    header = Path(pb.__file__).read_text(encoding="utf-8").splitlines()[:10]
    found = [re.search(r"Protobuf Python Version: (\S+)", line) for line in header]
    found = [m.group(1) for m in found if m]
    assert found, "no 'Protobuf Python Version' line in the header of hexz_pb2.py"
    generated, runtime = _version(found[0]), _version(google.protobuf.__version__)
    assert generated <= runtime, (
        f"hexz_pb2.py was generated for protobuf {found[0]}, newer than the installed "
        f"runtime {google.protobuf.__version__}")


def test_package_and_syntax():
    fdp = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert fdp.package == "hexzpb"
    assert fdp.syntax == "proto3"


# (message, field, number, type, label) from FLAGZ.md section 8.
FIELDS = [
    (pb.Board, "turn", 1, FD.TYPE_INT32, OPT),
    (pb.Board, "move", 2, FD.TYPE_INT32, OPT),
    (pb.Board, "last_revealed", 3, FD.TYPE_INT32, OPT),
    (pb.Board, "flat_fields", 4, FD.TYPE_MESSAGE, REP),
    (pb.Board, "score", 5, FD.TYPE_INT32, REP),
    (pb.Board, "resources", 6, FD.TYPE_MESSAGE, REP),
    (pb.Board, "state", 7, FD.TYPE_ENUM, OPT),
    (pb.Field, "type", 1, FD.TYPE_ENUM, OPT),
    (pb.Field, "owner", 2, FD.TYPE_INT32, OPT),
    (pb.Field, "hidden", 3, FD.TYPE_BOOL, OPT),
    (pb.Field, "value", 4, FD.TYPE_INT32, OPT),
    (pb.Field, "blocked", 5, FD.TYPE_INT32, OPT),
    (pb.Field, "lifetime", 6, FD.TYPE_INT32, OPT),
    (pb.Field, "next_val", 7, FD.TYPE_INT32, REP),
    (pb.ResourceInfo, "num_pieces", 1, FD.TYPE_INT32, REP),
    (pb.GameEngineState, "flagz", 1, FD.TYPE_MESSAGE, OPT),
    (pb.GameEngineState, "classic", 2, FD.TYPE_MESSAGE, OPT),
    (pb.GameEngineState, "freeform", 3, FD.TYPE_MESSAGE, OPT),
    (pb.GameEngineFlagzState, "board", 1, FD.TYPE_MESSAGE, OPT),
    (pb.GameEngineFlagzState, "free_cells", 2, FD.TYPE_INT32, OPT),
    (pb.GameEngineFlagzState, "normal_moves", 3, FD.TYPE_INT32, REP),
    (pb.GameEngineMove, "player_num", 1, FD.TYPE_INT32, OPT),
    (pb.GameEngineMove, "move", 2, FD.TYPE_INT32, OPT),
    (pb.GameEngineMove, "row", 3, FD.TYPE_INT32, OPT),
    (pb.GameEngineMove, "col", 4, FD.TYPE_INT32, OPT),
    (pb.GameEngineMove, "cell_type", 5, FD.TYPE_ENUM, OPT),
    (pb.ModelKey, "name", 1, FD.TYPE_STRING, OPT),
    (pb.ModelKey, "checkpoint", 2, FD.TYPE_INT32, OPT),
    (pb.SuggestMoveRequest, "max_think_time_ms", 1, FD.TYPE_INT64, OPT),
    (pb.SuggestMoveRequest, "game_engine_state", 2, FD.TYPE_MESSAGE, OPT),
    (pb.SuggestMoveRequest, "max_iterations", 3, FD.TYPE_INT64, OPT),
    (pb.SuggestMoveResponse, "move", 1, FD.TYPE_MESSAGE, OPT),
    (pb.SuggestMoveResponse, "move_stats", 2, FD.TYPE_MESSAGE, OPT),
    (pb.SuggestMoveStats, "moves", 1, FD.TYPE_MESSAGE, REP),
    (pb.SuggestMoveStats, "value", 2, FD.TYPE_FLOAT, OPT),
    (pb.SuggestMoveStats.ScoredMove, "row", 1, FD.TYPE_INT32, OPT),
    (pb.SuggestMoveStats.ScoredMove, "col", 2, FD.TYPE_INT32, OPT),
    (pb.SuggestMoveStats.ScoredMove, "type", 3, FD.TYPE_ENUM, OPT),
    (pb.SuggestMoveStats.ScoredMove, "scores", 4, FD.TYPE_MESSAGE, REP),
    (pb.SuggestMoveStats.Score, "kind", 1, FD.TYPE_ENUM, OPT),
    (pb.SuggestMoveStats.Score, "score", 2, FD.TYPE_FLOAT, OPT),
    (pb.TrainingExample, "unix_micros", 1, FD.TYPE_INT64, OPT),
    (pb.TrainingExample, "board", 2, FD.TYPE_BYTES, OPT),
    (pb.TrainingExample, "move_probs", 3, FD.TYPE_BYTES, OPT),
    (pb.TrainingExample, "result", 4, FD.TYPE_FLOAT, OPT),
    (pb.TrainingExample, "turn", 7, FD.TYPE_INT32, OPT),
    (pb.TrainingExample, "action_mask", 8, FD.TYPE_BYTES, OPT),
    (pb.TrainingExample, "move", 9, FD.TYPE_MESSAGE, OPT),
    (pb.TrainingExample, "model_key", 11, FD.TYPE_MESSAGE, OPT),
    (pb.AddTrainingExamplesRequest, "examples", 1, FD.TYPE_MESSAGE, REP),
    (pb.AddTrainingExamplesRequest, "execution_id", 2, FD.TYPE_STRING, OPT),
    (pb.AddTrainingExamplesRequest, "game_id", 4, FD.TYPE_STRING, OPT),
    (pb.AddTrainingExamplesResponse, "status", 1, FD.TYPE_ENUM, OPT),
    (pb.AddTrainingExamplesResponse, "latest_model", 2, FD.TYPE_MESSAGE, OPT),
    (pb.AddTrainingExamplesResponse, "error_message", 3, FD.TYPE_STRING, OPT),
]


@pytest.mark.parametrize(
    "message, name, number, ftype, label",
    [pytest.param(*f, id=f"{f[0].DESCRIPTOR.name}.{f[1]}") for f in FIELDS],
)
def test_field_numbers(message, name, number, ftype, label):
    field = message.DESCRIPTOR.fields_by_name.get(name)
    assert field is not None, f"{message.DESCRIPTOR.full_name} has no field {name}"
    assert field.number == number
    assert field.type == ftype
    assert _label(field) == label


# Message and enum types of the fields that refer to one.
FIELD_TYPES = [
    (pb.Board, "flat_fields", "hexzpb.Field"),
    (pb.Board, "resources", "hexzpb.ResourceInfo"),
    (pb.Board, "state", "hexzpb.Board.GameState"),
    (pb.Field, "type", "hexzpb.Field.CellType"),
    (pb.GameEngineState, "flagz", "hexzpb.GameEngineFlagzState"),
    (pb.GameEngineFlagzState, "board", "hexzpb.Board"),
    (pb.GameEngineMove, "cell_type", "hexzpb.Field.CellType"),
    (pb.SuggestMoveRequest, "game_engine_state", "hexzpb.GameEngineState"),
    (pb.SuggestMoveResponse, "move", "hexzpb.GameEngineMove"),
    (pb.SuggestMoveResponse, "move_stats", "hexzpb.SuggestMoveStats"),
    (pb.SuggestMoveStats, "moves", "hexzpb.SuggestMoveStats.ScoredMove"),
    (pb.SuggestMoveStats.ScoredMove, "type", "hexzpb.Field.CellType"),
    (pb.SuggestMoveStats.ScoredMove, "scores", "hexzpb.SuggestMoveStats.Score"),
    (pb.SuggestMoveStats.Score, "kind", "hexzpb.SuggestMoveStats.ScoreKind"),
    (pb.TrainingExample, "move", "hexzpb.GameEngineMove"),
    (pb.TrainingExample, "model_key", "hexzpb.ModelKey"),
    (pb.AddTrainingExamplesRequest, "examples", "hexzpb.TrainingExample"),
    (pb.AddTrainingExamplesResponse, "status", "hexzpb.AddTrainingExamplesResponse.Status"),
    (pb.AddTrainingExamplesResponse, "latest_model", "hexzpb.ModelKey"),
]


@pytest.mark.parametrize(
    "message, name, type_name",
    [pytest.param(*f, id=f"{f[0].DESCRIPTOR.name}.{f[1]}") for f in FIELD_TYPES],
)
def test_field_types(message, name, type_name):
    field = message.DESCRIPTOR.fields_by_name[name]
    target = field.message_type or field.enum_type
    assert target.full_name == type_name


def test_game_engine_state_is_a_oneof():
    oneofs = pb.GameEngineState.DESCRIPTOR.oneofs_by_name
    assert list(oneofs) == ["state"]
    assert [f.name for f in oneofs["state"].fields] == ["flagz", "classic", "freeform"]


ENUMS = [
    (pb.Board.GameState, {"INITIAL": 0, "RUNNING": 1, "FINISHED": 2}),
    (pb.Field.CellType, {"NORMAL": 0, "DEAD": 1, "GRASS": 2, "ROCK": 3, "FIRE": 4, "FLAG": 5,
                         "PEST": 6, "DEATH": 7}),
    (pb.SuggestMoveStats.ScoreKind, {"FINAL": 0, "MCTS_PRIOR": 1}),
    (pb.AddTrainingExamplesResponse.Status, {"STATUS_UNSPECIFIED": 0, "ACCEPTED": 1,
                                            "REJECTED_WRONG_MODEL": 2,
                                            "REJECTED_AT_CAPACITY": 3, "REJECTED_OTHER": 4}),
]


@pytest.mark.parametrize("enum, values",
                         [pytest.param(e, v, id=e.DESCRIPTOR.name) for e, v in ENUMS])
def test_enum_values(enum, values):
    for name, number in values.items():
        assert enum.Value(name) == number
    assert {v.name: v.number for v in enum.DESCRIPTOR.values} == values


def test_known_bytes_decode():
    # Hand-encoded wire bytes: GameEngineState{flagz{board{turn: 2, move: 7}, free_cells: 3}}.
    board = bytes([0x08, 0x02, 0x10, 0x07])
    flagz = bytes([0x0A, len(board)]) + board + bytes([0x10, 0x03])
    data = bytes([0x0A, len(flagz)]) + flagz
    state = pb.GameEngineState.FromString(data)
    assert state.WhichOneof("state") == "flagz"
    assert (state.flagz.board.turn, state.flagz.board.move, state.flagz.free_cells) == (2, 7, 3)
    # GameEngineMove{player_num: 1, move: 4, row: 3, col: 2, cell_type: FLAG}
    move = pb.GameEngineMove(player_num=1, move=4, row=3, col=2, cell_type=pb.Field.FLAG)
    assert move.SerializeToString() == bytes([0x08, 1, 0x10, 4, 0x18, 3, 0x20, 2, 0x28, 5])
