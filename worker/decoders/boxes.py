"""Detectors that decode and suppress boxes inside the graph -> predictions (threshold and top_k here).

Conventions (``convention``; "auto" tells them apart by the outputs' names and shapes):
    tf           TF Object Detection API: detection_boxes [K, 4] (y1, x1, y2, x2, 0..1), detection_scores [K],
                 detection_classes [K], num_detections [] (how many rows are real)
    rows         "end-to-end" exports (YOLOv10, Ultralytics nms=True, ...): one output [K, 6] of
                 x1, y1, x2, y2 (input pixels), score, class
    torchvision  boxes [K, 4] (x1, y1, x2, y2, input pixels), labels [K], scores [K]
Options override any part: output (rows), boxes_output, scores_output, classes_output, count_output,
box_order ("xyxy", "yxyx", "xywh", "cxcywh"), normalized (coordinates 0..1 rather than input pixels),
class_offset (added to every class id, e.g. -1 for 1-based ids with no background line in the labels).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .base import Decoder, Prediction, Shapes, shape_error, shape_of

CONVENTIONS = ("auto", "tf", "rows", "torchvision")
BOX_ORDERS = ("xyxy", "yxyx", "xywh", "cxcywh")
DEFAULTS: dict[str, dict[str, Any]] = {
    "tf": {
        "boxes_output": "detection_boxes",
        "scores_output": "detection_scores",
        "classes_output": "detection_classes",
        "count_output": "num_detections",
        "box_order": "yxyx",
        "normalized": True,
    },
    "rows": {"box_order": "xyxy", "normalized": False},
    "torchvision": {
        "boxes_output": "boxes",
        "scores_output": "scores",
        "classes_output": "labels",
        "box_order": "xyxy",
        "normalized": False,
    },
}
ROLES = ("output", "boxes_output", "scores_output", "classes_output", "count_output")


class BoxesDecoder(Decoder):
    """Reads boxes, scores and classes that the graph already found."""

    def __init__(self, options: dict[str, Any], input_size: tuple[int, int] = (1, 1)) -> None:
        super().__init__(options, input_size)
        self.convention = self.choice("convention", "auto", CONVENTIONS)
        self.given = {role: self.option(role, None) for role in ROLES}
        order = self.option("box_order", None)
        if order is not None and order not in BOX_ORDERS:
            raise ValueError(f"option 'box_order' must be one of {', '.join(map(repr, BOX_ORDERS))}, got {order!r}")
        self.given_order, self.given_normalized = order, self.option("normalized", None)
        self.class_offset = int(self.option("class_offset", 0))
        self.check_options()
        self.plan: dict[str, Any] | None = None  # the outputs' roles, once the model's outputs are known

    def check(self, shapes: Shapes, classes: int) -> None:
        plan = self._plan(shapes)
        if plan["output"] is not None:
            shape = shapes[plan["output"]]
            if len(shape) != 2 or shape[1] < 6:
                raise shape_error(plan["output"], shape, "[K, 6] (x1, y1, x2, y2, score, class per row)")
            return
        boxes = shapes[plan["boxes_output"]]
        if len(boxes) != 2 or boxes[1] != 4:
            raise shape_error(plan["boxes_output"], boxes, "[K, 4]")
        for role in ("scores_output", "classes_output"):
            shape = shapes[plan[role]]
            if int(np.prod(shape)) != boxes[0]:
                raise shape_error(plan[role], shape, f"[{boxes[0]}] (one per box of {plan['boxes_output']!r})")

    def decode(self, outputs: dict[str, np.ndarray], threshold: float, top_k: int) -> list[Prediction]:
        plan = self._plan(outputs)
        if plan["output"] is not None:
            rows = outputs[plan["output"]]
            boxes, scores, classes = rows[:, :4], rows[:, 4], rows[:, 5]
        else:
            boxes = outputs[plan["boxes_output"]]
            scores = outputs[plan["scores_output"]].reshape(-1)
            classes = outputs[plan["classes_output"]].reshape(-1)
            if plan["count_output"] is not None:
                count = int(np.asarray(outputs[plan["count_output"]]).reshape(-1)[0])
                boxes, scores, classes = boxes[:count], scores[:count], classes[:count]
        index = np.flatnonzero(scores >= threshold)
        index = index[np.argsort(-scores[index], kind="stable")][:top_k]
        corners = self._corners(boxes[index].astype(np.float32), plan)
        ids = np.rint(classes[index]).astype(np.int64) + self.class_offset
        return [
            Prediction(c, s, (b[0], b[1], b[2], b[3]))
            for c, s, b in zip(ids.tolist(), scores[index].astype(float).tolist(), corners.tolist(), strict=True)
        ]

    def _corners(self, boxes: np.ndarray, plan: dict[str, Any]) -> np.ndarray:
        """(x1, y1, x2, y2) in 0..1 from the model's order and units."""
        a, b, c, d = boxes.T
        order = plan["box_order"]
        if order == "yxyx":
            corners = (b, a, d, c)
        elif order == "xywh":
            corners = (a, b, a + c, b + d)
        elif order == "cxcywh":
            corners = (a - c / 2, b - d / 2, a + c / 2, b + d / 2)
        else:
            corners = (a, b, c, d)
        result = np.stack(corners, axis=1)
        if not plan["normalized"]:
            result /= np.asarray([self.input_width, self.input_height] * 2, np.float32)
        return result

    def _plan(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """Which output plays which role, worked out once from the options, the convention and the outputs."""
        if self.plan is None:
            convention = self.convention if self.convention != "auto" else _guess(outputs, self.given)
            plan: dict[str, Any] = {role: None for role in ROLES}
            defaults = DEFAULTS[convention]
            for role in ROLES:
                wanted = self.given[role] or defaults.get(role)
                plan[role] = _find(outputs, wanted, role, required=role != "count_output" or bool(self.given[role]))
            if convention == "rows" and plan["output"] is None:
                plan["output"] = next(iter(outputs))
            if convention != "rows":
                plan["output"] = None
            plan["box_order"] = self.given_order or defaults["box_order"]
            normalized = self.given_normalized
            plan["normalized"] = bool(defaults["normalized"] if normalized is None else normalized)
            self.plan = plan
        return self.plan


def _guess(outputs: Mapping[str, Any], given: dict[str, Any]) -> str:
    """The convention the outputs follow, by their names (or a single [K, 6] output)."""
    if given["output"] is not None:
        return "rows"
    if _find(outputs, "detection_boxes", "boxes_output", required=False):
        return "tf"
    if _find(outputs, given["boxes_output"] or "boxes", "boxes_output", required=False):
        return "torchvision"
    shapes = [shape_of(v) for v in outputs.values()]
    if len(shapes) == 1 and len(shapes[0]) == 2 and shapes[0][1] == 6:
        return "rows"
    listed = ", ".join(f"{n} {list(shape_of(v))}" for n, v in outputs.items())
    raise ValueError(
        f"cannot tell which boxes convention the outputs {listed} follow: set convention = 'tf', 'rows' or "
        "'torchvision' under [output.options], with the output names (boxes_output, scores_output, ...)"
    )


def _find(outputs: Mapping[str, Any], wanted: str | None, role: str, required: bool) -> str | None:
    """The output called ``wanted`` (TensorFlow's ':0' suffix and a scope prefix aside)."""
    if wanted is None:
        return None
    for name in outputs:
        if name == wanted or name.split(":")[0] == wanted or name.split(":")[0].endswith("/" + wanted):
            return name
    if required:
        raise ValueError(f"the model has no output {wanted!r} for {role} (it has {', '.join(outputs)})")
    return None
