"""A model file in, a served model folder out: the config worked out from the file, tried on photos.

Usage:
    report = import_model(Path("yolov8n.onnx"), Path("models"), name="yolov8n")
    problems = check_model(Path("models/yolov8n"))

The folder is written beside the repository's other models under a temporary name and renamed into place
only once the worker's own loading path has served photos with it, so a failed import leaves nothing and a
model folder is never half written. An existing folder is replaced only when asked (``force``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .autoconfig import NORMALISATIONS, Draft, Key, Undecided, draft_config
from .decoders import create_decoder
from .engines import EngineHints, create_engine
from .imaging import decode_image
from .metrics import WorkerMetrics
from .model_facts import model_format, read_facts
from .models import ModelManager
from .preprocess import preprocess
from .repository import ConfigError, ModelConfig, ModelRepository
from .settings import WorkerSettings

logger = logging.getLogger(__name__)
PHOTOS = Path(__file__).parent / "photos"
SECTIONS = ("", "input", "output", "output.options", "batching")


Answers = list[tuple[str, list[dict[str, Any]], dict[str, float]]]  # photo, what it found, stage timings (ms)


class ImportFailed(ValueError):
    """The model could not be imported; the message says why and what settles it."""


@dataclass
class Report:
    """What an import did: the folder, the config's keys and their sources, what the photos gave."""

    folder: Path
    draft: Draft
    answers: Answers = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"imported {self.folder}"]
        for section in SECTIONS:
            for key, found in self.draft.sections.get(section, {}).items():
                label = f"{section}.{key}" if section else key
                out.append(f"  {label:<28} {_toml(found.value):<24} {found.source}")
        for photo, predictions, stages in self.answers:
            best = ", ".join(_said(p) for p in predictions[:3]) or "nothing above the threshold"
            timing = ", ".join(f"{stage} {ms:.1f}" for stage, ms in stages.items())
            out.append(f"  {photo}: {best}  ({timing} ms)")
        guessed = self.draft.guessed()
        out.append("  guessed (check them; flags or the config override): " + (", ".join(guessed) or "nothing"))
        return out


def import_model(
    model: Path,
    repository: Path,
    name: str | None = None,
    task: str | None = None,
    labels: Path | None = None,
    size: tuple[int, int] | None = None,
    images: Sequence[Path] = (),
    force: bool = False,
) -> Report:
    """Import ``model`` into ``repository/name``; ImportFailed (nothing written) when it cannot decide."""
    name = name or _name_of(model)
    folder = repository / name
    if folder.exists() and not force:
        raise ImportFailed(f"{folder} exists: pass --force to replace it, or --name to import under another name")
    if model.name.endswith("-symbol.json"):  # an MXNet checkpoint: imported as the ONNX its exporter writes
        from .mxnet_import import convert_checkpoint

        model = convert_checkpoint(model, repository / ".mxnet", size=size)
    try:
        model_format(model)
        facts = read_facts(model)
        draft = draft_config(facts, task, _read_labels(labels) if labels else None, size)
    except (Undecided, ValueError, RuntimeError) as error:
        raise ImportFailed(f"{model}: {error}") from None
    repository.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repository))
    try:
        _write(stage / name, model, draft)
        photos = [(p.name, p.read_bytes()) for p in (images or sorted(PHOTOS.glob("*.jpg")))]
        if draft.normalise:
            _choose_normalisation(stage, name, draft, photos)
            _write(stage / name, model, draft, copy=False)
        report = Report(folder, draft, _try(stage, name, photos))
        if folder.exists():
            shutil.rmtree(folder)
        (stage / name).rename(folder)
        return report
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def serve_file(settings: WorkerSettings) -> WorkerSettings:
    """The settings that serve ``settings.model_file`` alone: imported once into the cache folder (a file
    changed on disk is imported again), its config printed and, when asked, saved."""
    model = Path(settings.model_file)  # type: ignore[arg-type]
    if not model.exists():
        raise ValueError(f"--model-file {model} does not exist")
    stat = model.stat()
    name = _name_of(model)
    where = hashlib.sha256(str(model.resolve()).encode()).hexdigest()[:12]
    repository = settings.cache_dir / "imported" / f"{where}-{stat.st_size}-{int(stat.st_mtime)}"
    if not (repository / name / "config.toml").is_file():
        try:
            import_model(model, repository, name, force=True)
        except ImportFailed as error:
            raise ValueError(f"--model-file {settings.model_file}: {error}") from None
    config = (repository / name / "config.toml").read_text(encoding="utf-8")
    logger.info("serving %s with the config below (%s)\n%s", settings.model_file, repository / name, config)
    if settings.save_config is not None:
        settings.save_config.write_text(config, encoding="utf-8")
    return dataclasses.replace(settings, models=[name], model_repository=repository, model_file=None)


def check_model(folder: Path) -> list[str]:
    """What disagrees between a model folder's config and its model file (an empty list: nothing)."""
    try:
        config = ModelRepository(folder.parent).load(folder.name)
        facts = read_facts(config.files[0])
    except (ConfigError, ValueError, RuntimeError) as error:
        return [str(error)]
    problems = []
    inputs = {t.name: t for t in facts.inputs}
    spec = config.input
    image = inputs.get(spec.name) if spec.name else facts.inputs[0]
    if image is None:
        problems.append(f"input.name {spec.name!r}: the model has no such input (it has {', '.join(inputs)})")
    else:
        try:  # what the file says of its input (its size only when it states one)
            expected = draft_config(facts, config.task, list(config.labels) or None)
        except Undecided:
            expected = draft_config(facts, config.task, list(config.labels) or None, (spec.width, spec.height))
        for key in ("layout", "dtype", "width", "height"):
            said, found = getattr(spec, key), expected.get("input", key)
            if found is not None and said != found and not (key in ("width", "height") and None in image.shape[1:]):
                problems.append(f"input.{key} is {said!r}, the model's input {image.describe()} says {found!r}")
    outputs = {t.name for t in facts.outputs}
    for key, value in config.output.options.items():
        if key.endswith("output") and value not in outputs:
            listed = ", ".join(sorted(outputs))
            problems.append(f"output.options.{key} {value!r}: the model has no such output (it has {listed})")
    return problems or _load_problems(folder)  # a model fed the wrong shape fails its loading for that reason


def _load_problems(folder: Path) -> list[str]:
    """Load the model as a worker does: the decoder checks its outputs against the labels."""
    settings = WorkerSettings(models=[folder.name], model_repository=folder.parent)
    try:
        manager = ModelManager(settings, WorkerMetrics(dict))
    except ConfigError as error:
        return [str(error)]
    manager.load_all()
    manager.close()
    return [str(manager.failure)] if manager.failure is not None else []


def _choose_normalisation(stage: Path, name: str, draft: Draft, photos: list[tuple[str, bytes]]) -> None:
    """Try the usual normalisations on the photos; keep the one the model is surest of (for encoders, whose
    answers say nothing of it: ImageNet's mean and std, what most backbones were trained with)."""
    config = ModelRepository(stage).load(name)
    if config.task == "embedding":
        mean, std = NORMALISATIONS["ImageNet mean and std"]
        why = "guessed: ImageNet's mean and std, what most image backbones (CLIP, DINO, torchvision) expect"
        draft.set("input", "mean", list(mean), why, guessed=True)
        draft.set("input", "std", list(std), why, guessed=True)
        return
    scores = _confidence(config, photos)
    best = max(scores, key=lambda k: scores[k])
    others = ", ".join(f"{k} {v:.2f}" for k, v in scores.items() if k != best)
    why = f"guessed: of the usual normalisations, {best} made the model surest of the photos ({scores[best]:.2f}"
    why += f"; {others})"
    mean, std = NORMALISATIONS[best]
    draft.set("input", "mean", list(mean) if isinstance(mean, tuple) else mean, why, guessed=True)
    draft.set("input", "std", list(std) if isinstance(std, tuple) else std, why, guessed=True)


def _confidence(config: ModelConfig, photos: list[tuple[str, bytes]]) -> dict[str, float]:
    """Each normalisation's mean best score over the photos (the model loaded once)."""
    options = config.options_for(config.engine)
    engine = create_engine(config.engine, config.files, config.input.name, options, EngineHints())
    decoder = create_decoder(config.output.decoder, config.output.options, (config.input.width, config.input.height))
    pictures = [decode_image(data, max_pixels=10**8).pixels for _, data in photos]
    scores = {}
    for label, (mean, std) in NORMALISATIONS.items():
        spec = dataclasses.replace(config.input, mean=_three(mean), std=_three(std))
        best = []
        for pixels in pictures:
            outputs = engine.run(preprocess(pixels, spec)[0][None])[0]
            found = decoder.decode(outputs, 0.0, 1)
            best.append(found[0].score if found else 0.0)
        scores[label] = float(np.mean(best))
    engine.close()
    return scores


def _three(value: Any) -> tuple[float, float, float]:
    return tuple(value) if isinstance(value, tuple) else (float(value),) * 3  # type: ignore[return-value]


def _try(stage: Path, name: str, photos: list[tuple[str, bytes]]) -> Answers:
    """The model served from the staged folder the way a worker serves it, on each photo."""
    settings = WorkerSettings(models=[name], model_repository=stage)
    try:
        manager = ModelManager(settings, WorkerMetrics(dict))
    except ConfigError as error:
        raise ImportFailed(f"the config worked out does not load: {error}") from None
    manager.load_all()
    try:
        if manager.failure is not None:
            raise ImportFailed(f"the model does not serve with the config worked out: {manager.failure}")
        pipeline = manager.get(name)
        answers = []
        for photo, data in photos:
            answer = pipeline.predict(data, deadline=time.monotonic() + 120)
            stages = {k: round(v * 1000, 1) for k, v in answer.stages.items()}
            found = answer.predictions
            if answer.embedding is not None:
                found = [{"embedding": len(answer.embedding)}]
            answers.append((photo, found, stages))
        return answers
    finally:
        manager.close()


def _write(folder: Path, model: Path, draft: Draft, copy: bool = True) -> None:
    """config.toml (each key with where it came from), labels.txt, and the model in 1/."""
    (folder / "1").mkdir(parents=True, exist_ok=True)
    if copy:
        (shutil.copytree if model.is_dir() else shutil.copy2)(model, folder / "1" / model.name)
        if model.suffix.lower() == ".xml" and model.with_suffix(".bin").is_file():  # OpenVINO IR: weights beside
            shutil.copy2(model.with_suffix(".bin"), folder / "1" / model.with_suffix(".bin").name)
    draft.set("", "files", [model.name], "the imported file")
    if draft.labels:
        (folder / "labels.txt").write_text("\n".join(draft.labels) + "\n", encoding="utf-8")
    lines = [f"# Imported from {model.name} by visionpool import: each key says where it came from."]
    for section in SECTIONS:
        keys = draft.sections.get(section, {})
        if not keys:
            continue
        if section:
            lines += ["", f"[{section}]"]
        lines += [f"{key} = {_toml(found.value)}  # {found.source}" for key, found in _ordered(keys)]
    (folder / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _ordered(keys: dict[str, Key]) -> list[tuple[str, Key]]:
    first = ("task", "engine", "files", "labels")
    return sorted(keys.items(), key=lambda item: first.index(item[0]) if item[0] in first else len(first))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _said(prediction: dict[str, Any]) -> str:
    if "embedding" in prediction:
        return f"an embedding of {prediction['embedding']} values"
    where = f" at {prediction['box']}" if "box" in prediction else ""
    return f"{prediction['label']} {prediction['score']:.2f}{where}"


def _name_of(model: Path) -> str:
    stem = model.name if model.is_dir() else model.stem
    return stem.removesuffix("-symbol").replace(" ", "-") or "model"


def _read_labels(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines
