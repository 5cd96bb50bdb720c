"""The web UI blueprint through Flask, on a real checkpoint repository with real self-play games,
and the per-checkpoint evaluation behind its Elo curve."""

import base64
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from flask import Flask

from pyhexz.game.board import Board
from pyhexz.infra.storage import CheckpointRepo
from pyhexz.train.evaluation import (
    EVAL_FILE,
    EvalConfig,
    elo_curve,
    evaluate,
    evaluated,
    next_to_evaluate,
)
from pyhexz.web.charts import Series, line_chart, nice_ticks
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
