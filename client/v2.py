"""The client's side of the Open Inference Protocol: one image as a v2 request, the v2 answer as a Result.

Usage (the core does this for ``protocol="v2"``):
    path, headers, body = request(model, image, threshold, top_k)
    result = result_of(answer_json, answer_headers)

The image goes as the BYTES input IMAGE in binary (the JSON header, then a 4-byte
little-endian length and the bytes); every output comes back as JSON.
"""

from __future__ import annotations

import json
import struct
from typing import Any
from urllib.parse import quote

from .types import Box, Mask, Prediction, Result
from .wire import V2, V2_HEADER_LENGTH, V2_INFER, V2_MODEL, Header


def request(model: str, image: bytes, threshold: float | None, top_k: int | None) -> tuple[str, dict[str, str], bytes]:
    """(path, headers, body) of an infer request for one encoded image."""
    data = struct.pack("<I", len(image)) + image
    parameters = {k: v for k, v in (("threshold", threshold), ("top_k", top_k)) if v is not None}
    header: dict[str, Any] = {
        "inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(data)}}],
        "parameters": {"binary_data_output": False, **parameters},
    }
    head = json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream", V2_HEADER_LENGTH: str(len(head))}
    return V2 + V2_MODEL.format(name=quote(model, safe="")) + V2_INFER, headers, head + data


def result_of(body: dict[str, Any], headers: dict[str, str]) -> Result:
    """The answer for the request's one image."""
    outputs = {o["name"]: o.get("data", []) for o in body.get("outputs", [])}
    shapes = {o["name"]: o.get("shape", []) for o in body.get("outputs", [])}
    count = int(outputs.get("COUNT", [0])[0])
    width, height = (int(v) for v in outputs["SIZE"][:2])
    scores = outputs.get("SCORES") or outputs.get("PROBABILITIES") or []
    boxes, masks, keypoints = outputs.get("BOXES"), outputs.get("MASKS"), outputs.get("KEYPOINTS")
    points = shapes["KEYPOINTS"][2] if keypoints else 0
    predictions = [
        Prediction(
            outputs["LABELS"][i],
            int(outputs["CLASS_IDS"][i]),
            round(float(scores[i]), 4),
            Box(*(round(v) for v in boxes[4 * i : 4 * i + 4])) if boxes else None,
            Mask.from_json({"png": masks[i]}) if masks else None,
            _triples(keypoints[3 * points * i : 3 * points * (i + 1)]) if keypoints else None,
        )
        for i in range(count)
    ]
    embedding = outputs.get("EMBEDDING")
    return Result(
        model=str(body.get("model_name")),
        version=str(body.get("model_version")),
        width=width,
        height=height,
        predictions=predictions,
        worker_id=headers.get(Header.WORKER_ID.lower()),
        request_id=headers.get(Header.REQUEST_ID.lower()),
        embedding=[float(v) for v in embedding] if embedding is not None else None,
    )


def _triples(flat: list[float]) -> list[tuple[float, float, float]]:
    return [(float(flat[j]), float(flat[j + 1]), float(flat[j + 2])) for j in range(0, len(flat), 3)]
