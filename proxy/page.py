"""The pool's web page: plain files shipped in this package (static/), and the headers they go out with.

Usage:
    body, headers = page_file(None)                                  # the page itself (served at /)
    body, headers = page_file("app.js", ["http://10.0.0.7:8001"])    # a file under /ui/; its CSP lets the
                                                                     # page reach these workers (p2p)

The proxy serves the page at / for the pool, and every worker serves it for itself.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from visionpool.client.wire import NotFound

STATIC = Path(__file__).parent / "static"
INDEX = "index.html"
TYPES = {
    INDEX: "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


def page_file(name: str | None, reachable: Iterable[str] = ()) -> tuple[bytes, dict[str, str]]:
    """The page (``name`` None) or one of its other files, with the headers to send it with; NotFound for
    any other name (index.html is the page, served at / alone)."""
    if name is not None and (name == INDEX or name not in TYPES):
        raise NotFound(f"No page file {name!r}.")
    name = name or INDEX
    return _read(name), {"Content-Type": TYPES[name], **page_headers(reachable)}


@functools.cache
def _read(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def page_headers(reachable: Iterable[str] = ()) -> dict[str, str]:
    """Headers for the page's files: a Content-Security-Policy allowing nothing but this origin and, for
    the p2p "try it", the given worker URLs' origins; no sniffing, no referrer, no framing."""
    origins = sorted({_origin(url) for url in reachable} - {""})
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' blob: data:",
            "connect-src " + " ".join(["'self'", *origins]),
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else ""
