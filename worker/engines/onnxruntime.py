"""ONNX Runtime: on the CPU, or on an NVIDIA GPU (the worker's ``--device cuda:N``) with CUDA or TensorRT.

Options (``[engine_options.onnxruntime]``):
    providers = ["tensorrt", "cuda"]  # on a GPU, in order of preference (default ["cuda"]); the CPU
                                      # provider runs whatever they cannot. Ignored on the CPU.
    fp16 = false                      # TensorRT: build fp16 engines
    max_batch = 32                    # TensorRT: the largest batch its engines are built for (default 32);
                                      # CPU: images per run (default 1: parallel runs of one image each beat
                                      # batches here, docs/performance.md)
    io_binding = false                # bind input and outputs in host memory for each run (CUDA, TensorRT)
    parallel = 2                      # CPU: runs at once, each by its own batcher thread (default: the
                                      # worker's --engine-streams, else its share of the cores, at most 2)
    intra_op_threads = 1              # CPU threads per run (default: the worker's share of the cores / parallel)
    inter_op_threads = 1
    spinning = false                  # let idle CPU threads spin (they would take the cores decoding needs)

On a GPU the worker refuses to start rather than run on the CPU unasked: when this onnxruntime
has no CUDA provider (the CPU-only wheel; ``pip install 'visionpool[gpu]'``), or when none of the
wanted GPU providers could start on the device. TensorRT keeps its engines in the worker's
``--cache-dir`` (``tensorrt/<model file>-<its size and date>/``), so a restart loads them instead of
building them again (minutes). Its engines cover batches of 1 to ``max_batch`` (a fixed batch: that
one), so no batch the batcher forms makes it build under load: through an optimisation profile, or,
for an input name onnxruntime's profile syntax cannot hold (a ':' in it, as TensorFlow exports have),
by running the smallest and the largest batch once at load. onnxruntime's own fallback is off.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import Engine, EngineHints, batch_axis, split_batch

try:
    import onnxruntime as ort
except ImportError as error:  # it is an extra: the CPU wheel and the GPU wheel cannot be installed together
    raise ImportError(
        "the onnxruntime engine needs ONNX Runtime: pip install 'visionpool[onnxruntime]' for CPUs, "
        "or 'visionpool[gpu]' for NVIDIA GPUs"
    ) from error

logger = logging.getLogger(__name__)

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider"}
CPU = "CPUExecutionProvider"
TENSORRT_MAX_BATCH = 32
# On a CPU a batch of two or more runs its images one after another on its run's threads while another run may
# wait for work: parallel runs of one image each measured 2-11% more img/s (EfficientNet-Lite0, 4-64 clients)
CPU_MAX_BATCH = 1


class OnnxRuntimeEngine(Engine):
    """One InferenceSession, on the CPU or on the worker's GPU."""

    def __init__(
        self, files: tuple[Path, ...], input_name: str | None, options: dict[str, Any], hints: EngineHints
    ) -> None:
        options = dict(options)
        wanted = [str(p) for p in options.pop("providers", ["cuda"]) if p != "cpu"]  # the CPU always comes last
        fp16 = bool(options.pop("fp16", False))
        path, gpu = files[0], hints.gpu()
        max_batch = int(options.pop("max_batch", TENSORRT_MAX_BATCH if gpu is not None else CPU_MAX_BATCH))
        self.io_binding = bool(options.pop("io_binding", False))
        # On a CPU, like OpenVINO's streams: several batches at once, each on its own threads, so one batch's
        # inference overlaps the next one's decoding (one run at a time left a core waiting). A GPU runs one.
        self.parallel = int(options.pop("parallel", (hints.streams or min(hints.threads, 2)) if gpu is None else 1))
        if self.parallel < 1:
            raise ValueError(f"parallel must be at least 1, got {self.parallel}")
        session_options = _session_options(options, max(1, hints.threads // self.parallel))
        if "device_id" in options:
            raise ValueError("device_id is no engine option: the worker's --device cuda:N chooses the GPU")
        if options:
            raise ValueError(f"unknown engine_options {', '.join(sorted(options))} for onnxruntime")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        tensorrt = None
        if gpu is not None and "tensorrt" in wanted:
            tensorrt = TensorrtPlan.of(path, input_name, max_batch, hints.cache_dir, fp16)
        if gpu is None:
            self.session, self.provider = ort.InferenceSession(str(path), session_options, providers=[CPU]), "cpu"
        else:
            _load_gpu_libraries(wanted)
            self.session, self.provider = _gpu_session(path, session_options, wanted, gpu, tensorrt)
            self.device = hints.device
            self.precision = "fp16" if fp16 and self.provider == "tensorrt" else "f32"
        self.batch_waits = self.provider != "cpu"
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.input_name = _input_named(input_name, inputs)
        self.max_batch_size, self.batch_limit = batch_axis(inputs[self.input_name].shape[0])
        if self.provider == "cpu" and max_batch < self.max_batch_size:
            self.max_batch_size = max_batch
            size = "one image" if max_batch == 1 else f"{max_batch} images"
            self.batch_limit = (
                f"ONNX Runtime on a CPU runs parallel batches of {size}, which measured faster than bigger batches "
                "here (engine option max_batch)"
            )
        self.output_names = [o.name for o in self.session.get_outputs()]
        if self.provider == "tensorrt" and tensorrt is not None:
            if tensorrt.batches[-1] < self.max_batch_size:
                self.max_batch_size = tensorrt.batches[-1]
                self.batch_limit = f"TensorRT's engines are built for batches of 1 to {self.max_batch_size} (max_batch)"
            for batch in tensorrt.build_at:  # no profile could be given: build for the range now, not under load
                self.session.run(None, {tensorrt.name: np.zeros((batch, *tensorrt.rest), np.float32)})

    def run(self, batch: np.ndarray) -> list[dict[str, np.ndarray]]:
        values = self._run_bound(batch) if self.io_binding else self.session.run(None, {self.input_name: batch})
        return split_batch(dict(zip(self.output_names, values, strict=True)), batch.shape[0])

    def _run_bound(self, batch: np.ndarray) -> list[np.ndarray]:
        """One run through an IO binding: the input bound where it lies, the outputs allocated by the session."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, np.ascontiguousarray(batch))
        for name in self.output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())

    def details(self) -> dict[str, object]:
        return {**super().details(), "provider": self.provider, "io_binding": self.io_binding}


@dataclass(frozen=True)
class TensorrtPlan:
    """How TensorRT builds its engines for one model: the input, the batches covered, where engines are kept."""

    name: str  # the model input
    rest: tuple[int, ...]  # its sizes past the batch
    batches: tuple[int, int, int]  # min, opt, max of the batch axis (all three alike for a fixed batch)
    cache: Path
    fp16: bool

    @classmethod
    def of(cls, path: Path, input_name: str | None, max_batch: int, cache_dir: Path | None, fp16: bool) -> TensorrtPlan:
        """The plan for a model file (its input read on the CPU: no GPU touched)."""
        reader = ort.InferenceSession(str(path), providers=[CPU])
        inputs = {i.name: i.shape for i in reader.get_inputs()}
        name = _input_named(input_name, inputs)
        return cls.for_input(name, inputs[name], max_batch, _tensorrt_cache(path, cache_dir), fp16)

    @classmethod
    def for_input(cls, name: str, shape: list[Any], max_batch: int, cache: Path, fp16: bool) -> TensorrtPlan:
        """The plan for an input of ``shape`` (a dynamic batch axis is a name or None, as onnxruntime shows it)."""
        batch, *rest = shape
        if not all(isinstance(d, int) and d > 0 for d in rest):
            raise ValueError(f"TensorRT needs the input's sizes past the batch, and {name!r} has {shape}")
        fixed = batch if isinstance(batch, int) and batch > 0 else None
        batches = (fixed, fixed, fixed) if fixed else (1, max_batch, max_batch)
        return cls(name, tuple(rest), batches, cache, fp16)

    @property
    def profile(self) -> dict[str, str]:
        """The optimisation profile, in onnxruntime's "name:NxHxWxC" form; none for a name that form cannot
        hold (onnxruntime splits at ':' and ',': an input like "Preprocessor/sub:0")."""
        if ":" in self.name or "," in self.name:
            return {}
        shapes = ["x".join(str(d) for d in (batch, *self.rest)) for batch in self.batches]
        keys = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
        return {key: f"{self.name}:{shape}" for key, shape in zip(keys, shapes, strict=True)}

    @property
    def build_at(self) -> tuple[int, ...]:
        """Batches to run once at load when no profile can be given: TensorRT then widens its engine to the
        batch range it has seen, so the first and the largest batch make it cover them all."""
        return () if self.profile else tuple(sorted({self.batches[0], self.batches[2]}))

    def options(self) -> dict[str, Any]:
        return {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(self.cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(self.cache),
            "trt_fp16_enable": self.fp16,
            **self.profile,
        }


def gpu_providers(wanted: list[str], gpu: int, tensorrt: TensorrtPlan | None) -> list[tuple[str, dict[str, Any]]]:
    """The GPU providers in order of preference, each with its options for device ``gpu``."""
    unknown = [name for name in wanted if name not in PROVIDERS]
    if unknown or not wanted:
        raise ValueError(f"providers must name one or more of {', '.join(PROVIDERS)}, got {wanted}")
    chosen: list[tuple[str, dict[str, Any]]] = []
    for name in wanted:
        options: dict[str, Any] = {"device_id": gpu}
        if name == "tensorrt":
            assert tensorrt is not None
            options |= tensorrt.options()
        chosen.append((PROVIDERS[name], options))
    return chosen


def _gpu_session(
    path: Path, session_options: ort.SessionOptions, wanted: list[str], gpu: int, tensorrt: TensorrtPlan | None
) -> tuple[ort.InferenceSession, str]:
    """A session on GPU ``gpu`` with the first wanted provider that starts there, and that provider's name.

    onnxruntime's own fallback is off: it would retry on its default providers without our options, so
    on device 0, and fall back to the CPU at run time. A provider that cannot start is logged, and the
    next one is tried; RuntimeError when none runs on the GPU."""
    failures = []
    for i, name in enumerate(wanted):
        providers = [*gpu_providers(wanted[i:], gpu, tensorrt), CPU]
        try:
            session = ort.InferenceSession(str(path), session_options, providers=providers, enable_fallback=0)
        except (RuntimeError, ValueError) as error:  # onnxruntime's Fail / EPFail
            failures.append(f"{PROVIDERS[name]}: {error}")
            logger.warning("onnxruntime could not start %s on cuda:%d: %s", PROVIDERS[name], gpu, error)
            continue
        running = [n for n in wanted[i:] if PROVIDERS[n] in session.get_providers()]
        on = session.get_provider_options().get(PROVIDERS[running[0]], {}) if running else {}
        if running and str(on.get("device_id", gpu)) == str(gpu):
            if running[0] != wanted[0]:
                logger.warning("running on %s instead of %s", PROVIDERS[running[0]], PROVIDERS[wanted[0]])
            return session, running[0]
        failures.append(f"{PROVIDERS[name]}: not running on cuda:{gpu} (running: {', '.join(session.get_providers())})")
    raise RuntimeError(
        f"onnxruntime could start none of {', '.join(PROVIDERS[n] for n in wanted)} on cuda:{gpu}; its log above "
        f"says why (no such GPU, no driver, a missing CUDA library): {'; '.join(failures)}"
    )


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


def _load_gpu_libraries(wanted: list[str]) -> None:
    """Make sure this onnxruntime can use a GPU, and load the CUDA libraries its pip wheels brought."""
    available = ort.get_available_providers()
    if PROVIDERS["cuda"] not in available:
        raise RuntimeError(
            f"this onnxruntime ({ort.__version__}) cannot use a GPU: it has only {', '.join(available)}. "
            "Install the GPU build: pip uninstall -y onnxruntime && pip install 'visionpool[gpu]'"
        )
    if hasattr(ort, "preload_dlls"):  # onnxruntime >= 1.21: CUDA and cuDNN from the nvidia-* wheels
        ort.preload_dlls()
    if "tensorrt" in wanted:
        with contextlib.suppress(ImportError):  # tensorrt-cu13-libs (the tensorrt extra) loads libnvinfer on import
            importlib.import_module("tensorrt_libs")


def _input_named(name: str | None, inputs: dict[str, Any]) -> str:
    """The model input the config names (its first when it names none); ValueError naming the inputs."""
    chosen = name or next(iter(inputs))
    if chosen not in inputs:
        raise ValueError(f"the model has no input {chosen!r} (it has {', '.join(inputs)})")
    return chosen


def _tensorrt_cache(path: Path, cache_dir: Path | None) -> Path:
    """The folder for one model file's TensorRT engines, named after the file, its size and date: onnxruntime
    keys its engines by the graph, not the weights, so a retrained model must not find the old ones."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = (cache_dir or path.parent) / "tensorrt" / f"{path.stem}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
