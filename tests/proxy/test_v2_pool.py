"""The Open Inference Protocol as Triton's own client sees it: straight to a worker, and through the proxy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from helpers import free_port, iou, wait_until
from tritonclient.utils import InferenceServerException

from visionpool.client import Client, ModelNotFound

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
        str(grpc_port), "--registry", "local", "--registry-url", proxy.url, "--registry-token", TOKEN,
    )  # fmt: skip
    wait_until(lambda: len(requests.get(proxy.url + "/workers", timeout=5).json()["workers"]) == 1)
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
