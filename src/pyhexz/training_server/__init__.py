"""The training server: HTTP ingestion of self-play games, durable, one trainer, publishing.

    app.py             the Flask app; gunicorn runs 'pyhexz.training_server:create_app()'
    routes.py          its routes (one blueprint); metrics.py: GET /metrics (prometheus_client)
    config.py          ServerConfig
    service.py         the TrainingService behind the routes, composed of:
    ingestion.py         parse, validate, dedupe (game-id ledger), WAL append
    trainer_thread.py    the one trainer: recovery, training, checkpoints, WAL trim
    model_files.py       checkpoint files served to workers
    redis_mirror.py      the Redis copy of the newest model
    status.py            the status dict and its counters
    wal.py             the write-ahead log that acknowledged games are on before they are answered

(Not `pyhexz.server`: that name is the CPU player's since 2023, and stays so.)
"""

from typing import Any


def __getattr__(name: str) -> Any:
    # create_app lives in app.py, which imports Flask; reading ServerConfig (the CLI's
    # `pyhexz server --help`) must not pay for that.
    if name in ("create_app", "serve"):
        from pyhexz.training_server import app
        return getattr(app, name)
    raise AttributeError(f"module 'pyhexz.training_server' has no attribute {name!r}")


__all__ = ["create_app", "serve"]
