"""Engines by name: ``onnxruntime`` (the main one), ``opencv`` (TF frozen graphs), ``python``."""

from __future__ import annotations

from typing import Any

from .base import Engine

ENGINES = ("onnxruntime", "opencv", "python")

__all__ = ["ENGINES", "Engine", "create_engine"]


def create_engine(name: str, files: tuple[Any, ...], input_name: str | None, options: dict[str, Any]) -> Engine:
    """Load a model with the engine called ``name``; ValueError names the valid choices."""
    # Imported here so that a worker loads only the runtime it uses.
    if name == "onnxruntime":
        from .onnxruntime import OnnxRuntimeEngine

        return OnnxRuntimeEngine(files, input_name, options)
    if name == "opencv":
        from .opencv import OpenCVEngine

        return OpenCVEngine(files, input_name, options)
    if name == "python":
        from .python import PythonEngine

        return PythonEngine(files, input_name, options)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
