"""The Open Inference Protocol on a worker, in this process: the protocol's JSON, binary data and errors."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from conftest import SHARED_MODELS
from flask.testing import FlaskClient
from helpers import iou

CAT_BOX = {"x": 9, "y": 0, "width": 399, "height": 297}
SSD = "/v2/models/ssd-mobilenet-v2"
SSD_TENSOR = "FP32" if SHARED_MODELS.is_dir() else "UINT8"  # the ONNX SSD's input, or the demo graph's


def binary_request(images: list[bytes], outputs: list[dict] | None = None, **parameters: object) -> tuple[bytes, str]:
    """A v2 infer body with the images as one binary BYTES input; (body, the JSON part's length)."""
    data = b"".join(struct.pack("<I", len(i)) + i for i in images)
    header = {
        "id": "req-1",
        "inputs": [
            {
                "name": "IMAGE",
                "datatype": "BYTES",
                "shape": [len(images)],
                "parameters": {"binary_data_size": len(data)},
            }
        ],
        "outputs": outputs or [],
        "parameters": parameters,
    }
    head = json.dumps(header).encode()
    return head + data, str(len(head))


def infer(client: FlaskClient, body: bytes, length: str | None, path: str = SSD + "/infer"):
    headers = {"Inference-Header-Content-Length": length} if length is not None else {}
    return client.post(path, data=body, headers=headers)


def outputs(response) -> dict[str, dict]:
    return {o["name"]: o for o in response.get_json()["outputs"]}


def test_server_and_model_metadata(client: FlaskClient) -> None:
    assert client.get("/v2").get_json()["extensions"] == ["binary_tensor_data", "model_configuration"]
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    metadata = client.get(SSD).get_json()
    assert metadata["name"] == "ssd-mobilenet-v2" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [
        {"name": "IMAGE", "datatype": "BYTES", "shape": [-1]},
        {"name": "TENSOR", "datatype": SSD_TENSOR, "shape": [-1, 300, 300, 3]},
    ]
    assert {o["name"] for o in metadata["outputs"]} == {"BOXES", "SCORES", "CLASS_IDS", "LABELS", "COUNT", "SIZE"}
    assert client.get(SSD + "/versions/1/ready").get_json() == {"name": "ssd-mobilenet-v2", "ready": True}
    config = client.get(SSD + "/config").get_json()
    assert config["max_batch_size"] == 0 and config["input"][0] == {
        "name": "IMAGE",
        "data_type": "TYPE_STRING",
        "dims": [-1],
        "optional": True,
    }
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 0  # its 2 ms: a batch on a CPU never waits
    classifier = client.get("/v2/models/efficientnet-lite0").get_json()
    assert {o["name"] for o in classifier["outputs"]} == {"CLASS_IDS", "LABELS", "PROBABILITIES", "COUNT", "SIZE"}


def test_three_images_in_one_request_json_outputs(client: FlaskClient, jpegs) -> None:
    body, length = binary_request([jpegs["chelsea"], jpegs["coffee"], jpegs["camera"]])
    response = infer(client, body, length)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    assert response.get_json()["id"] == "req-1" and response.get_json()["model_version"] == "1"
    found = outputs(response)
    assert found["COUNT"]["shape"] == [3] and found["LABELS"]["shape"][0] == 3
    k = found["LABELS"]["shape"][1]
    labels = np.array(found["LABELS"]["data"]).reshape(3, k)
    assert [row[0] for row in labels] == ["cat", "cup", "person"]
    assert found["SIZE"]["data"][:2] == [451, 300]
    x, y, w, h = found["BOXES"]["data"][:4]  # the first image's first box, in its pixels
    assert iou({"x": x, "y": y, "width": w, "height": h}, CAT_BOX) > 0.8


def test_binary_outputs_follow_the_json_in_order(client: FlaskClient, jpegs) -> None:
    body, length = binary_request(
        [jpegs["chelsea"]], [{"name": "COUNT", "parameters": {"binary_data": True}}, {"name": "LABELS"}]
    )
    response = infer(client, body, length)
    head_length = int(response.headers["Inference-Header-Content-Length"])
    payload = response.get_data()
    head = json.loads(payload[:head_length])
    assert [o["name"] for o in head["outputs"]] == ["COUNT", "LABELS"]
    size = head["outputs"][0]["parameters"]["binary_data_size"]
    assert np.frombuffer(payload[head_length : head_length + size], np.int32).tolist() == [1]
    assert head["outputs"][1]["data"] == ["cat"]


def test_json_inputs_parameters_and_the_raw_tensor_input(client: FlaskClient, photos) -> None:
    from PIL import Image

    pixels = np.asarray(Image.fromarray(photos["chelsea"]).resize((300, 300)), np.float32)
    if SSD_TENSOR == "FP32":  # the ONNX SSD takes pixels scaled to -1..1; the TensorFlow graph scales them itself
        pixels = pixels * (2 / 255) - 1
    data = pixels.ravel().tolist() if SSD_TENSOR == "FP32" else pixels.astype(np.uint8).ravel().tolist()
    header = {"inputs": [{"name": "TENSOR", "datatype": SSD_TENSOR, "shape": [1, 300, 300, 3], "data": data}]}
    header["parameters"] = {"threshold": 0.8, "top_k": 1}
    response = infer(client, json.dumps(header).encode(), None)
    found = outputs(response)
    assert found["LABELS"]["data"] == ["cat"] and found["SIZE"]["data"] == [300, 300]  # the input's own pixels


BAD = [
    pytest.param(b'{"inputs": []}', None, SSD + "/infer", 400, "exactly one input", id="no input"),
    pytest.param(b"not json", None, SSD + "/infer", 400, "does not parse", id="not json"),
    pytest.param(b'{"inputs": [{"name": "IMAGE"}]}', None, SSD + "/infer", 400, '"datatype"', id="no datatype"),
    pytest.param(b"{}", "99", SSD + "/infer", 400, "does not fit", id="header length too long"),
    pytest.param(b"x", None, "/v2/models/nope/infer", 404, "unknown model 'nope'", id="unknown model"),
    pytest.param(b"x", None, SSD + "/versions/7/infer", 404, "no version 7", id="unknown version"),
]


@pytest.mark.parametrize(("body", "length", "path", "status", "words"), BAD)
def test_bad_requests_get_the_protocols_error_shape(client: FlaskClient, body, length, path, status, words) -> None:
    response = infer(client, body, length, path)
    assert response.status_code == status
    error = response.get_json()["error"]
    assert isinstance(error, str) and words in error


def test_a_broken_image_and_leftover_bytes_are_400s(client: FlaskClient, jpegs) -> None:
    body, length = binary_request([b"not an image"])
    assert infer(client, body, length).status_code == 400
    body, length = binary_request([jpegs["chelsea"]])
    response = infer(client, body + b"extra", length)
    assert response.status_code == 400 and "5 bytes follow" in response.get_json()["error"]
    assert client.get("/v2/nothing/here").get_json()["error"]  # even werkzeug's own 404 takes the shape
