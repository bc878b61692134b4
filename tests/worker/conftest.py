"""Worker apps in this process, on the real ONNX models, loaded once per session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TEST_ENGINES
from flask import Flask
from flask.testing import FlaskClient
from helpers import write_sleepy_model

from visionpool.worker import WorkerSettings, create_app
from visionpool.worker.models import get_models


@pytest.fixture(scope="session", params=TEST_ENGINES)
def onnx_app(request: pytest.FixtureRequest, model_repository: Path) -> Iterator[Flask]:
    """A worker app serving the ONNX SSD detector (default) and the EfficientNet classifier, on each engine."""
    settings = WorkerSettings(
        models=["ssd-mobilenet-v2", "efficientnet-lite0"], model_repository=model_repository, engine=request.param
    )
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
        write_sleepy_model(tmp_path, seconds, max_batch_size, max_queue_size)
        app_settings = WorkerSettings(models=["sleepy"], model_repository=tmp_path, **settings)  # type: ignore[arg-type]
        created.append(create_app(app_settings, background=False))
        return created[-1]

    yield make
    for app in created:
        get_models(app).close()
