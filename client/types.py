"""What a prediction returns: typed results instead of raw dicts."""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from typing import Any

from .wire import Header


@dataclass(frozen=True)
class Box:
    """A rectangle in the image's pixels (as displayed)."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Mask:
    """An instance mask: outer polygons in the image's pixels (flat x1, y1, x2, y2, ... lists, as COCO writes
    them), or with ``masks=png`` a 1-bit PNG the size of the prediction's box."""

    polygons: list[list[float]] = field(default_factory=list)
    png: bytes | None = None

    @classmethod
    def from_json(cls, mask: dict[str, Any]) -> Mask:
        png = mask.get("png")
        return cls([list(p) for p in mask.get("polygons", [])], base64.b64decode(png) if png else None)


@dataclass(frozen=True)
class Prediction:
    """One thing found: its class and score; for detectors its box, for segmentation its mask, for pose its
    keypoints (x, y in the image's pixels, and a score, in the model's keypoint order)."""

    label: str
    class_id: int
    score: float
    box: Box | None = None
    mask: Mask | None = None
    keypoints: list[tuple[float, float, float]] | None = None

    @classmethod
    def from_json(cls, p: dict[str, Any]) -> Prediction:
        box, mask, points = p.get("box"), p.get("mask"), p.get("keypoints")
        return cls(
            p["label"],
            int(p["class_id"]),
            float(p["score"]),
            Box(**box) if box else None,
            Mask.from_json(mask) if mask else None,
            [(float(x), float(y), float(s)) for x, y, s in points] if points is not None else None,
        )


@dataclass(frozen=True)
class Result:
    """A worker's answer for one image."""

    model: str
    version: str
    width: int
    height: int
    predictions: list[Prediction]
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per stage
    batch_size: int = 1
    worker_id: str | None = None
    request_id: str | None = None
    embedding: list[float] | None = None  # encoders: the image's feature vector

    @classmethod
    def from_json(cls, body: dict[str, Any], headers: dict[str, str]) -> Result:
        """From a worker's JSON answer and its headers (names in lower case)."""
        predictions = [Prediction.from_json(p) for p in body["predictions"]]
        embedding = body.get("embedding")
        return cls(
            model=body["model"]["name"],
            version=str(body["model"]["version"]),
            width=int(body["image"]["width"]),
            height=int(body["image"]["height"]),
            predictions=predictions,
            timings=dict(body.get("timing_ms", {})),
            batch_size=int(body.get("batch_size", 1)),
            worker_id=headers.get(Header.WORKER_ID.lower()),
            request_id=headers.get(Header.REQUEST_ID.lower()),
            embedding=[float(v) for v in embedding] if embedding is not None else None,
        )

    def to_json(self) -> dict[str, Any]:
        """A plain dict, for JSON lines: fields a task does not have are left out, a PNG mask is base64."""
        plain = asdict(self)
        for found, prediction in zip(plain["predictions"], self.predictions, strict=True):
            for key in ("box", "mask", "keypoints"):
                if found[key] is None:
                    del found[key]
            if prediction.mask is not None and prediction.mask.png is not None:
                found["mask"] = {"png": base64.b64encode(prediction.mask.png).decode("ascii")}
        if self.embedding is None:
            del plain["embedding"]
        return plain
