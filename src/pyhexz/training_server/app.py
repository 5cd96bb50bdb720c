"""The training server's HTTP interface (Flask), run under gunicorn:

    gunicorn --workers 1 --threads 8 --bind 0.0.0.0:8080 'pyhexz.training_server:create_app()'

or, for local debugging, `python -m pyhexz server`. Configuration comes from HEXZ_* variables
(the same names as the `pyhexz server` flags: --minibatch-size is HEXZ_MINIBATCH_SIZE).

    POST /training/examples                 AddTrainingExamplesRequest -> ...Response
    GET  /models/latest                     TorchScript bytes of the latest checkpoint
    GET  /models/{name}/checkpoints/{N}     the same for checkpoint N (?file=model.pt: the
                                            pyhexz checkpoint instead)
    GET  /status  /metrics  /healthz
    GET  /ui/...                            the web UI (web/ui.py): training, checkpoints,
                                            games, play

docs/training-server.md describes the contract. The routes (routes.py) are translation
between HTTP and service.TrainingService; no request ever trains (the service's trainer thread
does). Bad input is answered 4xx with a message saying what is wrong, never 500. This module
builds the app: the service, its metrics, the routes, the web UI, the evaluator.

One gunicorn worker: the service owns the write-ahead log directory with an exclusive lock, so
a second worker (or server) on the same state directory fails to start, loudly. Threads serve
requests concurrently; durable acknowledgement waits on the WAL's group commit, not on a lock.
"""

from __future__ import annotations

import atexit
import logging
import os

from flask import Flask

from pyhexz.training_server.config import ServerConfig
from pyhexz.training_server.metrics import ServerMetrics
from pyhexz.training_server.routes import METRICS_EXTENSION, routes
from pyhexz.training_server.service import TrainingService
from pyhexz.web.ui import RepoOpponents, init_ui

log = logging.getLogger(__name__)


def config_from_env() -> ServerConfig:
    """The configuration the `pyhexz server` flags would give, read from HEXZ_* variables."""
    return ServerConfig.from_env()


def create_app(config: ServerConfig | None = None) -> Flask:
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

    app = Flask("pyhexz.training_server")
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    app.config["service"] = service
    app.extensions[METRICS_EXTENSION] = ServerMetrics(config.model_name, service.status)
    app.register_blueprint(routes)
    # The web UI: its pages and scripts are public (they hold no data); every /ui/api call
    # they make carries the token the person types in.
    init_ui(app, repo=service.repo, status=service.status,
            opponents=RepoOpponents(service.repo, config.play_seconds, config.device))

    if config.eval_openings:
        from pyhexz.train.evaluation import EvalConfig, start_evaluator
        proc, stop = start_evaluator(config.storage, config.model_name, EvalConfig(
            openings=config.eval_openings, runs=config.eval_runs, device=config.device))
        atexit.register(lambda: (stop.set(), proc.join(5)))
        app.config["evaluator"] = (proc, stop)
    return app


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


__all__ = ["create_app", "config_from_env", "serve"]
