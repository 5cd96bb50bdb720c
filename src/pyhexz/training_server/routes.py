"""The training server's routes: one blueprint, translating between HTTP and the service.

    POST /training/examples                 AddTrainingExamplesRequest -> ...Response
    GET  /models/latest                     TorchScript bytes of the latest checkpoint
    GET  /models/{name}/checkpoints/{N}     the same for checkpoint N (?file=model.pt)
    GET  /status  /metrics  /healthz  /

The views hold no state: the app that registers the blueprint carries it, the service in
app.config["service"] and the metrics in app.extensions["hexz_metrics"] (create_app puts them
there), so one process can run several servers (tests do). Bad input is answered 4xx with a
message saying what is wrong, never 500; the token check covers every path but /healthz and
the web UI's public pages.
"""

from __future__ import annotations

import json
import logging
import time

from flask import Blueprint, Response, current_app, g, redirect, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from pyhexz import hexz_pb2 as pb
from pyhexz.infra.httpauth import refuse_unauthorized
from pyhexz.infra.httpbody import BadRequest, read_body
from pyhexz.infra.storage import MODEL_FILE, ONNX_FILE, SCRIPT_FILE, StorageError
from pyhexz.training_server.metrics import CONTENT_TYPE, ServerMetrics
from pyhexz.training_server.service import TrainingService

log = logging.getLogger(__name__)

PROTO = "application/x-protobuf"
# The files of a checkpoint that GET /models/... serves (?file=; the TorchScript by default).
SERVED_FILES = (SCRIPT_FILE, MODEL_FILE, ONNX_FILE)
_PROTO_TYPES = {"", PROTO, "application/protobuf", "application/octet-stream",
                "application/vnd.google.protobuf"}
EXAMPLES_PATH = "/training/examples"
METRICS_EXTENSION = "hexz_metrics"
Status = pb.AddTrainingExamplesResponse

routes = Blueprint("training_server", __name__)


def _service() -> TrainingService:
    return current_app.config["service"]


def _metrics() -> ServerMetrics:
    return current_app.extensions[METRICS_EXTENSION]


def _json(obj: dict, status: int = 200) -> Response:
    return Response(json.dumps(obj, indent=1) + "\n", status, mimetype="application/json")


def _proto(msg: Status, status: int) -> Response:
    # The answer's status, for the ingestion-latency histogram (see _observe_ingest).
    g.examples_outcome = Status.Status.Name(msg.status)
    return Response(msg.SerializeToString(), status, mimetype=PROTO)


def error(status: int, message: str) -> Response:
    """A 4xx/5xx answer: a response message for the examples endpoint, JSON elsewhere. Each is
    logged (4xx at INFO, 5xx at WARNING), so an operator sees what clients get wrong."""
    log.log(logging.WARNING if status >= 500 else logging.INFO,
            "request refused method=%s path=%s status=%d error=%r", request.method,
            request.path[:200], status, message[:300])
    if request.path == EXAMPLES_PATH:
        return _proto(_service().answer(Status.REJECTED_OTHER, message), status)
    return _json({"error": message}, status)


# The clock starts before anything else runs for the request (the token check included), so the
# histogram sees what a worker waits for, rejections too.
@routes.before_app_request
def _start_clock() -> None:
    g.request_started = time.monotonic()


@routes.before_app_request
def authorize() -> Response | None:
    return refuse_unauthorized(_service().config.auth_token, error)


@routes.after_app_request
def _observe_ingest(resp: Response) -> Response:
    if request.method == "POST" and request.path == EXAMPLES_PATH:
        started = g.get("request_started")
        if started is not None:
            _metrics().observe_ingest(time.monotonic() - started,
                                      g.get("examples_outcome", "REJECTED_OTHER"))
    return resp


@routes.app_errorhandler(HTTPException)
def http_error(e: HTTPException) -> Response:
    if e.code == 413:
        limit = _service().config.max_request_bytes
        return error(413, f"request body exceeds the limit of {limit} bytes")
    return error(e.code or 500, e.description or e.name)


@routes.app_errorhandler(Exception)
def internal_error(e: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.path)
    return error(500, f"internal error: {type(e).__name__}")


@routes.post(EXAMPLES_PATH)
def add_examples() -> Response:
    service = _service()
    limit = service.config.max_request_bytes
    ctype = (request.mimetype or "").lower()
    if ctype not in _PROTO_TYPES:
        return error(415, f"Content-Type must be {PROTO}, got {ctype}")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        return error(415, f"Content-Encoding must be gzip or none, got {encoding}")
    length = request.content_length
    if length is not None and length > limit:
        return error(413, f"request body of {length} bytes exceeds the limit of {limit} bytes")
    try:
        body = read_body(request)
        status, resp = service.ingest(body, gzipped=encoding == "gzip")
    except BadRequest as e:
        return error(e.http_status, str(e))
    out = _proto(resp, status)
    if status == 503:
        out.headers["Retry-After"] = "5"
    return out


def _send_model(name: str | None, n: int | None) -> Response:
    file = request.args.get("file", SCRIPT_FILE)
    if file not in SERVED_FILES:
        return error(400, f"file must be one of {', '.join(SERVED_FILES)}, got {file!r}")
    try:
        name, n, data, digest = _service().model_file(name, n, file)
    except ValueError as e:
        return error(400, str(e))
    except FileNotFoundError as e:
        return error(404, str(e))
    except StorageError as e:   # the file in storage is corrupt (or storage fails): not ours
        return error(503, f"checkpoint file unavailable: {e}")
    resp = Response(data, 200, mimetype="application/octet-stream")
    resp.headers.update({"X-Model-Name": name, "X-Model-Checkpoint": str(n),
                         "X-Model-SHA256": digest,
                         "Content-Disposition": f'attachment; filename="{name}-{n}-{file}"'})
    return resp


@routes.get("/models/latest")
def latest_model() -> Response:
    return _send_model(None, None)


@routes.get("/models/<name>/checkpoints/<int:n>")
def checkpoint_model(name: str, n: int) -> Response:
    return _send_model(name, n)


@routes.get("/status")
def status() -> Response:
    return _json(_service().status())


@routes.get("/")
def root() -> BaseResponse:   # redirect() makes werkzeug's Response, not Flask's subclass
    return redirect("/ui/training")


@routes.get("/healthz")
def healthz() -> Response:
    service = _service()
    ok = service.healthy()
    return _json({"ok": ok, "failure": service.failure}, 200 if ok else 503)


@routes.get("/metrics")
def metrics() -> Response:
    return Response(_metrics().text(), 200, content_type=CONTENT_TYPE)
