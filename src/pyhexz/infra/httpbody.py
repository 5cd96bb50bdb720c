"""HTTP request bodies, shared by the training server and the CPU player service: the error a
client's malformed request gets, reading a body whose framing may be broken, and bounded
gunzip."""

from __future__ import annotations

import sys
import zlib
from typing import Protocol


class BadRequest(ValueError):
    """The request is malformed; `http_status` says how (400, 413, 415)."""

    def __init__(self, message: str, http_status: int = 400) -> None:
        super().__init__(message)
        self.http_status = http_status


class _Request(Protocol):
    def get_data(self, cache: bool = ...) -> bytes: ...


def _framing_errors() -> tuple[type[BaseException], ...]:
    """What the HTTP server's body reader raises for a body it cannot read: OSError (werkzeug's
    dechunker, a connection that ended early) and, when gunicorn runs us, its parse errors
    (a chunk size of `zz`: InvalidChunkSize)."""
    gunicorn_errors = sys.modules.get("gunicorn.http.errors")
    parse = getattr(gunicorn_errors, "ParseException", None)
    return (OSError,) + ((parse,) if isinstance(parse, type) else ())


def read_body(request: _Request) -> bytes:
    """The request's body; BadRequest (400) if its framing is broken (malformed chunked
    encoding, a body shorter than its Content-Length): the client's fault, not a 500."""
    try:
        return request.get_data(cache=False)
    except _framing_errors() as e:
        raise BadRequest(f"the request body could not be read ({type(e).__name__}: "
                         f"{str(e)[:200]})") from None


def gunzip(body: bytes, limit: int) -> bytes:
    """A gzip body, decompressed to at most `limit` bytes (a gzip bomb stops there)."""
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise BadRequest(f"Content-Encoding is gzip but the body is not valid gzip ({e})") from None
    if len(out) > limit:
        raise BadRequest(f"decompressed body exceeds the limit of {limit} bytes", 413)
    if not d.eof:
        raise BadRequest("gzip body is truncated")
    # One gzip member and nothing after it: bytes there would be ignored silently, so a body
    # spliced or corrupted on its way could be taken for a different, valid one.
    if d.unused_data:
        raise BadRequest(f"gzip body has {len(d.unused_data)} bytes after the end of its "
                         f"compressed data")
    return out


__all__ = ["BadRequest", "gunzip", "read_body"]
