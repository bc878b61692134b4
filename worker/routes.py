"""The worker's HTTP API: predict, health, readiness, the model list and its own numbers."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from visionpool.client import wire

from .errors import EmptyBody, InvalidParameter, NotReady, UnsupportedMediaType, error_response
from .imaging import CONTENT_TYPES
from .metrics import METRICS, Tracked
from .models import get_models
from .pipeline import MASK_FORMATS, Answer, Pipeline
from .settings import WorkerSettings

bp = Blueprint("worker", __name__)
PREDICT_CORS = (  # a page from another origin (the proxy's, in p2p mode) may read predictions, nothing else
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Expose-Headers", f"{wire.Header.REQUEST_ID}, {wire.Header.WORKER_ID}"),
)
FILE_FIELDS = ("image", "data")  # "data" is what simple-ml-serving's clients send


@bp.post(wire.PREDICT)
def predict_default() -> Response:
    return _predict(None)


@bp.post(wire.MODEL_PREDICT.replace("{name}", "<name>"))
def predict_named(name: str) -> Response:
    return _predict(name)


@bp.get(wire.HEALTHZ)
def healthz() -> Response:
    return jsonify(status="alive", pid=os.getpid())


@bp.get(wire.READYZ)
def readyz() -> Response:
    models = get_models()
    state = models.state()
    if state == "ready":
        return jsonify(status="ready", models=[c.name for c in models.configs])
    return error_response(NotReady("This worker is shutting down." if state == "draining" else f"Models are {state}."))


@bp.get(wire.MODELS)
def list_models() -> Response:
    models = get_models()
    return jsonify(default=models.default, models=models.describe())


@bp.get(wire.STATS)
def stats() -> Response:
    """This worker now: state, requests in flight, and its last minute (what the page's pool view shows)."""
    return jsonify(worker_stats())


def worker_stats() -> dict[str, Any]:
    models, metrics = get_models(), current_app.extensions[METRICS]
    return {
        "id": current_app.config["WORKER_ID"],
        "state": models.state(),
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - metrics.started, 1),
        "in_flight": metrics.in_flight_now(),
        **metrics.recent.read(),
        "models": models.describe(),
    }


def _predict(name: str | None) -> Response:
    body = predict_answer(current_app, name, _image_bytes, request.args, g.request_id)
    return current_app.response_class(body, mimetype="application/json")


def predict_answer(
    app: Flask, name: str | None, image: Callable[[], bytes], args: Mapping[str, str], request_id: str
) -> bytes:
    """The JSON answer to one upload (``image()`` reads it: a form, or a raw body), counted and logged; a
    ServiceError instead. The Flask route and the path without Flask (worker/fast.py) both answer with it."""
    models, metrics = get_models(app), app.extensions[METRICS]
    with metrics.track(models.metric_label(name or models.default), request_id) as tracked:
        model, data, started = models.get(name), image(), time.monotonic()
        options = _options(model, args, app.config["VISIONPOOL"], started)
        return answer_json(model, tracked, model.predict(data, **options), started)


async def predict_answer_here(
    app: Flask, model: Pipeline, data: bytes, args: Mapping[str, str], request_id: str
) -> bytes:
    """predict_answer for a raw body that ``model.fits_loop``, in the event loop's thread (worker/fast.py)."""
    metrics = app.extensions[METRICS]
    with metrics.track(model.config.name, request_id) as tracked:
        started = time.monotonic()
        options = _options(model, args, app.config["VISIONPOOL"], started)
        return answer_json(model, tracked, await model.predict_here(data, **options), started)


def _options(model: Pipeline, args: Mapping[str, str], settings: WorkerSettings, started: float) -> dict[str, Any]:
    """predict's keyword arguments for a request's query (InvalidParameter) that started at ``started``."""
    threshold, top_k = _query(model, args)
    masks = _masks_format(args)
    return {"deadline": settings.deadline(started), "threshold": threshold, "top_k": top_k, "masks": masks}


def answer_json(model: Pipeline, tracked: Tracked, answer: Answer, started: float) -> bytes:
    """The JSON answer to one image, from what the pipeline found."""
    tracked.batch_size, tracked.stages = answer.batch_size, answer.stages
    body: dict[str, Any] = {
        "model": {"name": model.config.name, "version": model.config.version},
        "image": {"width": answer.width, "height": answer.height},
        "predictions": answer.predictions,
    }
    if answer.embedding is not None:
        body["embedding"] = answer.embedding.tolist()
    body["batch_size"] = answer.batch_size
    body["timing_ms"] = _ms(**answer.stages, total=time.monotonic() - started)
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


@bp.get(wire.METRICS)
def metrics() -> Response:
    registry = current_app.extensions[METRICS].registry
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _ms(**seconds: float) -> dict[str, float]:
    return {stage: round(value * 1000.0, 2) for stage, value in seconds.items()}


def _query(model: Pipeline, args: Mapping[str, str]) -> tuple[float, int]:
    threshold = _number(args, "threshold", float, model.config.output.score_threshold, 0.0, 1.0)
    top_k = _number(args, "top_k", int, model.config.output.top_k, 1, 10_000)
    return float(threshold), int(top_k)


def _masks_format(args: Mapping[str, str]) -> str:
    raw = args.get("masks", MASK_FORMATS[0])
    if raw not in MASK_FORMATS:
        raise InvalidParameter(f"Query parameter masks must be one of {', '.join(MASK_FORMATS)}, got {raw!r}.")
    return raw


def _number(args: Mapping[str, str], key: str, kind: type, default: float, low: float, high: float) -> float:
    raw = args.get(key)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise InvalidParameter(
            f"Query parameter {key} must be a {kind.__name__} between {low} and {high}, got {raw!r}."
        ) from None
    if not low <= value <= high:  # also refuses nan
        raise InvalidParameter(f"Query parameter {key} must be between {low} and {high}, got {raw!r}.")
    return value  # type: ignore[no-any-return]


def _image_bytes() -> bytes:
    """The uploaded image: the raw body, or the 'image' (or 'data') file of a multipart form."""
    if request.mimetype == "multipart/form-data":
        for field in FILE_FIELDS:
            upload = request.files.get(field)
            if upload is not None:
                data = upload.read()
                if not data:
                    raise EmptyBody(f"The form's file field {field!r} is empty.")
                return data
        raise EmptyBody("The multipart form has no file field 'image' (or 'data'): send -F image=@photo.jpg.")
    return raw_image(request.get_data(cache=False), request.mimetype)


def raw_image(data: bytes, mimetype: str) -> bytes:
    """A raw body's image; UnsupportedMediaType for a type no image has, EmptyBody for nothing."""
    if mimetype not in CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {mimetype or 'none'} is not an image type this worker takes; send image/jpeg, image/png, "
            "image/webp, image/bmp, image/gif, image/tiff or application/octet-stream, or a multipart form with a "
            "file 'image'."
        )
    if not data:
        raise EmptyBody("The request body is empty; send the image's bytes.")
    return data
