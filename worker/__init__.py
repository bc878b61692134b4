"""The worker: a Flask app that serves image models over HTTP.

Usage:
    app = create_app(WorkerSettings(models=["coco-ssd"]))   # the models load in the background
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from . import models
from .errors import register_error_handlers
from .routes import bp
from .settings import WorkerSettings

__all__ = ["WorkerSettings", "create_app"]


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
    models.init_app(app, settings, background=background)
    return app
