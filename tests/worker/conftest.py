"""Worker apps in this process, on the real ONNX models, loaded once per session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from visionpool.worker import WorkerSettings, create_app
from visionpool.worker.models import get_models

SLEEP_MODEL = '''
import time
import numpy as np

class Model:
    """Sleeps, then answers uniform logits; records each batch it ran."""

    def __init__(self, files, options):
        self.seconds = options.get("seconds", 0.2)
        self.batches = []

    def run(self, batch):
        self.batches.append(len(batch))
        time.sleep(self.seconds)
        return {"logits": np.zeros((len(batch), 3), np.float32)}
'''


@pytest.fixture(scope="session")
def onnx_app(model_repository: Path) -> Iterator[Flask]:
    """A worker app serving the ONNX SSD detector (default) and the EfficientNet classifier."""
    settings = WorkerSettings(models=["ssd-mobilenet-v2", "efficientnet-lite0"], model_repository=model_repository)
    app = create_app(settings, background=False)
    yield app
    get_models(app).close()


@pytest.fixture
def client(onnx_app: Flask) -> FlaskClient:
    """A test client of the ONNX worker app."""
    return onnx_app.test_client()


@pytest.fixture
def sleepy_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Worker apps on one Python-engine model that sleeps per batch: for queue and deadline tests."""
    created: list[Flask] = []

    def make(seconds: float = 0.2, max_batch_size: int = 1, max_queue_size: int = 8, **settings: object) -> Flask:
        folder = tmp_path / "sleepy"
        (folder / "1").mkdir(parents=True, exist_ok=True)
        (folder / "1" / "model.py").write_text(SLEEP_MODEL)
        (folder / "labels.txt").write_text("a\nb\nc\n")
        (folder / "config.toml").write_text(
            'task = "classification"\nengine = "python"\nfiles = ["model.py"]\nlabels = "labels.txt"\n'
            "[input]\nwidth = 8\nheight = 8\n"
            '[output]\ndecoder = "softmax"\nscore_threshold = 0.0\ntop_k = 1\n'
            f"[batching]\nmax_batch_size = {max_batch_size}\nmax_queue_delay_ms = 0\nmax_queue_size = {max_queue_size}\n"
            f"[engine_options]\nseconds = {seconds}\n"
        )
        app_settings = WorkerSettings(models=["sleepy"], model_repository=tmp_path, **settings)  # type: ignore[arg-type]
        created.append(create_app(app_settings, background=False))
        return created[-1]

    yield make
    for app in created:
        get_models(app).close()
