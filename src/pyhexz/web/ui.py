"""The web UI: pages for people watching a training run, and a board to play the model on.

One Flask blueprint (`ui`, module level), mounted at /ui by the training server (all pages) and
by the CPU server (the Play page); `init_ui` mounts it, carrying the host's state (its
checkpoints, status and opponents) into app.extensions, where the views read it. Pages are
static HTML shipped in the package (`web/`); their scripts fetch the JSON endpoints below and
redraw, so nothing needs a build step, a CDN or the internet. Charts are
SVG drawn on the server (charts.py). Every request goes through `fetch` with the bearer token a
person typed once, in a small form on the page (kept in the tab's sessionStorage), so the host
app's token check covers the UI as it covers the API.

    GET  /ui/ , /ui/training , /ui/checkpoints , /ui/games , /ui/play      pages
    GET  /ui/api/status                         live state of the host server
    GET  /ui/api/overview                       the Training page's summary (overview.py)
    GET  /ui/api/checkpoints                    every checkpoint: meta, sizes, matches, Elo
    GET  /ui/api/charts/{loss,throughput,elo,rollout}.svg
    GET  /ui/api/checkpoints/{N}/files/{file}   a checkpoint file, SHA-256 checked
    GET  /ui/api/games                          recent self-play games
    GET  /ui/api/games/{N}/{name}               one game replayed: boards, visits, values
    GET  /ui/api/play/opponents                 who a person can play
    POST /ui/api/play/new                       {"seed"?} -> a fresh position
    POST /ui/api/play/move                      {"state", "move", "opponent"} -> after both moves
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    request,
    url_for,
)

from pyhexz import hexz_pb2 as pb
from pyhexz.game.board import Board, IllegalMoveError, InvalidStateError, policy_move_tuple
from pyhexz.game.examples import InvalidExampleError, decode
from pyhexz.infra.httpbody import read_body
from pyhexz.infra.storage import CheckpointRepo, StorageError
from pyhexz.search.timed import SearchResult, TimedSearch, think
from pyhexz.train.evaluation import elo_curve, read_eval, with_eval
from pyhexz.web import charts, overview

if TYPE_CHECKING:
    from pyhexz.cpu.player import CpuPlayer

log = logging.getLogger(__name__)

PAGES = ("training", "checkpoints", "games", "play")
CHARTS = ("loss", "throughput", "elo", "rollout")
MAX_GAMES_LISTED = 50
WEB = resources.files("pyhexz") / "web"   # the pages and scripts, shipped in the package


class Thinker(Protocol):
    """A CPU opponent for the Play page: analyses a position and picks a move."""

    def __call__(self, board: Board) -> dict:
        """{"move": (row, col, type), "value": mover's view, "moves": [{row, col, type,
        visits, prior}]}"""


@dataclass
class Opponent:
    id: str
    label: str
    think: Thinker


class SearchOpponent:
    """An opponent that thinks a fixed time per move with a TimedSearch (one at a time: a
    search tree is not shared between threads)."""

    def __init__(self, make_searcher: Callable[[], TimedSearch], seconds: float) -> None:
        self._make = make_searcher
        self._searcher: TimedSearch | None = None
        self.seconds = seconds
        self._lock = threading.Lock()

    def __call__(self, board: Board) -> dict:
        with self._lock:
            if self._searcher is None:
                self._searcher = self._make()
            return result_json(think(self._searcher, board, self.seconds))


def result_json(r: SearchResult) -> dict:
    """A search result as the Play page shows it: the move, the value and the top moves."""
    return {"move": r.move, "value": r.value, "iterations": r.iterations,
            "moves": [{"row": m[0], "col": m[1], "type": m[2], "share": share, "prior": prior}
                      for m, share, prior in r.scored_moves()[:8]]}


def cpu_player_opponents(player: CpuPlayer, seconds: float) -> Callable[[], list[Opponent]]:
    """The CPU server's one opponent: its own player, searching like a /hexz/cpu/suggest call."""

    def think(board: Board) -> dict:
        result, _ = player.suggest(board, time.monotonic() + seconds)
        return result_json(result)

    def opponents() -> list[Opponent]:
        m = player.model
        label = (f"{m.key.name} checkpoint {m.key.checkpoint}" if m is not None
                 else "rollout MCTS (no model loaded)")
        return [Opponent("cpu", f"{label} ({seconds:g} s/move)", think)]

    return opponents


class RepoOpponents:
    """The Play page's opponents on a training server: the newest checkpoints, the model that
    ships with pyhexz (`default`, when one ships and passes its SHA-256 check) and rollout MCTS.

    Models load on first use and are kept for the few newest checkpoints only.
    """

    def __init__(self, repo: CheckpointRepo, seconds: float = 1.0, device: str = "cpu",
                 newest: int = 3, shipped_root: Path | None = None) -> None:
        self.repo, self.seconds, self.device, self.newest = repo, seconds, device, newest
        self.shipped_root = shipped_root   # the shipped models' folder; None: the package's
        self._cache: dict[str, Opponent] = {}
        self._lock = threading.Lock()

    def _neural(self, n: int) -> Callable[[], TimedSearch]:
        def make() -> TimedSearch:
            from pyhexz.search.players import load_predictor
            return TimedSearch(1, load_predictor(self.repo, n, self.device))
        return make

    @functools.cached_property
    def _shipped(self) -> tuple[str, Callable[[], TimedSearch]] | None:
        """The shipped model's label and searcher factory, checked against its SHA-256 once
        (package data does not change while the server runs); None when none ships or it
        fails its check (said in the log)."""
        from pyhexz.nn import Predictor
        from pyhexz.nn.shipped import NoShippedModel, ShippedModelError, default_model
        try:
            m = default_model(self.shipped_root)
            path = m.path()
        except NoShippedModel:
            return None
        except ShippedModelError as e:
            log.warning("play page leaves out the shipped model error=%r", str(e))
            return None
        return (f"{m.label} ({self.seconds:g} s/move)",
                lambda: TimedSearch(1, Predictor.from_path(path, self.device)))

    def __call__(self) -> list[Opponent]:
        nums = self.repo.checkpoints()[-self.newest:][::-1]
        wanted = [(f"checkpoint:{n}", f"{self.repo.name} checkpoint {n} ({self.seconds:g} s/move)",
                   self._neural(n)) for n in nums]
        if self._shipped is not None:
            wanted.append(("default", *self._shipped))
        wanted.append(("rollout", f"rollout MCTS ({self.seconds:g} s/move)",
                       lambda: TimedSearch(1, None)))
        with self._lock:
            self._cache = {
                i: self._cache.get(i) or Opponent(i, label, SearchOpponent(make, self.seconds))
                for i, label, make in wanted}
            return list(self._cache.values())


def board_json(b: Board) -> dict:
    """A position for the page's board drawing: cells by (row, col), legal moves, counters."""
    cells = [[list(b.cell(r, c)) for c in range(10 - (r % 2))] for r in range(11)]
    return {"cells": cells, "turn": b.turn, "move": b.move, "score": list(b.score),
            "flags_left": list(b.flags_left), "over": b.is_over,
            "winner": b.winner if b.is_over else None,
            "legal": [list(m) for m in b.legal_moves()] if not b.is_over else []}


def state_b64(b: Board) -> str:
    return base64.b64encode(b.to_proto().SerializeToString()).decode("ascii")


def initial_board_from_planes(planes: np.ndarray) -> Board:
    """The initial position of a self-play game from its first example's input planes.

    At move 0 nothing is near a 5, so the mover's 'blocked' plane (2) marks exactly the occupied
    cells: rocks, plus grass, whose values are plane 10 (FLAGZ.md section 7).
    """
    rows = []
    for r in range(11):
        toks = []
        for c in range(10 - (r % 2)):
            grass = int(planes[10, r, c])
            toks.append(f"g{grass}" if grass else "##" if planes[2, r, c] else "..")
        rows.append(" ".join(toks))
    return Board.from_ascii("\n".join(rows), turn=1, flags_left=(3, 3), move=0)


def replay(req: pb.AddTrainingExamplesRequest) -> list[dict]:
    """Each searched position of a game: the board, the search's visits and value, the move."""
    arrays = decode(list(req.examples))
    b = initial_board_from_planes(arrays.boards[0])
    positions = []
    for i, ex in enumerate(req.examples):
        if not np.array_equal(b.encode()[0], arrays.boards[i]):
            raise InvalidExampleError(f"example {i} does not follow from the moves before it")
        probs = arrays.probs[i].reshape(-1)
        top = np.argsort(-probs)[:8]
        m = ex.move
        positions.append({
            **board_json(b), "value": ex.root_value, "result": ex.result,
            "played": [m.row, m.col, m.cell_type],
            "visits": [dict(zip(("row", "col", "type"), policy_move_tuple(int(k)), strict=True),
                            share=float(probs[k])) for k in top if probs[k] > 0]})
        b.play(m.row, m.col, m.cell_type)
    positions.append({**board_json(b), "value": None, "result": None, "played": None,
                      "visits": []})
    return positions


class CheckpointTable:
    """The Checkpoints page's rows, read from storage once per checkpoint.

    A published checkpoint never changes (meta.json is its commit point), and neither does its
    eval.json once written, so pages that refresh every few seconds cost a listing of the
    repository, not a read of every checkpoint's files.
    """

    def __init__(self, repo: CheckpointRepo) -> None:
        self.repo = repo
        self._facts: dict[int, dict] = {}     # checkpoint -> row without matches and Elo
        self._evals: dict[int, dict] = {}     # checkpoint -> its eval.json
        self._lock = threading.Lock()

    def _facts_of(self, n: int) -> dict:
        r = self.repo
        meta = r.meta(n)
        stats = meta.get("stats") or {}
        files = {f: h for f, h in meta.get("sha256", {}).items() if "/" not in f}
        sizes = meta.get("size", {})   # recorded since publish() records it; else read once
        return {
            "checkpoint": n, "created": meta.get("created"),
            "examples_trained": meta.get("examples_trained", 0),
            "new_examples": meta.get("new_examples", 0), "games": meta.get("games", 0),
            "policy_loss": stats.get("policy_loss"), "value_loss": stats.get("value_loss"),
            "files": [{"name": f, "sha256": files[f],
                       "size": sizes.get(f) or len(r.storage.read(r.key(n, f)))}
                      for f in sorted(files)]}

    def rows(self) -> list[dict]:
        nums = self.repo.checkpoints()
        new_evals = with_eval(self.repo) - self._evals.keys()
        with self._lock:
            for n in nums:
                if n not in self._facts:
                    self._facts[n] = self._facts_of(n)
            for n in new_evals:
                e = read_eval(self.repo, n)
                if e is not None:
                    self._evals[n] = e
            evals = {n: self._evals[n] for n in nums if n in self._evals}
        elo = {p["checkpoint"]: p["elo"] for p in elo_curve(evals)}
        return [dict(self._facts[n], matches=evals.get(n, {}).get("matches", {}),
                     eval_error=evals.get(n, {}).get("error"), elo=elo.get(n)) for n in nums]


def _chart(name: str, rows: list[dict]) -> str:
    def pts(key: str) -> list[tuple[float, float]]:
        return [(r["checkpoint"], r[key]) for r in rows
                if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]

    if name == "loss":
        return charts.line_chart([charts.Series("policy loss", pts("policy_loss")),
                                  charts.Series("value loss", pts("value_loss"))],
                                 title="Training loss", x_label="checkpoint", y_label="loss")
    if name == "throughput":
        speed = []
        for a, b in itertools.pairwise(rows):
            dt = (b["created"] or 0) - (a["created"] or 0)
            if dt > 0:
                trained = b["examples_trained"] - a["examples_trained"]
                speed.append((b["checkpoint"], trained / dt))
        return charts.line_chart([charts.Series("examples/s", speed)], title="Throughput",
                                 x_label="checkpoint", y_label="examples trained per second")
    if name == "elo":
        return charts.line_chart([charts.Series("Elo vs checkpoint 0", pts("elo"))],
                                 title="Elo (chained matches against the previous checkpoint)",
                                 x_label="checkpoint", y_label="Elo")
    rollout = [(r["checkpoint"], r["matches"]["rollout"]["score"]) for r in rows
               if "rollout" in r["matches"]]
    return charts.line_chart([charts.Series("score vs rollout baseline", rollout)],
                             title="Score against the rollout baseline", x_label="checkpoint",
                             y_label="score")


def _bad_request(message: str):
    log.info("request refused method=%s path=%s status=400 error=%r", request.method,
             request.path[:200], message[:300])
    return jsonify(error=message), 400


def _json_object() -> dict | None:
    """The request's body as a JSON object ({} if empty), or None if it is not one. Deep
    nesting included: Flask's get_json lets the parser's RecursionError out as a 500."""
    try:
        body = read_body(request)   # a ValueError (BadRequest) if its framing is broken
        obj = json.loads(body) if body else {}
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


UI_EXTENSION = "hexz_ui"

ui = Blueprint("ui", __name__)


class UiState:
    """What the UI's views read, kept by the host app in app.extensions[UI_EXTENSION]."""

    def __init__(self, repo: CheckpointRepo | None, status: Callable[[], dict],
                 opponents: Callable[[], list[Opponent]],
                 clock: Callable[[], float] = time.time) -> None:
        self.repo = repo            # the run's checkpoints (None on a CPU server: only Play)
        self.status = status        # the host's live state
        self.opponents = opponents  # who can be played
        self.clock = clock          # wall clock, for checkpoint ages (tests inject one)
        self.table = CheckpointTable(repo) if repo is not None else None
        # Archives never change; a few keep memory flat.
        self.archive = functools.lru_cache(maxsize=4)(self._read_archive)

    def need_repo(self) -> CheckpointRepo:
        if self.repo is None:
            abort(404, "this server has no training run")
        return self.repo

    def need_table(self) -> CheckpointTable:
        if self.table is None:   # there is a table exactly when there is a repo
            abort(404, "this server has no training run")
        return self.table

    def _read_archive(self, n: int) -> dict[str, pb.AddTrainingExamplesRequest]:
        from pyhexz.train.trainer import read_examples_archive
        r = self.need_repo()
        games: dict[str, pb.AddTrainingExamplesRequest] = {}
        for f in r.example_archives(n):
            games.update(read_examples_archive(r.storage.read(r.key(n, f"examples/{f}"))))
        return games


def init_ui(app: Flask, *, repo: CheckpointRepo | None = None,
            status: Callable[[], dict] = dict,
            opponents: Callable[[], list[Opponent]] = list, url_prefix: str = "/ui",
            clock: Callable[[], float] = time.time) -> None:
    """Mounts the UI on `app` (Flask's init_app pattern): its state goes into app.extensions,
    where the views of the module-level `ui` blueprint read it. `repo`: the run's checkpoints
    (None on a CPU server, which then shows only Play); `status`: the host's live state;
    `opponents`: who can be played; `clock`: the wall clock."""
    app.extensions[UI_EXTENSION] = UiState(repo, status, opponents, clock)
    app.register_blueprint(ui, url_prefix=url_prefix)


def _state() -> UiState:
    return current_app.extensions[UI_EXTENSION]


@ui.get("/")
def index():
    return redirect(url_for("ui.page", name="training" if _state().repo is not None else "play"))


@ui.get("/<name>")
def page(name: str):
    if name not in PAGES or (_state().repo is None and name != "play"):
        abort(404)
    return Response((WEB / f"{name}.html").read_text(encoding="utf-8"), mimetype="text/html")


@ui.get("/static/<name>")
def static_file(name: str):
    if name not in {"ui.css", "ui.js", "board.js"}:
        abort(404)
    mime = "text/css" if name.endswith(".css") else "text/javascript"
    return Response((WEB / name).read_text(encoding="utf-8"), mimetype=mime,
                    headers={"Cache-Control": "max-age=300"})


@ui.get("/api/pages")
def api_pages():
    repo = _state().repo
    return jsonify(pages=[p for p in PAGES if repo is not None or p == "play"])


@ui.get("/api/status")
def api_status():
    return jsonify(_state().status())


@ui.get("/api/overview")
def api_overview():
    st = _state()
    return jsonify(overview.overview(st.status(), st.need_table().rows(), st.clock))


@ui.get("/api/checkpoints")
def api_checkpoints():
    st = _state()
    r = st.need_repo()
    return jsonify(model=r.name, checkpoints=st.need_table().rows())


@ui.get("/api/charts/<name>.svg")
def api_chart(name: str):
    table = _state().need_table()
    if name not in CHARTS:
        abort(404)
    return Response(_chart(name, table.rows()), mimetype="image/svg+xml")


@ui.get("/api/checkpoints/<int:n>/files/<name>")
def api_file(n: int, name: str):
    r = _state().need_repo()
    if n not in r.checkpoints() or name not in r.meta(n).get("sha256", {}):
        abort(404, f"checkpoint {n} has no file {name!r}")
    try:
        data = r.read_verified(n, name)
    except StorageError as e:   # corrupt in storage: say so, as the model routes do
        log.warning("checkpoint file unavailable checkpoint=%d file=%s error=%s", n, name, e)
        return jsonify(error=f"checkpoint file unavailable: {e}"), 503
    return Response(data, mimetype="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{r.name}-{n}-{name}"'})


@ui.get("/api/games")
def api_games():
    st = _state()
    r = st.need_repo()
    out = []
    for n in reversed(r.checkpoints()):
        for name, req in st.archive(n).items():
            last = req.examples[-1] if req.examples else None
            out.append({"checkpoint": n, "name": name, "plies": len(req.examples),
                        "result": None if last is None else
                        (last.result if last.turn == 1 else -last.result),
                        "model": f"{last.model_key.name}:{last.model_key.checkpoint}"
                        if last is not None else None})
        if len(out) >= MAX_GAMES_LISTED:
            break
    return jsonify(games=out[:MAX_GAMES_LISTED])


@ui.get("/api/games/<int:n>/<path:name>")
def api_game(n: int, name: str):
    req = _state().archive(n).get(name)
    if req is None or not req.examples:
        abort(404, f"checkpoint {n} holds no game {name!r}")
    try:
        return jsonify(checkpoint=n, name=name, positions=replay(req))
    except (InvalidExampleError, IllegalMoveError, ValueError) as e:
        return jsonify(error=f"game {name} cannot be replayed: {e}"), 422


@ui.get("/api/play/opponents")
def api_opponents():
    return jsonify(opponents=[{"id": o.id, "label": o.label} for o in _state().opponents()])


@ui.post("/api/play/new")
def api_new():
    body = _json_object()
    if body is None:
        return _bad_request("expected a JSON object, optionally with a seed")
    seed = body.get("seed")
    if seed is not None and not isinstance(seed, int):
        return _bad_request("seed must be an integer")
    b = Board.new(seed)
    return jsonify(state=state_b64(b), board=board_json(b))


@ui.post("/api/play/move")
def api_move():
    body = _json_object()
    if body is None:
        return _bad_request("expected a JSON object with state, move and opponent")
    try:
        b = Board.from_proto(base64.b64decode(str(body.get("state", "")), validate=True))
    except (InvalidStateError, ValueError) as e:
        return _bad_request(f"state is not a valid base64 GameEngineState: {e}")
    seat, move = body.get("seat"), body.get("move")
    if seat not in (1, 2):
        return _bad_request("seat must be 1 or 2: the player the person plays")
    if move is not None:
        if not (isinstance(move, list) and len(move) == 3
                and all(isinstance(x, int) for x in move)):
            return _bad_request(
                "move must be [row, col, type] with type 5 (flag) or 0 (normal piece)")
        if b.turn != seat:
            return _bad_request(f"it is player {b.turn}'s turn, not player {seat}'s")
        try:
            b.play(*move)
        except (IllegalMoveError, ValueError) as e:
            return _bad_request(f"illegal move {move}: {e}")
    opponent = body.get("opponent")
    opp = {o.id: o for o in _state().opponents()}.get(opponent) \
        if isinstance(opponent, str) else None
    if opp is None:
        return _bad_request(f"unknown opponent {json.dumps(opponent)[:80]}: use an id from "
                            f"/ui/api/play/opponents")
    replies = []
    # The CPU moves until it is the person's turn again: a player without a legal move is
    # skipped (FLAGZ.md), so the CPU may move several times in a row.
    while not b.is_over and b.turn != seat:
        info = opp.think(b)
        b.play(*info["move"])
        replies.append({"move": list(info["move"]), "value": info.get("value"),
                        "moves": info.get("moves", [])})
    return jsonify(state=state_b64(b), board=board_json(b), cpu=replies)
