"""Errors a worker answers with, each carrying its HTTP status and a stable code; the JSON handlers.

    ServiceError (visionpool.client.wire; 500 internal)
     ├── BadRequest (400)
     │    ├── EmptyBody            empty_body
     │    ├── InvalidImage         invalid_image
     │    └── InvalidParameter     invalid_parameter
     ├── ModelNotFound (404)       model_not_found
     ├── PayloadTooLarge (413)     payload_too_large
     │    └── ImageTooLarge        image_too_large
     ├── UnsupportedMediaType (415) unsupported_media_type
     ├── ServiceUnavailable (503, Retry-After)
     │    ├── Overloaded           overloaded
     │    └── NotReady             not_ready
     ├── DeadlineExceeded (504)    deadline_exceeded
     └── EngineFailed (500)        engine_failed

Every error reaches the caller as ``{"error": {"code": ..., "message": ...}}``;
tracebacks go to the log, never to the caller.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from visionpool.client.wire import (
    BadRequest,
    Code,
    ModelNotFound,
    PayloadTooLarge,
    ServiceError,
    ServiceUnavailable,
    error_body,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BadRequest",
    "DeadlineExceeded",
    "EmptyBody",
    "EngineFailed",
    "ImageTooLarge",
    "InvalidImage",
    "InvalidParameter",
    "ModelNotFound",
    "NotReady",
    "Overloaded",
    "PayloadTooLarge",
    "ServiceError",
    "ServiceUnavailable",
    "UnsupportedMediaType",
    "register_error_handlers",
]


class EmptyBody(BadRequest):
    code = Code.EMPTY_BODY


class InvalidImage(BadRequest):
    code = Code.INVALID_IMAGE


class InvalidParameter(BadRequest):
    code = Code.INVALID_PARAMETER


class ImageTooLarge(PayloadTooLarge):
    code = Code.IMAGE_TOO_LARGE


class UnsupportedMediaType(ServiceError):
    status, code = 415, Code.UNSUPPORTED_MEDIA_TYPE


class Overloaded(ServiceUnavailable):
    code = Code.OVERLOADED

    def __init__(self, model: str, retry_after_s: int = 1) -> None:
        super().__init__(f"Model {model!r} has a full queue; retry after {retry_after_s} s.", retry_after=retry_after_s)


class NotReady(ServiceUnavailable):
    code = Code.NOT_READY


class DeadlineExceeded(ServiceError):
    status, code = 504, Code.DEADLINE_EXCEEDED


class EngineFailed(ServiceError):
    code = Code.ENGINE_FAILED


def error_response(error: ServiceError) -> Response:
    response = jsonify(error.body(request.path))
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def http_error_code(error: HTTPException) -> tuple[int, str]:
    """The status and code a werkzeug HTTP error is answered with (413 is payload_too_large, as ours)."""
    status = error.code or 500
    if status == 413:
        return status, PayloadTooLarge.code
    return status, (error.name or "error").lower().replace(" ", "_")


def register_error_handlers(app: Flask) -> None:
    """Turn every exception into the JSON error shape."""

    @app.errorhandler(ServiceError)
    def handle_service_error(error: ServiceError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    def handle_http_exception(error: HTTPException) -> Response:
        status, code = http_error_code(error)
        message = error.description or error.name
        if status == 413:
            message = "The request body is larger than this worker accepts."
        response = jsonify(error_body(code, message, request.path))
        response.status_code = status
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> Response:
        logger.exception("unhandled error")
        return error_response(ServiceError("Internal error; the worker log has the details."))
