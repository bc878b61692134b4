"""The worker's HTTP API: predict, health, readiness and the model list."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .errors import EmptyBody, InvalidParameter, NotReady, UnsupportedMediaType, error_response
from .imaging import CONTENT_TYPES, decode_image
from .metrics import METRICS, Tracked
from .models import ServedModel, get_models
from .settings import WorkerSettings

bp = Blueprint("worker", __name__)
FILE_FIELDS = ("image", "data")  # "data" is what simple-ml-serving's clients send


@bp.post("/predict")
def predict_default() -> Response:
    return _predict(None)


@bp.post("/models/<name>/predict")
def predict_named(name: str) -> Response:
    return _predict(name)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="alive")


@bp.get("/readyz")
def readyz() -> Response:
    models = get_models()
    if models.ready.is_set():
        return jsonify(status="ready", models=[c.name for c in models.configs])
    state = "failed" if models.failure else "loading"
    return error_response(503, NotReady.code, f"Models are {state}.", {"Retry-After": "1"})


@bp.get("/models")
def list_models() -> Response:
    models = get_models()
    return jsonify(default=models.default, models=[m.describe() for m in models.models.values()])


def _predict(name: str | None) -> Response:
    models, metrics = get_models(), current_app.extensions[METRICS]
    label = name or models.default
    label = label if models.serves(label) else "unknown"  # never a label per made-up name
    with metrics.track(label, g.request_id) as tracked:
        return _answer(models.get(name), tracked)


def _answer(model: ServedModel, tracked: Tracked) -> Response:
    started = time.monotonic()
    settings: WorkerSettings = current_app.config["VISIONPOOL"]
    threshold, top_k = _query(model)
    data = _image_bytes()
    received = time.monotonic()
    with model.batcher.arriving():
        size = (model.config.input.width, model.config.input.height)
        image = decode_image(data, max_pixels=settings.max_image_pixels, min_size=size)
        decoded = time.monotonic()
        tensor, frame = model.prepare(image)
        prepared = time.monotonic()
        job = model.batcher.submit(tensor, started + settings.request_timeout)
    outputs = job.wait()
    ran = time.monotonic()
    predictions = [_prediction(model, p, frame, image) for p in model.decoder.decode(outputs, threshold, top_k)]
    finished = time.monotonic()
    tracked.batch_size = job.batch_size
    tracked.stages = {
        "decode": decoded - received,
        "preprocess": prepared - decoded,
        "queue": job.queue_s,
        "inference": job.inference_s,
        "postprocess": finished - ran,
    }
    return jsonify(
        {
            "model": {"name": model.config.name, "version": model.config.version},
            "image": {"width": image.width, "height": image.height},
            "predictions": predictions,
            "batch_size": job.batch_size,
            "timing_ms": _ms(**tracked.stages, total=finished - started),
        }
    )


@bp.get("/metrics")
def metrics() -> Response:
    registry = current_app.extensions[METRICS].registry
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _prediction(model: ServedModel, p: Any, frame: Any, image: Any) -> dict[str, Any]:
    found = {"label": model.label(p.class_id), "class_id": p.class_id, "score": round(p.score, 4)}
    if p.box is not None:
        found["box"] = frame.to_pixels(p.box, image.width, image.height)
    return found


def _ms(**seconds: float) -> dict[str, float]:
    return {stage: round(value * 1000.0, 2) for stage, value in seconds.items()}


def _query(model: ServedModel) -> tuple[float, int]:
    threshold = _number("threshold", float, model.config.output.score_threshold, 0.0, 1.0)
    top_k = _number("top_k", int, model.config.output.top_k, 1, 10_000)
    return float(threshold), int(top_k)


def _number(key: str, kind: type, default: float, low: float, high: float) -> float:
    raw = request.args.get(key)
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
    if request.mimetype not in CONTENT_TYPES:
        sent = request.mimetype or "none"
        raise UnsupportedMediaType(
            f"Content-Type {sent} is not an image type this worker takes; send image/jpeg, image/png, image/webp, "
            "image/bmp, image/gif, image/tiff or application/octet-stream, or a multipart form with a file 'image'."
        )
    data = request.get_data(cache=False)
    if not data:
        raise EmptyBody("The request body is empty; send the image's bytes.")
    return data
