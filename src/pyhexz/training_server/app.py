"""The training server's HTTP interface (Flask), served by `pyhexz server` (waitress, see
infra/httpserver.py for why), in production as on a laptop:

    pyhexz server --host 0.0.0.0 --port 8080          # flags or their HEXZ_* variables

`create_app()` (configured by HEXZ_* variables: --minibatch-size is HEXZ_MINIBATCH_SIZE) is
also a WSGI factory for other servers, e.g. gunicorn, but a threaded server that reads request
bodies on its request threads can be stalled by slow clients.

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

One process: the service owns the write-ahead log directory with an exclusive lock, so a
second process (or server) on the same state directory fails to start, loudly. Threads serve
requests concurrently; durable acknowledgement waits on the WAL's group commit, not on a lock.
"""

from __future__ import annotations

import atexit
import logging
import os

from flask import Flask

from pyhexz.infra.httpserver import HttpServing
from pyhexz.infra.httpserver import serve as serve_http
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
            openings=config.eval_openings, runs=config.eval_runs, device=config.device,
            backend=config.backend))
        atexit.register(lambda: (stop.set(), proc.join(5)))
        app.config["evaluator"] = (proc, stop)
    return app


def serve(config: ServerConfig, serving: HttpServing) -> None:
    """The app on waitress (infra/httpserver.py: requests are read whole before a thread takes
    them, and one that does not arrive in time gets 408), until SIGTERM or Ctrl-C."""
    app = create_app(config)
    log.info("server pid=%d model=%s", os.getpid(), config.model_name)
    serve_http(app, serving, config.max_request_bytes,
               on_stop=lambda: app.config["service"].close())


__all__ = ["create_app", "config_from_env", "serve"]
