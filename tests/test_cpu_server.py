"""The remote CPU player service (pyhexz.cpu_server, cpu_player, timedsearch), over real HTTP.

Apps run in a werkzeug server thread (or as the original README's commands in subprocesses);
requests are real JSON and protobuf bytes; Redis is a real redis-server.
"""

from __future__ import annotations

import base64
import collections
import gzip
import json
import logging
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import free_port, serve_app, stop_processes, wait_for
from pyhexz import hexz_pb2 as pb
from pyhexz.cpu.app import CPU_EXTENSION, SUGGEST_PATH, CpuServerConfig, build_player, create_app
from pyhexz.cpu.player import NoModelYet, load_served_model
from pyhexz.game.board import Board
from pyhexz.infra.modelbus import ModelBus
from pyhexz.infra.storage import MODEL_FILE, SCRIPT_FILE, CheckpointRepo, LocalStorage, sha256
from pyhexz.nn import HexzNet, ModelLoadError, export_torchscript, save_checkpoint
from pyhexz.search.timed import TimedSearch, think
from pyhexz.train.arena import load_openings, random_positions

REPO_ROOT = Path(__file__).resolve().parents[1]
FINAL, PRIOR = pb.SuggestMoveStats.FINAL, pb.SuggestMoveStats.MCTS_PRIOR
SUGGEST = SUGGEST_PATH


@contextmanager
def served(cfg: CpuServerConfig, player=None):
    """The app of `cfg` (and `player`, else the one `cfg` describes) behind a real HTTP server
    in a thread; yields its base URL."""
    app = create_app(cfg, player)
    try:
        with serve_app(app) as url:
            yield url
    finally:
        app.extensions[CPU_EXTENSION].player.close()


@pytest.fixture(scope="module")
def openings() -> list[Board]:
    return load_openings()


@pytest.fixture(scope="module")
def positions(openings) -> list[Board]:
    """Openings, middle games and late positions (both players to move), all running."""
    return list(random_positions(openings, (0, 0, 1, 9, 30, 45, 60), random.Random(7)))


@pytest.fixture(scope="module")
def rollout_url():
    with served(CpuServerConfig(max_think_ms=400, default_think_ms=40, search_slots=4,
                                rollout=True)) as url:
        yield url


@pytest.fixture(scope="module")
def hexz_model(fixtures_dir: Path) -> Path:
    path = fixtures_dir / "hexz_conv2d_scriptmodule.pt"
    if not path.exists():
        pytest.skip("hexz fixture model missing")
    return path


@pytest.fixture(scope="module")
def neural_url(hexz_model: Path):
    with served(CpuServerConfig(model_path=str(hexz_model), max_think_ms=400)) as url:
        yield url


def state_b64(board: Board) -> str:
    return base64.b64encode(board.to_proto().SerializeToString()).decode()


def post_json(url: str, body, **kw) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(url + SUGGEST, data=data, timeout=30,
                         headers={"Content-Type": "application/json", **kw.pop("headers", {})},
                         **kw)


def post_proto(url: str, msg, **kw) -> requests.Response:
    data = msg if isinstance(msg, bytes) else msg.SerializeToString()
    return requests.post(url + SUGGEST, data=data, timeout=30,
                         headers={"Content-Type": "application/x-protobuf",
                                  **kw.pop("headers", {})}, **kw)


def suggest_request(board: Board, think_ms: int = 0, iterations: int = 0) -> pb.SuggestMoveRequest:
    return pb.SuggestMoveRequest(max_think_time_ms=think_ms, max_iterations=iterations,
                                 game_engine_state=board.to_proto())


def assert_legal_json(r: requests.Response, board: Board) -> dict:
    """A legal JSON answer with the Go player's stats; returns the stats."""
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert set(body) == {"move", "stats"} and set(body["move"]) == {"move", "row", "col", "type"}
    m = body["move"]
    assert m["move"] == board.move
    assert (m["row"], m["col"], m["type"]) in board.legal_moves()
    check_go_stats(body["stats"], board, (m["row"], m["col"], m["type"]))
    assert str(body["stats"]["Iterations"]) == r.headers["X-Hexz-Iterations"]
    return body["stats"]


GO_STATS = {"Iterations", "MaxDepth", "TreeSize", "LeafNodes", "BranchNodes", "VisitCounts",
            "Elapsed", "Moves"}
GO_MOVE = {"Row", "Col", "CellType", "U", "Q", "Iterations"}


def check_go_stats(stats: dict, board: Board, played: tuple) -> None:
    """`stats` has the shape of the Go player's MCTSStats (FLAGZ.md section 9: Go's field
    names, per-depth lists root first, visit-count maps with numbers as keys, nanoseconds, one
    entry per root move with Q in [0, 1]) and its numbers add up."""
    assert set(stats) == GO_STATS
    for k in ("Iterations", "MaxDepth", "TreeSize", "Elapsed"):
        assert isinstance(stats[k], int) and not isinstance(stats[k], bool), k
    depths = stats["MaxDepth"]
    assert depths >= 2 and stats["Elapsed"] > 0
    assert len(stats["LeafNodes"]) == len(stats["BranchNodes"]) == len(stats["VisitCounts"]) \
        == depths
    assert (stats["LeafNodes"][0], stats["BranchNodes"][0]) == (0, 1)   # the root, searched
    assert stats["BranchNodes"][-1] == 0
    assert sum(stats["LeafNodes"]) + sum(stats["BranchNodes"]) == stats["TreeSize"]
    for d, counts in enumerate(stats["VisitCounts"]):
        assert all(k.isdigit() and isinstance(v, int) and v > 0 for k, v in counts.items())
        assert sum(counts.values()) == stats["LeafNodes"][d] + stats["BranchNodes"][d]
    # The root's own first visit (its evaluation, or the rollout that expands it) is extra.
    assert stats["VisitCounts"][0] == {str(stats["Iterations"] + 1): 1}
    moves = stats["Moves"]
    assert all(set(m) == GO_MOVE for m in moves)
    assert sorted((m["Row"], m["Col"], m["CellType"]) for m in moves) == \
        sorted(board.legal_moves())
    assert sum(m["Iterations"] for m in moves) == stats["Iterations"]
    assert collections.Counter(str(m["Iterations"]) for m in moves) == \
        collections.Counter(stats["VisitCounts"][1])   # depth 1: the root's moves
    for m in moves:
        assert 0.0 <= m["Q"] <= 1.0 and m["U"] >= 0.0
        if m["Iterations"] == 0:
            assert m["Q"] == 0.0   # as Go reports a move never visited
    by_move = {(m["Row"], m["Col"], m["CellType"]): m for m in moves}
    assert by_move[played]["Iterations"] == max(m["Iterations"] for m in moves)


def check_stats(resp: pb.SuggestMoveResponse, board: Board) -> dict:
    """The move and its statistics are consistent; returns {move: (share, prior)}."""
    legal = set(board.legal_moves())
    m = resp.move
    assert (m.player_num, m.move) == (board.turn, board.move)
    assert (m.row, m.col, m.cell_type) in legal
    stats = {}
    for sm in resp.move_stats.moves:
        assert [s.kind for s in sm.scores] == [FINAL, PRIOR]   # FINAL first
        stats[(sm.row, sm.col, sm.type)] = (sm.scores[0].score, sm.scores[1].score)
    assert stats and set(stats) <= legal
    shares = [s for s, _ in stats.values()]
    assert sum(shares) == pytest.approx(1.0, abs=1e-4)
    assert sum(p for _, p in stats.values()) == pytest.approx(1.0, abs=1e-3)
    assert stats[(m.row, m.col, m.cell_type)][0] == max(shares)   # the most visited is played
    assert -1.0 <= resp.move_stats.value <= 1.0
    return stats


# --------------------------------------------------------------------------
# Answers: legal moves, both encodings
# --------------------------------------------------------------------------


def test_json_answers_are_legal_moves_at_the_board_move_counter(rollout_url, positions) -> None:
    for b in positions:
        r = post_json(rollout_url, {"maxThinkTime": 30_000_000, "gameEngineState": state_b64(b)})
        assert_legal_json(r, b)
        assert r.headers["X-Hexz-Model"] == "rollout"


def test_protobuf_answer_has_move_stats(rollout_url, positions) -> None:
    b = positions[3]
    r = post_proto(rollout_url, suggest_request(b, think_ms=60))
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/x-protobuf"
    stats = check_stats(pb.SuggestMoveResponse.FromString(r.content), b)
    # Rollout search has no network: every legal move is a root move with a uniform prior.
    assert set(stats) == set(b.legal_moves())
    assert {round(p, 5) for _, p in stats.values()} == {round(1 / len(stats), 5)}


def test_neural_player_with_the_hexz_torchscript_model(neural_url, positions) -> None:
    for b in positions[:3]:
        r = post_proto(neural_url, suggest_request(b, think_ms=150))
        stats = check_stats(pb.SuggestMoveResponse.FromString(r.content), b)
        assert r.headers["X-Hexz-Model"] == "hexz_conv2d_scriptmodule:0"
        # Network priors, not uniform ones.
        assert len({round(p, 4) for _, p in stats.values()}) > 1
    status = requests.get(neural_url + "/status", timeout=10).json()
    assert status["player"] == "neural MCTS"
    assert status["model"]["name"] == "hexz_conv2d_scriptmodule"
    assert status["model"]["sha256"] == sha256(Path(status["model"]["source"]).read_bytes())


def test_gzip_bodies_are_accepted(rollout_url, positions) -> None:
    b = positions[1]
    body = gzip.compress(json.dumps({"maxThinkTime": 20_000_000,
                                     "gameEngineState": state_b64(b)}).encode())
    assert_legal_json(post_json(rollout_url, body, headers={"Content-Encoding": "gzip"}), b)


def test_a_forced_move_is_answered_at_once(rollout_url) -> None:
    # Player 1 has no flags left and one cell with a next value: one legal move.
    b = Board.from_ascii("""
x1  ..  ##  ##  ##  ##  ##  ##  ##  ..
  ##  ##  ##  ##  ##  ##  ##  ##  ##
xF  xF  xF  ##  oF  ##  ##  ##  ##  ##
""", fill="##")
    assert len(b.legal_moves()) == 1 and b.turn == 1
    r = post_proto(rollout_url, suggest_request(b, think_ms=400))
    check_stats(pb.SuggestMoveResponse.FromString(r.content), b)
    # Behind it: one round (for the statistics), not the think time; the deadline is a
    # minute away, so only the forced move's rule can end the search.
    s = TimedSearch(2)
    slot = s.add(b, time.monotonic() + 60)
    assert slot in s.step() and s.rounds == 1 and s.running == 0


# --------------------------------------------------------------------------
# Think time and iterations
# --------------------------------------------------------------------------


# The think-time tests read the budget the server gave the search (X-Hexz-Budget-Ms: the think
# time as capped and shortened, less the 5 ms margin), not the caller's wall time, which
# depends on the machine's speed and load. BENCHMARKS.md ("CPU player") measures wall times.
MARGIN_MS = 5


def budget_ms(r: requests.Response) -> float:
    assert r.status_code == 200, r.text
    return float(r.headers["X-Hexz-Budget-Ms"])


def test_think_time_is_honoured_json_nanoseconds_and_protobuf_ms(rollout_url, openings) -> None:
    b = openings[5]
    r = post_json(rollout_url, {"maxThinkTime": 250_000_000, "gameEngineState": state_b64(b)})
    assert_legal_json(r, b)
    assert budget_ms(r) == 250 - MARGIN_MS
    r = post_proto(rollout_url, suggest_request(b, think_ms=120))
    assert budget_ms(r) == 120 - MARGIN_MS
    assert int(r.headers["X-Hexz-Iterations"]) >= 1


def test_think_time_is_capped_by_the_server_maximum(rollout_url, openings) -> None:
    # Thirty plies in: from an opening, a fast machine fills the rollout tree's node budget
    # (every expansion adds ~85 flag moves) before 0.4 s and the search stops early.
    b = openings[6].copy()
    for i in range(30):
        b.random_move(i)
    r = post_proto(rollout_url, suggest_request(b, think_ms=60_000))
    assert budget_ms(r) == 400 - MARGIN_MS           # max_think_ms = 400
    # No think time: the server's default (40 ms).
    r = post_json(rollout_url, {"gameEngineState": state_b64(b)})
    assert_legal_json(r, b)
    assert budget_ms(r) == 40 - MARGIN_MS


def test_request_deadline_header_shortens_the_think_time(rollout_url, openings) -> None:
    b = openings[7]
    deadline = datetime.now(timezone.utc) + timedelta(milliseconds=120)
    r = post_proto(rollout_url, suggest_request(b, think_ms=400), headers={
        "X-Request-Deadline": deadline.isoformat().replace("+00:00", "Z")})
    # Shortened to what is left of the 120 ms (less on a slow way in), not the 400 asked.
    assert budget_ms(r) <= 120 - MARGIN_MS


@pytest.fixture(scope="module")
def patient_urls(hexz_model: Path):
    """A rollout and a neural server that let a search think for a minute: tests of iteration
    counts must not depend on how many simulations this machine manages in a think time."""
    with served(CpuServerConfig(max_think_ms=60_000, rollout=True)) as rollout, \
            served(CpuServerConfig(model_path=str(hexz_model), max_think_ms=60_000)) as neural:
        yield {"rollout": rollout, "neural": neural}


@pytest.mark.parametrize("which", ["rollout", "neural"])
def test_max_iterations_caps_the_simulations(which, patient_urls, openings) -> None:
    url = patient_urls[which]
    b = openings[8]
    r = post_proto(url, suggest_request(b, think_ms=60_000, iterations=12))
    assert r.status_code == 200
    assert r.headers["X-Hexz-Iterations"] == "12"
    stats = check_stats(pb.SuggestMoveResponse.FromString(r.content), b)
    # The root's own expansion (rollout) or evaluation (neural) is not one of the 12.
    visits = [share * 12 for share, _ in stats.values()]
    assert np.allclose(visits, np.round(visits), atol=1e-3) and round(sum(visits)) == 12
    # One simulation: one visit, to the move played.
    r = post_proto(url, suggest_request(b, think_ms=60_000, iterations=1))
    resp = pb.SuggestMoveResponse.FromString(r.content)
    stats = check_stats(resp, b)
    assert stats[(resp.move.row, resp.move.col, resp.move.cell_type)][0] == 1.0


def test_server_maximum_iterations_caps_requests(openings) -> None:
    b = openings[9]
    with served(CpuServerConfig(max_iterations=30, max_think_ms=60_000, rollout=True)) as url:
        for asked in (0, 1000, 7):
            r = post_proto(url, suggest_request(b, think_ms=60_000, iterations=asked))
            assert r.headers["X-Hexz-Iterations"] == str(min(asked or 30, 30))


def test_concurrent_requests_share_the_search(openings) -> None:
    """Six requests for the same position at once, four search slots: all are answered, each
    with the budget of its think time (waiting for a slot counts against it). That the slots
    searched side by side share the rounds evenly is TimedSearch's (the test below); wall
    times under concurrency are in BENCHMARKS.md, "CPU player"."""
    b = openings[10]
    with served(CpuServerConfig(max_think_ms=2000, search_slots=4, rollout=True)) as url:
        with ThreadPoolExecutor(6) as ex:
            results = list(ex.map(
                lambda _: post_proto(url, suggest_request(b, think_ms=300)), range(6)))
        served_now = requests.get(url + "/status", timeout=30).json()
    assert all(budget_ms(r) == 300 - MARGIN_MS for r in results)
    assert all(int(r.headers["X-Hexz-Iterations"]) >= 1 for r in results)
    assert served_now["requests"]["served"] >= 6, served_now["requests"]


def test_timed_search_interleaves_neural_positions_in_one_batch(openings) -> None:
    torch.manual_seed(0)
    from pyhexz.nn import Predictor
    pred = Predictor(HexzNet(1, 8))
    s = TimedSearch(3, pred, leaves_per_round=4, round_seconds=10.0)   # rounds not shortened
    far = time.monotonic() + 60
    slots = [s.add(openings[i], far, max_iterations=40) for i in range(3)]
    with pytest.raises(RuntimeError, match="busy"):
        s.add(openings[3], far)
    done = {}
    while len(done) < 3:
        done.update(s.step())
    assert s.rounds == 10                      # 40 simulations, 4 per position and round
    assert {done[t].iterations for t in slots} == {40}
    assert all(done[t].visits.sum() == 40 for t in slots)
    r = think(s, openings[4], 0.05)
    assert r.move in openings[4].legal_moves() and r.iterations >= 1


# --------------------------------------------------------------------------
# Bad input: 4xx with a clear message, never a 500
# --------------------------------------------------------------------------


def finished_board(openings) -> Board:
    b = openings[11].copy()
    rng = random.Random(3)
    while not b.is_over:
        b.play(*rng.choice(b.legal_moves()))
    return b


STUCK = """
x1  ..  ..  ##  ##  ##  ##  ##  o5  o5
  ##  ##  ##  ##  ##  ##  ##  ##  ##
xF  ##  ##  oF  oF  oF  ##  ##  ##  ##
"""


def bad_requests(openings) -> list:
    b = openings[0]
    good = b.to_proto()
    over = finished_board(openings)
    over_running = over.to_proto()
    over_running.flagz.board.state = pb.Board.RUNNING
    stuck = Board.from_ascii(STUCK, fill="##").to_proto()
    stuck.flagz.board.turn = 2
    bad_score = b.to_proto()
    bad_score.flagz.board.score[0] = 7
    enc = lambda m: base64.b64encode(m.SerializeToString()).decode()  # noqa: E731
    js = lambda **kw: ("json", json.dumps(kw))  # noqa: E731
    not_int = "maxThinkTime must be a non-negative integer"
    garbage = base64.b64encode(b"\xff\x00garbage").decode()
    return [
        (("json", "{not json"), 400, "not JSON"),
        (("json", "[1, 2]"), 400, "JSON object"),
        (js(maxThinkTime=10), 400, "gameEngineState must be a string"),
        (js(gameEngineState="***"), 400, "not standard base64"),
        (js(gameEngineState=garbage), 400, "invalid game state"),
        (js(gameEngineState=enc(good), maxThinkTime=-5), 400, "maxThinkTime must be >= 0"),
        (js(gameEngineState=enc(good), maxThinkTime="1s"), 400, not_int),
        (js(gameEngineState=enc(good), maxThinkTime=1.5), 400, not_int),
        (js(gameEngineState=enc(good), maxThinkTime=True), 400, not_int),
        (js(gameEngineState=enc(good), maxIterations=-1), 400, "maxIterations must be >= 0"),
        (js(gameEngineState=enc(over.to_proto())), 400, "the game is over"),
        (js(gameEngineState=enc(over_running)), 400, "state says RUNNING but the position is over"),
        (js(gameEngineState=enc(stuck)), 400, "turn is 2 but player 2 cannot move"),
        (js(gameEngineState=enc(bad_score)), 400, "score is"),
        (("proto", b"\xff\xff\xff"), 400, "not a SuggestMoveRequest"),
        (("proto", pb.SuggestMoveRequest(max_think_time_ms=5).SerializeToString()), 400,
         "no game_engine_state"),
        (("proto",
          pb.SuggestMoveRequest(game_engine_state=pb.GameEngineState()).SerializeToString()),
         400, "expected a flagz game state"),
        (("proto", suggest_request(b, think_ms=-1).SerializeToString()), 400, "must be >= 0"),
        (("proto", suggest_request(over).SerializeToString()), 400, "the game is over"),
        (("text/plain", "hello"), 415, "Content-Type 'text/plain'"),
        ((None, b"\x00"), 415, "Content-Type"),
        (("gzip-json", b"not gzip"), 400, "not valid gzip"),
        (("br-json", b"{}"), 415, "Content-Encoding 'br'"),
        (("json", " " * (2 << 20)), 413, "larger than 1048576 bytes"),
    ]


def test_bad_input_gets_4xx_with_a_clear_message(rollout_url, openings) -> None:
    for (kind, body), status, fragment in bad_requests(openings):
        headers = {}
        if kind in ("json", "gzip-json", "br-json"):
            headers["Content-Type"] = "application/json"
        elif kind == "proto":
            headers["Content-Type"] = "application/x-protobuf"
        elif kind is not None:
            headers["Content-Type"] = kind
        if kind == "gzip-json":
            headers["Content-Encoding"] = "gzip"
        if kind == "br-json":
            headers["Content-Encoding"] = "br"
        r = requests.post(rollout_url + SUGGEST, data=body, headers=headers, timeout=30)
        assert r.status_code == status, (kind, body[:80], r.text)
        assert r.headers["Content-Type"] == "application/json"
        assert fragment in r.json()["error"], (fragment, r.json())
    r = requests.get(rollout_url + SUGGEST, timeout=10)
    assert r.status_code == 405 and "error" in r.json()
    status = requests.get(rollout_url + "/status", timeout=10).json()
    assert status["requests"]["by_status"]["400"] >= 18
    assert "500" not in status["requests"]["by_status"]


# A valid state, its bytes mutated: most mutations give invalid states, some stay valid.
def _mutated(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    out = bytearray(data)
    for pos, val in edits:
        out[pos % len(out)] = val
    return bytes(out[:max(1, len(out) - cut)])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4), max_leaves=10)


@st.composite
def fuzz_bodies(draw, states: list[bytes]) -> tuple[str, bytes]:
    state = draw(st.sampled_from(states))
    edits = draw(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4))
    mutated = _mutated(state, edits, draw(st.integers(0, 3)))
    kind = draw(st.sampled_from(["json", "proto", "other"]))
    think = draw(st.one_of(st.integers(-2, 30_000_000), json_values))
    if kind == "json":
        body = draw(st.one_of(
            st.binary(max_size=64),
            json_values.map(lambda v: json.dumps(v).encode()),
            st.just(json.dumps({"maxThinkTime": think,
                                "gameEngineState": base64.b64encode(mutated).decode()}).encode()),
            st.just(json.dumps({"maxThinkTime": 1_000_000, "gameEngineState":
                                draw(st.text(max_size=30))}).encode()),
        ))
    elif kind == "proto":
        req = pb.SuggestMoveRequest(max_think_time_ms=draw(st.integers(-3, 25)),
                                    max_iterations=draw(st.integers(-3, 50)))
        try:
            req.game_engine_state.ParseFromString(mutated)
            body = req.SerializeToString()
        except Exception:  # the mutation broke the wire format: send the raw bytes instead
            body = mutated
        body = draw(st.sampled_from([body, body[:len(body) // 2], draw(st.binary(max_size=64))]))
    else:
        body = draw(st.binary(max_size=64))
    return kind, body


@pytest.fixture(scope="module")
def fuzz_url():
    with served(CpuServerConfig(max_think_ms=15, default_think_ms=5, search_slots=2,
                                rollout=True)) as url:
        yield url


def test_fuzz_malformed_bodies_never_cause_a_500(fuzz_url, openings, positions) -> None:
    states = [b.to_proto().SerializeToString() for b in positions[:4]]
    ctypes = {"json": "application/json", "proto": "application/x-protobuf"}

    @settings(max_examples=200, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(fuzz_bodies(states), st.sampled_from(["", "text/html", "application/json; charset=x"]))
    def check(kind_body, other_type):
        kind, body = kind_body
        ctype = ctypes.get(kind, other_type)
        r = requests.post(fuzz_url + SUGGEST, data=body, timeout=30,
                          headers={"Content-Type": ctype} if ctype else {})
        assert r.status_code in (200, 400, 413, 415), (r.status_code, r.text)
        if r.status_code != 200:
            assert r.json()["error"]
            return
        # Accepted: the state was valid, and the answer is legal for it.
        if kind == "json" or ctype.startswith("application/json"):
            state = base64.b64decode(json.loads(body)["gameEngineState"])
            board = Board.from_proto(state)
            assert_legal_json(r, board)
        else:
            req = pb.SuggestMoveRequest.FromString(body)
            board = Board.from_proto(req.game_engine_state)
            check_stats(pb.SuggestMoveResponse.FromString(r.content), board)

    check()
    by_status = requests.get(fuzz_url + "/status", timeout=10).json()["requests"]["by_status"]
    assert "500" not in by_status
    assert by_status.get("200", 0) > 0 and by_status.get("400", 0) > 0


# --------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------


def test_status_says_rollout_without_a_model_and_reports_think_times(rollout_url,
                                                                     openings) -> None:
    for ms in (20, 40, 60):
        r = post_proto(rollout_url, suggest_request(openings[12], think_ms=ms))
        assert r.status_code == 200
    s = requests.get(rollout_url + "/status", timeout=10).json()
    assert s["player"] == "rollout MCTS (no model)" and s["model"] is None
    req = s["requests"]
    assert req["served"] >= 3 and req["served"] == req["by_status"]["200"]
    # Only suggestions count: neither /status itself nor /healthz is a request served.
    assert requests.get(rollout_url + "/healthz", timeout=10).status_code == 200
    again = requests.get(rollout_url + "/status", timeout=10).json()["requests"]
    assert (again["served"], again["by_status"]) == (req["served"], req["by_status"])
    assert req["think_time_ms"]["max"] >= 60 and req["think_time_ms"]["median"] > 0
    assert 0 < req["wall_time_ms"]["median"] and req["iterations"]["median"] > 0
    assert s["config"]["max_think_ms"] == 400 and s["config"]["search_slots"] == 4
    assert requests.get(rollout_url + "/healthz", timeout=10).text == "ok\n"


# --------------------------------------------------------------------------
# Model sources
# --------------------------------------------------------------------------


def tiny_net(seed: int) -> HexzNet:
    torch.manual_seed(seed)
    return HexzNet(1, 8).eval()


def publish(repo: CheckpointRepo, n: int, tmp: Path, *, meta: bool = True) -> None:
    net = tiny_net(n)
    ck, ts = tmp / f"ck{n}.pt", tmp / f"ts{n}.pt"
    save_checkpoint(ck, net, model_name=repo.name, checkpoint=n)
    export_torchscript(net, ts)
    files = {MODEL_FILE: ck.read_bytes(), SCRIPT_FILE: ts.read_bytes()}
    if meta:
        repo.publish(n, files, {})
    else:   # a checkpoint still being written: files, no meta.json
        for f, data in files.items():
            repo.storage.write(repo.key(n, f), data)


def test_model_sources_take_the_newest_published_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "store"
    repo = CheckpointRepo(LocalStorage(root), "unit")
    with pytest.raises(FileNotFoundError, match="no model file and no checkpoints/N/model.pt"):
        load_served_model(str(root / "models/flagz/unit"))
    (root / "models/flagz/unit").mkdir(parents=True)
    for path, match in ((root, "model unit has no published checkpoint yet"),
                        (root / "models/flagz/unit", "no checkpoints/N/model.pt below it")):
        with pytest.raises(NoModelYet, match=match):
            load_served_model(str(path))
    publish(repo, 1, tmp_path)
    publish(repo, 3, tmp_path)
    publish(repo, 4, tmp_path, meta=False)
    model_dir = root / "models/flagz/unit"
    for path, name in [(model_dir, None), (model_dir / "checkpoints", None), (root, None),
                       (root, "unit")]:
        m = load_served_model(str(path), name)
        assert (m.key.name, m.key.checkpoint) == ("unit", 3), path
        assert m.sha256 == repo.meta(3)["sha256"][MODEL_FILE]
    m = load_served_model(str(model_dir / "checkpoints/1/scriptmodule.pt"))
    assert (m.key.name, m.key.checkpoint) == ("unit", 1)
    # One checkpoint's folder (HEXZ_MODEL_PATH=.../checkpoints/1): its model, verified.
    m = load_served_model(str(model_dir / "checkpoints/1"))
    assert (m.key.name, m.key.checkpoint) == ("unit", 1)
    assert m.sha256 == repo.meta(1)["sha256"][MODEL_FILE]
    other = tmp_path / "plain.pt"
    export_torchscript(tiny_net(0), other)
    assert load_served_model(str(other)).key.name == "plain"
    # A published file that does not match its SHA-256 is refused.
    (model_dir / "checkpoints/3/model.pt").write_bytes(b"corrupt")
    with pytest.raises(Exception, match="SHA-256"):
        load_served_model(str(root))
    with pytest.raises(Exception, match="SHA-256"):
        load_served_model(str(model_dir / "checkpoints/3"))


def test_bad_model_settings_fail_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cannot load model file .*bad.pt.*not a zip archive"):
        build_player(CpuServerConfig(model_path=str(bad)))
    with pytest.raises(FileNotFoundError, match="missing.pt: no model file"):
        build_player(CpuServerConfig(model_path=str(tmp_path / "missing.pt")))
    (tmp_path / "two/models/flagz/a").mkdir(parents=True)
    (tmp_path / "two/models/flagz/b").mkdir(parents=True)
    with pytest.raises(ValueError, match="HEXZ_MODEL_NAME"):
        build_player(CpuServerConfig(model_path=str(tmp_path / "two")))
    with pytest.raises(ValueError, match="model name"):
        CpuServerConfig(redis_url="redis://localhost:1/0")
    with pytest.raises(ValueError, match="HEXZ_MAX_THINK_MS='soon' is not a valid int"):
        CpuServerConfig.from_env({"HEXZ_MAX_THINK_MS": "soon"})
    with pytest.raises(ValueError, match="search_slots must be >= 1"):
        CpuServerConfig.from_env({"HEXZ_SEARCH_SLOTS": "0"})
    cfg = CpuServerConfig.from_env({"HEXZ_MAX_THINK_MS": "250", "HEXZ_MODEL_PATH": "x",
                                    "HEXZ_REDIS_URL": ""})
    assert (cfg.max_think_ms, cfg.model_path, cfg.redis_url) == (250, "x", None)


def test_storage_url_loads_the_newest_checkpoint_from_gcs(gcs_emulator, tmp_path: Path) -> None:
    """gs:// model paths against the GCS emulator, through the official client."""
    from pyhexz.infra.storage import open_storage
    root = gcs_emulator.url(f"cpu{os.getpid()}")
    repo = CheckpointRepo(open_storage(root), "gcsunit")
    publish(repo, 1, tmp_path)
    publish(repo, 2, tmp_path)
    for url, name in [(root, "gcsunit"), (f"{root}/models/flagz/gcsunit", None)]:
        m = load_served_model(url, name)
        assert (m.key.name, m.key.checkpoint) == ("gcsunit", 2)
        assert m.sha256 == repo.meta(2)["sha256"][MODEL_FILE]
    with pytest.raises(ValueError, match="HEXZ_MODEL_NAME"):
        load_served_model(root)
    with pytest.raises(NoModelYet, match="model nothing has no published checkpoint yet"):
        load_served_model(root, "nothing")


# --------------------------------------------------------------------------
# Following a training run through Redis
# --------------------------------------------------------------------------


def torchscript_bytes(seed: int, tmp: Path) -> bytes:
    path = tmp / f"bus{seed}.pt"
    export_torchscript(tiny_net(seed), path)
    return path.read_bytes()


def test_follows_a_training_run_through_redis(redis_url, tmp_path: Path, openings) -> None:
    name = f"follow{os.getpid()}"
    bus = ModelBus(redis_url, name)
    cfg = CpuServerConfig(redis_url=redis_url, model_name=name, model_poll_seconds=0.5,
                          max_think_ms=200, rollout=True)
    b = openings[13]
    with served(cfg) as url:
        status = lambda: requests.get(url + "/status", timeout=10).json()  # noqa: E731
        assert status()["player"] == "rollout MCTS (no model)"
        r = post_proto(url, suggest_request(b, think_ms=30))
        assert r.status_code == 200 and r.headers["X-Hexz-Model"] == "rollout"
        bus.publish(1, torchscript_bytes(1, tmp_path))
        s = wait_for(lambda: (lambda s: s if s["model"] else None)(status()))
        assert (s["model"]["name"], s["model"]["checkpoint"]) == (name, 1)
        assert s["player"] == "neural MCTS" and s["model"]["sha256"] == bus.fetch(1).sha256
        r = post_proto(url, suggest_request(b, think_ms=30))
        assert r.headers["X-Hexz-Model"] == f"{name}:1"
        check_stats(pb.SuggestMoveResponse.FromString(r.content), b)

        # Checkpoint 2: bytes that do not match their SHA-256. Checkpoint 3: a correct
        # checksum over bytes that are no model. Neither may replace checkpoint 1.
        good = torchscript_bytes(2, tmp_path)
        bus.redis.hset(bus.checkpoint_key(2), mapping={"data": good[:-1] + b"x",
                                                       "sha256": sha256(good)})
        bus.redis.set(bus.latest_key, 2)
        bus.redis.publish(bus.channel, "2")
        wait_for(lambda: status()["following"]["refused"] >= 1)
        bus.publish(3, b"PK\x03\x04 not a torchscript archive")
        wait_for(lambda: status()["following"]["refused"] >= 2)
        assert status()["model"]["checkpoint"] == 1
        r = post_proto(url, suggest_request(b, think_ms=20))
        assert r.headers["X-Hexz-Model"] == f"{name}:1"
        bus.publish(4, torchscript_bytes(4, tmp_path))
        s = wait_for(lambda: (lambda s: s if s["model"]["checkpoint"] == 4 else None)(status()))
        assert s["following"]["swaps"] >= 1


def test_starts_from_a_model_file_and_switches_to_the_announced_one(redis_url, tmp_path: Path,
                                                                    openings, caplog) -> None:
    name = f"switch{os.getpid()}"
    first = tmp_path / "first.pt"
    export_torchscript(tiny_net(5), first)
    bus = ModelBus(redis_url, name)
    cfg = CpuServerConfig(model_path=str(first), redis_url=redis_url, model_name=name,
                          model_poll_seconds=0.5)
    with caplog.at_level(logging.INFO, logger="pyhexz"), served(cfg) as url:
        status = lambda: requests.get(url + "/status", timeout=10).json()  # noqa: E731
        assert (status()["model"]["name"], status()["model"]["checkpoint"]) == ("first", 0)
        bus.publish(7, torchscript_bytes(7, tmp_path))
        wait_for(lambda: status()["model"]["checkpoint"] == 7)
        assert status()["model"]["name"] == name
    # The hot-swap line names the CPU player, not a worker.
    assert f"cpu player model={name}:7 " in caplog.text and "previous=first:0" in caplog.text
    assert "worker model=" not in caplog.text


@pytest.mark.parametrize("tokens", [{"server_auth_token": "secret"}, {"auth_token": "secret"}],
                         ids=["server-token", "one-token-for-both"])
def test_follows_a_training_run_through_the_training_server(tmp_path: Path, openings,
                                                            tokens: dict) -> None:
    """No Redis: the models come from the training server's GET /models/latest. Its token
    is the server token, which defaults to the CPU server's own (which then guards it too)."""
    from pyhexz.train.config import TrainConfig
    from pyhexz.training_server.app import create_app as training_app
    from pyhexz.training_server.config import ServerConfig
    name = f"viaserver{os.getpid()}"
    tapp = training_app(ServerConfig(model_name=name, storage=str(tmp_path / "store"),
                                     auth_token="secret", train=TrainConfig(blocks=1, filters=8)))
    try:
        with serve_app(tapp) as server_url:
            cfg = CpuServerConfig(server_url=server_url, model_name=name,
                                  model_poll_seconds=0.5, **tokens)
            ok = {"Authorization": "Bearer secret"}
            with served(cfg) as url:
                guarded = requests.get(url + "/status", timeout=10).status_code == 401
                assert guarded == ("auth_token" in tokens)
                status = lambda: requests.get(url + "/status", headers=ok,  # noqa: E731
                                              timeout=10).json()
                # Until the run's first model is in, it may play the shipped one.
                s = wait_for(lambda: (lambda s: s if (s["model"] or {}).get("name") == name
                                      else None)(status()))
                assert s["model"]["checkpoint"] == 0
                assert s["model"]["source"].startswith("server ")
                r = post_proto(url, suggest_request(openings[15], think_ms=30), headers=ok)
                assert r.headers["X-Hexz-Model"] == f"{name}:0"
    finally:
        tapp.config["service"].close()


# --------------------------------------------------------------------------
# The commands of the original README, and `pyhexz cpu-server`
# --------------------------------------------------------------------------


def test_original_readme_commands_and_the_cli_serve_the_cpu_player(tmp_path: Path,
                                                                   openings) -> None:
    model_dir = tmp_path / "store/models/flagz/cain"
    publish(CheckpointRepo(LocalStorage(tmp_path / "store"), "cain"), 2, tmp_path)
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEXZ_")}
    env.update(HEXZ_MODEL_PATH=str(model_dir), HOME=str(tmp_path), HEXZ_LOG_LEVEL="WARNING")
    ports = [free_port() for _ in range(4)]
    commands = [
        (REPO_ROOT / "src", [sys.executable, "-m", "flask", "--app", "pyhexz.server", "run",
                             "--port", str(ports[0])]),
        (REPO_ROOT, [sys.executable, "-m", "flask", "--app", "pyhexz.server", "run",
                     "--port", str(ports[1])]),
        (REPO_ROOT, [str(bin_dir / "gunicorn"), "--bind", f"127.0.0.1:{ports[2]}", "--workers",
                     "1", "--threads", "8", "--timeout", "0", "pyhexz.server:create_app()"]),
        (tmp_path, [sys.executable, "-m", "pyhexz", "cpu-server", "--port", str(ports[3]),
                    "--max-think-ms", "100"]),
    ]
    procs = [subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
             for cwd, cmd in commands]
    b = openings[14]
    try:
        for port, p in zip(ports, procs, strict=True):
            url = f"http://127.0.0.1:{port}"

            # Bound as defaults: each server's check must see its own process and URL.
            def up(p: subprocess.Popen = p, url: str = url) -> bool:
                if p.poll() is not None:
                    err = p.stderr.read().decode()[-2000:] if p.stderr else ""
                    raise AssertionError(f"exited {p.returncode}: {err}")
                try:
                    return requests.get(url + "/healthz", timeout=5).ok
                except requests.RequestException:   # not listening yet, or still loading
                    return False
            wait_for(up, 120)
            r = post_json(url, {"maxThinkTime": 200_000_000, "gameEngineState": state_b64(b)})
            assert_legal_json(r, b)
            assert r.headers["X-Hexz-Model"] == "cain:2"
        cfg = requests.get(f"http://127.0.0.1:{ports[3]}/status", timeout=5).json()["config"]
        assert cfg["max_think_ms"] == 100
    finally:
        stop_processes(procs)


# --------------------------------------------------------------------------
# The Go contract: stats, maxThinkTime 0
# --------------------------------------------------------------------------


def test_json_answers_carry_the_go_players_stats(rollout_url, neural_url, positions) -> None:
    for url in (rollout_url, neural_url):
        for b in positions[::3]:
            stats = assert_legal_json(post_json(url, {"maxThinkTime": 30_000_000,
                                                      "gameEngineState": state_b64(b)}), b)
            assert stats["TreeSize"] > len(stats["Moves"])


def test_max_think_time_zero_is_a_minimal_search(neural_url, positions) -> None:
    """As for the Go player: maxThinkTime 0 runs one simulation (or maxIterations of them);
    no maxThinkTime at all is the default think time."""
    b = positions[4]
    with served(CpuServerConfig(default_think_ms=30, rollout=True)) as url:
        for body, iterations in (({"maxThinkTime": 0}, 1),
                                 ({"maxThinkTime": 0, "maxIterations": 7}, 7)):
            r = post_json(url, {**body, "gameEngineState": state_b64(b)})
            assert assert_legal_json(r, b)["Iterations"] == iterations
        assert_legal_json(post_json(url, {"gameEngineState": state_b64(b)}), b)
        think = requests.get(url + "/status", timeout=10).json()["requests"]["think_time_ms"]
        assert (think["median"], think["max"]) == (0, 30)   # asked: 0, 0 and the default
    # Neural: the one simulation goes to the move the network likes best.
    r = post_json(neural_url, {"maxThinkTime": 0, "gameEngineState": state_b64(b)})
    stats = assert_legal_json(r, b)
    assert stats["Iterations"] == 1 and stats["TreeSize"] > 1


# --------------------------------------------------------------------------
# The optional token
# --------------------------------------------------------------------------


def test_an_auth_token_guards_suggest_status_and_the_ui_data(openings) -> None:
    b = openings[3]
    ok = {"Authorization": "Bearer tok3n"}
    with served(CpuServerConfig(rollout=True, auth_token="tok3n", default_think_ms=20)) as url:
        body = {"maxThinkTime": 20_000_000, "gameEngineState": state_b64(b)}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "tok3n"}):
            r = post_json(url, body, headers=headers)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
            assert r.json() == {"error": "missing or wrong 'Authorization: Bearer <token>' "
                                         "header"}
        assert_legal_json(post_json(url, body, headers=ok), b)
        r = post_proto(url, suggest_request(b, think_ms=20))
        assert r.status_code == 401
        for path in ("/status", "/ui/api/play/opponents", "/ui/api/pages"):
            assert requests.get(url + path, timeout=10).status_code == 401, path
            assert requests.get(url + path, headers=ok, timeout=10).status_code == 200, path
        # What holds no data stays open: the health check and the page itself.
        assert requests.get(url + "/healthz", timeout=10).text == "ok\n"
        assert requests.get(url + "/ui/play", timeout=10).status_code == 200
        assert requests.get(url + "/status", headers=ok, timeout=10).json()["config"][
            "auth_token"] is True
    # Without a token (the default: the hexz Go server sends none) everything is open.
    with served(CpuServerConfig(rollout=True, default_think_ms=20)) as url:
        assert_legal_json(post_json(url, body), b)
        assert requests.get(url + "/status", timeout=10).json()["config"]["auth_token"] is False


# --------------------------------------------------------------------------
# The shipped model plays by default
# --------------------------------------------------------------------------


@pytest.fixture
def shipped_root(tmp_path: Path) -> Path:
    """A models folder with a shipped model of a tiny network, as `pyhexz ship-model` writes
    it from a published checkpoint."""
    from pyhexz.train.ship import ShipOptions, ship_model
    repo = CheckpointRepo(LocalStorage(tmp_path / "run"), "tiny")
    publish(repo, 6, tmp_path)
    root = tmp_path / "models"
    ship_model(str(tmp_path / "run"), ShipOptions(name="tiny-v1", why="test", root=root))
    return root


def served_player(cfg: CpuServerConfig, root: Path):
    return served(cfg, player=build_player(cfg, shipped_root=root))


def test_without_a_model_path_the_shipped_model_plays(shipped_root: Path, openings) -> None:
    b = openings[5]
    with served_player(CpuServerConfig(max_think_ms=200), shipped_root) as url:
        s = requests.get(url + "/status", timeout=10).json()
        assert s["player"] == "neural MCTS"
        assert (s["model"]["name"], s["model"]["checkpoint"]) == ("tiny-v1", 6)
        assert s["model"]["source"].startswith("shipped model tiny-v1 (1 x 8, checkpoint 6)")
        assert s["why"] == "the shipped model tiny-v1 (no model path is given)"
        assert s["model"]["sha256"] == sha256((shipped_root / "tiny-v1/model.pt").read_bytes())
        r = post_json(url, {"maxThinkTime": 30_000_000, "gameEngineState": state_b64(b)})
        assert_legal_json(r, b)
        assert r.headers["X-Hexz-Model"] == "tiny-v1:6"
    # Rollout MCTS only when asked for.
    with served_player(CpuServerConfig(rollout=True), shipped_root) as url:
        s = requests.get(url + "/status", timeout=10).json()
        assert s["player"] == "rollout MCTS (no model)" and "as asked for" in s["why"]
    # HEXZ_MODEL_PATH=default names it too.
    with served_player(CpuServerConfig(model_path="default"), shipped_root) as url:
        s = requests.get(url + "/status", timeout=10).json()
        assert s["model"]["name"] == "tiny-v1" and s["why"] == "the model path default"
    with pytest.raises(ValueError, match="not both"):
        CpuServerConfig(model_path="x.pt", rollout=True)


def test_a_shipped_model_that_fails_its_check_means_rollout_said_loudly(
        shipped_root: Path, tmp_path: Path, caplog) -> None:
    model = shipped_root / "tiny-v1" / "model.pt"
    model.write_bytes(model.read_bytes()[:-1] + b"!")
    with caplog.at_level(logging.WARNING, logger="pyhexz"), \
            served_player(CpuServerConfig(), shipped_root) as url:
        s = requests.get(url + "/status", timeout=10).json()
    assert s["player"] == "rollout MCTS (no model)" and s["model"] is None
    assert "fails its SHA-256 check" in s["why"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "fails its SHA-256 check" in errors[0].getMessage()
    # No model ships at all: rollout, with one warning that says so.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pyhexz"):
        player = build_player(CpuServerConfig(), shipped_root=tmp_path / "empty")
    try:
        assert player.model is None and "no model ships" in player.why
        (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert "plays rollout MCTS" in warning.getMessage()
    finally:
        player.close()
