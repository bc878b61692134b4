"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on the worker's ``--grpc-port``.

Usage (the worker server does this):
    server = start_grpc(app, "127.0.0.1", 8001, threads=32, max_message_bytes=20 << 20)
    ...
    server.stop(grace=10)

Built on the generated service code that ships in the ``tritonclient`` package (the same
``inference`` package and method names as Triton and KServe), not a copy of the .proto.
ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelConfig and
ModelInfer are served; the other methods answer UNIMPLEMENTED. Every output goes back in
``raw_output_contents``, in the order of ``outputs`` (what tritonclient reads). Status codes
match the REST statuses: 400 INVALID_ARGUMENT, 404 NOT_FOUND, 408/504 DEADLINE_EXCEEDED,
413 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, 500 INTERNAL.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
from flask import Flask
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from visionpool.client.wire import BadRequest, ServiceError

from .metrics import METRICS
from .models import get_models
from .v2 import EXTENSIONS, V2Model, find, tensor_from_raw, tensor_to_raw

logger = logging.getLogger(__name__)
T = TypeVar("T")
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# typed contents (what KServe's client sends without binary data) -> the field holding them
CONTENTS = {"BOOL": "bool_contents", "BYTES": "bytes_contents", "FP32": "fp32_contents", "FP64": "fp64_contents"}
CONTENTS |= {f"INT{b}": "int_contents" for b in (8, 16, 32)} | {"INT64": "int64_contents"}
CONTENTS |= {f"UINT{b}": "uint_contents" for b in (8, 16, 32)} | {"UINT64": "uint64_contents"}


def answered(method: Callable[..., T]) -> Callable[..., T]:
    """Turn a ServiceError into the gRPC status that matches its HTTP status; log anything else."""

    @functools.wraps(method)
    def call(self: Servicer, request: Any, context: grpc.ServicerContext) -> T:
        try:
            return method(self, request, context)
        except ServiceError as error:
            context.abort(CODES.get(error.status, grpc.StatusCode.INTERNAL), error.message)
        except Exception:
            logger.exception("gRPC %s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "Internal error; the worker log has the details.")
        raise AssertionError("unreachable: context.abort raises")

    return call


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The worker's models over gRPC; the protocol itself is worker/v2.py's, shared with REST."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.v2_models: dict[str, V2Model] = {}

    def models(self) -> dict[str, V2Model]:
        for name, pipeline in get_models(self.app).models.items():
            self.v2_models.setdefault(name, V2Model(pipeline))
        return self.v2_models

    @answered
    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - the protocol's names
        return service_pb2.ServerLiveResponse(live=True)

    @answered
    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return service_pb2.ServerReadyResponse(ready=get_models(self.app).ready.is_set())

    @answered
    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return service_pb2.ModelReadyResponse(ready=request.name in self.models())

    @answered
    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        version = package_version("visionpool")
        return service_pb2.ServerMetadataResponse(name="visionpool", version=version, extensions=EXTENSIONS)

    @answered
    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        metadata = find(self.models(), request.name, request.version or None).metadata()
        return json_format.ParseDict(metadata, service_pb2.ModelMetadataResponse())

    @answered
    def ModelConfig(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        config = find(self.models(), request.name, request.version or None).config()
        return service_pb2.ModelConfigResponse(config=json_format.ParseDict(config, model_config_pb2.ModelConfig()))

    @answered
    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        started = time.monotonic()
        tickets = self.app.config.get("TICKETS")
        if tickets is not None:  # the pool signs tickets: gRPC uploads need one too (metadata "authorization")
            tickets.admit(dict(context.invocation_metadata()).get("authorization"), request.model_name)
        manager, metrics = get_models(self.app), self.app.extensions[METRICS]
        with metrics.track(manager.metric_label(request.model_name), request.id or uuid.uuid4().hex):
            model = find(self.models(), request.model_name, request.model_version or None)
            deadline = self.app.config["VISIONPOOL"].deadline(started, context.time_remaining())
            outputs = model.infer(_inputs(request), _parameters(request.parameters), deadline)
            return _response(model, request, outputs)


def _inputs(request: Any) -> dict[str, np.ndarray]:
    """The request's tensors: from raw_input_contents (tritonclient), else from the typed contents."""
    inputs = {}
    for index, tensor in enumerate(request.inputs):
        shape = list(tensor.shape)
        if request.raw_input_contents:
            if index >= len(request.raw_input_contents):
                raise BadRequest(f"Input {tensor.name!r} has no raw contents.")
            inputs[tensor.name] = tensor_from_raw(tensor.datatype, shape, request.raw_input_contents[index])
            continue
        field = CONTENTS.get(tensor.datatype)
        if field is None:
            raise BadRequest(f"Input {tensor.name!r}: datatype {tensor.datatype!r} cannot be sent as contents.")
        values = list(getattr(tensor.contents, field))
        array = np.empty(len(values), np.object_) if tensor.datatype == "BYTES" else np.asarray(values)
        if tensor.datatype == "BYTES":
            array[:] = values
        if array.size != int(np.prod(shape)):
            raise BadRequest(f"Input {tensor.name!r} has {array.size} elements; shape {shape} needs {np.prod(shape)}.")
        inputs[tensor.name] = array.reshape(shape)
    return inputs


def _parameters(parameters: Any) -> dict[str, Any]:
    """InferParameter values by key (whichever of bool, int64, double or string is set)."""
    return {key: getattr(value, value.WhichOneof("parameter_choice")) for key, value in parameters.items()}


def _response(model: V2Model, request: Any, outputs: dict[str, np.ndarray]) -> Any:
    answer = service_pb2.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
    for name in [o.name for o in request.outputs] or list(outputs):
        if name not in outputs:
            raise BadRequest(f"Model {model.name!r} has no output {name!r}; it has {', '.join(outputs)}.")
        datatype = model.outputs[name][0]
        answer.outputs.add(name=name, datatype=datatype, shape=list(outputs[name].shape))
        answer.raw_output_contents.append(tensor_to_raw(datatype, outputs[name]))  # in the order of outputs
    return answer


def start_grpc(
    app: Flask,
    host: str,
    port: int,
    threads: int,
    max_message_bytes: int,
    tls: tuple[Path, Path] | None = None,
    client_ca: Path | None = None,
) -> tuple[grpc.Server, int]:
    """Serve the worker's models over gRPC on host:port (0: any free port), over TLS with ``tls`` (certificate
    chain, key), asking clients for a certificate ``client_ca`` signed when given; (the server, its port). gRPC
    reads its certificate at start: a renewed one needs a restart."""
    server = grpc.server(
        ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(app), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials(
            [(tls[1].read_bytes(), tls[0].read_bytes())],
            root_certificates=client_ca.read_bytes() if client_ca is not None else None,
            require_client_auth=client_ca is not None,
        )
        bound = server.add_secure_port(address, credentials)
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port}")
    server.start()
    return server, bound
