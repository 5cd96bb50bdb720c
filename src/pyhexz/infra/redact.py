"""Credentials out of everything a process logs or shows: URLs may carry them
(`redis://:password@host`, `http://user:password@host`), and a log line or a status page is no
place for a password.

`redact_url` for a URL shown on purpose (a status page), `redact_urls` for any text (every log
line goes through it: infra/process.configure_logging).
"""

from __future__ import annotations

import re

# scheme://userinfo@ ; the userinfo ends at the last '@' before the host (passwords may hold
# '@' only percent-encoded, but be generous) and holds no '/', whitespace or quote.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s'\"<>]*)@")
HIDDEN = "***"


def _hide(m: re.Match) -> str:
    user, sep, _ = m["userinfo"].partition(":")
    # user:password keeps the user; a lone userinfo may itself be a token: hidden whole.
    return f"{m['scheme']}{user}:{HIDDEN}@" if sep else f"{m['scheme']}{HIDDEN}@"


def redact_urls(text: str) -> str:
    """`text` with the credentials of every URL in it replaced by ***."""
    return _USERINFO.sub(_hide, text) if "@" in text else text


def redact_url(url: str | None) -> str | None:
    """A URL without its credentials (None stays None), for status pages and logs."""
    return redact_urls(url) if url else url


__all__ = ["redact_url", "redact_urls", "HIDDEN"]
