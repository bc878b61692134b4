"""Predictions without Flask: a raw image POSTed to /predict or /models/NAME/predict goes from the front door
straight to the model's pipeline, in the same pool of threads (or, for a small JPEG, in the event loop's own
thread), with the same answer, errors, headers, metrics and log line as the Flask route gives.

Usage:
    http = wsgi_app(flask_app, door, threads, guard, direct=direct_predict(flask_app))

Why: profiled under load (py-spy, a model that does no work, 64x64 JPEGs), Flask and WSGI took a fifth of the
worker's CPU per request: the environ, the request context, routing, the after-request hooks, ``jsonify``.
Everything else (multipart forms, the v2 protocol, health, models, metrics, the page) stays Flask's. A small
JPEG's stages (0.1-0.4 ms, Pipeline.fits_loop) cost less than handing it to a thread and back: each hand-off
wakes a thread and moves the GIL, and with 32 request threads a request cost 0.16 CPU-ms more than in the loop
(docs/performance.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor

import orjson
from aiohttp import web
from flask import Flask

from visionpool.client.wire import Header, ServiceError

from .imaging import CONTENT_TYPES
from .models import get_models
from .pipeline import Pipeline
from .routes import PREDICT_CORS, predict_answer, predict_answer_here, raw_image
from .wsgi import Answer, Direct

logger = logging.getLogger(__name__)

PATHS = re.compile(r"^/predict$|^/models/(?P<name>[^/]+)/predict$")  # what Flask routes to the predict views
JSON = ("Content-Type", "application/json")
IDS = random.Random()  # request IDs: seeded from the system once, its own (a model seeding random changes nothing)


def direct_predict(app: Flask) -> Direct:
    """What the front door asks of each request: None (Flask's to answer), or how to answer it from its body,
    given the request threads. A small JPEG for a small model (Pipeline.fits_loop) is answered in the event loop's
    own thread, awaiting the engine (in a front process, the engine process's answer), without the hand-off to a
    request thread and back."""

    def route(request: web.Request) -> Callable[[bytes, Executor], Awaitable[Answer]] | None:
        if request.method != "POST" or not (match := PATHS.match(request.path)):
            return None
        content_type = request.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/"):
            return None  # forms are rare and Flask parses them
        name, path, args = match.group("name"), request.path, request.query
        mimetype = content_type.partition(";")[0].strip().lower()
        sent = request.headers.getall(Header.REQUEST_ID, [])  # several join as Flask (WSGI) joins them
        request_id = ",".join(sent) or f"{IDS.getrandbits(128):032x}"  # uuid4().hex's form without a system call

        async def answer(body: bytes, threads: Executor) -> Answer:
            headers = [(Header.REQUEST_ID, request_id), (Header.WORKER_ID, app.config["WORKER_ID"]), *PREDICT_CORS]
            headers.append(JSON)
            try:
                if (model := _fits_loop(app, name, mimetype, body)) is not None:
                    return 200, headers, await predict_answer_here(app, model, body, args, request_id)
                image = functools.partial(raw_image, body, mimetype)
                answered = asyncio.get_running_loop().run_in_executor(
                    threads, predict_answer, app, name, image, args, request_id
                )
                return 200, headers, await answered
            except ServiceError as error:
                return error.status, headers + list(error.headers.items()), orjson.dumps(error.body(path))
            except Exception:
                logger.exception("unhandled error")
                error = ServiceError("Internal error; the worker log has the details.")
                return error.status, headers, orjson.dumps(error.body(path))

        return answer

    return route


def _fits_loop(app: Flask, name: str | None, mimetype: str, body: bytes) -> Pipeline | None:
    """The model, when its answer to this body may be made in the event loop; None sends it to a thread, where
    everything else (an unknown model, a model still loading, a wrong type) is answered as it always was."""
    if CONTENT_TYPES.get(mimetype, "") not in ("JPEG", None):  # a JPEG may come as these (or as octet-stream)
        return None
    models = get_models(app)
    model = models.models.get(name or models.default)
    return model if model is not None and model.fits_loop(body) else None
