"""POST /predict on real models: the answers a user checks, and the errors they get instead."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from helpers import cpu_bf16, encode, iou, sample, scan_bomb, scrape
from PIL import Image

from visionpool.client.wire import Header
from visionpool.serving.frontdoor import FrontDoor, Limits
from visionpool.worker.engines import host_cores
from visionpool.worker.fast import direct_predict
from visionpool.worker.wsgi import wsgi_app

# What SSD MobileNet v2 finds in scikit-image's photos, drawn around the object by eye and
# confirmed by the model: boxes must land within IoU 0.8 of these.
EXPECTED = {
    "chelsea": ("cat", {"x": 9, "y": 0, "width": 399, "height": 297}),
    "coffee": ("cup", {"x": 173, "y": 13, "width": 239, "height": 227}),
    "camera": ("person", {"x": 0, "y": 61, "width": 302, "height": 447}),
}


def post(client: FlaskClient, data: bytes, content_type: str = "image/jpeg", path: str = "/predict"):
    return client.post(path, data=data, content_type=content_type)


@pytest.mark.parametrize("photo", [pytest.param(name, id=name) for name in EXPECTED])
def test_detector_finds_the_object_with_its_box(client: FlaskClient, jpegs: dict[str, bytes], photo: str) -> None:
    label, box = EXPECTED[photo]
    response = post(client, jpegs[photo])
    assert response.status_code == 200
    best = response.get_json()["predictions"][0]
    assert best["label"] == label and best["score"] > 0.85
    assert iou(best["box"], box) > 0.8


def test_response_shape(client: FlaskClient, jpegs: dict[str, bytes]) -> None:
    body = post(client, jpegs["coffee"]).get_json()
    assert body["model"] == {"name": "ssd-mobilenet-v2", "version": "1"}
    assert body["image"] == {"width": 600, "height": 400}
    scores = [p["score"] for p in body["predictions"]]
    assert scores == sorted(scores, reverse=True) and len(scores) >= 2
    assert all(isinstance(v, int) for p in body["predictions"] for v in p["box"].values())
    assert set(body["timing_ms"]) == {"decode", "preprocess", "queue", "inference", "postprocess", "total"}


def test_nothing_above_half_in_the_rocket(client: FlaskClient, jpegs: dict[str, bytes]) -> None:
    assert post(client, jpegs["rocket"]).get_json()["predictions"] == []


def test_boxes_stay_inside_the_image(client: FlaskClient, jpegs: dict[str, bytes]) -> None:
    body = post(client, jpegs["coffee"], path="/predict?threshold=0.05&top_k=50").get_json()
    width, height = body["image"]["width"], body["image"]["height"]
    assert len(body["predictions"]) > 5
    for p in body["predictions"]:
        box = p["box"]
        assert box["x"] >= 0 and box["x"] + box["width"] <= width
        assert box["y"] >= 0 and box["y"] + box["height"] <= height


def test_threshold_and_top_k_query(client: FlaskClient, jpegs: dict[str, bytes]) -> None:
    loose = post(client, jpegs["coffee"], path="/predict?threshold=0.1").get_json()["predictions"]
    assert len(loose) > 3 and min(p["score"] for p in loose) >= 0.1
    assert len(post(client, jpegs["coffee"], path="/predict?threshold=0.1&top_k=2").get_json()["predictions"]) == 2


def test_classifier_puts_espresso_first(client: FlaskClient, jpegs: dict[str, bytes]) -> None:
    body = post(client, jpegs["coffee"], path="/models/efficientnet-lite0/predict").get_json()
    assert body["predictions"][0]["label"] == "espresso" and body["predictions"][0]["score"] > 0.8
    assert len(body["predictions"]) == 5 and "box" not in body["predictions"][0]


def test_classifier_sees_a_cat(client: FlaskClient, jpegs: dict[str, bytes]) -> None:
    top3 = [
        p["label"]
        for p in post(client, jpegs["chelsea"], path="/models/efficientnet-lite0/predict?top_k=3").get_json()[
            "predictions"
        ]
    ]
    assert "tiger cat" in top3 and "Egyptian cat" in top3


@pytest.mark.parametrize("field", ["image", "data"])
def test_multipart_upload(client: FlaskClient, jpegs: dict[str, bytes], field: str) -> None:
    response = client.post(
        "/predict", data={field: (io.BytesIO(jpegs["chelsea"]), "cat.jpg")}, content_type="multipart/form-data"
    )
    assert response.status_code == 200
    assert response.get_json()["predictions"][0]["label"] == "cat"


def test_exif_rotated_photo_gives_boxes_in_the_displayed_frame(client: FlaskClient, photos) -> None:
    # Stored turned a quarter left, with EXIF orientation 6 ("turn right to display").
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(np.ascontiguousarray(np.rot90(photos["chelsea"], 1)), "JPEG", quality=92, exif=exif.tobytes())
    body = post(client, data).get_json()
    assert body["image"] == {"width": 451, "height": 300}
    assert body["predictions"][0]["label"] == "cat"
    assert iou(body["predictions"][0]["box"], EXPECTED["chelsea"][1]) > 0.8


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels: a decompression bomb's header, without the bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


ERRORS = [
    pytest.param(b"", "image/jpeg", "/predict", 400, "empty_body", id="empty body"),
    pytest.param(b"hello", "image/jpeg", "/predict", 400, "invalid_image", id="not an image"),
    pytest.param(b"{}", "application/json", "/predict", 415, "unsupported_media_type", id="json"),
    pytest.param(b"x", "", "/predict", 415, "unsupported_media_type", id="no content type"),
    pytest.param(b"x", "image/jpeg", "/models/nope/predict", 404, "model_not_found", id="unknown model"),
    pytest.param(b"x", "image/jpeg", "/predict?threshold=2", 400, "invalid_parameter", id="threshold over 1"),
    pytest.param(b"x", "image/jpeg", "/predict?threshold=abc", 400, "invalid_parameter", id="threshold not a number"),
    pytest.param(b"x", "image/jpeg", "/predict?top_k=0", 400, "invalid_parameter", id="top_k zero"),
    pytest.param(png_header(60_000, 60_000), "image/png", "/predict", 413, "image_too_large", id="decompression bomb"),
    pytest.param(scan_bomb(150), "image/jpeg", "/predict", 400, "invalid_image", id="scan bomb"),
]


@pytest.mark.parametrize(("data", "content_type", "path", "status", "code"), ERRORS)
def test_bad_requests_get_clear_json_errors(client: FlaskClient, data, content_type, path, status, code) -> None:
    response = post(client, data, content_type, path)
    assert response.status_code == status
    error = response.get_json()["error"]
    assert error["code"] == code and len(error["message"]) > 10
    assert "Traceback" not in response.get_data(as_text=True)


def test_truncated_jpeg_is_refused(client: FlaskClient, jpegs: dict[str, bytes]) -> None:
    response = post(client, jpegs["chelsea"][: len(jpegs["chelsea"]) // 2])
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_image"
    assert "truncated" in response.get_json()["error"]["message"]


def test_a_scan_bomb_is_refused_for_its_scans(client: FlaskClient) -> None:
    """Refused from its markers (it used to be decoded twice, a pass over every pixel per scan, then refused)."""
    response = post(client, scan_bomb(150))
    assert response.status_code == 400 and "has over 100 scans" in response.get_json()["error"]["message"]


def test_truncated_png_is_refused(client: FlaskClient, photos) -> None:
    data = encode(photos["chelsea"], "PNG")
    assert post(client, data[: len(data) // 2], "image/png").status_code == 400


def test_multipart_without_an_image_field(client: FlaskClient) -> None:
    response = client.post("/predict", data={"photo": (io.BytesIO(b"x"), "a.jpg")}, content_type="multipart/form-data")
    assert response.status_code == 400 and "image" in response.get_json()["error"]["message"]


def test_body_over_the_limit_is_413(onnx_app, jpegs: dict[str, bytes]) -> None:
    limit = onnx_app.config["MAX_CONTENT_LENGTH"]
    registry = onnx_app.extensions["visionpool.metrics"].registry
    labels = {"model": "ssd-mobilenet-v2", "status": "413", "outcome": "payload_too_large"}
    before = registry.get_sample_value("visionpool_worker_requests_total", labels) or 0
    response = onnx_app.test_client().post("/predict", data=b"\xff" * (limit + 1), content_type="image/jpeg")
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "payload_too_large"
    assert registry.get_sample_value("visionpool_worker_requests_total", labels) == before + 1  # not a 500


def test_readyz_healthz_and_models(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").get_json()["models"] == ["ssd-mobilenet-v2", "efficientnet-lite0"]
    listed = {m["name"]: m for m in client.get("/models").get_json()["models"]}
    ssd = listed["ssd-mobilenet-v2"]
    assert {k: ssd[k] for k in ("name", "version", "task", "device", "input", "labels")} == {
        "name": "ssd-mobilenet-v2",
        "version": "1",
        "task": "detection",
        "device": "cpu",
        "input": {"width": 300, "height": 300},
        "labels": 91,
    }
    if ssd["engine"] == "onnxruntime":
        expected = ("f32", min(host_cores(), 2), 1)  # a run at once per core, at most 2 (as OpenVINO's streams),
        assert (ssd["precision"], ssd["parallel"], ssd["max_batch_size"]) == expected  # of one image each
        assert (ssd["configured_max_batch_size"], "batches of one image" in ssd["batch_limit"]) == (8, True)
    else:  # the hardware's best precision; streams in parallel, each with small batches (the engine's cap)
        expected = "bf16" if cpu_bf16() else "f32"
        assert (ssd["engine"], ssd["precision"], ssd["streams"]) == ("openvino", expected, min(host_cores(), 2))
        assert ssd["parallel"] == 2 * ssd["streams"]  # two requests in flight per stream
        assert ssd["max_batch_size"] == 2
    assert listed["efficientnet-lite0"]["labels"] == 1000


@pytest.mark.parametrize(
    ("width", "height"),
    [
        pytest.param(6325, 6325, id="just over 40 MP"),
        pytest.param(10_000, 10_000, id="between ours and Pillow's own limit"),
        pytest.param(40_000, 40_000, id="1.6 gigapixels, past Pillow's limit"),
    ],
)
def test_the_pixel_limit_that_fires_is_ours_and_names_it(client: FlaskClient, width: int, height: int) -> None:
    response = post(client, png_header(width, height), "image/png")
    assert response.status_code == 413
    error = response.get_json()["error"]
    assert error["code"] == "image_too_large"
    assert f"{width}x{height}" in error["message"] and "at most 40,000,000" in error["message"]


def test_an_image_just_under_the_limit_is_decoded(sleepy_app) -> None:
    app = sleepy_app(seconds=0.0, max_image_pixels=64 * 48)
    small = encode(np.zeros((48, 64, 3), np.uint8), "PNG")
    over = encode(np.zeros((48, 65, 3), np.uint8), "PNG")
    assert app.test_client().post("/predict", data=small, content_type="image/png").status_code == 200
    refused = app.test_client().post("/predict", data=over, content_type="image/png")
    assert refused.status_code == 413 and "at most 3,072" in refused.get_json()["error"]["message"]


# The prediction path without Flask (worker/fast.py): behind the real front door, a raw upload to /predict gets
# exactly what the Flask route answers (status, JSON, the headers a caller reads), counts in the same metrics and
# logs the same line; forms and the rest of the API still reach Flask.

READ_HEADERS = (Header.REQUEST_ID, Header.WORKER_ID, "Content-Type", "Retry-After", "Access-Control-Allow-Origin",
                "Access-Control-Expose-Headers")  # fmt: skip


@contextlib.contextmanager
def behind_door(app: Flask) -> Iterator[str]:
    """``app`` behind its front door on a free loopback port, the fast path on, as a worker runs it; its event loop
    runs in a thread called LOOP_THREAD."""
    loop = asyncio.new_event_loop()
    door = FrontDoor(Limits.of(app.config["VISIONPOOL"]))
    sock = door.bind("127.0.0.1", 0)
    http = wsgi_app(app, door, app.config["VISIONPOOL"].threads, None, direct_predict(app))
    thread = threading.Thread(target=loop.run_forever, name=LOOP_THREAD, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(door.start(http, sock), loop).result(timeout=10)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    asyncio.run_coroutine_threadsafe(door.stop(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


LOOP_THREAD = "front-door-loop"


@pytest.fixture(scope="module")
def served(onnx_app: Flask) -> Iterator[str]:
    """The ONNX worker app behind its front door."""
    with behind_door(onnx_app) as url:
        yield url


def flask_answer(app: Flask, path: str, data: bytes, content_type: str, request_id: str) -> tuple[int, dict, dict]:
    headers = {Header.REQUEST_ID: request_id} | ({"Content-Type": content_type} if content_type else {})
    answer = app.test_client().post(path, data=data, headers=headers)
    return answer.status_code, answer.get_json(), {k: answer.headers.get(k) for k in READ_HEADERS}


def door_answer(url: str, path: str, data: bytes, content_type: str, request_id: str) -> tuple[int, dict, dict]:
    headers = {Header.REQUEST_ID: request_id, "Content-Type": content_type}  # requests drops an empty one
    answer = requests.post(url + path, data=data, headers={k: v for k, v in headers.items() if v}, timeout=30)
    return answer.status_code, answer.json(), {k: answer.headers.get(k) for k in READ_HEADERS}


def without_timing(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "timing_ms"}


def test_an_answer_is_the_flask_routes_to_the_byte_that_matters(onnx_app: Flask, served: str, jpegs) -> None:
    for path in ("/predict", "/models/efficientnet-lite0/predict?top_k=3", "/predict?threshold=0.9"):
        flask = flask_answer(onnx_app, path, jpegs["chelsea"], "image/jpeg", "id-1")
        fast = door_answer(served, path, jpegs["chelsea"], "image/jpeg", "id-1")
        assert fast[0] == flask[0] == 200
        assert without_timing(fast[1]) == without_timing(flask[1])
        assert set(fast[1]["timing_ms"]) == set(flask[1]["timing_ms"])
        assert fast[2] == flask[2] and fast[2][Header.REQUEST_ID] == "id-1"


@pytest.mark.parametrize(("data", "content_type", "path", "status", "code"), ERRORS)
def test_every_refusal_is_the_flask_routes(
    onnx_app: Flask, served: str, data, content_type, path, status, code
) -> None:
    flask = flask_answer(onnx_app, path, data, content_type, "id-2")
    fast = door_answer(served, path, data, content_type, "id-2")
    assert fast == flask and fast[0] == status and fast[1]["error"]["code"] == code


def test_it_counts_and_logs_as_the_flask_route(served: str, jpegs, caplog: pytest.LogCaptureFixture) -> None:
    before = sample(scrape(served), "visionpool_worker_requests_total", model="ssd-mobilenet-v2", status="200",
                    outcome="ok")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="visionpool.worker.requests"):
        answer = requests.post(served + "/predict", data=jpegs["chelsea"], headers={"Content-Type": "image/jpeg"})
    assert answer.status_code == 200
    after = sample(
        scrape(served), "visionpool_worker_requests_total", model="ssd-mobilenet-v2", status="200", outcome="ok"
    )
    assert after == before + 1
    [line] = [r for r in caplog.records if getattr(r, "request_id", None) == answer.headers[Header.REQUEST_ID]]
    assert line.status == 200 and line.model == "ssd-mobilenet-v2"  # type: ignore[attr-defined]


def small_jpeg(photo: np.ndarray, side: int = 96) -> bytes:
    """A thumbnail of ``photo``: what the event loop answers itself (Pipeline.fits_loop)."""
    return encode(np.asarray(Image.fromarray(photo).resize((side, side))), "JPEG")


def test_a_small_jpeg_is_answered_in_the_event_loop_as_flask_answers_it(onnx_app: Flask, served: str, photos,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    thumbnail = small_jpeg(photos["chelsea"])
    for path in ("/predict", "/models/efficientnet-lite0/predict?top_k=3", "/predict?threshold=0.9"):
        flask = flask_answer(onnx_app, path, thumbnail, "image/jpeg", "id-3")
        with caplog.at_level(logging.INFO, logger="visionpool.worker.requests"):
            fast = door_answer(served, path, thumbnail, "application/octet-stream", "id-3")
        assert fast[0] == flask[0] == 200 and fast[1]["image"] == {"width": 96, "height": 96}
        assert without_timing(fast[1]) == without_timing(flask[1])
        assert set(fast[1]["timing_ms"]) == set(flask[1]["timing_ms"])
        assert fast[2] == flask[2]
    truncated = thumbnail[: len(thumbnail) // 2]  # a whole header: the loop takes it, and refuses it as Flask does
    with caplog.at_level(logging.INFO, logger="visionpool.worker.requests"):
        refused = door_answer(served, "/predict", truncated, "image/jpeg", "id-3")
    assert refused == flask_answer(onnx_app, "/predict", truncated, "image/jpeg", "id-3")
    assert refused[0] == 400 and "truncated" in refused[1]["error"]["message"]
    lines = [r for r in caplog.records if getattr(r, "request_id", None) == "id-3"]
    assert [r.threadName for r in lines] == [LOOP_THREAD] * 4  # counted and logged, in the loop's own thread
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="visionpool.worker.requests"):
        door_answer(served, "/predict", small_jpeg(photos["chelsea"], 200), "image/jpeg", "id-4")  # not small
    [line] = [r for r in caplog.records if getattr(r, "request_id", None) == "id-4"]
    assert line.threadName.startswith("request")


def test_a_small_jpeg_waiting_for_a_slow_engine_holds_no_one_else_up(sleepy_app, photos) -> None:
    """The event loop awaits the engine: while one thumbnail runs for seconds and a second waits past its deadline,
    the worker answers everything else at once, and the second is told so, as a request thread would tell it."""
    app = sleepy_app(seconds=2.0, request_timeout=0.5)
    thumbnail = small_jpeg(photos["coffee"], 32)
    with behind_door(app) as url, ThreadPoolExecutor(2) as pool:
        post = functools.partial(requests.post, url + "/predict", data=thumbnail, timeout=30,
                                 headers={"Content-Type": "image/jpeg"})  # fmt: skip
        first = pool.submit(post)
        time.sleep(0.3)  # the first runs in the engine
        second = pool.submit(post)
        health = requests.get(url + "/healthz", timeout=1.5)
        assert health.status_code == 200 and not first.done()
        refused = second.result()
        assert not first.done()
        assert refused.status_code == 504 and refused.json()["error"]["code"] == "deadline_exceeded"
        assert first.result().status_code == 200


def test_thumbnails_beyond_the_threads_wait_their_turn_as_other_uploads_do(sleepy_app, photos) -> None:
    """--threads bounds the predictions under way in the loop as in the threads: six thumbnails at once, two
    threads and a queue of two, and each is answered in turn, none refused as overload."""
    app = sleepy_app(seconds=0.1, max_queue_size=2, threads=2)
    thumbnail = small_jpeg(photos["coffee"], 32)
    with behind_door(app) as url, ThreadPoolExecutor(6) as pool:
        post = functools.partial(requests.post, url + "/predict", data=thumbnail, timeout=30,
                                 headers={"Content-Type": "image/jpeg"})  # fmt: skip
        answers = list(pool.map(lambda _: post(), range(6)))
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]


def test_forms_and_the_rest_of_the_api_still_reach_flask(served: str, jpegs) -> None:
    form = requests.post(served + "/predict", files={"image": ("cat.jpg", jpegs["chelsea"], "image/jpeg")})
    assert form.status_code == 200 and form.json()["predictions"][0]["label"] == "cat"
    assert requests.get(served + "/models", timeout=10).json()["default"] == "ssd-mobilenet-v2"
    png = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
    v2 = requests.post(served + "/v2/models/efficientnet-lite0/infer", data=png, timeout=10,
                       headers={"Content-Type": "image/png"})  # fmt: skip
    assert v2.status_code in (200, 400)  # Flask's v2 route answered (a raw PNG is not a v2 request)
    assert "error" in v2.json() or "outputs" in v2.json()
