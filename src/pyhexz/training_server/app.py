"""The training server's HTTP interface (Flask), run under gunicorn:

    gunicorn --workers 1 --threads 8 --bind 0.0.0.0:8080 'pyhexz.training_server:create_app()'

or, for local debugging, `python -m pyhexz server`. Configuration comes from HEXZ_* variables
(the same names as the `pyhexz server` flags: --minibatch-size is HEXZ_MINIBATCH_SIZE).

    POST /training/examples                 AddTrainingExamplesRequest -> ...Response
    GET  /models/latest                     TorchScript bytes of the latest checkpoint
    GET  /models/{name}/checkpoints/{N}     the same for checkpoint N (?file=model.pt: the
                                            pyhexz checkpoint instead)
    GET  /status  /metrics  /healthz
    GET  /ui/...                            the web UI (webui.py): training, checkpoints,
                                            games, play

docs/training-server.md describes the contract. Everything here is translation between HTTP
and training_service.TrainingService; no request ever trains (the service's trainer thread
does). Bad input is answered 4xx with a message saying what is wrong, never 500.

One gunicorn worker: the service owns the write-ahead log directory with an exclusive lock, so
a second worker (or server) on the same state directory fails to start, loudly. Threads serve
requests concurrently; durable acknowledgement waits on the WAL's group commit, not on a lock.
"""

from __future__ import annotations

import atexit
import hmac
import json
import logging
import os
from typing import Optional

from flask import Flask, Response, redirect, request
from werkzeug.exceptions import HTTPException

from pyhexz import hexz_pb2 as pb
from pyhexz.infra.storage import MODEL_FILE, SCRIPT_FILE
from pyhexz.training_server.service import BadRequest, TrainingService
from pyhexz.training_server.config import ServerConfig
from pyhexz.web.ui import RepoOpponents, create_ui

log = logging.getLogger(__name__)

PROTO = "application/x-protobuf"
_PROTO_TYPES = {"", PROTO, "application/protobuf", "application/octet-stream",
                "application/vnd.google.protobuf"}
Status = pb.AddTrainingExamplesResponse


def config_from_env() -> ServerConfig:
    """The configuration the `pyhexz server` flags would give, read from HEXZ_* variables."""
    from pyhexz.cli import build_parser, server_config
    return server_config(build_parser().parse_args(["server"]))


def _public_ui_path(path: str) -> bool:
    return path == "/" or (path.startswith("/ui/") and not path.startswith("/ui/api/"))


def _json(obj: dict, status: int = 200) -> Response:
    return Response(json.dumps(obj, indent=1) + "\n", status, mimetype="application/json")


def _proto(msg, status: int) -> Response:
    return Response(msg.SerializeToString(), status, mimetype=PROTO)


def create_app(config: Optional[ServerConfig] = None) -> Flask:
    """The Flask app with its TrainingService (started: WAL recovered, trainer running).

    `config` None: from HEXZ_* variables (gunicorn). app.config["service"] is the service;
    call its close() to stop (tests restarting a server in one process do).
    """
    from pyhexz.infra.process import configure_logging, setup_torch
    if config is None:
        configure_logging()
        setup_torch()
        config = config_from_env()
    service = TrainingService(config)
    atexit.register(service.close, 10.0)
    token = (config.auth_token or "").encode()

    app = Flask("pyhexz.training_server")
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    app.config["service"] = service

    def error(status: int, message: str) -> Response:
        """A 4xx/5xx answer: a response message for the examples endpoint, JSON elsewhere."""
        if request.path == "/training/examples":
            return _proto(service.answer(Status.REJECTED_OTHER, message), status)
        return _json({"error": message}, status)

    @app.before_request
    def authorize() -> Optional[Response]:
        if not token or request.path == "/healthz" or _public_ui_path(request.path):
            return None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            resp = error(401, "missing or wrong 'Authorization: Bearer <token>' header")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="pyhexz"'
            return resp
        return None

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Response:
        if e.code == 413:
            return error(413, f"request body exceeds the limit of {config.max_request_bytes} bytes")
        return error(e.code or 500, e.description or e.name)

    @app.errorhandler(Exception)
    def internal_error(e: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.path)
        return error(500, f"internal error: {type(e).__name__}")

    @app.post("/training/examples")
    def add_examples() -> Response:
        ctype = (request.mimetype or "").lower()
        if ctype not in _PROTO_TYPES:
            return error(415, f"Content-Type must be {PROTO}, got {ctype}")
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            return error(415, f"Content-Encoding must be gzip or none, got {encoding}")
        length = request.content_length
        if length is not None and length > config.max_request_bytes:
            return error(413, f"request body of {length} bytes exceeds the limit of "
                              f"{config.max_request_bytes} bytes")
        body = request.get_data(cache=False)
        try:
            status, resp = service.ingest(body, gzipped=encoding == "gzip")
        except BadRequest as e:
            return error(e.http_status, str(e))
        out = _proto(resp, status)
        if status == 503:
            out.headers["Retry-After"] = "5"
        return out

    def send_model(name: Optional[str], n: Optional[int]) -> Response:
        file = request.args.get("file", SCRIPT_FILE)
        if file not in (SCRIPT_FILE, MODEL_FILE):
            return error(400, f"file must be {SCRIPT_FILE} or {MODEL_FILE}, got {file!r}")
        try:
            name, n, data, digest = service.model_file(name, n, file)
        except ValueError as e:
            return error(400, str(e))
        except FileNotFoundError as e:
            return error(404, str(e))
        resp = Response(data, 200, mimetype="application/octet-stream")
        resp.headers.update({"X-Model-Name": name, "X-Model-Checkpoint": str(n),
                             "X-Model-SHA256": digest,
                             "Content-Disposition": f'attachment; filename="{name}-{n}-{file}"'})
        return resp

    @app.get("/models/latest")
    def latest_model() -> Response:
        return send_model(None, None)

    @app.get("/models/<name>/checkpoints/<int:n>")
    def checkpoint_model(name: str, n: int) -> Response:
        return send_model(name, n)

    @app.get("/status")
    def status() -> Response:
        return _json(service.status())

    # The web UI: its pages and scripts are public (they hold no data); every /ui/api call
    # they make carries the token the person types in.
    app.register_blueprint(create_ui(
        repo=service.repo, status=service.status,
        opponents=RepoOpponents(service.repo, config.play_seconds, config.device)),
        url_prefix="/ui")

    @app.get("/")
    def root() -> Response:
        return redirect("/ui/training")

    if config.eval_openings:
        from pyhexz.train.evaluation import EvalConfig, start_evaluator
        proc, stop = start_evaluator(config.storage, config.model_name, EvalConfig(
            openings=config.eval_openings, runs=config.eval_runs, device=config.device))
        atexit.register(lambda: (stop.set(), proc.join(5)))
        app.config["evaluator"] = (proc, stop)

    @app.get("/healthz")
    def healthz() -> Response:
        ok = service.healthy()
        return _json({"ok": ok, "failure": service.failure}, 200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(prometheus_text(service.status()), 200,
                        mimetype="text/plain; version=0.0.4")

    return app


def prometheus_text(s: dict) -> str:
    """The status as Prometheus text exposition (counters end in _total)."""
    model = s["model"]
    ex, tr, wal = s["examples"], s["training"], s["wal"]
    rows = [
        ("pyhexz_checkpoint", "gauge", "latest published checkpoint", s["checkpoint"]),
        ("pyhexz_examples_received_total", "counter", "examples accepted since start", ex["received"]),
        ("pyhexz_examples_recovered_total", "counter", "examples replayed from the WAL at start",
         ex["recovered"]),
        ("pyhexz_examples_pending", "gauge", "accepted examples not yet in a checkpoint", ex["pending"]),
        ("pyhexz_examples_trained_total", "counter", "examples in the model's checkpoints",
         ex["trained"]),
        ("pyhexz_examples_per_second", "gauge", "examples accepted per second (last minute)",
         ex["per_second"]),
        ("pyhexz_training_in_progress", "gauge", "1 while a training run is going on",
         int(tr["in_progress"])),
        ("pyhexz_training_runs_total", "counter", "training runs since start", tr["runs"]),
        ("pyhexz_training_failures_total", "counter", "training runs discarded since start",
         tr["failures"]),
        ("pyhexz_policy_loss", "gauge", "policy loss of the last run", tr["last"].get("policy_loss")),
        ("pyhexz_value_loss", "gauge", "value loss of the last run", tr["last"].get("value_loss")),
        ("pyhexz_wal_bytes", "gauge", "bytes held in the write-ahead log", wal["end"] - wal["first"]),
        ("pyhexz_wal_commits_total", "counter", "group commits (fdatasync) since start", wal["commits"]),
        ("pyhexz_up", "gauge", "1 while the trainer is healthy", int(bool(s["ready"]))),
        ("pyhexz_uptime_seconds", "gauge", "seconds since start", s["uptime_seconds"]),
    ]
    out = []
    for name, kind, help_, value in rows:
        out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        if value is not None:
            out.append(f'{name}{{model="{model}"}} {value}')
    out += ["# HELP pyhexz_requests_total answers to POST /training/examples by status",
            "# TYPE pyhexz_requests_total counter"]
    out += [f'pyhexz_requests_total{{model="{model}",status="{k}"}} {v}'
            for k, v in sorted(s["requests"].items())]
    return "\n".join(out) + "\n"


def serve(config: ServerConfig, host: str, port: int) -> None:
    """The Flask app on werkzeug's threaded server (local debugging; production: gunicorn)."""
    from werkzeug.serving import make_server
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # quiet: no line per request
    app = create_app(config)
    server = make_server(host, port, app, threaded=True)
    log.info("serving http://%s:%d model=%s pid=%d", host, server.server_port, config.model_name,
             os.getpid())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.config["service"].close()


__all__ = ["create_app", "config_from_env", "prometheus_text", "serve"]
