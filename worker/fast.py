"""Predictions without Flask: a raw image POSTed to /predict or /models/NAME/predict goes from the front door
straight to the model's pipeline, in the same pool of threads, with the same answer, errors, headers, metrics
and log line as the Flask route gives.

Usage:
    http = wsgi_app(flask_app, door, threads, guard, direct=direct_predict(flask_app))

Why: profiled under load (py-spy, a model that does no work, 64x64 JPEGs), Flask and WSGI took a fifth of the
worker's CPU per request: the environ, the request context, routing, the after-request hooks, ``jsonify``.
Everything else (multipart forms, the v2 protocol, health, models, metrics, the page) stays Flask's.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable

import orjson
from aiohttp import web
from flask import Flask

from visionpool.client.wire import Header, ServiceError

from .routes import PREDICT_CORS, predict_answer, raw_image

logger = logging.getLogger(__name__)

Answer = tuple[int, list[tuple[str, str]], bytes]
PATHS = re.compile(r"^/predict$|^/models/(?P<name>[^/]+)/predict$")  # what Flask routes to the predict views
JSON = ("Content-Type", "application/json")
IDS = random.Random()  # request IDs: seeded from the system once, its own (a model seeding random changes nothing)


def direct_predict(app: Flask) -> Callable[[web.Request], Callable[[bytes], Answer] | None]:
    """What the front door asks of each request: None (Flask's to answer), or how to answer it from its body."""

    def route(request: web.Request) -> Callable[[bytes], Answer] | None:
        if request.method != "POST" or not (match := PATHS.match(request.path)):
            return None
        content_type = request.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/"):
            return None  # forms are rare and Flask parses them
        name, path, args = match.group("name"), request.path, request.query
        mimetype = content_type.partition(";")[0].strip().lower()
        sent = request.headers.getall(Header.REQUEST_ID, [])  # several join as Flask (WSGI) joins them
        request_id = ",".join(sent) or f"{IDS.getrandbits(128):032x}"  # uuid4().hex's form without a system call

        def answer(body: bytes) -> Answer:
            headers = [(Header.REQUEST_ID, request_id), (Header.WORKER_ID, app.config["WORKER_ID"]), *PREDICT_CORS]
            headers.append(JSON)
            try:
                return 200, headers, predict_answer(app, name, lambda: raw_image(body, mimetype), args, request_id)
            except ServiceError as error:
                return error.status, headers + list(error.headers.items()), orjson.dumps(error.body(path))
            except Exception:
                logger.exception("unhandled error")
                error = ServiceError("Internal error; the worker log has the details.")
                return error.status, headers, orjson.dumps(error.body(path))

        return answer

    return route
