"""Errors a worker answers with, each carrying its HTTP status and a stable code.

    WorkerError (500 internal)
     ├── BadRequest (400)
     │    ├── EmptyBody            empty_body
     │    ├── InvalidImage         invalid_image
     │    └── InvalidParameter     invalid_parameter
     ├── ModelNotFound (404)       model_not_found
     ├── PayloadTooLarge (413)     payload_too_large
     │    └── ImageTooLarge        image_too_large
     ├── UnsupportedMediaType (415) unsupported_media_type
     ├── ServiceUnavailable (503)
     │    ├── Overloaded           overloaded (with Retry-After)
     │    └── NotReady             not_ready
     ├── DeadlineExceeded (504)    deadline_exceeded
     └── EngineFailed (500)        engine_failed

Every error reaches the caller as ``{"error": {"code": ..., "message": ...}}``;
tracebacks go to the log, never to the caller.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)


class WorkerError(Exception):
    """Base error: an HTTP status, a machine-readable code and a message for people."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(WorkerError):
    status, code = 400, "bad_request"


class EmptyBody(BadRequest):
    code = "empty_body"


class InvalidImage(BadRequest):
    code = "invalid_image"


class InvalidParameter(BadRequest):
    code = "invalid_parameter"


class ModelNotFound(WorkerError):
    status, code = 404, "model_not_found"

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"No model named {name!r}; this worker serves: {', '.join(known)}.")


class PayloadTooLarge(WorkerError):
    status, code = 413, "payload_too_large"


class ImageTooLarge(PayloadTooLarge):
    code = "image_too_large"


class UnsupportedMediaType(WorkerError):
    status, code = 415, "unsupported_media_type"


class ServiceUnavailable(WorkerError):
    status, code = 503, "unavailable"


class Overloaded(ServiceUnavailable):
    code = "overloaded"

    def __init__(self, model: str, retry_after_s: int = 1) -> None:
        super().__init__(
            f"Model {model!r} has a full queue; retry after {retry_after_s} s.",
            headers={"Retry-After": str(retry_after_s)},
        )


class NotReady(ServiceUnavailable):
    code = "not_ready"


class DeadlineExceeded(WorkerError):
    status, code = 504, "deadline_exceeded"


class EngineFailed(WorkerError):
    code = "engine_failed"


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """The one JSON shape every error takes."""
    response = jsonify(error={"code": code, "message": message})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def http_error_code(error: HTTPException) -> tuple[int, str]:
    """The status and code a werkzeug HTTP error is answered with (413 is payload_too_large, as ours)."""
    status = error.code or 500
    if status == 413:
        return status, PayloadTooLarge.code
    return status, (error.name or "error").lower().replace(" ", "_")


def register_error_handlers(app: Flask) -> None:
    """Turn every exception into the JSON error shape."""

    @app.errorhandler(WorkerError)
    def handle_worker_error(error: WorkerError) -> Response:
        return error_response(error.status, error.code, error.message, error.headers)

    @app.errorhandler(HTTPException)
    def handle_http_exception(error: HTTPException) -> Response:
        status, code = http_error_code(error)
        message = error.description or error.name
        if status == 413:
            message = "The request body is larger than this worker accepts."
        return error_response(status, code, message)

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> Response:
        logger.exception("unhandled error")
        return error_response(500, WorkerError.code, "Internal error; the worker log has the details.")
