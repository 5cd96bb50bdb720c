"""The web UI blueprint through Flask, on a real checkpoint repository with real self-play games,
and the per-checkpoint evaluation behind its Elo curve."""

import base64
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from flask import Flask

from pyhexz.game.board import Board
from pyhexz.infra.storage import CheckpointRepo, LocalStorage
from pyhexz.train.evaluation import (
    EVAL_FILE,
    EvalConfig,
    elo_curve,
    evaluate,
    evaluated,
    next_to_evaluate,
)
from pyhexz.web.charts import Series, line_chart, nice_ticks
from pyhexz.web.overview import fmt_duration, fmt_number, overview
from pyhexz.web.ui import RepoOpponents, init_ui, initial_board_from_planes, replay


@pytest.fixture(scope="module")
def repo(trained_repo_factory) -> CheckpointRepo:
    return trained_repo_factory("uitest")


@pytest.fixture(scope="module")
def client(repo, tmp_path_factory):
    app = Flask(__name__)
    # No shipped model (whatever the package ships): the opponents are the run's and rollout.
    init_ui(app, repo=repo, status=lambda: {"model": "uitest", "checkpoint": 2},
            opponents=RepoOpponents(repo, seconds=0.05,
                                    shipped_root=tmp_path_factory.mktemp("noshipped")))
    return app.test_client()


def test_pages_are_served_with_their_scripts(client):
    assert client.get("/ui/").headers["Location"].endswith("/ui/training")
    for name in ("training", "checkpoints", "games", "play"):
        r = client.get(f"/ui/{name}")
        assert r.status_code == 200 and r.mimetype == "text/html"
        assert b'src="static/board.js"' in r.data and b"http" not in r.data.split(b"<main>")[0]
    assert client.get("/ui/static/board.js").data.startswith(b"// Draws a Flagz board")
    assert client.get("/ui/nope").status_code == 404
    assert client.get("/ui/static/../webui.py").status_code == 404
    pages = ["training", "checkpoints", "games", "play"]
    assert client.get("/ui/api/pages").json == {"pages": pages}


# A training server's status, as training_server/status.py writes it.
LIVE_STATUS = {
    "model": "uitest", "checkpoint": 2, "ready": True, "failure": None,
    "examples": {"received": 5000, "recovered": 0, "pending": 1024, "trained": 4000,
                 "minibatch": 4096, "max_pending": 40960, "per_second": 123.4},
    "games": {"received": 40, "per_second": 0.0125},
    "training": {"in_progress": False, "runs": 2, "failures": 0, "window": 4000,
                 "last": {"policy_loss": 9.0, "value_loss": 9.0}},
    "requests": {"ACCEPTED": 40},
    "workers": {"active": 3, "window_seconds": 300.0},
    "wal": {"id": "0f" * 16, "first": 0, "end": 123456, "trained_position": 1000,
            "segments": 2, "commits": 41},
    "redis": None, "uptime_seconds": 3725.0,
}


def _overview_client(repo, status: dict, now: float):
    app = Flask(__name__)
    init_ui(app, repo=repo, status=lambda: status, clock=lambda: now)
    return app.test_client()


def test_overview_summarises_the_run_in_words(repo):
    """GET /ui/api/overview: the questions a person watching a run asks first, answered from
    the live status and the checkpoints, with labels and units; every status field follows,
    labelled, in `details`."""
    meta = repo.meta(2)
    c = _overview_client(repo, LIVE_STATUS, now=meta["created"] + 185)
    o = c.get("/ui/api/overview").json
    assert o["model"] == "uitest" and o["state"] == "running" and o["failures"] == []
    items = {i["id"]: i for i in o["summary"]}
    assert [i["label"] for i in o["summary"]] == [
        "Latest checkpoint", "Age of the latest checkpoint", "Examples for the next checkpoint",
        "Examples per second", "Games per second", "Connected workers", "Policy loss",
        "Value loss", "Strength vs the rollout baseline"]
    assert items["checkpoint"]["text"] == "2"
    assert items["checkpoint"]["note"] == f"{meta['examples_trained']:,} examples trained"
    assert items["checkpoint_age"]["text"] == "3 min 5 s"
    assert items["checkpoint_age"]["value"] == 185
    assert items["next_checkpoint"]["text"] == "1,024 / 4,096"
    assert items["next_checkpoint"]["note"] == "examples, 25% of what it needs"
    assert items["examples_per_second"]["text"] == "123 examples/s"
    assert items["games_per_second"]["text"] == "0.0125 games/s"
    assert items["games_per_second"]["note"] == "0.75 games/min; 40 games since start"
    assert (items["workers"]["text"], items["workers"]["note"]) == \
        ("3", "uploaded a game in the last 5 min")
    # Losses are the latest checkpoint's (its meta.json), not the stub's live 9.0.
    assert items["policy_loss"]["value"] == pytest.approx(meta["stats"]["policy_loss"])
    assert items["policy_loss"]["note"] == "checkpoint 2"
    assert items["strength"]["level"] == "idle" or items["strength"]["text"].endswith("% score")
    details = {d["key"]: d for d in o["details"]}
    assert details["wal.end"] == {"key": "wal.end", "label": "Write-ahead log end offset",
                                  "text": "123,456 B"}
    assert details["uptime_seconds"]["text"] == "1 h 2 min"
    assert details["requests.ACCEPTED"]["label"] == "requests ACCEPTED"   # unlisted: its path
    assert details["redis"]["text"] == "–"


def test_overview_names_failures_and_what_is_not_known_yet(repo, tmp_path):
    """A failing trainer and discarded runs are said in words at the top; a status without a
    field (another host, a server starting) gives '–', never an error."""
    failing = dict(LIVE_STATUS, ready=False, failure="trainer stopped: OSError: disk full",
                   training=dict(LIVE_STATUS["training"], failures=2))
    o = _overview_client(repo, failing, now=0).get("/ui/api/overview").json
    assert o["state"] == "failing"
    assert o["failures"] == ["Trainer: trainer stopped: OSError: disk full",
                             "2 training runs discarded since start (see the server log)"]
    assert {i["id"]: i for i in o["summary"]}["checkpoint_age"]["text"] == "0 s"   # clock skew
    empty = CheckpointRepo(LocalStorage(tmp_path), "empty")
    o = _overview_client(empty, {"ready": False}, now=0).get("/ui/api/overview").json
    assert o["state"] == "starting" and o["failures"] == []
    items = {i["id"]: i for i in o["summary"]}
    assert items["checkpoint"]["text"] == "none yet"
    assert all(items[k]["text"] == "–" and items[k]["level"] == "idle" for k in (
        "checkpoint_age", "examples_per_second", "games_per_second", "workers", "policy_loss"))
    assert items["strength"]["text"] == "not measured yet"


def test_overview_strength_and_evaluation_errors():
    rows = [{"checkpoint": 0, "created": 100.0, "matches": {"rollout": {
                "score": 0.25, "wins": 1, "draws": 0, "losses": 3}}, "elo": 0.0},
            {"checkpoint": 1, "created": 200.0, "matches": {"rollout": {
                "score": 0.625, "wins": 2, "draws": 1, "losses": 1}}, "elo": 87.6},
            {"checkpoint": 2, "created": 300.0, "matches": {}, "eval_error": "out of memory"}]
    o = overview({}, rows, now=lambda: 360.0)
    s = {i["id"]: i for i in o["summary"]}["strength"]
    assert (s["text"], s["value"]) == ("62% score", 0.625)
    assert s["note"] == "checkpoint 1: 2 wins, 1 draw, 1 loss; Elo +88 vs checkpoint 0"
    assert o["failures"] == ["Evaluation of checkpoint 2 failed: out of memory"]
    assert {i["id"]: i for i in o["summary"]}["checkpoint_age"]["text"] == "1 min"


@pytest.mark.parametrize("value, unit, text", [
    (None, "x", "–"), (12345, "", "12,345"), (123.4, "examples/s", "123 examples/s"),
    (2.0, "", "2"), (0.0125, "games/s", "0.0125 games/s"), (0.0, "", "0"), (True, "", "yes"),
    (float("nan"), "", "–"), (1234.0, "B", "1,234 B"), (1.23456, "", "1.23"),
])
def test_fmt_number(value, unit, text):
    assert fmt_number(value, unit) == text


@pytest.mark.parametrize("seconds, text", [
    (None, "–"), (0, "0 s"), (42.4, "42 s"), (180, "3 min"), (185, "3 min 5 s"),
    (3725, "1 h 2 min"), (90061, "1 d 1 h"), (-5, "0 s"),
])
def test_fmt_duration(seconds, text):
    assert fmt_duration(seconds) == text


def test_checkpoints_listing_and_downloads(client, repo):
    rows = client.get("/ui/api/checkpoints").json["checkpoints"]
    assert [r["checkpoint"] for r in rows] == [0, 1, 2]
    assert rows[2]["examples_trained"] > rows[1]["examples_trained"] > 0
    assert rows[2]["policy_loss"] > 0
    f = {x["name"]: x for x in rows[2]["files"]}["model.pt"]
    r = client.get("/ui/api/checkpoints/2/files/model.pt")
    assert r.status_code == 200 and len(r.data) == f["size"]
    import hashlib
    assert hashlib.sha256(r.data).hexdigest() == f["sha256"]
    assert client.get("/ui/api/checkpoints/2/files/meta.json").status_code == 404
    assert client.get("/ui/api/checkpoints/9/files/model.pt").status_code == 404


@pytest.mark.parametrize("name", ["loss", "throughput", "elo", "rollout"])
def test_charts_are_svg(client, name):
    """Each chart is an SVG document with its title that draws its data, or says it has none
    (the Elo and rollout charts before the evaluation test below has run)."""
    r = client.get(f"/ui/api/charts/{name}.svg")
    assert r.status_code == 200 and r.mimetype == "image/svg+xml"
    first = r.data.decode().split("\n<!-- rollout -->")[0]
    root = ET.fromstring(first)
    assert root.tag.endswith("svg")
    text = " ".join("".join(e.itertext()) for e in root.iter() if e.tag.endswith("text"))
    assert CHART_TITLES[name] in text
    lines = _polylines(first)
    if name == "loss":   # policy and value loss of the two trained checkpoints
        assert [len(points) for points in lines] == [2, 2]
    else:
        assert lines or "no data yet" in text


CHART_TITLES = {"loss": "Training loss", "throughput": "Throughput", "elo": "Elo",
                "rollout": "Score against the rollout baseline"}


def _polylines(svg: str) -> list[list[str]]:
    """The points of every data series drawn in an SVG chart."""
    return [e.get("points").split() for e in ET.fromstring(svg).iter()
            if e.tag.endswith("polyline")]


def test_line_chart_draws_each_series_and_handles_no_data():
    svg = line_chart([Series("a", [(0, 1.0), (1, 0.5), (2, 0.25)]), Series("b", [(0, 2.0)])],
                     title="t")
    root = ET.fromstring(svg)
    lines = [e for e in root.iter() if e.tag.endswith("polyline")]
    assert len(lines) == 2 and len(lines[0].get("points").split()) == 3
    assert "no data yet" in line_chart([Series("a", [])])
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(3, 3)[0] <= 3 <= nice_ticks(3, 3)[-1]


def test_initial_board_from_planes_round_trips():
    for seed in range(20):
        b = Board.new(seed)
        again = initial_board_from_planes(b.encode()[0])
        assert str(again) == str(b)
        assert np.array_equal(again.encode()[0], b.encode()[0])


def test_games_replay_move_by_move(client, repo):
    games = client.get("/ui/api/games").json["games"]
    assert len(games) == 4 and games[0]["checkpoint"] == 2
    g = games[0]
    data = client.get(f"/ui/api/games/{g['checkpoint']}/{g['name']}").json
    pos = data["positions"]
    assert len(pos) == g["plies"] + 1
    assert pos[0]["move"] == 0 and pos[-1]["over"] and pos[-1]["played"] is None
    for p in pos[:-1]:
        assert p["played"] in p["legal"]
        assert abs(sum(v["share"] for v in p["visits"]) - 1) < 1e-5 or len(p["visits"]) == 8
    assert client.get("/ui/api/games/2/no-such-game").status_code == 404


def test_replay_rejects_a_game_that_does_not_add_up(repo):
    from pyhexz.train.trainer import read_examples_archive
    name = repo.example_archives(1)[0]
    _, req = read_examples_archive(repo.storage.read(repo.key(1, f"examples/{name}")))[0]
    req.examples[3].move.row = (req.examples[3].move.row + 5) % 11
    with pytest.raises(ValueError, match="example 4 does not follow from the moves before it"):
        replay(req)


def test_play_a_whole_game_against_rollout(client):
    new = client.post("/ui/api/play/new", json={"seed": 7}).json
    state, board = new["state"], new["board"]
    assert board["turn"] == 1 and board["move"] == 0
    rng = np.random.default_rng(0)
    while not board["over"]:
        move = [int(x) for x in board["legal"][rng.integers(len(board["legal"]))]]
        r = client.post("/ui/api/play/move", json={"state": state, "move": move, "seat": 1,
                                                   "opponent": "rollout"})
        assert r.status_code == 200, r.json
        state, board = r.json["state"], r.json["board"]
        for reply in r.json["cpu"]:
            assert -1 <= reply["value"] <= 1 and reply["moves"]
        assert board["over"] or board["turn"] == 1
    assert board["winner"] in (0, 1, 2)


def test_play_against_a_checkpoint_opening_as_second(client):
    opps = client.get("/ui/api/play/opponents").json["opponents"]
    assert [o["id"] for o in opps] == ["checkpoint:2", "checkpoint:1", "checkpoint:0", "rollout"]
    new = client.post("/ui/api/play/new", json={"seed": 1}).json
    r = client.post("/ui/api/play/move", json={"state": new["state"], "move": None, "seat": 2,
                                               "opponent": "checkpoint:2"})
    assert r.status_code == 200
    assert r.json["board"]["turn"] == 2 and r.json["board"]["move"] == 1


def test_play_against_the_shipped_model(repo, tmp_path, caplog):
    """The training server's Play page offers the model that ships with pyhexz as `default`,
    after the run's newest checkpoints, when it passes its SHA-256 check."""
    from pyhexz.train.ship import ShipOptions, ship_model
    root = tmp_path / "models"
    ship_model(str(repo.storage.root / repo.prefix / "2"),
               ShipOptions(name="ui-v1", why="test", root=root))
    app = Flask(__name__)
    init_ui(app, repo=repo, opponents=RepoOpponents(repo, seconds=0.05, shipped_root=root))
    c = app.test_client()
    opps = c.get("/ui/api/play/opponents").json["opponents"]
    assert [o["id"] for o in opps] == ["checkpoint:2", "checkpoint:1", "checkpoint:0", "default",
                                       "rollout"]
    assert opps[3]["label"].startswith("shipped model ui-v1 (1 x 8, checkpoint 2)")
    new = c.post("/ui/api/play/new", json={"seed": 2}).json
    r = c.post("/ui/api/play/move", json={"state": new["state"], "move": None, "seat": 2,
                                          "opponent": "default"})
    assert r.status_code == 200 and r.json["board"]["move"] == 1
    # A shipped file that fails its check is left out, with a warning.
    model = root / "ui-v1" / "model.pt"
    model.write_bytes(model.read_bytes() + b"tail")
    app = Flask(__name__)
    init_ui(app, repo=repo, opponents=RepoOpponents(repo, seconds=0.05, shipped_root=root))
    with caplog.at_level("WARNING", logger="pyhexz"):
        opps = app.test_client().get("/ui/api/play/opponents").json["opponents"]
    assert "default" not in [o["id"] for o in opps]
    assert "fails its SHA-256 check" in caplog.text


@pytest.mark.parametrize("body, message", [
    (None, "JSON object"),
    ({"state": "%%%", "seat": 1, "move": [0, 0, 5], "opponent": "rollout"}, "base64"),
    ({"state": base64.b64encode(b"\x08\x99").decode(), "seat": 1, "move": [0, 0, 5],
      "opponent": "rollout"}, "GameEngineState"),
    ({"seat": 3, "move": [0, 0, 5], "opponent": "rollout"}, "seat"),
    ({"seat": 1, "move": [0, 0], "opponent": "rollout"}, "move must be"),
    ({"seat": 2, "move": [0, 0, 5], "opponent": "rollout"}, "turn"),
    ({"seat": 1, "move": [0, 0, 0], "opponent": "rollout"}, "illegal move"),
    ({"seat": 1, "move": [0, 0, 5], "opponent": "nobody"}, "unknown opponent"),
])
def test_play_rejects_bad_requests_with_400(client, body, message):
    b = Board.new(3)
    free = next((r, c) for r in range(11) for c in range(10 - r % 2) if b.cell(r, c)[0] == 0)
    if body is not None:
        body.setdefault("state", base64.b64encode(b.to_proto().SerializeToString()).decode())
        if body.get("move") == [0, 0, 5]:
            body["move"] = [free[0], free[1], 5]
    r = client.post("/ui/api/play/move", json=body) if body is not None else \
        client.post("/ui/api/play/move", data=b"nope", content_type="application/json")
    assert r.status_code == 400
    assert message.lower() in r.json["error"].lower()


def test_cpu_server_mode_offers_only_play(repo):
    app = Flask(__name__)
    init_ui(app)
    c = app.test_client()
    assert c.get("/ui/").headers["Location"].endswith("/ui/play")
    assert c.get("/ui/training").status_code == 404
    assert c.get("/ui/api/checkpoints").status_code == 404
    assert c.get("/ui/api/pages").json == {"pages": ["play"]}


def test_evaluation_writes_eval_json_and_chains_elo(repo, client):
    cfg = EvalConfig(openings=1, runs=4, rollout_runs=8)
    assert next_to_evaluate(repo) == 2
    first = evaluate(repo, 0, cfg)
    assert first["opponent"] is None and set(first["matches"]) == {"rollout"}
    second = evaluate(repo, 2, cfg)
    assert second["opponent"] == 0
    m = second["matches"]["previous"]
    assert m["games"] == 2 and m["wins"] + m["draws"] + m["losses"] == 2
    assert next_to_evaluate(repo) == 1
    saved = json.loads(repo.storage.read(repo.key(2, EVAL_FILE)))
    assert saved["matches"] == second["matches"]
    curve = elo_curve(evaluated(repo))
    assert [p["checkpoint"] for p in curve] == [0, 2]
    assert curve[0]["elo"] == 0
    assert curve[1]["elo"] == pytest.approx(max(-400, min(400, m["elo"])))
    rows = {r["checkpoint"]: r for r in client.get("/ui/api/checkpoints").json["checkpoints"]}
    assert rows[2]["matches"]["previous"]["score"] == m["score"]
    assert rows[2]["elo"] == curve[1]["elo"] and rows[1]["elo"] is None
    # The overview now states checkpoint 2's strength against the baseline.
    strength = {i["id"]: i for i in client.get("/ui/api/overview").json["summary"]}["strength"]
    assert strength["value"] == second["matches"]["rollout"]["score"]
    assert strength["note"].startswith("checkpoint 2: ")
    # The charts now draw the evaluated checkpoints 0 and 2.
    for chart in ("elo", "rollout"):
        svg = client.get(f"/ui/api/charts/{chart}.svg").data.decode()
        assert [len(points) for points in _polylines(svg.split("\n<!-- rollout -->")[0])] == [2]


def test_ticks_cover_the_data_and_stay_whole_for_checkpoints():
    t = nice_ticks(1326.0, 1408.0)
    assert t[0] <= 1326 and t[-1] >= 1408
    assert nice_ticks(1, 2, integer=True) == [1, 2]


def test_cpu_server_serves_the_play_page_with_its_own_player():
    from pyhexz.cpu.app import create_app
    from pyhexz.cpu.config import CpuServerConfig

    app = create_app(CpuServerConfig(default_think_ms=50, rollout=True))
    c = app.test_client()
    assert c.get("/").headers["Location"].endswith("/ui/play")
    assert c.get("/ui/play").status_code == 200
    assert c.get("/ui/training").status_code == 404
    (opp,) = c.get("/ui/api/play/opponents").json["opponents"]
    assert opp["id"] == "cpu" and "rollout" in opp["label"]
    new = c.post("/ui/api/play/new", json={"seed": 5}).json
    r = c.post("/ui/api/play/move", json={"state": new["state"], "move": None, "seat": 2,
                                          "opponent": "cpu"})
    assert r.status_code == 200 and r.json["board"]["move"] == 1
    assert r.json["cpu"][0]["moves"]
