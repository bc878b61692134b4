"""The models a worker serves: validated at start-up, loaded and warmed up in the background.

Usage (the app factory does this):
    init_app(app, settings, metrics)  # validates configs now; raises ConfigError
    models = get_models(app)          # models.get(name) -> Pipeline, or 404 / 503
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import simplejpeg
from flask import Flask, current_app

from .batching import Batcher
from .decoders import TASK_OF, Decoder, create_decoder
from .engines import ENGINES, Engine, create_engine
from .errors import ModelNotFound, NotReady
from .metrics import WorkerMetrics
from .pipeline import Pipeline
from .repository import ConfigError, ModelConfig, ModelRepository
from .settings import WorkerSettings

logger = logging.getLogger(__name__)
EXTENSION = "visionpool.models"


class ModelManager:
    """Holds every served model and the state of their loading."""

    def __init__(self, settings: WorkerSettings, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        self.max_image_pixels = settings.max_image_pixels
        self.hints = settings.engine_hints()
        repository = ModelRepository(settings.model_repository)
        self.configs = [_on_device(repository.load(name), settings) for name in settings.models]
        self.decoders = {config.name: _validated_decoder(config) for config in self.configs}
        self.default = self.configs[0].name
        self.models: dict[str, Pipeline] = {}
        self.ready = threading.Event()
        self.failure: Exception | None = None
        self.draining = False  # set when the worker starts to stop
        # with front processes, ready also waits for each to listen (worker/fronts.py sets it)
        self.fronts_listening = threading.Event() if settings.front_processes else None

    def state(self) -> str:
        """loading, ready, draining or failed."""
        if self.failure is not None:
            return "failed"
        if self.draining:
            return "draining"
        return "ready" if self.ready.is_set() else "loading"

    def describe(self) -> list[dict[str, object]]:
        """What GET /models says of each model; for one still loading, what its config says."""
        return [self.models[c.name].describe() if c.name in self.models else c.describe() for c in self.configs]

    def load_all(self) -> None:
        """Load and warm up every model; records a failure instead of raising."""
        try:
            for config in self.configs:
                self.models[config.name] = self._load(config)
        except ConfigError as error:  # the model and its config disagree: the message says all, no traceback
            logger.error("%s", error)
            self.failure = error
            return
        except Exception as error:
            logger.exception("loading the models failed")
            self.failure = error
            return
        if self.fronts_listening is not None:
            self.fronts_listening.wait()  # until then, every front is not yet taking connections
        self.metrics.recent.start_over()
        self.ready.set()

    def get(self, name: str | None) -> Pipeline:
        """The model called ``name`` (the default one for None); 404 unknown, 503 still loading."""
        name = name or self.default
        if name not in self.models:
            if self.serves(name):
                raise NotReady(f"Model {name!r} is still loading.")
            served = ", ".join(c.name for c in self.configs)
            raise ModelNotFound(f"No model named {name!r}; this worker serves: {served}.")
        return self.models[name]

    def metric_label(self, name: str) -> str:
        """The model label of a request's metrics: the model asked for, or "unknown" (never a label per made-up
        name: a client could grow the metrics without bound)."""
        return name if self.serves(name) else "unknown"

    def serves(self, name: str) -> bool:
        """Whether ``name`` is one of the models this worker was started with (loaded or not)."""
        return name in self.decoders

    def close(self) -> None:
        for model in self.models.values():
            model.close()

    def _load(self, config: ModelConfig) -> Pipeline:
        """Load one model's engine instances, start its batcher, warm it up; ConfigError names the file."""
        started = time.monotonic()
        engines: list[Engine] = []
        for _ in range(config.batching.instances):
            try:
                options = config.options_for(config.engine)
                engines.append(create_engine(config.engine, config.files, config.input.name, options, self.hints))
            except Exception as error:
                raise ConfigError(
                    f"{config.source}: the {config.engine} engine could not load {config.files[0]}: {error}"
                ) from error
        on_batch = self.metrics.batch.labels(config.name).observe
        batcher = Batcher(config.name, engines, config.batching, on_batch=on_batch)
        model = Pipeline(config, self.decoders[config.name], batcher, engines[0], self.max_image_pixels)
        if batcher.batch_limit:
            logger.warning(
                "model %s: max_batch_size %d configured, %d in force: %s",
                config.name, batcher.configured_batch, batcher.max_batch, batcher.batch_limit,
            )  # fmt: skip
        loaded = time.monotonic()
        _warm_up(model)
        warmed = time.monotonic()
        self.metrics.load.labels(config.name).set(loaded - started)
        runs = engines[0]
        where = {"engine": config.engine, "device": runs.device, "precision": runs.precision}
        self.metrics.model.labels(config.name).info({"version": config.version, **where})
        self.metrics.warmup.labels(config.name).set(warmed - loaded)
        logger.info(
            "model %s v%s ready on %s (%s): loaded in %.2f s, warmed up in %.2f s",
            config.name,
            config.version,
            config.engine,
            ", ".join(f"{k} {v}" for k, v in engines[0].details().items()),
            loaded - started,
            warmed - loaded,
        )
        return model


def _on_device(config: ModelConfig, settings: WorkerSettings) -> ModelConfig:
    """The model's config with the engine it is served by on this worker's device."""
    engine = settings.engine_for(config.engine)
    if engine == config.engine:
        return config
    if not settings.engine:
        logger.info("model %s: %s runs on no NVIDIA GPU; serving it with %s", config.name, config.engine, engine)
    return config.served_by(engine)


def _validated_decoder(config: ModelConfig) -> Decoder:
    """The model's decoder; ConfigError for an unknown engine, decoder or decoder option."""
    if config.engine not in ENGINES:
        raise ConfigError(
            f"{config.source}: field 'engine': must be one of {', '.join(ENGINES)}, got {config.engine!r}"
        )
    try:
        decoder = create_decoder(
            config.output.decoder, config.output.options, (config.input.width, config.input.height)
        )
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{config.source}: field 'output': {error}") from None
    if TASK_OF[config.output.decoder] != config.task:
        raise ConfigError(
            f"{config.source}: field 'task': the {config.output.decoder!r} decoder answers task = "
            f"{TASK_OF[config.output.decoder]!r}, but the config says {config.task!r}"
        )
    return decoder


def _check_outputs(config: ModelConfig, decoder: Decoder, outputs: dict[str, np.ndarray]) -> None:
    """Let the decoder refuse outputs it cannot read: ConfigError naming the model, the output, the shape found
    and the shape expected (instead of wrong answers or a traceback per request)."""
    try:
        decoder.check({name: tuple(value.shape) for name, value in outputs.items()}, len(config.labels))
    except (ValueError, KeyError) as error:
        message = error.args[0] if error.args else str(error)
        raise ConfigError(
            f"{config.source}: model {config.name!r} does not fit decoder {config.output.decoder!r}: {message}"
        ) from None


def _warm_up(model: Pipeline) -> None:
    """One real inference through every stage, so the first user request is not the slow one; the decoder
    sees the outputs first and refuses any it cannot read."""
    grey = np.full((model.config.input.height, model.config.input.width, 3), 128, np.uint8)
    image = model.decode(simplejpeg.encode_jpeg(grey, quality=90))
    tensor, frame = model.prepare(image)
    outputs = model.batcher.submit(tensor, time.monotonic() + 600).wait()
    _check_outputs(model.config, model.decoder, outputs)
    model.postprocess(outputs, frame, image, model.config.output.score_threshold, model.config.output.top_k)


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
