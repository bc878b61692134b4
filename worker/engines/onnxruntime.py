"""ONNX Runtime: CPU here; the CUDA or TensorRT execution provider when present and asked for."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .base import Engine, EngineHints, leading_dimension, split_batch

logger = logging.getLogger(__name__)

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class OnnxRuntimeEngine(Engine):
    """One InferenceSession; options: providers, intra_op_threads, inter_op_threads, spinning, device_id."""

    def __init__(
        self, files: tuple[Path, ...], input_name: str | None, options: dict[str, Any], hints: EngineHints
    ) -> None:
        options = dict(options)
        wanted = options.pop("providers", ["cuda", "cpu"])
        device_id = int(options.pop("device_id", 0))
        session_options = _session_options(options, hints.threads)
        if options:
            raise ValueError(f"unknown engine_options {', '.join(sorted(options))} for onnxruntime")
        providers = _providers(wanted, device_id)
        self.session = ort.InferenceSession(str(files[0]), session_options, providers=providers)
        active = self.session.get_providers()[0]
        self.device = (
            "cpu"
            if active == "CPUExecutionProvider"
            else f"{active.removesuffix('ExecutionProvider').lower()}:{device_id}"
        )
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.input_name = input_name or next(iter(inputs))
        if self.input_name not in inputs:
            raise ValueError(f"the model has no input {self.input_name!r} (it has {', '.join(inputs)})")
        self.max_batch_size = leading_dimension(inputs[self.input_name].shape[0])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, batch: np.ndarray) -> list[dict[str, np.ndarray]]:
        values = self.session.run(None, {self.input_name: batch})
        return split_batch(dict(zip(self.output_names, values, strict=True)), batch.shape[0])


def _session_options(options: dict[str, Any], threads: int) -> ort.SessionOptions:
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = int(options.pop("intra_op_threads", threads))
    session_options.inter_op_num_threads = int(options.pop("inter_op_threads", 1))
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn the CPU that request threads need to decode images.
    spinning = "1" if options.pop("spinning", False) else "0"
    session_options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    session_options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    return session_options


def _providers(wanted: list[str], device_id: int) -> list[Any]:
    unknown = [p for p in wanted if p not in PROVIDERS]
    if unknown:
        raise ValueError(f"unknown provider(s) {', '.join(unknown)}; choose from {', '.join(PROVIDERS)}")
    available = set(ort.get_available_providers())
    chosen: list[Any] = []
    for name in wanted:
        provider = PROVIDERS[name]
        if provider not in available:
            logger.info("onnxruntime has no %s here; skipping it", provider)
            continue
        chosen.append(provider if name == "cpu" else (provider, {"device_id": device_id}))
    if "CPUExecutionProvider" not in [c if isinstance(c, str) else c[0] for c in chosen]:
        chosen.append("CPUExecutionProvider")
    return chosen
