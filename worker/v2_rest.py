"""The Open Inference Protocol over HTTP (KServe v2 REST, with Triton's binary tensor data extension).

Usage (the app factory registers it):
    app.register_blueprint(v2_rest.bp)

    GET  /v2                                         server metadata and the extensions implemented
    GET  /v2/health/live, /v2/health/ready
    GET  /v2/models/<m>[/versions/<v>]               model metadata
    GET  /v2/models/<m>[/versions/<v>]/ready
    GET  /v2/models/<m>[/versions/<v>]/config        Triton's model configuration
    POST /v2/models/<m>[/versions/<v>]/infer         JSON tensors, or a JSON header then binary tensor data

A binary request says how long its JSON part is in ``Inference-Header-Content-Length``; each
binary input gives ``binary_data_size`` and its bytes follow, in input order (BYTES elements
as a 4-byte little-endian length and the bytes). Outputs are binary when the output asks
(``binary_data``) or the request does (``binary_data_output``), else JSON. gzip and deflate
bodies are accepted (the front door decompresses them). Errors are ``{"error": "<message>"}`` with the right status.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from importlib.metadata import version as package_version
from typing import Any

import numpy as np
from flask import Blueprint, Response, current_app, g, jsonify, request

from visionpool.client.wire import (
    V2,
    V2_HEADER_LENGTH,
    V2_INFER,
    V2_LIVE,
    V2_MODEL,
    V2_MODEL_CONFIG,
    V2_MODEL_READY,
    V2_READY,
    V2_VERSION,
    BadRequest,
    ServiceUnavailable,
)

from .metrics import METRICS
from .models import get_models
from .v2 import EXTENSIONS, V2Model, find, tensor_from_json, tensor_from_raw, tensor_to_json, tensor_to_raw

bp = Blueprint("v2", __name__, url_prefix=V2)
MODELS_KEY = "visionpool.v2"


def models() -> dict[str, V2Model]:
    """The loaded models as the protocol sees them (made once per model)."""
    cache: dict[str, V2Model] = current_app.extensions.setdefault(MODELS_KEY, {})
    for name, pipeline in get_models().models.items():
        if name not in cache:
            cache[name] = V2Model(pipeline)
    return cache


def _flask(path: str) -> str:
    """A wire-contract path ("/models/{name}") in Flask's rule syntax ("/models/<name>")."""
    return path.replace("{", "<").replace("}", ">")


def model_routes(rule: str, **options: Any) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """Register a view at /models/<name><rule> and /models/<name>/versions/<version><rule>."""

    def register(view: Callable[..., Response]) -> Callable[..., Response]:
        bp.add_url_rule(_flask(V2_MODEL) + rule, view_func=view, defaults={"version": None}, **options)
        bp.add_url_rule(_flask(V2_VERSION) + rule, view_func=view, **options)
        return view

    return register


@bp.get("")
def server_metadata() -> Response:
    return jsonify(name="visionpool", version=package_version("visionpool"), extensions=EXTENSIONS)


@bp.get(V2_LIVE)
def live() -> Response:
    return jsonify(live=True)


@bp.get(V2_READY)
def ready() -> Response:
    if not get_models().ready.is_set():
        raise ServiceUnavailable("The models are still loading.")
    return jsonify(ready=True)


@model_routes("", methods=["GET"])
def model_metadata(name: str, version: str | None) -> Response:
    return jsonify(find(models(), name, version).metadata())


@model_routes(V2_MODEL_READY, methods=["GET"])
def model_ready(name: str, version: str | None) -> Response:
    if get_models().serves(name) and name not in get_models().models:
        raise ServiceUnavailable(f"Model {name!r} is still loading.")
    find(models(), name, version)
    return jsonify(name=name, ready=True)


@model_routes(V2_MODEL_CONFIG, methods=["GET"])
def model_config(name: str, version: str | None) -> Response:
    return jsonify(find(models(), name, version).config())


@model_routes(V2_INFER, methods=["POST"])
def infer(name: str, version: str | None) -> Response:
    started = time.monotonic()
    with current_app.extensions[METRICS].track(get_models().metric_label(name), g.request_id):
        model = find(models(), name, version)
        body = _plain(request.get_data(cache=False), request.headers.get("Content-Encoding"))
        header, inputs = parse_infer(body, request.headers.get(V2_HEADER_LENGTH))
        deadline = current_app.config["VISIONPOOL"].deadline(started)
        outputs = model.infer(inputs, header.get("parameters") or {}, deadline)
        payload, headers = encode_response(model, header, outputs)
    return Response(payload, headers=headers)


def parse_infer(body: bytes, header_length: str | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(the request's JSON, its input tensors by name): binary inputs follow the JSON, in input order."""
    try:
        length = int(header_length) if header_length is not None else len(body)
    except ValueError:
        raise BadRequest(f"{V2_HEADER_LENGTH} must be a number of bytes, got {header_length!r}.") from None
    if not 0 <= length <= len(body):
        raise BadRequest(f"{V2_HEADER_LENGTH} {length} does not fit a body of {len(body)} bytes.")
    try:
        header = json.loads(body[:length])
    except ValueError as error:
        raise BadRequest(f"The request's JSON does not parse: {error}.") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise BadRequest('The request must be a JSON object with an "inputs" list.')
    view, offset, inputs = memoryview(body), length, {}
    for tensor in header["inputs"]:
        name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
            raise BadRequest('Each input needs a "name", a "datatype" and a "shape".')
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(body):
                raise BadRequest(f"Input {name!r} says {size} bytes of binary data, which the body does not hold.")
            inputs[name] = tensor_from_raw(datatype, shape, view[offset : offset + size])
            offset += size
        elif "data" in tensor:
            inputs[name] = tensor_from_json(datatype, shape, tensor["data"])
        else:
            raise BadRequest(f'Input {name!r} has neither "data" nor "binary_data_size".')
    if offset != len(body):
        raise BadRequest(f"{len(body) - offset} bytes follow the last input's binary data.")
    return header, inputs


def encode_response(
    model: V2Model, header: dict[str, Any], outputs: dict[str, np.ndarray]
) -> tuple[bytes, dict[str, str]]:
    """The answer: the JSON part, then the binary data of the outputs asked for in binary, in order."""
    binary_default = bool((header.get("parameters") or {}).get("binary_data_output", False))
    asked = [(o.get("name"), o.get("parameters") or {}) for o in header.get("outputs") or []]
    wanted = asked or [(name, {}) for name in outputs]
    described, blobs = [], []
    for name, parameters in wanted:
        if name not in outputs:
            raise BadRequest(f"Model {model.name!r} has no output {name!r}; it has {', '.join(outputs)}.")
        datatype = model.outputs[name][0]
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(outputs[name].shape)}
        if parameters.get("binary_data", binary_default):
            raw = tensor_to_raw(datatype, outputs[name])
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = tensor_to_json(datatype, outputs[name])
        described.append(entry)
    answer = {"model_name": model.name, "model_version": model.version, "outputs": described}
    if "id" in header:
        answer["id"] = header["id"]
    head = json.dumps(answer, separators=(",", ":")).encode()
    if not blobs:
        return head, {"Content-Type": "application/json"}
    return b"".join([head, *blobs]), {"Content-Type": "application/octet-stream", V2_HEADER_LENGTH: str(len(head))}


def _plain(body: bytes, encoding: str | None) -> bytes:
    """The body; the front door has already decompressed gzip and deflate (and dropped their header)."""
    if encoding not in (None, "", "identity"):
        raise BadRequest(f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or none.")
    return body
