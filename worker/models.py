"""The models a worker serves: validated at start-up, loaded and warmed up in the background.

Usage (the app factory does this):
    init_app(app, settings)           # validates configs now; raises ConfigError
    models = get_models(app)          # models.get(name) -> ServedModel, or 404 / 503
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import Flask, current_app

from .batching import Batcher, Job
from .decoders import Decoder, create_decoder
from .engines import ENGINES, Engine, create_engine
from .errors import ModelNotFound, NotReady
from .imaging import DecodedImage
from .metrics import WorkerMetrics
from .preprocess import Frame, preprocess
from .repository import ConfigError, ModelConfig, ModelRepository
from .settings import WorkerSettings

logger = logging.getLogger(__name__)
EXTENSION = "visionpool.models"


@dataclass
class ServedModel:
    """A loaded model: its config, its decoder and its batcher."""

    config: ModelConfig
    decoder: Decoder
    batcher: Batcher
    device: str

    def prepare(self, image: DecodedImage) -> tuple[np.ndarray, Frame]:
        """The model input for one image."""
        return preprocess(image.pixels, self.config.input)

    def describe(self) -> dict[str, Any]:
        """What GET /models says of this model."""
        c = self.config
        return {
            "name": c.name,
            "version": c.version,
            "task": c.task,
            "engine": c.engine,
            "device": self.device,
            "input": {"width": c.input.width, "height": c.input.height},
            "labels": len(c.labels),
            "max_batch_size": self.batcher.max_batch,
        }

    def label(self, class_id: int) -> str:
        labels = self.config.labels
        return labels[class_id] if 0 <= class_id < len(labels) and labels[class_id] else str(class_id)

    def close(self) -> None:
        self.batcher.close()


class ModelManager:
    """Holds every served model and the state of their loading."""

    def __init__(self, settings: WorkerSettings, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        repository = ModelRepository(settings.model_repository)
        self.configs = [repository.load(name) for name in settings.models]
        self.decoders = {config.name: _validated_decoder(config) for config in self.configs}
        self.default = self.configs[0].name
        self.models: dict[str, ServedModel] = {}
        self.ready = threading.Event()
        self.failure: Exception | None = None

    def load_all(self) -> None:
        """Load and warm up every model; records a failure instead of raising."""
        try:
            for config in self.configs:
                self.models[config.name] = _load(config, self.decoders[config.name], self.metrics)
        except Exception as error:
            logger.exception("loading the models failed")
            self.failure = error
            return
        self.ready.set()

    def get(self, name: str | None) -> ServedModel:
        """The model called ``name`` (the default one for None); 404 unknown, 503 still loading."""
        name = name or self.default
        if name not in self.models:
            if self.serves(name):
                raise NotReady(f"Model {name!r} is still loading.", headers={"Retry-After": "1"})
            raise ModelNotFound(name, [c.name for c in self.configs])
        return self.models[name]

    def serves(self, name: str) -> bool:
        """Whether ``name`` is one of the models this worker was started with (loaded or not)."""
        return name in self.decoders

    def close(self) -> None:
        for model in self.models.values():
            model.close()


def _validated_decoder(config: ModelConfig) -> Decoder:
    """The model's decoder; ConfigError for an unknown engine, decoder or decoder option."""
    if config.engine not in ENGINES:
        raise ConfigError(
            f"{config.source}: field 'engine': must be one of {', '.join(ENGINES)}, got {config.engine!r}"
        )
    try:
        return create_decoder(config.output.decoder, config.output.options)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{config.source}: field 'output': {error}") from None


def _load(config: ModelConfig, decoder: Decoder, metrics: WorkerMetrics) -> ServedModel:
    started = time.monotonic()
    engines: list[Engine] = []
    for _ in range(config.batching.instances):
        try:
            engines.append(create_engine(config.engine, config.files, config.input.name, config.engine_options))
        except Exception as error:
            raise ConfigError(
                f"{config.source}: the {config.engine} engine could not load {config.files[0]}: {error}"
            ) from error
    histogram = metrics.batch.labels(config.name)
    batcher = Batcher(config.name, engines, config.batching, on_batch=histogram.observe)
    model = ServedModel(config, decoder, batcher, engines[0].device)
    loaded = time.monotonic()
    _warm_up(model)
    warmed = time.monotonic()
    metrics.load.labels(config.name).set(loaded - started)
    metrics.warmup.labels(config.name).set(warmed - loaded)
    logger.info(
        "model %s v%s ready on %s: loaded in %.2f s, warmed up in %.2f s",
        config.name,
        config.version,
        model.device,
        loaded - started,
        warmed - loaded,
    )
    return model


def _warm_up(model: ServedModel) -> None:
    """One real inference through the whole path, so the first user request is not the slow one."""
    grey = DecodedImage(
        np.full((model.config.input.height, model.config.input.width, 3), 128, np.uint8),
        model.config.input.width,
        model.config.input.height,
    )
    tensor, _ = model.prepare(grey)
    job: Job = model.batcher.submit(tensor, time.monotonic() + 600)
    model.decoder.decode(job.wait(), model.config.output.score_threshold, model.config.output.top_k)


def init_app(app: Flask, settings: WorkerSettings, metrics: WorkerMetrics, *, background: bool = True) -> ModelManager:
    """Validate the models now (ConfigError on any mistake); load them now or in a thread."""
    manager = ModelManager(settings, metrics)
    app.extensions[EXTENSION] = manager
    if background:
        threading.Thread(target=manager.load_all, name="model-loader", daemon=True).start()
    else:
        manager.load_all()
        if manager.failure is not None:
            raise manager.failure
    return manager


def get_models(app: Flask | None = None) -> ModelManager:
    """The ModelManager of ``app`` (the current one by default)."""
    return (app or current_app).extensions[EXTENSION]  # type: ignore[no-any-return]
