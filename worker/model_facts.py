"""What a model file says about itself, read once with OpenVINO's reader (ONNX, OpenVINO IR, TensorFlow frozen
graphs and SavedModels, TFLite): its inputs and outputs, its metadata, the labels it carries.

Usage:
    facts = read_facts(Path("yolov8n.onnx"))
    facts.inputs[0].shape      # (None, 3, 640, 640): None where the file leaves a dimension open
    facts.metadata["imgsz"]    # ONNX metadata_props (Ultralytics writes names, imgsz, stride, task, kpt_shape)
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openvino as ov

from .engines.openvino import port_name

FORMATS = {".onnx": "ONNX", ".xml": "OpenVINO IR", ".pb": "TensorFlow frozen graph", ".tflite": "TFLite"}
DTYPES = {"f32": "float32", "f16": "float16", "u8": "uint8", "i8": "int8", "i32": "int32", "i64": "int64"}


@dataclass(frozen=True)
class Tensor:
    """One input or output: its name, its shape (None for an open dimension) and its element type."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} [{dims}] {self.dtype}"


@dataclass
class ModelFacts:
    """A model file as its reader sees it."""

    path: Path
    format: str
    inputs: list[Tensor]
    outputs: list[Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)  # classes the file names itself (TFLite metadata)
    labels_source: str = ""
    resize_to: tuple[int, int] | None = None  # an input of open size: the (width, height) the graph resizes it to


def model_format(path: Path) -> str:
    """The file's format, from its name (a folder holding saved_model.pb is a SavedModel); ValueError otherwise."""
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return "TensorFlow SavedModel"
    if path.suffix.lower() in FORMATS and path.is_file():
        return FORMATS[path.suffix.lower()]
    raise ValueError(
        f"{path}: not a model file this reads (ONNX .onnx, OpenVINO IR .xml, TensorFlow .pb or a SavedModel folder, "
        "TFLite .tflite; MXNet prefix-symbol.json)"
    )


def read_facts(path: Path) -> ModelFacts:
    """Read ``path`` once and say what it holds."""
    kind = model_format(path)
    model = ov.Core().read_model(str(path))
    facts = ModelFacts(
        path=path,
        format=kind,
        inputs=[_tensor(port) for port in model.inputs],
        outputs=[_tensor(port) for port in model.outputs],
        metadata=_metadata(model),
    )
    if kind == "TFLite":
        facts.labels, facts.labels_source = _tflite_labels(path)
    if any(None in t.shape[1:] for t in facts.inputs):  # an open size: the graph may say what it resizes to
        facts.resize_to = _inner_resize(model)
    return facts


def _tensor(port: Any) -> Tensor:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    element = port.get_element_type().get_type_name()
    return Tensor(port_name(port), shape, DTYPES.get(element, element))  # the name the openvino engine uses


def _metadata(model: ov.Model) -> dict[str, str]:
    """ONNX metadata_props (OpenVINO keeps them under rt_info 'framework'); empty when the file has none."""
    info = model.get_rt_info()
    if "framework" not in info.keys():  # noqa: SIM118 - an RTMap, not a dict
        return {}
    framework = info["framework"]
    found = {}
    for key in framework.astype(dict) if hasattr(framework, "astype") else framework:
        try:
            found[key] = str(model.get_rt_info(["framework", key]).astype(str))
        except RuntimeError:  # a value OpenVINO cannot show as text
            continue
    return found


def _tflite_labels(path: Path) -> tuple[list[str], str]:
    """TFLite metadata packs its associated files (the labels) as a zip after the model."""
    try:
        with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as packed:
            names = [n for n in packed.namelist() if n.endswith(".txt") and "label" in n.lower()]
            if not names:
                return [], ""
            text = packed.read(names[0]).decode("utf-8", errors="replace")
    except zipfile.BadZipFile:
        return [], ""
    return [line.strip() for line in text.splitlines() if line.strip()], f"TFLite metadata file '{names[0]}'"


def _inner_resize(model: ov.Model) -> tuple[int, int] | None:
    """The constant (width, height) of the graph's first resize, looked for in loop bodies too (TensorFlow's
    Object Detection API resizes inside a while loop)."""
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Interpolate":
            for index in range(1, op.get_input_size()):
                source = op.input_value(index).get_node()
                values = source.get_vector().tolist() if source.get_type_name() == "Constant" else []
                if len(values) == 2 and all(isinstance(v, int) and v > 1 for v in values):
                    return int(values[1]), int(values[0])
        if op.get_type_name() in ("Loop", "TensorIterator"):
            found = _inner_resize(op.get_function())
            if found:
                return found
    return None
