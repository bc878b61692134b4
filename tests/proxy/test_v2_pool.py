"""The Open Inference Protocol as Triton's own client sees it: straight to a worker, and through the proxy."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from graphs import task_repository
from helpers import encode, free_port, iou
from pools import joining, wait_for_workers
from tritonclient.utils import InferenceServerException

from visionpool.client import Box, Client, ModelNotFound, v2

pytestmark = pytest.mark.slow  # every test here starts processes

SSD = "ssd-mobilenet-v2"
CAT_BOX = {"x": 9, "y": 0, "width": 399, "height": 297}
TOKEN = "v2-tests"


@pytest.fixture
def pool(start_proxy, start_worker, model_repository: Path) -> dict[str, str]:
    """A proxy and one worker (REST and gRPC) on the real SSD and classifier: their addresses."""
    proxy = start_proxy("--registry-token", TOKEN)
    grpc_port = free_port()
    worker = start_worker(
        "--model", SSD, "efficientnet-lite0", "--model-repository", str(model_repository), "--grpc-port",
        str(grpc_port), *joining(proxy, TOKEN),
    )  # fmt: skip
    wait_for_workers(proxy, 1)
    return {"proxy": proxy.url, "worker": worker.url, "grpc": f"127.0.0.1:{grpc_port}"}


def images(jpegs: dict[str, bytes], *names: str) -> np.ndarray:
    return np.array([jpegs[name] for name in names], dtype=np.object_)


def first_box(result, name: str = "BOXES") -> dict[str, float]:
    x, y, w, h = result.as_numpy(name)[0, 0]
    return {"x": x, "y": y, "width": w, "height": h}


@pytest.mark.parametrize("target", ["worker", "proxy"])
def test_tritonclient_http(pool: dict[str, str], jpegs, target: str) -> None:
    client = triton_http.InferenceServerClient(pool[target].removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(SSD) and not client.is_model_ready("nope")
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data", "model_configuration"]
    assert client.get_model_metadata(SSD)["inputs"][0] == {"name": "IMAGE", "datatype": "BYTES", "shape": [-1]}
    assert client.get_model_config(SSD)["input"][0]["data_type"] == "TYPE_STRING"

    image = triton_http.InferInput("IMAGE", [3], "BYTES")
    image.set_data_from_numpy(images(jpegs, "chelsea", "coffee", "camera"))
    wanted = [triton_http.InferRequestedOutput("LABELS", binary_data=False), triton_http.InferRequestedOutput("BOXES")]
    result = client.infer(SSD, [image], outputs=wanted)  # LABELS as JSON, BOXES as binary data
    assert [row[0] for row in result.as_numpy("LABELS")] == ["cat", "cup", "person"]
    assert iou(first_box(result), CAT_BOX) > 0.8
    everything = client.infer(SSD, [image])  # no outputs asked for: all of them, in binary
    assert everything.as_numpy("COUNT").tolist()[0] >= 1 and everything.as_numpy("SIZE")[0].tolist() == [451, 300]
    classified = client.infer("efficientnet-lite0", [image], parameters={"top_k": 3})
    assert classified.as_numpy("LABELS")[1, 0] == b"espresso" and classified.as_numpy("PROBABILITIES").shape == (3, 3)

    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [image])
    assert unknown.value.status() == "404" and "nope" in unknown.value.message()
    broken = triton_http.InferInput("IMAGE", [1], "BYTES")
    broken.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as bad:
        client.infer(SSD, [broken])
    assert bad.value.status() == "400" and "decode" in bad.value.message()


def test_tritonclient_grpc_straight_to_the_worker(pool: dict[str, str], jpegs) -> None:
    assert requests.get(pool["proxy"] + "/lookup", timeout=5).json()["grpc"] == pool["grpc"]  # p2p hands it out
    client = triton_grpc.InferenceServerClient(pool["grpc"])
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(SSD)
    assert not client.is_model_ready("nope")
    assert client.get_model_config(SSD).config.input[0].name == "IMAGE"
    assert [i.name for i in client.get_model_metadata(SSD).inputs] == ["IMAGE", "TENSOR"]
    image = triton_grpc.InferInput("IMAGE", [3], "BYTES")
    image.set_data_from_numpy(images(jpegs, "chelsea", "coffee", "camera"))
    result = client.infer(SSD, [image], parameters={"threshold": 0.5})
    assert [row[0] for row in result.as_numpy("LABELS")] == [b"cat", b"cup", b"person"]
    assert iou(first_box(result), CAT_BOX) > 0.8
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [image])
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    broken = triton_grpc.InferInput("IMAGE", [1], "BYTES")
    broken.set_data_from_numpy(np.array([b"junk"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as bad:
        client.infer(SSD, [broken])
    assert bad.value.status() == "StatusCode.INVALID_ARGUMENT"


@pytest.mark.parametrize("mode", ["p2p", "proxy"])
def test_our_client_speaks_v2(pool: dict[str, str], photo_files, mode: str) -> None:
    with Client(pool["proxy"], mode=mode, model=SSD, protocol="v2") as client:
        result = client.predict(photo_files["chelsea"])
        assert result.predictions[0].label == "cat" and (result.width, result.height) == (451, 300)
        assert iou(vars(result.predictions[0].box), CAT_BOX) > 0.8
    with Client(pool["proxy"], mode=mode, model="nope", protocol="v2") as client, pytest.raises(ModelNotFound):
        client.predict(photo_files["chelsea"])


@pytest.fixture
def two_workers(start_proxy, start_worker, tmp_path: Path):
    """A proxy and two workers on the per-task graphs of tests/graphs.py (no shared models needed)."""
    root = task_repository(tmp_path / "models")
    proxy = start_proxy("--registry-token", TOKEN)
    workers = [
        start_worker(
            "--model",
            "yolo8",
            "encoder",
            "--model-repository",
            str(root),
            "--worker-id",
            f"w{i}",
            *joining(proxy, TOKEN),
        )  # fmt: skip
        for i in (1, 2)
    ]
    wait_for_workers(proxy, 2)
    return proxy, workers


def test_v2_through_the_proxy_rotates_and_retries_on_another_worker(two_workers) -> None:
    proxy, workers = two_workers
    path, headers, body = v2.request("yolo8", encode(np.full((640, 1280, 3), 90, np.uint8), "PNG"), None, None)

    def infer() -> requests.Response:
        return requests.post(proxy.url + path, data=body, headers=headers, timeout=30)

    answered = [infer() for _ in range(6)]
    assert all(r.status_code == 200 for r in answered)
    assert Counter(r.headers["X-Worker-ID"] for r in answered) == {"w1": 3, "w2": 3}
    assert v2.result_of(answered[0].json(), {}).predictions[0].box == Box(440, 220, 400, 200)
    workers[0].stop(signal.SIGKILL)
    after = [infer() for _ in range(4)]  # the first to w1 meets a dead worker: retried on w2
    assert [r.status_code for r in after] == [200] * 4 and {r.headers["X-Worker-ID"] for r in after} == {"w2"}


def test_predict_with_protocol_v2_from_the_command_line(two_workers, tmp_path: Path) -> None:
    proxy, _ = two_workers
    picture = tmp_path / "wide.png"
    picture.write_bytes(encode(np.full((640, 1280, 3), 90, np.uint8), "PNG"))
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "visionpool.client", "predict", str(picture), "--url", proxy.url, "--proxy",
               "--protocol", "v2", "--model", "yolo8", "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    [line] = [json.loads(text) for text in out.read_text().splitlines()]
    assert line["predictions"][0]["label"] == "cat"
    assert line["predictions"][0]["box"] == {"x": 440, "y": 220, "width": 400, "height": 200}
