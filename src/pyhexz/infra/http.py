"""HTTP to the training server, and the one retry backoff every process uses.

The worker's uploads, model downloads by the worker and the CPU player (pyhexz.nn.follow) and
the training server's own retries all wait with `Backoff`: one formula, so a fleet that lost
its server comes back spread out, not in step.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import requests

from pyhexz.infra.redact import redact_urls


@dataclass
class Backoff:
    """Exponential backoff with full jitter: a delay drawn uniformly from [0, min(cap, base*2^n)].

    Full jitter spreads the retries of many workers after a server restart, so they do not
    all knock again at the same moment.
    """

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.cap, self.base * 2.0 ** min(attempt, 32)))


class ServerClient:
    """HTTP to the training server: base URL, bearer token, timeouts. One per thread."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(
                f"training server URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, *, timeout: float | None = None,
                **kwargs) -> requests.Response:
        # (connect, read): a server that is down is noticed in seconds, a slow answer is waited for.
        t = self.timeout if timeout is None else timeout
        return self.session.request(method, self.url + path, timeout=(min(5.0, t), t), **kwargs)

    def post_examples(self, gzipped: bytes, timeout: float | None = None) -> requests.Response:
        return self.request("POST", "/training/examples", data=gzipped, timeout=timeout, headers={
            "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})


def short_error(e: BaseException) -> str:
    """One line for a log: requests' connection errors run to several hundred characters.
    Credentials in URLs are hidden (the line may also end up on a status page)."""
    if isinstance(e, requests.ConnectionError) and e.request is not None:
        errno = re.search(r"\[Errno -?\d+\] [^'\")]+|Connection (?:reset|aborted|refused)[^'\")]*",
                          str(e))
        return redact_urls(f"cannot reach {e.request.url}: "
                           f"{errno.group(0) if errno else type(e).__name__}")
    text = str(e).strip().splitlines()
    return redact_urls(f"{type(e).__name__}: {text[0][:300]}") if text else type(e).__name__
