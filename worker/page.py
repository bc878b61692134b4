"""The pool's web page, served by a worker for itself: the page, its files, and a pool of one (GET /pool).

The page is the proxy's (proxy/page.py, proxy/static/); on a worker it lists this worker alone
and sends photos straight to it.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from visionpool.client import wire
from visionpool.discovery import Instance
from visionpool.serving.page import page_file, pool_document, worker_row

from .models import get_models
from .routes import worker_stats

bp = Blueprint("page", __name__)


@bp.get(wire.PAGE)
@bp.get(wire.PAGE_ASSET.replace("{name}", "<name>"))
def page(name: str | None = None) -> Response:
    body, headers = page_file(name)
    return Response(body, headers=headers)


@bp.get(wire.POOL)
def pool() -> Response:
    """The pool as this worker knows it: itself."""
    stats = worker_stats()
    config = current_app.config
    url = config.get("WORKER_URL") or request.host_url.rstrip("/")
    models = {c.name: c.version for c in get_models().configs}
    me = Instance(config["WORKER_ID"], url, models, config.get("WORKER_GRPC", ""))
    return jsonify(pool_document("worker", [worker_row(me.as_json(), stats["state"], stats)]))
