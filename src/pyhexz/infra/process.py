"""Process set-up shared by every entry point: logging, torch threads, worker processes.

Every process runs torch with one thread unless told otherwise: on CPUs, scaling out with
processes beats threads for batches this small, and one thread per process keeps two
processes on two cores from fighting. Worker processes are started with `spawn`, never
`fork`: forking after torch has started its thread pools can deadlock the child.

No process outlives the command that started it. A parent stops its workers when it is told to
stop (SIGTERM, SIGINT: each command's own handler, and `daemon=True` for the rest), and a worker
dies with its parent however that ends (a crash, SIGKILL, out of memory): `die_with_parent`,
which every worker calls first (init_worker_process), asks Linux to send it SIGTERM then.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterable
from multiprocessing.process import BaseProcess

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


_PR_SET_PDEATHSIG = 1   # linux/prctl.h


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Asks Linux to send this process `sig` when its parent ends, however it ends (SIGKILL,
    a crash): a worker must not play on, parentless, for hours. SIGTERM, not SIGKILL, so a
    worker that winds down on SIGTERM (the self-play worker's uploads) still does. Whether it
    is armed: not on other systems. A parent that ended before this call is noticed too.

    Linux sends it when the *thread* that started this process ends: start workers from a
    thread that lives as long as they should (the main thread)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        logging.getLogger(__name__).warning(
            "cannot ask to die with the parent error=%s", os.strerror(ctypes.get_errno()))
        return False
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:   # it ended before the prctl
        os.kill(os.getpid(), sig)
    return True


def init_worker_process(threads: int | None = None, log_level: str | int | None = None) -> None:
    """First call in a spawned worker: it dies with its parent (die_with_parent); the parent
    handles Ctrl-C and tells workers to stop."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(log_level)
    setup_torch(threads)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def sigterm_as_ctrl_c() -> None:
    """From now on SIGTERM (`kill`, docker stop) stops this process as Ctrl-C does, with a
    KeyboardInterrupt, so that it stops its processes and says what it did rather than dying
    at once. SIGINT is made Ctrl-C again too: a job started in the background inherits it
    ignored. For a parent process that runs one command to its end."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _interrupt)


def spawn_context() -> multiprocessing.context.SpawnContext:
    return multiprocessing.get_context("spawn")


def start_processes(procs: Iterable[BaseProcess]) -> None:
    """Starts spawned processes with SIGINT and SIGTERM held back until the last one has
    started, then acts on the first that came as this process would have.

    `start()` execs the child and then writes its start-up data into a pipe; a Ctrl-C in
    between raised KeyboardInterrupt in the middle of the write, and the child died reading
    the half-written pipe with a traceback of its own (EOFError in spawn_main) beside the
    parent's clean "interrupted". Held back only in Python (the handlers, not the signal
    mask, which a child inherits across exec), and only in the main thread, the one Python
    runs handlers in."""
    if threading.current_thread() is not threading.main_thread():
        for p in procs:
            p.start()
        return
    came: list[signal.Signals] = []
    held = {s: signal.signal(s, lambda signum, frame: came.append(signal.Signals(signum)))
            for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for p in procs:
            p.start()
    finally:
        for s, handler in held.items():
            signal.signal(s, handler)
    if came:
        handler = held[came[0]]
        if callable(handler):
            handler(came[0], None)
        elif handler == signal.SIG_DFL:
            os.kill(os.getpid(), came[0])
