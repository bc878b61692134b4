"""Engines by name: ``openvino`` (CPU, the fast path here), ``onnxruntime`` (CPU, CUDA, TensorRT), ``python``."""

from __future__ import annotations

from typing import Any

from .base import Engine, EngineHints, host_cores

ENGINES = ("openvino", "onnxruntime", "python")

__all__ = ["ENGINES", "Engine", "EngineHints", "create_engine", "host_cores"]


def create_engine(
    name: str, files: tuple[Any, ...], input_name: str | None, options: dict[str, Any], hints: EngineHints
) -> Engine:
    """Load a model with the engine called ``name``; ValueError names the valid choices."""
    # Imported here so that a worker loads only the runtime it uses.
    if name == "openvino":
        from .openvino import OpenVinoEngine

        return OpenVinoEngine(files, input_name, options, hints)
    if name == "onnxruntime":
        from .onnxruntime import OnnxRuntimeEngine

        return OnnxRuntimeEngine(files, input_name, options, hints)
    if name == "python":
        from .python import PythonEngine

        return PythonEngine(files, input_name, options, hints)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
