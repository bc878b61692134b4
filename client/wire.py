"""The wire contract every part of the pool speaks: paths, headers, error codes, the error shape.

Usage:
    from visionpool.client.wire import Code, Header, ServiceError, predict_path
    raise ServiceError("...")                          # a server answers {"error": {"code", "message"}}
    code, message = read_error(json_body)              # a client reads it back

It lives in the client package because it is what callers see of the pool, and the
client is the one package that must work on its own: the worker, the proxy and
discovery import it from here, and the client imports nothing from them. It needs
nothing but the standard library.

Server errors (each service adds its own subclasses, see worker/errors.py and proxy/errors.py):

    ServiceError (500 internal)
     ├── BadRequest (400)            bad_request
     │    └── UploadIncomplete       upload_incomplete   (the client's upload broke off: nobody else's fault)
     ├── Unauthorized (401)          unauthorized
     ├── NotFound (404)              not_found
     │    └── ModelNotFound          model_not_found
     ├── RequestTimeout (408)        request_timeout     (the head or the body came too slowly)
     ├── PayloadTooLarge (413)       payload_too_large
     └── ServiceUnavailable (503)    unavailable         (with Retry-After)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from urllib.parse import quote


class Header:
    """Header names the pool reads and writes."""

    REQUEST_ID = "X-Request-ID"  # the client's (or a new) id, echoed on every answer and passed to the worker
    WORKER_ID = "X-Worker-ID"  # which worker answered
    RETRY_AFTER = "Retry-After"  # seconds to wait before trying again (503)


class Code(StrEnum):
    """Every error code an answer can carry."""

    INTERNAL = "internal"
    BAD_REQUEST = "bad_request"
    EMPTY_BODY = "empty_body"
    INVALID_IMAGE = "invalid_image"
    INVALID_PARAMETER = "invalid_parameter"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "not_found"
    MODEL_NOT_FOUND = "model_not_found"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    IMAGE_TOO_LARGE = "image_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNAVAILABLE = "unavailable"
    OVERLOADED = "overloaded"
    NOT_READY = "not_ready"
    NO_WORKER = "no_worker"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    ENGINE_FAILED = "engine_failed"
    BAD_GATEWAY = "bad_gateway"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPLOAD_INCOMPLETE = "upload_incomplete"
    REQUEST_TIMEOUT = "request_timeout"
    BUSY = "busy"
    SHUTTING_DOWN = "shutting_down"


# The Open Inference Protocol (KServe v2), served under this prefix; its errors are {"error": "<message>"}.
V2 = "/v2"
V2_HEADER_LENGTH = "Inference-Header-Content-Length"  # binary tensor extension: the JSON part's length
V2_EXTENSIONS = ["binary_tensor_data", "model_configuration"]  # what GET /v2 lists
# its paths under V2: a model's (or one version's) metadata at V2_MODEL + "", and its actions after it
V2_LIVE, V2_READY = "/health/live", "/health/ready"
V2_MODEL, V2_VERSION = "/models/{name}", "/models/{name}/versions/{version}"
V2_MODEL_READY, V2_MODEL_CONFIG, V2_INFER = "/ready", "/config", "/infer"
# Paths: the worker serves predict, health and models; the proxy serves predict, lookup and workers too.
PREDICT = "/predict"
MODEL_PREDICT = "/models/{name}/predict"
LOOKUP = "/lookup"
WORKERS = "/workers"
MODELS = "/models"
HEALTHZ = "/healthz"
READYZ = "/readyz"
METRICS = "/metrics"
PROMETHEUS_TARGETS = "/prometheus/targets"
# The web page (proxy and worker alike): the page, its files, and the pool view it reads; a worker's own numbers.
PAGE = "/"
PAGE_ASSET = "/ui/{name}"
POOL = "/pool"
STATS = "/stats"
# The local registry, served by the proxy: PUT/DELETE one instance, GET them all.
REGISTRY_INSTANCES = "/registry/instances"
REGISTRY_INSTANCE = "/registry/instances/{id}"


def predict_path(model: str | None) -> str:
    """Where to POST an image: the default model's path, or a named model's."""
    return MODEL_PREDICT.format(name=quote(model, safe="")) if model else PREDICT


def registry_instance_path(instance_id: str) -> str:
    """The local registry's path for one instance."""
    return REGISTRY_INSTANCE.format(id=quote(instance_id, safe=""))


def error_body(code: str, message: str, path: str = "") -> dict[str, Any]:
    """The JSON shape of an error answer: ours, or under /v2 the Open Inference Protocol's."""
    if path == V2 or path.startswith(V2 + "/"):
        return {"error": message}
    return {"error": {"code": str(code), "message": message}}


def read_error(body: Any) -> tuple[str | None, str | None]:
    """(code, message) of an error answer's JSON; (None, None) when it is not in our shape."""
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, str):  # the Open Inference Protocol's shape: a message alone
        return None, detail
    if not isinstance(detail, dict):
        return None, None
    code, message = detail.get("code"), detail.get("message")
    return (str(code) if code is not None else None), (str(message) if message is not None else None)


class ServiceError(Exception):
    """Base of every error a server answers with: an HTTP status, a code, a message for people."""

    status = 500
    code = Code.INTERNAL

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self, path: str = "") -> dict[str, Any]:
        """The answer's JSON, in the shape ``path`` calls for."""
        return error_body(self.code, self.message, path)


class BadRequest(ServiceError):
    status, code = 400, Code.BAD_REQUEST


class UploadIncomplete(BadRequest):
    code = Code.UPLOAD_INCOMPLETE

    def __init__(self) -> None:
        super().__init__("The upload broke off before the whole body arrived.")


class Unauthorized(ServiceError):
    status, code = 401, Code.UNAUTHORIZED


class Forbidden(ServiceError):
    status, code = 403, Code.FORBIDDEN


class RateLimited(ServiceError):
    status, code = 429, Code.RATE_LIMITED

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, headers={Header.RETRY_AFTER: str(retry_after)})


class NotFound(ServiceError):
    status, code = 404, Code.NOT_FOUND


class ModelNotFound(NotFound):
    code = Code.MODEL_NOT_FOUND


class RequestTimeout(ServiceError):
    status, code = 408, Code.REQUEST_TIMEOUT


class PayloadTooLarge(ServiceError):
    status, code = 413, Code.PAYLOAD_TOO_LARGE


class ServiceUnavailable(ServiceError):
    status, code = 503, Code.UNAVAILABLE

    def __init__(self, message: str, *, retry_after: int = 1, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers={Header.RETRY_AFTER: str(retry_after), **(headers or {})})


# Pose models' keypoints in COCO's order, and the bones between them (index pairs): what a yolo-pose model
# with 17 keypoints answers, and what the page and --draw join with lines.
COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)  # fmt: skip
COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9), (8, 10),
    (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip
