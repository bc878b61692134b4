"""The worker: a Flask app that serves image models over HTTP.

Usage:
    app = create_app(WorkerSettings(models=["coco-ssd"]))   # the models load in the background
"""

from __future__ import annotations

import uuid
from pathlib import Path

from flask import Flask, Response, current_app, g, request

from visionpool.client.wire import Header

from . import models, page, v2_rest
from .errors import register_error_handlers
from .metrics import METRICS, WorkerMetrics
from .routes import PREDICT_CORS, bp
from .settings import WorkerSettings

__all__ = ["WorkerSettings", "create_app"]
PREDICT_ENDPOINTS = ("worker.predict_default", "worker.predict_named")


def create_app(settings: WorkerSettings | None = None, *, background: bool = True) -> Flask:
    """A worker app; its models are validated now and loaded now or in a background thread."""
    settings = settings or WorkerSettings()
    # instance_path given: Flask cannot derive it for a package mapped into a namespace.
    app = Flask(__name__, instance_path=str(Path(__file__).parent / "instance"))
    app.config["VISIONPOOL"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    register_error_handlers(app)
    app.register_blueprint(bp)
    app.register_blueprint(v2_rest.bp)
    app.register_blueprint(page.bp)
    app.config["WORKER_ID"] = settings.worker_id or f"{settings.advertised_host()}:{settings.port}"
    app.before_request(_take_request_id)
    app.after_request(_tag_response)
    metrics = WorkerMetrics(lambda: {name: m.batcher.depth() for name, m in models.get_models(app).models.items()})
    app.extensions[METRICS] = metrics
    models.init_app(app, settings, metrics, background=background)
    return app


def _take_request_id() -> None:
    g.request_id = request.headers.get(Header.REQUEST_ID) or uuid.uuid4().hex


def _tag_response(response: Response) -> Response:
    """Echo (or make) the X-Request-ID and name this worker, so every answer can be traced. Predictions
    may be read by a page from another origin (the proxy's page, in p2p mode): nothing else may."""
    response.headers[Header.REQUEST_ID] = g.get("request_id") or uuid.uuid4().hex
    response.headers[Header.WORKER_ID] = current_app.config["WORKER_ID"]
    if request.endpoint in PREDICT_ENDPOINTS:
        for header, value in PREDICT_CORS:
            response.headers[header] = value
        if request.method == "OPTIONS":  # the page's preflight, for a p2p upload carrying its ticket
            response.headers["Access-Control-Allow-Headers"] = "Authorization"
            response.headers["Access-Control-Allow-Methods"] = "POST"
    return response
