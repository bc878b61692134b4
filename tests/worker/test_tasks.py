"""Every task through a worker app, on small ONNX graphs with each decoder's exact outputs (tests/worker/graphs.py):
boxes back through the letterbox, masks as polygons and PNGs, keypoints, embeddings, and the refusals."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from graphs import LABELS, TASK_MODELS, constant_model, task_repository, write_model
from helpers import encode
from PIL import Image

from visionpool.client import Result, v2
from visionpool.worker import WorkerSettings, create_app
from visionpool.worker.models import get_models
from visionpool.worker.repository import ConfigError


@pytest.fixture(scope="module", params=["onnxruntime", "openvino"])
def tasks_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """A worker app serving a model of every task, on each engine."""
    root = task_repository(tmp_path_factory.mktemp("tasks"), request.param)
    app = create_app(WorkerSettings(models=list(TASK_MODELS), model_repository=root), background=False)
    yield app
    get_models(app).close()


@pytest.fixture
def client(tasks_app: Flask) -> FlaskClient:
    return tasks_app.test_client()


def grey(width: int, height: int) -> bytes:
    return encode(np.full((height, width, 3), 90, np.uint8), "PNG")


def predict(client: FlaskClient, model: str, image: bytes, query: str = "") -> dict:
    response = client.post(f"/models/{model}/predict{query}", data=image, content_type="image/png")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.mark.parametrize(
    ("size", "box"),
    [
        pytest.param((1280, 640), {"x": 440, "y": 220, "width": 400, "height": 200}, id="padded-above-and-below"),
        pytest.param((640, 1280), {"x": 120, "y": 540, "width": 400, "height": 200}, id="padded-left-and-right"),
        pytest.param((640, 640), {"x": 220, "y": 270, "width": 200, "height": 100}, id="no-padding"),
    ],
)
def test_yolo_boxes_come_back_through_the_letterbox(client: FlaskClient, size: tuple[int, int], box: dict) -> None:
    body = predict(client, "yolo8", grey(*size))
    assert [(p["label"], p["score"]) for p in body["predictions"]] == [("cat", 0.9), ("ant", 0.5)]
    assert body["predictions"][0]["box"] == box
    assert "mask" not in body["predictions"][0] and "keypoints" not in body["predictions"][0]


def test_yolo_threshold_and_top_k_from_the_query(client: FlaskClient) -> None:
    assert len(predict(client, "yolo8", grey(640, 640), "?threshold=0.6")["predictions"]) == 1
    assert len(predict(client, "yolo8", grey(640, 640), "?top_k=1")["predictions"]) == 1


def test_yolo_v5_head_with_objectness(client: FlaskClient) -> None:
    [found] = predict(client, "yolo5", grey(640, 640))["predictions"]
    assert (found["label"], found["score"]) == ("cat", 0.8)
    assert found["box"] == {"x": 256, "y": 128, "width": 128, "height": 64}  # stretched 320 -> 640


def test_segmentation_masks_as_polygons_in_picture_pixels(client: FlaskClient) -> None:
    body = predict(client, "seg", grey(1280, 640))  # scale 1/2, 160 pixels of padding above
    [found] = body["predictions"]
    assert found["box"] == {"x": 440, "y": 120, "width": 400, "height": 400}
    [polygon] = found["mask"]["polygons"]
    xs, ys = polygon[0::2], polygon[1::2]
    assert 4 <= len(xs) <= 60
    # the prototype's rectangle: input x 240..400, y 280..360 -> picture x 480..800, y 240..400 (within 2 cells)
    assert abs(min(xs) - 480) <= 6 and abs(max(xs) - 800) <= 6
    assert abs(min(ys) - 240) <= 6 and abs(max(ys) - 400) <= 6


def test_segmentation_masks_as_png_over_the_box(client: FlaskClient) -> None:
    [found] = predict(client, "seg", grey(1280, 640), "?masks=png")["predictions"]
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(found["mask"]["png"]))))
    assert mask.shape == (400, 400)  # the box, in picture pixels
    ys, xs = np.nonzero(mask)
    assert abs(xs.min() - 40) <= 6 and abs(xs.max() - 359) <= 6  # picture x 480..800 inside the box from 440
    assert abs(ys.min() - 120) <= 6 and abs(ys.max() - 279) <= 6


def test_an_unknown_mask_format_is_a_400(client: FlaskClient) -> None:
    response = client.post("/models/seg/predict?masks=rle", data=grey(64, 64), content_type="image/png")
    assert response.status_code == 400 and "polygons, png" in response.get_json()["error"]["message"]


def test_pose_keypoints_in_picture_pixels(client: FlaskClient) -> None:
    [person] = predict(client, "pose", grey(640, 1280))["predictions"]  # scale 1/2, 160 pixels of padding left
    assert person["label"] == "person" and len(person["keypoints"]) == 17
    assert person["keypoints"][0] == [320.0, 400.0, 0.9]
    assert person["keypoints"][15:] == [[280.0, 880.0, 0.3], [360.0, 880.0, 0.95]]


def test_boxes_from_a_graph_that_suppressed_them_itself(client: FlaskClient) -> None:
    [found] = predict(client, "tf", grey(600, 300))["predictions"]
    assert (found["label"], found["score"]) == ("bee", 0.7)
    assert found["box"] == {"x": 60, "y": 75, "width": 240, "height": 150}
    [row] = predict(client, "rows", grey(512, 512))["predictions"]
    assert (row["label"], row["box"]) == ("ant", {"x": 128, "y": 128, "width": 256, "height": 128})


def test_embedding_is_one_vector_per_image(client: FlaskClient) -> None:
    red = encode(np.dstack([np.full((64, 64), 200, np.uint8), np.zeros((64, 64, 2), np.uint8)]), "PNG")
    body = predict(client, "encoder", red)
    assert body["predictions"] == []
    np.testing.assert_allclose(body["embedding"], [1.0, 0.0, 0.0], atol=1e-6)
    teal = encode(np.dstack([np.zeros((64, 64), np.uint8), np.full((64, 64, 2), 100, np.uint8)]), "PNG")
    np.testing.assert_allclose(predict(client, "encoder", teal)["embedding"], [0, 2**-0.5, 2**-0.5], atol=1e-6)


def test_models_lists_every_task_and_what_its_answers_carry(client: FlaskClient) -> None:
    models = {m["name"]: m for m in client.get("/models").get_json()["models"]}
    assert {n: m["task"] for n, m in models.items()} == {
        "yolo8": "detection", "yolo5": "detection", "seg": "segmentation", "pose": "pose", "tf": "detection",
        "rows": "detection", "encoder": "embedding",
    }  # fmt: skip
    assert (
        models["pose"]["keypoints"]["names"][-1] == "right_ankle" and len(models["pose"]["keypoints"]["skeleton"]) == 19
    )
    assert models["encoder"]["embedding"] == {"size": 3, "normalized": True}


# ---- a config that does not fit its model stops the worker, naming what disagrees -------------------------


@pytest.mark.parametrize(
    ("outputs", "options", "labels", "words"),
    [
        pytest.param({"output0": np.zeros((84, 64))}, "", LABELS, "output 'output0' has shape [84, 64] (per image), "
                     "expected [7, A] (YOLOv8/11) or [A, 8] (YOLOv5/7) for the 3 classes", id="labels-disagree"),
        pytest.param({"output0": np.zeros((7, 64))}, 'output = "boxes"\n', LABELS,
                     "no output 'boxes' (it has output0)", id="wrong-output-name"),
        pytest.param({"output0": np.zeros((7, 64, 2))}, "", None, "has shape [7, 64, 2]", id="wrong-shape"),
    ],
)  # fmt: skip
def test_a_decoder_that_does_not_fit_the_model_refuses_to_start(
    tmp_path: Path, outputs: dict, options: str, labels: list[str] | None, words: str
) -> None:
    model = constant_model(tmp_path / "m.onnx", outputs, (64, 64))
    write_model(tmp_path, "bad", model, task="detection", decoder="yolo", size=(64, 64), labels=labels, options=options)
    with pytest.raises(ConfigError) as refused:
        create_app(WorkerSettings(models=["bad"], model_repository=tmp_path), background=False)
    message = str(refused.value)
    assert "bad/config.toml: model 'bad' does not fit decoder 'yolo'" in message and words in message


def test_a_task_that_is_not_its_decoders_is_refused(tmp_path: Path) -> None:
    model = constant_model(tmp_path / "m.onnx", {"o": np.zeros((7, 64))}, (64, 64))
    write_model(tmp_path, "mixed", model, task="classification", decoder="yolo", size=(64, 64))
    with pytest.raises(ConfigError, match="the 'yolo' decoder answers task = 'detection'"):
        create_app(WorkerSettings(models=["mixed"], model_repository=tmp_path), background=False)


# ---- the Open Inference Protocol and the client's types know every task ------------------------------------


def infer_v2(client: FlaskClient, model: str, image: bytes):
    """One image through /v2/models/<model>/infer as the client sends it, read back as the client's Result."""
    path, headers, body = v2.request(model, image, None, None)
    response = client.post(path, data=body, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return v2.result_of(response.get_json(), {})


def test_v2_segmentation_masks_are_pngs_over_the_box(client: FlaskClient) -> None:
    [found] = infer_v2(client, "seg", grey(1280, 640)).predictions
    assert found.box.width == 400 and found.mask is not None
    bits = np.asarray(Image.open(io.BytesIO(found.mask.png)))
    assert bits.shape == (400, 400) and abs(np.nonzero(bits)[1].min() - 40) <= 6


def test_v2_pose_keypoints_and_embeddings(client: FlaskClient) -> None:
    [person] = infer_v2(client, "pose", grey(640, 1280)).predictions
    assert person.keypoints[0] == pytest.approx((320.0, 400.0, 0.9)) and len(person.keypoints) == 17  # FP32
    red = encode(np.dstack([np.full((64, 64), 200, np.uint8), np.zeros((64, 64, 2), np.uint8)]), "PNG")
    result = infer_v2(client, "encoder", red)
    assert result.predictions == [] and np.allclose(result.embedding, [1, 0, 0], atol=1e-6)


def test_v2_metadata_lists_each_tasks_outputs(client: FlaskClient) -> None:
    outputs = {
        name: {o["name"]: o["shape"] for o in client.get(f"/v2/models/{name}").get_json()["outputs"]}
        for name in ("seg", "pose", "encoder")
    }
    assert outputs["seg"]["MASKS"] == [-1, -1] and "BOXES" in outputs["seg"]
    assert outputs["pose"]["KEYPOINTS"] == [-1, -1, -1, 3]
    assert outputs["encoder"] == {"EMBEDDING": [-1, -1], "SIZE": [-1, 2]}


def test_predict_answers_read_into_the_clients_types(client: FlaskClient) -> None:
    body = predict(client, "seg", grey(1280, 640))
    [found] = Result.from_json(body, {}).predictions
    assert found.mask.polygons == body["predictions"][0]["mask"]["polygons"] and found.keypoints is None


@pytest.mark.parametrize(
    ("engine", "options", "in_force", "cap"),
    [
        pytest.param("openvino", "", 2, "OpenVINO on a CPU runs parallel streams of small batches", id="openvino-caps"),
        pytest.param("onnxruntime", "", 1, "ONNX Runtime on a CPU runs parallel batches of one", id="onnxruntime-caps"),
        pytest.param("onnxruntime", "max_batch = 8", 4, None, id="onnxruntime-open-axis"),
    ],
)
def test_models_says_when_an_engine_holds_the_batch_below_the_config(
    tmp_path: Path, engine, options, in_force, cap
) -> None:
    root = task_repository(tmp_path, engine=engine)  # max_batch_size = 4 in every config
    if options:
        config = root / "yolo8" / "config.toml"
        config.write_text(config.read_text() + f"\n[engine_options.{engine}]\n{options}\n")
    app = create_app(WorkerSettings(models=["yolo8"], model_repository=root), background=False)
    try:
        [model] = app.test_client().get("/models").get_json()["models"]
    finally:
        get_models(app).close()
    assert model["max_batch_size"] == in_force
    if cap is None:
        assert "configured_max_batch_size" not in model and "batch_limit" not in model
    else:
        assert model["configured_max_batch_size"] == 4 and model["batch_limit"].startswith(cap)
