"""OpenVINO: ONNX, TensorFlow frozen graphs and SavedModels, TFLite and OpenVINO IR, on the CPU (bf16 on AMX).

Options (``[engine_options.openvino]``):
    precision = "auto"        # auto (the hardware's best: bf16 where the CPU has it, else f32) | f32 | bf16 | f16
    streams = 2               # requests run in parallel, each by its own batcher thread (default: the worker's share)
    threads = 2               # inference threads, split over the streams (default: the worker's share of the cores)
    max_batch = 2             # images per run: on a CPU, parallel streams of small batches beat big batches
    requests = 4              # runs in flight (default: 2 per stream, so a stream never waits for Python)
    outputs = ["concat:0"]    # cut the graph at these tensors (serve a raw SSD without the graph's own NMS)
    device = "CPU"

The model is compiled from its path with OpenVINO's model cache (``CACHE_DIR``, under the
worker's ``--cache-dir``), so a restart loads the compiled blob instead of compiling again:
the demo's 67 MB frozen graph takes ~15 s the first time and under a second afterwards. A cut
graph is saved once as IR in the same folder, keyed by the source file and the cut, and
compiled from there. CPU pinning is off: several workers share a host's cores, and OpenVINO
pins each process as if it were alone. ``run`` is called from ``streams`` batcher threads at
once, each with an infer request of its own; ``infer`` releases the GIL.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import time
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from .base import Engine, EngineHints, batch_axis, split_batch

logger = logging.getLogger(__name__)
PRECISIONS = ("auto", "f32", "bf16", "f16")


class OpenVinoEngine(Engine):
    """One compiled model, ``streams`` infer requests that batcher threads take turns with."""

    def __init__(
        self, files: tuple[Path, ...], input_name: str | None, options: dict[str, Any], hints: EngineHints
    ) -> None:
        options = dict(options)
        precision = str(options.pop("precision", "auto"))
        threads = int(options.pop("threads", hints.threads))
        streams = int(options.pop("streams", hints.streams or min(threads, 2)))
        cut = [str(name) for name in options.pop("outputs", [])]
        max_batch = int(options.pop("max_batch", 2))
        requests = int(options.pop("requests", 0))
        device = str(options.pop("device", "CPU"))
        if options:
            raise ValueError(f"unknown engine_options {', '.join(sorted(options))} for openvino")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if min(threads, streams, max_batch) < 1:
            raise ValueError(
                f"threads, streams and max_batch must be at least 1, got {threads}, {streams}, {max_batch}"
            )
        core = ov.Core()
        if hints.cache_dir is not None:
            hints.cache_dir.mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(hints.cache_dir / "openvino")})
        started = time.monotonic()
        source = _cut(core, files[0], cut, hints.cache_dir) if cut else files[0]
        self.compiled = core.compile_model(
            str(source),
            device,
            {
                "INFERENCE_PRECISION_HINT": _precision(core, device, precision),
                "NUM_STREAMS": streams,
                "INFERENCE_NUM_THREADS": threads,
                "ENABLE_CPU_PINNING": False,
            },
        )
        self.compile_s = time.monotonic() - started
        self.device = device.lower()
        self.batch_waits = not self.device.startswith("cpu")
        self.precision = _short(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        self.parallel = requests or 2 * self.streams
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        inputs = {name: port for port in self.compiled.inputs for name in port.get_names()}
        self.input_name = input_name or self.compiled.input(0).get_any_name()
        if self.input_name not in inputs:
            raise ValueError(f"the model has no input {self.input_name!r} (it has {', '.join(sorted(inputs))})")
        axis, why = batch_axis(_first_dimension(inputs[self.input_name]))
        self.max_batch_size, self.batch_limit = min(
            (axis, why),
            (max_batch, "OpenVINO on a CPU runs parallel streams of small batches, which measured faster than big "
             "batches here (engine option max_batch)"),
        )  # fmt: skip
        self.output_names = [port_name(port) for port in self.compiled.outputs]
        self.requests: queue.SimpleQueue[ov.InferRequest] = queue.SimpleQueue()
        for _ in range(self.parallel):
            self.requests.put(self.compiled.create_infer_request())

    def run(self, batch: np.ndarray) -> list[dict[str, np.ndarray]]:
        request = self.requests.get()  # one of ``parallel``: there is always one for each batcher thread
        try:
            # the batch's own memory as the input (it lives, unchanged, until infer returns: one copy fewer, 0.05-0.15
            # CPU-ms an image at 224x224 here); the outputs are copied: the request's buffers are reused
            results = request.infer({self.input_name: batch}, share_inputs=True)
            outputs = {name: results[port] for name, port in zip(self.output_names, self.compiled.outputs, strict=True)}
        finally:
            self.requests.put(request)
        return split_batch(outputs, batch.shape[0])

    def details(self) -> dict[str, object]:
        details = {**super().details(), "streams": self.streams, "threads": self.threads}
        return {**details, "compile_s": round(self.compile_s, 2)}


def _precision(core: ov.Core, device: str, wanted: str) -> str:
    """The precision to ask for: bf16 where the hardware has it (AMX, AVX-512 bf16), else f32, for "auto"."""
    if wanted != "auto":
        return wanted
    capabilities = core.get_property(device, "OPTIMIZATION_CAPABILITIES")
    return "bf16" if "BF16" in capabilities else "f32"


def _short(precision: object) -> str:
    """OpenVINO's type name as the config writes it: <Type: 'bfloat16'> -> bf16."""
    text = str(precision)
    for long, short in (("bfloat16", "bf16"), ("float16", "f16"), ("float32", "f32")):
        if long in text:
            return short
    return text


def port_name(port: ov.Output) -> str:
    """A tensor's name as a config would write it: a graph's own tensor name rather than an internal alias
    (unscoped first, then the most descriptive: TensorFlow's detection_classes:0 rather than add:0)."""
    names = sorted(port.get_names(), key=lambda name: ("/" in name, -len(name), name))
    return names[0] if names else port.get_any_name()


def _first_dimension(port: ov.Output) -> object:
    dimension = port.get_partial_shape()[0]
    return dimension.get_length() if dimension.is_static else None


def _cut(core: ov.Core, path: Path, outputs: list[str], cache_dir: Path | None) -> Path:
    """The graph ending at ``outputs``, saved as IR once (the cache's key: the file, its size and date, the cut)."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{outputs}".encode()).hexdigest()[:16]
    target = (cache_dir or path.parent) / "openvino" / f"{path.stem}-cut-{key}.xml"
    if target.is_file():
        return target
    logger.info("cutting %s at %s (once; kept in %s)", path, ", ".join(outputs), target.parent)
    model = core.read_model(str(path))
    found = {name: port for op in model.get_ordered_ops() for port in op.outputs() for name in port.get_names()}
    missing = [name for name in outputs if name not in found]
    if missing:
        raise ValueError(f"the graph has no tensor {missing[0]!r} to cut at")
    cut = ov.Model([found[name] for name in outputs], model.get_parameters(), f"{path.stem}-cut")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.stem}.{os.getpid()}.partial.xml")  # workers starting together each write
    ov.save_model(cut, str(partial), compress_to_fp16=False)
    partial.with_suffix(".bin").replace(target.with_suffix(".bin"))  # .bin first: an .xml never points at nothing
    partial.replace(target)
    return target
