"""One pipeline for every caller: the bench's engine limit sees what the HTTP route answers."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import encode, iou

from visionpool.worker.models import get_models
from visionpool.worker.pipeline import Pipeline
from visionpool.worker.repository import ModelRepository
from visionpool.worker.settings import WorkerSettings
from visionpool.worker.supervisor import Supervisor


def test_the_engine_limit_path_answers_as_the_route_does(onnx_app: Flask, client: FlaskClient, jpegs) -> None:
    pipeline = get_models(onnx_app).get("ssd-mobilenet-v2")
    names = ("chelsea", "coffee", "camera")
    answers = pipeline.predict_batch([jpegs[name] for name in names])  # one engine call for all three
    for name, answer in zip(names, answers, strict=True):
        routed = client.post("/predict", data=jpegs[name], content_type="image/jpeg").get_json()
        assert answer.batch_size == 3 and [answer.width, answer.height] == list(routed["image"].values())
        assert [p["label"] for p in answer.predictions] == [p["label"] for p in routed["predictions"]]
        for mine, theirs in zip(answer.predictions, routed["predictions"], strict=True):
            assert mine["score"] == pytest.approx(theirs["score"], abs=2e-3) and iou(mine["box"], theirs["box"]) > 0.98


def test_the_warm_up_ran_the_whole_pipeline(sleepy_app: Callable[..., Flask]) -> None:
    app = sleepy_app(seconds=0.0)
    assert get_models(app).get("sleepy").batcher.engines[0].model.batches == [1]  # through batcher and engine
    registry = app.extensions["visionpool.metrics"].registry
    assert registry.get_sample_value("visionpool_worker_batch_size_count", {"model": "sleepy"}) == 1
    assert registry.get_sample_value("visionpool_worker_model_warmup_seconds", {"model": "sleepy"}) > 0


def test_the_supervisor_restarts_the_worker_from_its_settings(tmp_path) -> None:
    settings = WorkerSettings(models=["a", "b"], model_repository=tmp_path, port=5301, supervise=True)
    supervisor = Supervisor(settings)
    assert supervisor.command == [sys.executable, "-m", "visionpool.worker", "--no-supervise"]
    environ = supervisor.environ
    assert environ["VISIONPOOL_MODEL"] == "a,b" and environ["VISIONPOOL_PORT"] == "5301"
    assert environ["VISIONPOOL_MODEL_REPOSITORY"] == str(tmp_path)


def config_only(root: Path, config: str, max_image_pixels: int) -> Pipeline:
    """A pipeline of a model's config alone (a Python model, no engine loaded): for what reads only the config."""
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "1" / "model.py").write_text("")
    (root / "m" / "config.toml").write_text('engine = "python"\nfiles = ["model.py"]\n' + config)
    unloaded: Any = None
    return Pipeline(ModelRepository(root).load("m"), unloaded, unloaded, unloaded, max_image_pixels)


@pytest.mark.parametrize(
    ("task", "decoder", "side", "in_the_loop"),
    [
        ("classification", "softmax", 224, True),
        ("detection", "yolo", 320, True),
        ("detection", "yolo", 640, False),  # preprocessing a 640x640 input: ~0.9 ms, too long for the event loop
        ("segmentation", "yolo-seg", 256, False),  # drawing masks: too long too
    ],
)
def test_the_event_loop_answers_small_models_only(tmp_path, task: str, decoder: str, side: int, in_the_loop: bool):
    pipeline = config_only(
        tmp_path,
        f'task = "{task}"\n[input]\nwidth = {side}\nheight = {side}\n[output]\ndecoder = "{decoder}"\n',
        max_image_pixels=10**6,
    )  # fits_loop reads the config
    thumbnail = encode(np.zeros((64, 64, 3), np.uint8), "JPEG")
    assert pipeline.fits_loop(thumbnail) is in_the_loop


@pytest.mark.parametrize(
    ("resize", "photo", "decoded"),
    [
        pytest.param("crop", (640, 480), (640, 480), id="crop-not-below-its-shorter-side"),  # 320x240 < 256
        pytest.param("crop", (1280, 960), (640, 480), id="crop-reduced-to-its-shorter-side"),
        pytest.param("stretch", (640, 480), (320, 240), id="stretch-reduced-to-the-input"),
    ],
)
def test_a_jpeg_is_reduced_no_further_than_the_resize_needs(tmp_path, resize: str, photo, decoded) -> None:
    """A crop model (shorter side to 256, then the centre 224x224) needs the picture's shorter side at 256: a JPEG
    reduced in the DCT below that would be scaled up again."""
    shorter = "resize_shorter = 256\n" if resize == "crop" else ""
    pipeline = config_only(
        tmp_path,
        'task = "classification"\n[input]\nwidth = 224\nheight = 224\n'
        f'resize = "{resize}"\n{shorter}[output]\ndecoder = "softmax"\n',
        max_image_pixels=10**7,
    )
    width, height = photo
    picture = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
    image = pipeline.decode(encode(picture, "JPEG"))
    assert (image.width, image.height) == photo and image.pixels.shape[1::-1] == decoded
