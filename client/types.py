"""What a prediction returns: typed results instead of raw dicts."""

from __future__ import annotations

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
class Prediction:
    """One thing found: its class, its score and, for detectors, its box."""

    label: str
    class_id: int
    score: float
    box: Box | None = None


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

    @classmethod
    def from_json(cls, body: dict[str, Any], headers: dict[str, str]) -> Result:
        """From a worker's JSON answer and its headers (names in lower case)."""
        predictions = [
            Prediction(p["label"], int(p["class_id"]), float(p["score"]), Box(**p["box"]) if p.get("box") else None)
            for p in body["predictions"]
        ]
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
        )

    def to_json(self) -> dict[str, Any]:
        """A plain dict, for JSON lines."""
        return asdict(self)
