"""The remote CPU player service: game servers ask it for a move (FLAGZ.md section 9).

    gunicorn --bind :8080 --workers 1 --threads 8 --timeout 0 'pyhexz.cpu:create_app()'
    python -m pyhexz cpu-server --model-path runs/local --port 8080       # the same, via gunicorn

Endpoints:

    POST /hexz/cpu/suggest   application/json: {"maxThinkTime": ns, "gameEngineState": base64}
                             -> {"move": {"move": N, "row": r, "col": c, "type": 0|5},
                                 "stats": the Go player's MCTSStats (go_stats)};
                             application/x-protobuf: SuggestMoveRequest -> SuggestMoveResponse
                             with move_stats (visit share FINAL, prior MCTS_PRIOR, value)
    GET  /status             JSON: the player and its model, requests served, think times
    GET  /healthz            "ok"

Configuration comes from HEXZ_* environment variables (`CpuServerConfig`, also the flags of
`pyhexz cpu-server`). Which model plays and how requests share the machine: pyhexz.cpu.player.

The think time runs from the moment the handler starts, before the body is read, and the
search stops `think_margin_ms` early for the answer's way back, so the caller's wall time
tracks the think time. An `X-Request-Deadline` header (RFC 3339, as the hexz Go client sends
it) shortens the think time further. Waiting for a free search slot counts against it too.
Every move's answer says what happened in headers: X-Hexz-Budget-Ms (the time the search was
given: the think time as capped and shortened, less the margin), X-Hexz-Search-Ms (what it
took), X-Hexz-Iterations (simulations) and X-Hexz-Model (which model played).

The routes are one module-level blueprint (`routes`); create_app builds the player and keeps
it, with the settings and the request log, in app.extensions[CPU_EXTENSION] for the views.

`maxThinkTime: 0` is what it is to the Go player: a minimal search, one simulation (or
`maxIterations` of them); a request without maxThinkTime gets the default think time.

With an auth token (`--auth-token`, HEXZ_AUTH_TOKEN) every route but /healthz and the Play
page itself needs `Authorization: Bearer <token>` (infra/httpauth.py, the training server's
rule); without one, as by default, the service is open: the hexz Go server sends no token.

Every answer is a legal move for the player to move in the given state. Bad input (malformed
JSON, base64 or protobuf, an invalid or finished game state, negative limits) gets 400 with a
JSON body {"error": "..."} saying what is wrong; an unknown content type 415; never a 500.
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import logging
import math
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import cast

from flask import Blueprint, Flask, Response, current_app, redirect, request
from google.protobuf.message import DecodeError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from pyhexz import hexz_pb2 as pb
from pyhexz.cpu.config import CpuServerConfig
from pyhexz.cpu.player import (
    CpuPlayer,
    ModelFollower,
    NoModelYet,
    SearchOptions,
    SearchUnavailable,
    load_served_model,
    shipped_or_rollout,
)
from pyhexz.game.board import Board, IllegalMoveError, InvalidStateError
from pyhexz.infra.http import ServerClient
from pyhexz.infra.httpauth import refuse_unauthorized

# A request the client got wrong (message, HTTP status); bounded gunzip.
from pyhexz.infra.httpbody import BadRequest as BadInput
from pyhexz.infra.httpbody import gunzip, read_body
from pyhexz.infra.modelbus import ModelBus
from pyhexz.infra.redact import redact_url
from pyhexz.nn.follow import LiveModel, LoadedModel, ModelFetcher
from pyhexz.search.timed import SearchResult
from pyhexz.web.ui import cpu_player_opponents, init_ui

log = logging.getLogger(__name__)

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
_PROTOBUF_TYPES = (PROTOBUF, "application/protobuf", "application/octet-stream")
MAX_BODY_BYTES = 1 << 20      # a GameEngineState is about 4 KB
SUGGEST_PATH = "/hexz/cpu/suggest"


@dataclass
class SuggestRequest:
    board: Board
    think_ms: int | None   # as asked; None: the default; 0: a minimal search
    max_iterations: int    # as asked; 0: no cap


def _decoded_body() -> bytes:
    encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
    data = read_body(request)
    if encoding == "identity":
        return data
    if encoding != "gzip":
        raise BadInput(f"Content-Encoding {encoding!r} is not supported (use gzip or none)", 415)
    return gunzip(data, MAX_BODY_BYTES)


def _board(state) -> Board:
    try:
        board = Board.from_proto(state)
    except InvalidStateError as e:
        raise BadInput(f"invalid game state: {e}") from None
    if board.is_over:
        s1, s2 = board.score
        raise BadInput(f"the game is over (score {s1}:{s2}): there is no move to suggest")
    return board


def _int_field(obj: dict, key: str) -> int:
    v = obj.get(key, 0)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadInput(f"{key} must be a non-negative integer, got {json.dumps(v)[:50]}")
    if v < 0:
        raise BadInput(f"{key} must be >= 0, got {v}")
    return v


def parse_json_request(body: bytes) -> SuggestRequest:
    """The JSON form the hexz Go server sends (maxThinkTime in nanoseconds, the state as
    standard base64); BadInput says what is wrong."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise BadInput(f"the body is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise BadInput(f"the body must be a JSON object, got {type(obj).__name__}")
    think_ns = None if obj.get("maxThinkTime") is None else _int_field(obj, "maxThinkTime")
    max_iterations = _int_field(obj, "maxIterations")
    enc = obj.get("gameEngineState")
    if not isinstance(enc, str) or not enc:
        raise BadInput("gameEngineState must be a string: the standard base64 of a binary "
                       "GameEngineState")
    try:
        raw = base64.b64decode(enc, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadInput(f"gameEngineState is not standard base64: {e}") from None
    # Round up: a think time of 1 ns is a think time, not a minimal search.
    return SuggestRequest(_board(raw), None if think_ns is None else -(-think_ns // 1_000_000),
                          max_iterations)


def parse_proto_request(body: bytes) -> SuggestRequest:
    """A binary SuggestMoveRequest; BadInput says what is wrong. proto3 cannot tell an unset
    max_think_time_ms from 0: both mean the default think time here."""
    msg = pb.SuggestMoveRequest()
    try:
        msg.ParseFromString(body)
    except (DecodeError, RecursionError, ValueError) as e:
        raise BadInput(f"the body is not a SuggestMoveRequest protobuf: {e}") from None
    if not msg.HasField("game_engine_state"):
        raise BadInput("SuggestMoveRequest has no game_engine_state")
    if msg.max_think_time_ms < 0 or msg.max_iterations < 0:
        raise BadInput(f"max_think_time_ms ({msg.max_think_time_ms}) and max_iterations "
                       f"({msg.max_iterations}) must be >= 0")
    return SuggestRequest(_board(msg.game_engine_state), msg.max_think_time_ms or None,
                          msg.max_iterations)


def _deadline_header(now: float) -> float | None:
    """X-Request-Deadline (RFC 3339) as a time.monotonic() deadline."""
    raw = request.headers.get("X-Request-Deadline")
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw.strip())
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise BadInput(f"X-Request-Deadline {raw[:60]!r} is not an RFC 3339 time with a zone")
    return now + (when.timestamp() - time.time())


def go_stats(result: SearchResult) -> dict:
    """The search's statistics as the Go player's MCTSStats (FLAGZ.md section 9): Go marshals
    the struct without JSON tags, so the keys are its field names. Per root move, Q is the
    mover's mean result mapped to [0, 1] (0.5 + mean value / 2; 0 for a move never visited,
    as Go reports it) and U the exploration term of the rule that searched (PUCT or UCT)."""
    tree = result.tree
    assert tree is not None, "go_stats needs a search run with tree_stats"
    return {
        "Iterations": result.iterations, "MaxDepth": tree.depth_levels, "TreeSize": tree.size,
        "LeafNodes": tree.leaf_nodes, "BranchNodes": tree.branch_nodes,
        # Go's map[int]int: JSON object keys are the numbers as strings.
        "VisitCounts": [{str(k): v for k, v in sorted(d.items())} for d in tree.visit_counts],
        "Elapsed": round(result.seconds * 1e9),
        "Moves": [{"Row": m.move[0], "Col": m.move[1], "CellType": m.move[2],
                   "U": m.exploration, "Q": 0.0 if m.value is None else 0.5 + m.value / 2,
                   "Iterations": m.visits} for m in tree.moves],
    }


def json_response(result: SearchResult, board: Board) -> Response:
    """The JSON answer (FLAGZ.md section 9): the move, at the board's move counter, and the
    search's statistics as the Go player reports them."""
    row, col, typ = result.move
    body = {"move": {"move": board.move, "row": row, "col": col, "type": typ},
            "stats": go_stats(result)}
    return Response(json.dumps(body), mimetype=JSON)


def proto_response(result: SearchResult, board: Board) -> Response:
    """A SuggestMoveResponse: the move, and per root move its visit share (FINAL, first) and
    prior (MCTS_PRIOR), with the root value from the mover's view."""
    row, col, typ = result.move
    stats = pb.SuggestMoveStats(value=result.value)
    for (r, c, t), share, prior in result.scored_moves():
        stats.moves.add(row=r, col=c, type=t, scores=[
            pb.SuggestMoveStats.Score(kind=pb.SuggestMoveStats.FINAL, score=share),
            pb.SuggestMoveStats.Score(kind=pb.SuggestMoveStats.MCTS_PRIOR, score=prior)])
    resp = pb.SuggestMoveResponse(
        # The search's cell types are Field.CellType numbers; the stubs type the field as the
        # enum, which plain ints are at run time.
        move=pb.GameEngineMove(player_num=board.turn, move=board.move, row=row, col=col,
                               cell_type=cast("pb.Field.CellType", typ)),
        move_stats=stats)
    return Response(resp.SerializeToString(), mimetype=PROTOBUF)


def _quantiles(xs: list[float]) -> dict | None:
    if not xs:
        return None
    s = sorted(xs)
    p90 = s[max(0, math.ceil(0.9 * len(s)) - 1)]   # nearest rank
    return {"median": round(statistics.median(s), 1), "p90": round(p90, 1),
            "max": round(s[-1], 1)}


class RequestLog:
    """Counts the answers to suggest requests by status (`served`: those answered 200; /status,
    /healthz and the UI are not what the service serves) and keeps the think times of the
    latest suggestions."""

    def __init__(self, keep: int = 1000) -> None:
        self._lock = threading.Lock()
        self.by_status: collections.Counter[int] = collections.Counter()
        self._recent: collections.deque = collections.deque(maxlen=keep)

    def count(self, status: int) -> None:
        with self._lock:
            self.by_status[status] += 1

    def suggestion(self, think_ms: float, wall_ms: float, result: SearchResult) -> None:
        with self._lock:
            self._recent.append((think_ms, wall_ms, result.seconds * 1000, result.iterations))

    def summary(self) -> dict:
        with self._lock:
            recent = list(self._recent)
            by_status = dict(self.by_status)
        col = lambda i: [r[i] for r in recent]  # noqa: E731
        return {
            "served": by_status.get(200, 0),
            "by_status": {str(k): v for k, v in sorted(by_status.items())},
            "recent": len(recent),
            "think_time_ms": _quantiles(col(0)),
            "wall_time_ms": _quantiles(col(1)),
            "overhead_ms": _quantiles([w - t for t, w, _, _ in recent]),
            "search_ms": _quantiles(col(2)),
            "iterations": _quantiles(col(3)),
        }


def build_player(cfg: CpuServerConfig, shipped_root: Path | None = None) -> CpuPlayer:
    """The CPU player the settings describe: its model loaded, its follower started.

    Which model plays: the model path's; without one the model that ships with pyhexz
    (`shipped_root`: its models folder, the package's by default), unless rollout MCTS is asked
    for. A shipped model that is missing or fails its SHA-256 check means rollout MCTS, with
    one loud log line saying why. A followed training run's models replace either as they come.
    """
    following = bool(cfg.redis_url or cfg.server_url)
    model = load_model_path(cfg, shipped_root)
    follower = ModelFollower(_live_model(cfg), model) if following else None
    playing = model
    if model is not None:
        why = f"the model path {redact_url(cfg.model_path)}"
    elif cfg.rollout:
        why = "rollout MCTS, as asked for (rollout setting)"
    else:
        playing, why = shipped_or_rollout(cfg.device, shipped_root, cfg.backend)
    if following and model is None:
        why += "; until the followed training run publishes a model"
    options = SearchOptions(slots=cfg.search_slots, leaves_per_round=cfg.leaves_per_round,
                            max_tree_nodes=cfg.max_tree_nodes, tree=cfg.tree)
    player = CpuPlayer(playing, follower, options, why=why)
    m = player.model
    log.info("cpu player ready player=%s model=%s source=%s why=%r redis=%s server=%s",
             "neural" if m else "rollout", f"{m.key.name}:{m.key.checkpoint}" if m else "none",
             m.source if m else "-", why, redact_url(cfg.redis_url), redact_url(cfg.server_url))
    return player


def load_model_path(cfg: CpuServerConfig,
                    shipped_root: Path | None = None) -> LoadedModel | None:
    """The model the model path names; None without a model path, or when it has no checkpoint
    yet and a followed training run will publish one. Raises what load_served_model raises for
    one that cannot be used (`pyhexz cpu-server` calls it before it starts gunicorn, so that a
    bad model path is one line, not a worker's traceback)."""
    if not cfg.model_path:
        return None
    try:
        return load_served_model(cfg.model_path, cfg.model_name, cfg.device, shipped_root,
                                 cfg.backend)
    except NoModelYet as e:
        if not (cfg.redis_url or cfg.server_url):
            raise
        log.info("no model yet error=%r; the training run has not published one", str(e))
        return None


def _live_model(cfg: CpuServerConfig):
    """A LiveModel over Redis and/or the training server."""
    # CpuServerConfig requires a model name with a Redis URL.
    bus = ModelBus(cfg.redis_url, cfg.model_name) if cfg.redis_url and cfg.model_name else None
    token = cfg.server_auth_token or cfg.auth_token
    client = ServerClient(cfg.server_url, token) if cfg.server_url else None
    return LiveModel(ModelFetcher(client, bus, cfg.device, cfg.model_name, cfg.backend),
                     poll_seconds=cfg.model_poll_seconds, role="cpu player")


@dataclass
class CpuServer:
    """What the routes read, kept in app.extensions[CPU_EXTENSION] by create_app."""

    config: CpuServerConfig
    player: CpuPlayer
    requests: RequestLog = field(default_factory=RequestLog)
    started: float = field(default_factory=time.time)


CPU_EXTENSION = "hexz_cpu"

routes = Blueprint("cpu", __name__)


def _server() -> CpuServer:
    return current_app.extensions[CPU_EXTENSION]


def error(message: str, status: int) -> Response:
    return Response(json.dumps({"error": message}), status=status, mimetype=JSON)


@routes.before_app_request
def authorize() -> Response | None:
    return refuse_unauthorized(_server().config.auth_token,
                               lambda status, message: error(message, status))


@routes.app_errorhandler(BadInput)
def bad_input(e: BadInput) -> Response:
    log.info("request refused method=%s path=%s status=%d error=%r", request.method,
             request.path[:200], e.http_status, str(e)[:300])
    return error(str(e), e.http_status)


@routes.app_errorhandler(HTTPException)
def http_error(e: HTTPException) -> Response:
    if e.code == 413:
        return error(f"the body is larger than {MAX_BODY_BYTES} bytes", 413)
    return error(f"{e.name}: {e.description}", e.code or 500)


@routes.app_errorhandler(Exception)
def internal_error(e: Exception) -> Response:
    log.exception("internal error path=%s", request.path)
    return error(f"internal error: {type(e).__name__}", 500)


@routes.after_app_request
def count(resp: Response) -> Response:
    if request.path == SUGGEST_PATH:
        _server().requests.count(resp.status_code)
    return resp


@routes.post(SUGGEST_PATH)
def suggest() -> Response:
    t0 = time.monotonic()
    server = _server()
    cfg = server.config
    mimetype = request.mimetype
    if mimetype == JSON:
        req = parse_json_request(_decoded_body())
    elif mimetype in _PROTOBUF_TYPES:
        req = parse_proto_request(_decoded_body())
    else:
        raise BadInput(f"Content-Type {mimetype or 'none'!r}: use {JSON} or {PROTOBUF}", 415)
    max_iterations = req.max_iterations
    if req.think_ms == 0:
        # The Go player's minimal search: one simulation (or the asked number), bounded by
        # the longest think time rather than by the clock.
        think_ms = cfg.max_think_ms
        max_iterations = max_iterations or 1
    else:
        think_ms = min(req.think_ms or cfg.default_think_ms, cfg.max_think_ms)
    deadline = t0 + (think_ms - cfg.think_margin_ms) / 1000
    header_deadline = _deadline_header(t0)
    if header_deadline is not None:
        deadline = min(deadline, header_deadline - cfg.think_margin_ms / 1000)
    if cfg.max_iterations:
        max_iterations = min(max_iterations or cfg.max_iterations, cfg.max_iterations)
    try:
        result, model = server.player.suggest(req.board, deadline, max_iterations,
                                              timeout=cfg.max_think_ms / 1000 + 60,
                                              tree_stats=mimetype == JSON)
    except SearchUnavailable as e:
        return error(f"no move: {e}", 503)
    try:
        req.board.copy().play(*result.move)
    except IllegalMoveError as e:   # never expected: the search only plays legal moves
        log.error("search chose an illegal move move=%s error=%s", result.move, e)
        return error("internal error: the search chose an illegal move", 500)
    resp = (json_response if mimetype == JSON else proto_response)(result, req.board)
    resp.headers["X-Hexz-Iterations"] = str(result.iterations)
    resp.headers["X-Hexz-Search-Ms"] = f"{result.seconds * 1000:.1f}"
    # The time the search was given (think time, capped, shortened by X-Request-Deadline,
    # less the margin): what the server decided, whatever the machine's speed made of it.
    resp.headers["X-Hexz-Budget-Ms"] = f"{(deadline - t0) * 1000:.1f}"
    resp.headers["X-Hexz-Model"] = model
    server.requests.suggestion(0 if req.think_ms == 0 else think_ms,
                               (time.monotonic() - t0) * 1000, result)
    return resp


@routes.get("/status")
def status() -> Response:
    server = _server()
    cfg = server.config
    body = {
        "service": "pyhexz cpu player",
        "uptime_s": round(time.time() - server.started, 1),
        **server.player.status(),
        "requests": server.requests.summary(),
        "config": {
            "max_think_ms": cfg.max_think_ms, "default_think_ms": cfg.default_think_ms,
            "max_iterations": cfg.max_iterations, "search_slots": cfg.search_slots,
            "think_margin_ms": cfg.think_margin_ms, "device": cfg.device,
            "model_path": redact_url(cfg.model_path), "redis_url": redact_url(cfg.redis_url),
            "server_url": redact_url(cfg.server_url), "rollout": cfg.rollout,
            "auth_token": bool(cfg.auth_token)},
    }
    return Response(json.dumps(body, indent=1), mimetype=JSON)


@routes.get("/healthz")
def healthz() -> Response:
    return Response("ok\n", mimetype="text/plain")


@routes.get("/")
def root() -> BaseResponse:   # redirect() makes werkzeug's Response, not Flask's subclass
    return redirect("/ui/play")


# gunicorn's exit status for a worker that cannot boot: its arbiter then stops, instead of
# starting the same failing worker again and again.
WORKER_BOOT_ERROR = 3


def _build_player_or_exit(cfg: CpuServerConfig) -> CpuPlayer:
    """build_player, for the factory that `flask --app` and gunicorn call: a model path that
    cannot be loaded (missing, corrupt, of another kind) is one error line and exit status 3,
    not a traceback (`pyhexz cpu-server` checks the path before it starts gunicorn)."""
    try:
        return build_player(cfg)
    except (ValueError, OSError) as e:   # ModelLoadError is a ValueError
        log.error("cpu player cannot start: %s", e)
        raise SystemExit(WORKER_BOOT_ERROR) from None


def create_app(config: CpuServerConfig | None = None,
               player: CpuPlayer | None = None) -> Flask:
    """The Flask app (a gunicorn/flask factory). Without arguments it reads HEXZ_* variables
    and sets up the process for serving (logging, torch, GIL switching), as under gunicorn."""
    if config is None:
        from pyhexz.infra.process import configure_logging, setup_torch
        configure_logging()
        setup_torch()
        # The compiled rollout search holds the GIL for milliseconds at a time; a request
        # thread waiting for it asks for a switch after this interval (default 5 ms). 1 ms
        # keeps concurrent requests' wall times close to their think times.
        sys.setswitchinterval(0.001)
        config = CpuServerConfig.from_env()
        player = player or _build_player_or_exit(config)
    cfg = config
    player = player or build_player(cfg)
    app = Flask("pyhexz.cpu")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions[CPU_EXTENSION] = CpuServer(cfg, player)
    app.register_blueprint(routes)
    # People play the same player on the web UI's Play page.
    init_ui(app, opponents=cpu_player_opponents(
        player, min(cfg.default_think_ms, cfg.max_think_ms) / 1000))
    return app


__all__ = ["CpuServerConfig", "create_app", "build_player", "load_model_path",
           "parse_json_request", "parse_proto_request", "SUGGEST_PATH"]
