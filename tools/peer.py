"""``visionpool bench --targets peer``: the same model served the way most teams first serve one, beside the pool.

The peer is gunicorn (1 process, 4 threads, ``gthread``) running Flask with ONNX Runtime on the CPU: it decodes the
upload with Pillow at full size, prepares it as the model's config says (size, resize mode, interpolation, colour
order, mean and std, layout), runs the ONNX file and answers the first output's five largest values as JSON (a
classifier's answer; for other models the same engine work without their decoding). The bench loads it with the
same clients and images as the worker, so the two rows compare like for like.

Usage:
    with serve_peer(config) as (url, clock, versions): ...    # config: the model's ModelConfig; ONNX files only
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .servers import family_clock, free_port, gunicorn_command, installed, running, versions

PEER = '''"""gunicorn + Flask + ONNX Runtime serving one model as its config says (visionpool bench --targets peer)."""
import io
import json
import os

import numpy as np
import onnxruntime as ort
from flask import Flask, jsonify, request
from PIL import Image

SPEC = json.loads(os.environ["VISIONPOOL_PEER_SPEC"])
FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "area": Image.BOX}
session = ort.InferenceSession(SPEC["model"], providers=["CPUExecutionProvider"])
name = SPEC["name"] or session.get_inputs()[0].name
app = Flask(__name__)


def prepare(image):
    width, height, how = SPEC["width"], SPEC["height"], FILTERS[SPEC["interpolation"]]
    if SPEC["resize"] == "crop":
        scale = SPEC["resize_shorter"] / min(image.size)
        image = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))), how)
        left, top = (image.width - width) // 2, (image.height - height) // 2
        image = image.crop((left, top, left + width, top + height))
    elif SPEC["resize"] == "letterbox":
        scale = min(width / image.width, height / image.height)
        inner = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), how)
        image = Image.new("RGB", (width, height), (114, 114, 114))
        image.paste(inner, ((width - inner.width) // 2, (height - inner.height) // 2))
    else:
        image = image.resize((width, height), how)
    pixels = np.asarray(image)
    if SPEC["color"] == "BGR":
        pixels = pixels[:, :, ::-1]
    if SPEC["dtype"] == "float32":
        pixels = (pixels.astype(np.float32) - np.float32(SPEC["mean"])) / np.float32(SPEC["std"])
    if SPEC["layout"] == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels)[None]


@app.post("/predict")
def predict():
    image = Image.open(io.BytesIO(request.get_data())).convert("RGB")
    first = session.run(None, {name: prepare(image)})[0].reshape(-1)
    top = np.argsort(-first)[:5]
    return jsonify(model={"name": SPEC["model_name"], "version": "peer"},
                   image={"width": image.width, "height": image.height},
                   predictions=[{"label": str(i), "class_id": int(i), "score": float(first[i])} for i in top])
'''


@contextlib.contextmanager
def serve_peer(
    config: Any, cpus: frozenset[int] | None = None
) -> Iterator[tuple[str | None, Callable[[], float], str]]:
    """The peer serving ``config``'s model on a free loopback port (on ``cpus`` when given): (url, its CPU clock,
    versions); a None url and the reason instead of versions when it cannot run (no gunicorn or onnxruntime, a
    model that is no ONNX file)."""
    model = Path(config.files[0])
    missing = [package for package in ("gunicorn", "onnxruntime") if not installed(package)]
    if missing or model.suffix != ".onnx":
        why = f"pip install {' '.join(missing)}" if missing else f"the peer runs ONNX files, not {model.name}"
        yield None, lambda: 0.0, why
        return
    spec = {**asdict(config.input), "model": str(model.resolve()), "model_name": config.name}  # gunicorn runs elsewhere
    with tempfile.TemporaryDirectory(prefix="visionpool-peer-") as scratch:
        folder = Path(scratch)
        (folder / "model_peer.py").write_text(PEER)
        port, spec_env = free_port(), {"VISIONPOOL_PEER_SPEC": json.dumps(spec)}
        command = gunicorn_command(folder, "model_peer:app", port)
        with running(command, f"http://127.0.0.1:{port}", folder / "peer.log", "/predict", spec_env, cpus) as process:
            yield (f"http://127.0.0.1:{port}", family_clock(process.pid),
                   versions("gunicorn", "flask", "pillow", "onnxruntime"))  # fmt: skip
