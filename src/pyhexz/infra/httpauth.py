"""The bearer-token check both servers use (training server and CPU player).

One rule for both: with a token set, every request must carry `Authorization: Bearer <token>`
except `/healthz` (for load balancers and health checks) and the web UI's pages (`/` and
`/ui/...` but not `/ui/api/...`), which hold no data: they ask the person for the token once
and send it with every data request. Without a token every request passes. Comparison is in
constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from flask import Response, request

UNAUTHORIZED = "missing or wrong 'Authorization: Bearer <token>' header"


def public_path(path: str) -> bool:
    """Paths that need no token: the health check and the UI's pages (not their data)."""
    return path in ("/", "/healthz") or (path.startswith("/ui/")
                                         and not path.startswith("/ui/api/"))


def refuse_unauthorized(token: str | None,
                        error: Callable[[int, str], Response]) -> Response | None:
    """For a before-request hook: None when the request may go on, else the 401 answer made
    by `error(status, message)` (each server answers errors in its own form)."""
    if not token or public_path(request.path):
        return None
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return None
    resp = error(401, UNAUTHORIZED)
    resp.headers["WWW-Authenticate"] = 'Bearer realm="pyhexz"'
    return resp


__all__ = ["UNAUTHORIZED", "public_path", "refuse_unauthorized"]
