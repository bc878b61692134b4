"""``visionpool worker`` as a user runs it: a real process on a real port."""

from __future__ import annotations

import gzip
import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import requests
from graphs import constant_model, task_repository, write_model, yolo_head
from helpers import encode, free_port, iou, wait_until, write_sleepy_model, write_slow_loading_model

pytestmark = pytest.mark.slow  # every test here starts processes

CAT_BOX = {"x": 9, "y": 0, "width": 399, "height": 297}  # what the ONNX SSD draws around chelsea


def test_demo_model_finds_the_cat_through_openvino(start_worker, jpegs: dict[str, bytes]) -> None:
    worker = start_worker("--model", "coco-ssd")
    response = requests.post(
        worker.url + "/predict", data=jpegs["chelsea"], headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    assert response.status_code == 200
    best = response.json()["predictions"][0]
    assert best["label"] == "cat" and best["score"] > 0.85 and iou(best["box"], CAT_BOX) > 0.8
    assert requests.get(worker.url + "/models", timeout=5).json()["models"][0]["engine"] == "openvino"


def test_readyz_is_503_until_the_models_are_loaded(start_worker, tmp_path: Path) -> None:
    write_slow_loading_model(tmp_path, seconds=2.0)
    worker = start_worker("--model", "slow", "--model-repository", str(tmp_path), ready=False)
    codes: list[int] = []
    deadline = time.monotonic() + 60
    while not codes or codes[-1] != 200:
        assert time.monotonic() < deadline, f"never ready; answers so far: {codes}"
        try:
            codes.append(requests.get(worker.url + "/readyz", timeout=5).status_code)
        except requests.ConnectionError:
            assert worker.proc.poll() is None, worker.output()
        time.sleep(0.05)
    assert 503 in codes and set(codes) == {503, 200}  # the model took 2 s to load: readyz said so meanwhile
    assert requests.get(worker.url + "/healthz", timeout=5).status_code == 200


def test_sigterm_finishes_the_request_in_flight_then_exits_0(start_worker, tmp_path: Path) -> None:
    marker = tmp_path / "batches"
    repository = write_sleepy_model(tmp_path / "models", seconds=1.5, marker=marker)
    worker = start_worker("--model", "sleepy", "--model-repository", str(repository))
    image = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
    answer: list[requests.Response] = []
    request = threading.Thread(
        target=lambda: answer.append(
            requests.post(worker.url + "/predict", data=image, headers={"Content-Type": "image/png"}, timeout=30)
        )
    )
    request.start()
    wait_until(lambda: marker.exists() and len(marker.read_text().split()) == 2)  # warm-up, then ours: running
    worker.proc.send_signal(signal.SIGTERM)
    request.join()
    assert answer[0].status_code == 200 and answer[0].json()["predictions"][0]["label"] in "abc"
    assert worker.proc.wait(30) == 0, worker.output()
    with pytest.raises(requests.ConnectionError):
        requests.get(worker.url + "/healthz", timeout=5)


def test_honours_honchos_port_variable(start_worker) -> None:
    worker = start_worker("--model", "coco-ssd", env={"PORT": str(free_port())})
    assert requests.get(worker.url + "/readyz", timeout=5).status_code == 200


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "visionpool.client", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_a_broken_config_stops_start_up_naming_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "bad" / "1").mkdir(parents=True)
    (tmp_path / "bad" / "config.toml").write_text('task = "detection"\nengine = "onnxruntime"\nfiles = ["../x.onnx"]\n')
    result = run_cli("worker", "--model", "bad", "--model-repository", str(tmp_path))
    assert result.returncode == 2
    assert f"{tmp_path}/bad/config.toml: field 'files'" in result.stderr and "Traceback" not in result.stderr


def test_environment_variables_configure_the_worker(tmp_path: Path) -> None:
    result = run_cli("worker", env={"VISIONPOOL_MODEL": "nope", "VISIONPOOL_MODEL_REPOSITORY": str(tmp_path)})
    assert result.returncode == 2 and "no model 'nope'" in result.stderr
    result = run_cli("worker", env={"VISIONPOOL_PORT": "http"})
    assert result.returncode == 2 and "VISIONPOOL_PORT='http'" in result.stderr


def test_yolo_and_segmentation_through_a_real_worker(start_worker, tmp_path: Path) -> None:
    root = task_repository(tmp_path / "models", engine="openvino")
    worker = start_worker("--model", "yolo8", "seg", "--model-repository", str(root))
    wide = encode(np.full((640, 1280, 3), 90, np.uint8), "PNG")
    headers = {"Content-Type": "image/png"}
    body = requests.post(worker.url + "/models/yolo8/predict", data=wide, headers=headers, timeout=30).json()
    assert body["predictions"][0]["box"] == {"x": 440, "y": 220, "width": 400, "height": 200}
    found = requests.post(worker.url + "/models/seg/predict", data=wide, headers=headers, timeout=30).json()
    assert len(found["predictions"][0]["mask"]["polygons"]) == 1


def test_a_model_that_does_not_fit_its_decoder_stops_the_worker_without_a_traceback(tmp_path: Path) -> None:
    model = constant_model(tmp_path / "m.onnx", {"output0": np.zeros((84, 64), np.float32)}, (64, 64))
    write_model(tmp_path, "bad", model, task="detection", decoder="yolo", size=(64, 64), labels=["a", "b", "c"])
    result = run_cli("worker", "--model", "bad", "--model-repository", str(tmp_path), "--port", str(free_port()))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "model 'bad' does not fit decoder 'yolo': output 'output0' has shape [84, 64]" in result.stderr
    assert "expected [7, A] (YOLOv8/11) or [A, 8] (YOLOv5/7) for the 3 classes of the labels file" in result.stderr


def test_a_worker_serves_one_model_file_with_no_repository(start_worker, tmp_path: Path) -> None:
    head = yolo_head([(320, 320, 200, 100, 2, 0.9)], 3, anchors=1200)
    metadata = {"names": "{0: 'ant', 1: 'bee', 2: 'cat'}", "imgsz": "[640, 640]", "stride": "32", "task": "detect"}
    model = constant_model(tmp_path / "yolov8n.onnx", {"output0": head}, (640, 640), metadata=metadata)
    saved = tmp_path / "saved.toml"
    worker = start_worker("--model-file", str(model), "--save-config", str(saved))
    wide = encode(np.full((640, 1280, 3), 90, np.uint8), "PNG")
    body = requests.post(worker.url + "/predict", data=wide, headers={"Content-Type": "image/png"}, timeout=30).json()
    assert body["model"]["name"] == "yolov8n"
    assert body["predictions"][0]["label"] == "cat"
    assert body["predictions"][0]["box"] == {"x": 440, "y": 220, "width": 400, "height": 200}
    assert 'decoder = "yolo"  # ONNX metadata task' in saved.read_text()
    assert 'resize = "letterbox"' in worker.output()  # the config it serves with, printed at start


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_v2_request_straight_to_a_worker(start_worker, tmp_path: Path, encoding: str) -> None:
    root = task_repository(tmp_path / "models")
    worker = start_worker("--model", "encoder", "--model-repository", str(root))
    image = encode(np.full((64, 64, 3), 200, np.uint8), "PNG")
    sizes = {"binary_data_size": 4 + len(image)}
    header = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1], "parameters": sizes}]}
    head = json.dumps(header).encode()
    body = head + struct.pack("<I", len(image)) + image
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    headers = {"Content-Encoding": encoding, "Inference-Header-Content-Length": str(len(head))}
    response = requests.post(worker.url + "/v2/models/encoder/infer", data=packed, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    [embedding] = [o for o in response.json()["outputs"] if o["name"] == "EMBEDDING"]
    assert embedding["shape"] == [1, 3]
    broken = requests.post(worker.url + "/v2/models/encoder/infer", data=packed[:-8] + b"garbage!", headers=headers,
                           timeout=30)  # fmt: skip
    assert broken.status_code == 400  # ours ("does not decompress as Content-Encoding ...") or aiohttp's own, when
    # its parser meets the bad bytes before the front door reads them (seen for deflate in one full run)


def test_a_port_in_use_fails_before_anything_loads(tmp_path: Path) -> None:
    marker = tmp_path / "loaded"
    write_slow_loading_model(tmp_path, seconds=0.0, marker=marker)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("worker", "--model", "slow", "--model-repository", str(tmp_path), "--port", str(port))
    assert result.returncode == 2 and "Address already in use" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()  # the model was never loaded


def test_a_killed_supervisor_leaves_no_worker_behind(start_worker, tmp_path: Path) -> None:
    write_slow_loading_model(tmp_path, seconds=0.0)
    supervisor = start_worker("--model", "slow", "--model-repository", str(tmp_path), "--supervise")
    child = requests.get(supervisor.url + "/healthz", timeout=5).json()["pid"]
    assert child != supervisor.proc.pid
    supervisor.proc.kill()  # SIGKILL: the supervisor cannot pass anything on
    supervisor.proc.wait(timeout=10)
    wait_until(lambda: not Path(f"/proc/{child}").exists() or "zombie" in _state(child), timeout=10)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "gone"
