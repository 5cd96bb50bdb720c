"""Process set-up shared by every entry point: logging, torch threads, worker processes.

Every process runs torch with one thread unless told otherwise: on CPUs, scaling out with
processes beats threads for batches this small, and one thread per process keeps two
processes on two cores from fighting. Worker processes are started with `spawn`, never
`fork`: forking after torch has started its thread pools can deadlock the child.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys

from pyhexz.infra.redact import redact_urls


class RedactingFormatter(logging.Formatter):
    """Log lines, tracebacks included, with the credentials of any URL in them hidden: a URL
    with a password reaches a log in exception messages too (requests puts it there)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_urls(super().format(record))


def configure_logging(level: str | int | None = None) -> None:
    """key=value log lines on stderr, credentials in URLs hidden; INFO for pyhexz (progress),
    WARNING for libraries."""
    level = level or os.environ.get("HEXZ_LOG_LEVEL", "INFO")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(
        "%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("pyhexz").setLevel(level if isinstance(level, int) else level.upper())


def setup_torch(threads: int | None = None) -> None:
    import torch
    threads = threads or int(os.environ.get("HEXZ_THREADS", "1"))
    torch.set_num_threads(threads)


def init_worker_process(threads: int | None = None, log_level: str | int | None = None) -> None:
    """First call in a spawned worker: the parent handles Ctrl-C and tells workers to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(log_level)
    setup_torch(threads)


def spawn_context() -> multiprocessing.context.SpawnContext:
    return multiprocessing.get_context("spawn")
