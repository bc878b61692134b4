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
from typing import Any
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


# ---- GET /pool: the document the page's tables are drawn from (the proxy's, or a worker's pool of one) ----


def worker_row(
    instance: dict[str, Any],
    state: str,
    stats: dict[str, Any] | None,
    *,
    error: str | None = None,
    ejected_for_s: float | None = None,
    left_s_ago: float | None = None,
) -> dict[str, Any]:
    """One worker as the page's table shows it (``instance``: its registry entry, Instance.as_json())."""
    return {
        **instance,
        "state": state,
        "ejected_for_s": ejected_for_s,
        "left_s_ago": left_s_ago,
        "error": error,
        "stats": stats,
    }


def pool_document(role: str, workers: list[dict[str, Any]]) -> dict[str, Any]:
    """What GET /pool answers: who answers (a proxy or a worker), the workers, the models they serve, and
    the model to offer first (the first registered worker's default)."""
    served = [name for worker in workers if worker["left_s_ago"] is None for name in worker["models"]]
    return {"role": role, "workers": workers, "models": _models(workers), "default_model": next(iter(served), None)}


def _models(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each served model: its versions, how many workers serve it (and are ready), and how it runs."""
    models: dict[str, dict[str, Any]] = {}
    for worker in workers:
        if worker["left_s_ago"] is not None:  # no longer registered: it serves nothing more
            continue
        described = {m.get("name"): m for m in (worker["stats"] or {}).get("models", []) if isinstance(m, dict)}
        for name, version in worker["models"].items():
            model = models.setdefault(name, {"name": name, "versions": [], "workers": 0, "ready": 0})
            if version not in model["versions"]:
                model["versions"].append(version)
            model["workers"] += 1
            model["ready"] += worker["state"] == "ready"
            for key, value in described.get(name, {}).items():
                model.setdefault(key, value)  # how it runs: from the first worker that says
    for model in models.values():
        model.pop("version", None)
        model["versions"].sort()
    return sorted(models.values(), key=lambda model: model["name"])
