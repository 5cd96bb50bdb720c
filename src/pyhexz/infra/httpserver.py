"""The training server's HTTP server: waitress, with a deadline for each request to arrive.

Why waitress, and not gunicorn's threads: a gunicorn thread reads the request body itself, so
eight clients that send their headers and then trickle (or withhold) the body take all eight
threads, and /healthz and every upload wait behind them. waitress reads requests in its one
I/O thread (asyncore, poll()) and hands a request to a thread only once it has arrived whole:
a slow client costs a socket, not a thread. It is one process, which the training server is
anyway (it owns its write-ahead log), and it ships as a Python package: the image, the
docker-compose stack and the VM run the same `pyhexz server` command as a developer does.

What waitress lacks is added here: a request (headers and body) that has not arrived
`request_timeout` seconds after its first byte is answered 408 and its connection closed, so
a client that holds a connection open with a trickle is let go too. Connections that send
nothing are closed after `idle_timeout`; more than `connection_limit` at once wait in the
listen backlog. Bodies are held in memory up to 2 MiB each (larger ones in a temporary file),
so the connections at the limit hold at most 2 GiB between them.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyhexz.infra.config import above, at_least, check_settings, setting

log = logging.getLogger(__name__)


@dataclass
class HttpServing:
    """How `pyhexz server` serves HTTP (flags and HEXZ_* variables of their names)."""

    host: str = setting("127.0.0.1", "listen address (0.0.0.0 in containers)")
    # Cloud Run and the images say the port in $PORT.
    port: int = setting(default_factory=lambda: int(os.environ.get("PORT", "8080")),
                        help="listen port ($PORT when set)", check=at_least(0))
    http_threads: int = setting(8, "request threads (requests are read whole before one "
                                "takes them)", check=at_least(1))
    request_timeout: float = setting(30.0, "seconds from a request's first byte until it must "
                                     "have arrived whole, else 408", check=above(0))
    idle_timeout: float = setting(120.0, "seconds an idle connection is kept open",
                                  check=above(0))
    connection_limit: int = setting(1000, "open connections at most; more wait to be "
                                    "accepted", check=at_least(1))

    def __post_init__(self) -> None:
        check_settings(self)


def make_server(app: Callable, serving: HttpServing, max_body_bytes: int) -> Any:
    """A waitress server for the WSGI `app`, bound (port 0: a free one, see `.effective_port`)
    but not yet running: call `.run()`, and `.close()` from another thread to stop it."""
    from waitress.adjustments import Adjustments
    from waitress.channel import HTTPChannel
    from waitress.server import TcpWSGIServer
    from waitress.utilities import Error

    class RequestTimeout(Error):
        code = 408
        reason = "Request Timeout"

    class Channel(HTTPChannel):
        """Remembers when the request being read began (its first byte)."""

        request_began = 0.0
        request: Any   # the request being read (waitress's parser), None between requests

        def received(self, data: bytes) -> bool:
            if self.request is None and data:
                self.request_began = time.monotonic()
            return super().received(data)

        def time_out_request(self, seconds: float) -> bool:
            """Answers the request being read 408 (as waitress answers a malformed one);
            False if there is none."""
            with self.requests_lock:
                request = self.request
                if request is None or request.completed or self.will_close:
                    return False
                request.error = RequestTimeout(
                    f"the request did not arrive within {seconds:g} seconds")
                request.completed = True
                self.request = None
                self.requests.append(request)
                first = len(self.requests) == 1
            if first:
                self.server.add_task(self)
            return True

        def service(self) -> None:
            # Requests waitress refuses itself (malformed framing: 400, too large: 413, ...)
            # never reach the app, which logs its own refusals; timeouts are logged by count.
            error = self.requests[0].error if self.requests else None
            if error is not None and not isinstance(error, RequestTimeout):
                log.info("request refused client=%s status=%d error=%r", self.addr, error.code,
                         str(error.body)[:200])
            super().service()

    class Server(TcpWSGIServer):
        channel_class = Channel

        def maintenance(self, now: float) -> None:
            super().maintenance(now)   # idle connections
            cutoff = time.monotonic() - serving.request_timeout
            timed_out = [channel.addr for channel in list(self.active_channels.values())
                         if channel.request is not None and channel.request_began < cutoff
                         and channel.time_out_request(serving.request_timeout)]
            if timed_out:
                log.info("requests timed out count=%d seconds=%g first_client=%s",
                         len(timed_out), serving.request_timeout, timed_out[0])

    adj = Adjustments(
        host=serving.host, port=serving.port, threads=serving.http_threads,
        connection_limit=serving.connection_limit, channel_timeout=int(serving.idle_timeout),
        # The deadline is checked this often (waitress's maintenance pass).
        cleanup_interval=1, asyncore_use_poll=True,   # poll(): no select() limit of 1024 fds
        # Larger bodies get 413 from waitress before they are buffered, not after.
        max_request_body_size=max_body_bytes, ident="pyhexz",
        # Bodies up to 2 MiB stay in memory (waitress's default, 512 KiB, spooled a request of
        # 100 uncompressed examples to a temporary file and back), read in 256 KiB gulps.
        inbuf_overflow=2 << 20, recv_bytes=256 << 10)
    return Server(app, map={}, adj=adj, sockinfo=adj.listen[0])


def serve(app: Callable, serving: HttpServing, max_body_bytes: int,
          on_stop: Callable[[], None] = lambda: None) -> None:
    """Serves `app` until SIGTERM or SIGINT; then lets the requests being handled finish (for
    a few seconds) and calls `on_stop`."""
    server = make_server(app, serving, max_body_bytes)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)   # no line per queued task
    log.info("serving http://%s:%s threads=%d request_timeout=%gs", serving.host,
             server.effective_port, serving.http_threads, serving.request_timeout)

    def stop(signum: int, frame: object) -> None:
        log.info("stopping signal=%s", signal.Signals(signum).name)
        raise KeyboardInterrupt   # waitress's run() ends on it, after the running requests

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        on_stop()


__all__ = ["HttpServing", "make_server", "serve"]
