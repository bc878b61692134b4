"""The Open Inference Protocol (KServe v2, Triton's HTTP/gRPC protocol) for a served model, without transport.

Usage:
    model = V2Model(pipeline)
    model.config()                       # Triton's model-configuration JSON (GET .../config, gRPC ModelConfig)
    model.metadata()                     # v2 metadata (GET /v2/models/<name>, gRPC ModelMetadata)
    outputs = model.infer(inputs, parameters, deadline)     # {"BOXES": array, ...}

Inputs (both optional; send one):
    IMAGE   BYTES [N]                    encoded images (JPEG, PNG, ...): they go through the batcher together
    TENSOR  UINT8|FP32 [N, ...]          images already in the model's input layout (e.g. [N, 300, 300, 3])
Outputs (K: the most predictions any image of the request has; COUNT says how many are real):
    detectors:   BOXES FP32 [N,K,4] (x, y, width, height in image pixels), SCORES FP32 [N,K],
                 CLASS_IDS INT32 [N,K], LABELS BYTES [N,K], COUNT INT32 [N], SIZE INT32 [N,2] (width, height)
    segmentation: the detectors' outputs and MASKS BYTES [N,K]: each a 1-bit PNG the size of its box, in base64
                 (as /predict's ?masks=png gives it: text, so that JSON outputs carry it too)
    pose:        the detectors' outputs and KEYPOINTS FP32 [N,K,P,3] (x, y in image pixels, score)
    classifiers: CLASS_IDS INT32 [N,K], LABELS BYTES [N,K], PROBABILITIES FP32 [N,K], COUNT, SIZE
    encoders:    EMBEDDING FP32 [N,D], SIZE
Request parameters: ``threshold`` and ``top_k``, as /predict's query.

Errors are the worker's ServiceErrors; the REST and gRPC fronts turn them into the protocol's shapes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from visionpool.client.wire import V2_EXTENSIONS, BadRequest, ModelNotFound

from .pipeline import Answer, Pipeline

# v2 datatype -> (model-config data_type, numpy dtype); BYTES is TYPE_STRING in configs
DATATYPES: dict[str, tuple[str, Any]] = {
    "BOOL": ("TYPE_BOOL", np.bool_),
    "UINT8": ("TYPE_UINT8", np.uint8),
    "UINT16": ("TYPE_UINT16", np.uint16),
    "UINT32": ("TYPE_UINT32", np.uint32),
    "UINT64": ("TYPE_UINT64", np.uint64),
    "INT8": ("TYPE_INT8", np.int8),
    "INT16": ("TYPE_INT16", np.int16),
    "INT32": ("TYPE_INT32", np.int32),
    "INT64": ("TYPE_INT64", np.int64),
    "FP16": ("TYPE_FP16", np.float16),
    "FP32": ("TYPE_FP32", np.float32),
    "FP64": ("TYPE_FP64", np.float64),
    "BYTES": ("TYPE_STRING", np.object_),
}
EXTENSIONS = V2_EXTENSIONS
DETECTION_OUTPUTS = {
    "BOXES": ("FP32", [-1, -1, 4]),
    "SCORES": ("FP32", [-1, -1]),
    "CLASS_IDS": ("INT32", [-1, -1]),
    "LABELS": ("BYTES", [-1, -1]),
    "COUNT": ("INT32", [-1]),
    "SIZE": ("INT32", [-1, 2]),
}
SEGMENTATION_OUTPUTS = {**DETECTION_OUTPUTS, "MASKS": ("BYTES", [-1, -1])}
POSE_OUTPUTS = {**DETECTION_OUTPUTS, "KEYPOINTS": ("FP32", [-1, -1, -1, 3])}
EMBEDDING_OUTPUTS = {"EMBEDDING": ("FP32", [-1, -1]), "SIZE": ("INT32", [-1, 2])}
CLASSIFICATION_OUTPUTS = {
    "CLASS_IDS": ("INT32", [-1, -1]),
    "LABELS": ("BYTES", [-1, -1]),
    "PROBABILITIES": ("FP32", [-1, -1]),
    "COUNT": ("INT32", [-1]),
    "SIZE": ("INT32", [-1, 2]),
}


TASK_OUTPUTS = {
    "detection": DETECTION_OUTPUTS,
    "segmentation": SEGMENTATION_OUTPUTS,
    "pose": POSE_OUTPUTS,
    "classification": CLASSIFICATION_OUTPUTS,
    "embedding": EMBEDDING_OUTPUTS,
}


def decode_bytes(buffer: bytes | memoryview) -> list[bytes]:
    """A BYTES tensor's elements: each a 4-byte little-endian length, then that many bytes."""
    view, items, offset = memoryview(buffer), [], 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise BadRequest("Malformed BYTES tensor: a length prefix is cut off.")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise BadRequest("Malformed BYTES tensor: an element runs past the end of the data.")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    return items


def encode_bytes(items: Iterable[bytes | str]) -> bytes:
    parts: list[bytes] = []
    for item in items:
        data = item.encode() if isinstance(item, str) else item
        parts += (struct.pack("<I", len(data)), data)
    return b"".join(parts)


def tensor_from_raw(datatype: str, shape: list[int], raw: bytes | memoryview) -> np.ndarray:
    """An input tensor from its binary data."""
    count = int(np.prod(shape)) if shape else 1
    if datatype == "BYTES":
        items = decode_bytes(raw)
        if len(items) != count:
            raise BadRequest(f"The BYTES tensor has {len(items)} elements; shape {shape} needs {count}.")
        array = np.empty(count, dtype=np.object_)
        array[:] = items
        return array.reshape(shape)
    if datatype not in DATATYPES:
        raise BadRequest(f"Unknown datatype {datatype!r}; use one of {', '.join(DATATYPES)}.")
    dtype = np.dtype(DATATYPES[datatype][1])
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(f"{len(raw)} bytes of data do not make a {datatype} tensor of shape {shape}.")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def tensor_from_json(datatype: str, shape: list[int], data: Any) -> np.ndarray:
    """An input tensor from JSON ``data`` (nested or flat lists; BYTES as strings)."""
    flat = list(_flatten(data))
    if datatype == "BYTES":
        array = np.empty(len(flat), np.object_)
        array[:] = [item.encode() if isinstance(item, str) else bytes(item) for item in flat]
    elif datatype in DATATYPES:
        array = np.asarray(flat, dtype=DATATYPES[datatype][1])
    else:
        raise BadRequest(f"Unknown datatype {datatype!r}; use one of {', '.join(DATATYPES)}.")
    if array.size != (int(np.prod(shape)) if shape else 1):
        raise BadRequest(f"The input has {array.size} elements; shape {shape} needs {int(np.prod(shape))}.")
    return array.reshape(shape)


def tensor_to_raw(datatype: str, array: np.ndarray) -> bytes:
    if datatype == "BYTES":
        return encode_bytes(array.reshape(-1).tolist())
    return np.ascontiguousarray(array, dtype=DATATYPES[datatype][1]).tobytes()


def tensor_to_json(datatype: str, array: np.ndarray) -> list[Any]:
    """An output's flat JSON data; BYTES as UTF-8 strings (labels always are)."""
    flat = array.reshape(-1).tolist()
    return [item.decode() for item in flat] if datatype == "BYTES" else flat


def _flatten(value: Any) -> Iterable[Any]:
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


class V2Model:
    """One served model as the protocol sees it."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        config = pipeline.config
        self.name, self.version = config.name, config.version
        self.task = config.task
        self.outputs = TASK_OUTPUTS[config.task]
        spec = config.input
        chw = [3, spec.height, spec.width] if spec.layout == "NCHW" else [spec.height, spec.width, 3]
        self.tensor_shape = chw
        self.tensor_datatype = "UINT8" if spec.dtype == "uint8" else "FP32"

    def check_version(self, version: str | None) -> None:
        if version and version != self.version:
            raise ModelNotFound(
                f"Model {self.name!r} has no version {version}; this worker serves version {self.version}."
            )

    def inputs(self) -> dict[str, tuple[str, list[int]]]:
        return {"IMAGE": ("BYTES", [-1]), "TENSOR": (self.tensor_datatype, [-1, *self.tensor_shape])}

    def metadata(self) -> dict[str, Any]:
        """GET /v2/models/<name>: inputs and outputs with v2 datatypes and -1 for variable dimensions."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": f"visionpool_{self.pipeline.config.engine}",
            "inputs": [{"name": n, "datatype": d, "shape": s} for n, (d, s) in self.inputs().items()],
            "outputs": [{"name": n, "datatype": d, "shape": s} for n, (d, s) in self.outputs.items()],
        }

    def config(self) -> dict[str, Any]:
        """Triton's model configuration (the JSON its tools read); shapes are whole: max_batch_size 0."""
        pipeline, batching = self.pipeline, self.pipeline.config.batching
        return {
            "name": self.name,
            "platform": "",
            "backend": f"visionpool_{pipeline.config.engine}",
            "max_batch_size": 0,
            "input": [
                {"name": n, "data_type": DATATYPES[d][0], "dims": s, "optional": True}
                for n, (d, s) in self.inputs().items()
            ],
            "output": [
                {"name": n, "data_type": DATATYPES[d][0], "dims": s}
                | ({"label_filename": "labels.txt"} if n == "LABELS" else {})
                for n, (d, s) in self.outputs.items()
            ],
            "dynamic_batching": {
                "max_queue_delay_microseconds": round(pipeline.batcher.max_delay * 1_000_000),  # 0 on a CPU
                "preferred_batch_size": [pipeline.batcher.max_batch],
            },
            "instance_group": [
                {"count": batching.instances, "kind": "KIND_CPU" if pipeline.engine.device == "cpu" else "KIND_GPU"}
            ],
            "version_policy": {"specific": {"versions": [int(self.version)]}},
            "parameters": {"task": {"string_value": pipeline.config.task}},
        }

    def infer(
        self, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, Any], deadline: float
    ) -> dict[str, np.ndarray]:
        """Run the request's images (or tensors) through the pipeline; every output, whole."""
        unknown = set(inputs) - {"IMAGE", "TENSOR"}
        if unknown or len(inputs) != 1:
            raise BadRequest(
                f"Send exactly one input: IMAGE (BYTES, shape [N]) or TENSOR ({self.tensor_datatype}, shape "
                f"[N, {', '.join(map(str, self.tensor_shape))}]); got {', '.join(sorted(inputs)) or 'none'}."
            )
        threshold, top_k = (
            _parameter(parameters, "threshold", float, 0.0, 1.0),
            _parameter(parameters, "top_k", int, 1, 10_000),
        )
        if "IMAGE" in inputs:
            images = inputs["IMAGE"]
            if images.ndim != 1 or images.dtype != np.object_:
                raise BadRequest(f"IMAGE must be a BYTES tensor of shape [N], got shape {list(images.shape)}.")
            answers = self.pipeline.predict_many(
                list(images), deadline=deadline, threshold=threshold, top_k=top_k, masks="png"
            )
        else:
            tensors = self._tensors(inputs["TENSOR"])
            answers = self.pipeline.predict_tensors(tensors, deadline, threshold, top_k, masks="png")
        return self._tensors_of(answers)

    def _tensors(self, tensor: np.ndarray) -> np.ndarray:
        expected = np.dtype(DATATYPES[self.tensor_datatype][1])
        if tensor.dtype != expected or list(tensor.shape[1:]) != self.tensor_shape or tensor.ndim != 4:
            raise BadRequest(
                f"TENSOR must be {self.tensor_datatype} of shape [N, {', '.join(map(str, self.tensor_shape))}], "
                f"got {tensor.dtype} of shape {list(tensor.shape)}."
            )
        return tensor

    def _tensors_of(self, answers: list[Answer]) -> dict[str, np.ndarray]:
        n, k = len(answers), max((len(a.predictions) for a in answers), default=0)
        size = np.array([[a.width, a.height] for a in answers], np.int32).reshape(n, 2)
        if self.task == "embedding":
            vectors = [a.embedding if a.embedding is not None else np.zeros(0, np.float32) for a in answers]
            return {"EMBEDDING": np.stack(vectors).astype(np.float32).reshape(n, -1), "SIZE": size}
        count = np.array([len(a.predictions) for a in answers], np.int32)
        scores = np.zeros((n, k), np.float32)
        class_ids = np.full((n, k), -1, np.int32)
        labels = np.full((n, k), b"", dtype=np.object_)
        for i, answer in enumerate(answers):
            for j, p in enumerate(answer.predictions):
                scores[i, j], class_ids[i, j], labels[i, j] = p["score"], p["class_id"], p["label"].encode()
        common = {"CLASS_IDS": class_ids, "LABELS": labels, "COUNT": count, "SIZE": size}
        if self.task == "classification":
            return {"PROBABILITIES": scores, **common}
        outputs = {"BOXES": _per_prediction(answers, k, "box", (4,), np.float32, _box), "SCORES": scores, **common}
        if self.task == "segmentation":
            outputs["MASKS"] = _per_prediction(answers, k, "mask", (), np.object_, lambda m: m["png"].encode())
        if self.task == "pose":
            points = max((len(p["keypoints"]) for a in answers for p in a.predictions), default=0)
            outputs["KEYPOINTS"] = _per_prediction(answers, k, "keypoints", (points, 3), np.float32, np.asarray)
        return outputs


def _per_prediction(
    answers: list[Answer], k: int, key: str, shape: tuple[int, ...], dtype: Any, convert: Any
) -> np.ndarray:
    """One field of every prediction as an [N, K, ...] tensor (empty places zero, or b"" for bytes)."""
    tensor = np.full((len(answers), k, *shape), b"" if dtype is np.object_ else 0, dtype=dtype)
    for i, answer in enumerate(answers):
        for j, p in enumerate(answer.predictions):
            if key in p:
                tensor[i, j] = convert(p[key])
    return tensor


def _box(box: dict[str, int]) -> list[int]:
    return [box["x"], box["y"], box["width"], box["height"]]


def _parameter(parameters: Mapping[str, Any], key: str, kind: type, low: float, high: float) -> Any:
    value = parameters.get(key)
    if value is None:
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise BadRequest(
            f"Parameter {key} must be a {kind.__name__} between {low} and {high}, got {value!r}."
        ) from None
    if not low <= number <= high:
        raise BadRequest(f"Parameter {key} must be between {low} and {high}, got {value!r}.")
    return number


def find(models: Mapping[str, V2Model], name: str, version: str | None) -> V2Model:
    """The model called ``name`` (at ``version``); ModelNotFound names the served ones."""
    model = models.get(name)
    if model is None:
        raise ModelNotFound(f"Request for unknown model {name!r}; this worker serves: {', '.join(models)}.")
    model.check_version(version)
    return model
