"""The pool's web page: plain files shipped in this package (static/), and the headers they go out with.

Usage:
    body, content_type = asset("app.js")          # None for a name that is not one of the page's files
    headers = page_headers(["http://10.0.0.7:8001"])  # CSP letting the page reach these workers (p2p)

The proxy serves the page at / for the pool, and every worker serves it for itself.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

STATIC = Path(__file__).parent / "static"
INDEX = "index.html"
TYPES = {
    INDEX: "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


@functools.cache
def asset(name: str) -> tuple[bytes, str] | None:
    """One of the page's files and its content type; None for any other name."""
    if name not in TYPES:
        return None
    return (STATIC / name).read_bytes(), TYPES[name]


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
