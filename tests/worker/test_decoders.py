"""Output decoders on hand-built outputs: anchors, box decoding, thresholds, NMS, softmax."""

from __future__ import annotations

import math

import numpy as np
import pytest

from visionpool.worker.decoders import create_decoder
from visionpool.worker.decoders.nms import batched_nms, nms
from visionpool.worker.decoders.ssd import ssd_anchors

# Two feature maps (2x2, then 1x1), one aspect ratio: 4 cells x 2 boxes + 1 cell x 2 boxes = 10 anchors.
SMALL = {
    "feature_maps": [2, 1],
    "min_scale": 0.2,
    "max_scale": 0.8,
    "aspect_ratios": [1.0],
    "reduce_boxes_in_lowest_layer": False,
}


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_small_anchors_by_hand() -> None:
    anchors = ssd_anchors([2, 1], 0.2, 0.8, [1.0], reduce_lowest=False)
    between = math.sqrt(0.2 * 0.8)  # the extra box of layer 0 sits between its scale and the next one's
    assert anchors.shape == (10, 4)
    np.testing.assert_allclose(anchors[0], [0.25, 0.25, 0.2, 0.2], atol=1e-6)  # (cy, cx, h, w)
    np.testing.assert_allclose(anchors[1], [0.25, 0.25, between, between], atol=1e-6)
    np.testing.assert_allclose(anchors[2], [0.25, 0.75, 0.2, 0.2], atol=1e-6)  # x moves fastest
    np.testing.assert_allclose(anchors[4], [0.75, 0.25, 0.2, 0.2], atol=1e-6)
    np.testing.assert_allclose(anchors[8], [0.5, 0.5, 0.8, 0.8], atol=1e-6)  # layer 1 at max_scale
    last = math.sqrt(0.8 * 1.0)  # the last layer's extra box interpolates towards scale 1
    np.testing.assert_allclose(anchors[9], [0.5, 0.5, last, last], atol=1e-6)


def test_the_default_anchors_are_ssd_mobilenet_v2s() -> None:
    anchors = ssd_anchors([19, 10, 5, 3, 2, 1], 0.2, 0.95, [1.0, 2.0, 0.5, 3.0, 1.0 / 3.0])
    assert anchors.shape == (1917, 4)  # 19*19*3 + (100 + 25 + 9 + 4 + 1) * 6
    c = 0.5 / 19
    np.testing.assert_allclose(anchors[0], [c, c, 0.1, 0.1], atol=1e-6)  # the lowest layer's reduced boxes
    np.testing.assert_allclose(anchors[1], [c, c, 0.2 / math.sqrt(2), 0.2 * math.sqrt(2)], atol=1e-6)
    np.testing.assert_allclose(anchors[2], [c, c, 0.2 * math.sqrt(2), 0.2 / math.sqrt(2)], atol=1e-6)
    np.testing.assert_allclose(anchors[-1, 2:], [math.sqrt(0.95), math.sqrt(0.95)], atol=1e-6)


def outputs(encodings: np.ndarray, logits: np.ndarray) -> dict[str, np.ndarray]:
    return {"boxes": encodings[:, None, :].astype(np.float32), "scores": logits.astype(np.float32)}


def ssd(**options: object):
    return create_decoder("ssd", {**SMALL, "boxes_output": "boxes", "scores_output": "scores", **options})


def quiet(classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Zero encodings and every class far below any threshold."""
    return np.zeros((10, 4)), np.full((10, classes), -10.0)


def test_a_zero_encoding_is_the_anchor_itself() -> None:
    encodings, logits = quiet()
    logits[0, 1] = 2.0
    [found] = ssd().decode(outputs(encodings, logits), 0.5, 10)
    assert found.class_id == 1 and found.score == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-6)
    np.testing.assert_allclose(found.box, [0.15, 0.15, 0.35, 0.35], atol=1e-6)  # x1, y1, x2, y2 around (0.25, 0.25)


def test_encodings_move_and_scale_the_anchor() -> None:
    encodings, logits = quiet()
    # scale factors (10, 10, 5, 5): ty = 1 moves the centre by 0.1 anchor heights, th = 5 ln 2 doubles the height
    encodings[8] = [1.0, -2.0, 5 * math.log(2.0), 0.0]
    logits[8, 2] = 3.0
    [found] = ssd().decode(outputs(encodings, logits), 0.5, 10)
    cy, cx, h, w = 0.5 + 0.1 * 0.8, 0.5 - 0.2 * 0.8, 1.6, 0.8
    assert found.class_id == 2
    np.testing.assert_allclose(found.box, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-5)


def test_threshold_is_applied_to_sigmoid_scores() -> None:
    encodings, logits = quiet()
    logits[0, 1], logits[2, 1], logits[4, 2] = logit(0.7), logit(0.5), logit(0.3)
    scores = sorted(round(p.score, 3) for p in ssd().decode(outputs(encodings, logits), 0.5, 10))
    assert scores == [0.5, 0.7]  # at the threshold counts; below does not
    assert ssd().decode(outputs(encodings, logits), 1.0, 10) == []
    everything = ssd(nms_iou=1.0).decode(outputs(encodings, logits), 0.0, 100)
    assert len(everything) == 10 * 2  # every anchor x class, when NMS suppresses nothing


def test_background_column_is_never_a_detection() -> None:
    encodings, logits = quiet()
    logits[:, 0] = 10.0  # background certain everywhere
    assert ssd().decode(outputs(encodings, logits), 0.5, 10) == []
    background = ssd(background_class=False).decode(outputs(encodings, logits), 0.5, 100)
    assert {p.class_id for p in background} == {0}


def test_overlapping_boxes_of_one_class_keep_the_best_of_different_classes_both() -> None:
    encodings, logits = quiet()
    logits[8, 1], logits[9, 1] = logit(0.9), logit(0.8)  # anchors 8 and 9: one centre, IoU 0.8
    logits[9, 2] = logit(0.6)  # the same box, another class
    found = ssd().decode(outputs(encodings, logits), 0.5, 10)
    assert [(p.class_id, round(p.score, 2)) for p in found] == [(1, 0.9), (2, 0.6)]


def test_top_k_keeps_the_best() -> None:
    encodings, logits = quiet()
    for anchor, p in zip((0, 2, 4, 6), (0.6, 0.9, 0.7, 0.8), strict=True):  # four boxes apart from each other
        logits[anchor, 1] = logit(p)
    found = ssd().decode(outputs(encodings, logits), 0.5, 2)
    assert [round(p.score, 2) for p in found] == [0.9, 0.8]


def test_a_model_with_another_anchor_count_is_refused() -> None:
    with pytest.raises(ValueError, match="11 boxes but the decoder 10 anchors"):
        ssd().decode(outputs(np.zeros((11, 4)), np.zeros((11, 3))), 0.5, 10)


def test_unknown_options_and_decoders_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown option"):
        ssd(nms_iuo=0.5)
    with pytest.raises(
        ValueError, match="unknown decoder 'yolov8'; choose one of boxes, embedding, softmax, ssd, yolo"
    ):
        create_decoder("yolov8", {})


def test_nms_keeps_the_best_and_whatever_overlaps_it_too_little() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [5, 0, 15, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    # box 1 overlaps box 0 by 9/11; box 3 by 5/15 = 1/3
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.3).tolist() == [0, 2]
    assert nms(boxes, scores, 0.9).tolist() == [0, 1, 2, 3]


def test_nms_at_exactly_the_threshold_keeps_the_box() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)  # IoU exactly 1/3
    assert nms(boxes, np.array([0.9, 0.8], np.float32), 1 / 3).tolist() == [0, 1]


def test_batched_nms_never_suppresses_across_classes() -> None:
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert batched_nms(boxes, scores, np.array([1, 2, 1]), 0.5).tolist() == [0, 1]
    assert batched_nms(np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0), 0.5).tolist() == []


def test_softmax_ranks_classes_and_cuts() -> None:
    decoder = create_decoder("softmax", {})
    logits = {"out": np.log(np.array([[0.1, 0.6, 0.3]], np.float32))}
    found = decoder.decode(logits, 0.0, 2)
    assert [p.class_id for p in found] == [1, 2]
    assert [round(p.score, 4) for p in found] == [0.6, 0.3] and all(p.box is None for p in found)
    assert [p.class_id for p in decoder.decode(logits, 0.5, 5)] == [1]


def test_softmax_ranks_equal_scores_in_class_order() -> None:
    """The best k of many classes, ties (at the cut too) in class order, exactly as a full stable sort ranks them."""
    decoder = create_decoder("softmax", {"apply_softmax": False})
    scores = np.array([0.1, 0.5, 0.3, 0.5, 0.3, 0.3, 0.0, 0.3], np.float32)
    ranked = lambda k: [p.class_id for p in decoder.decode({"out": scores}, 0.0, k)]  # noqa: E731
    assert ranked(1) == [1] and ranked(3) == [1, 3, 2] and ranked(4) == [1, 3, 2, 4]
    assert ranked(8) == ranked(20) == [1, 3, 2, 4, 5, 7, 0, 6]
    rng = np.random.default_rng(1)
    many = rng.integers(0, 50, 1000).astype(np.float32) / 50  # 1,000 classes, many ties
    for k in (1, 5, 17, 999):
        found = [p.class_id for p in decoder.decode({"out": many}, 0.0, k)]
        assert found == np.argsort(-many.astype(np.float64), kind="stable")[:k].tolist()
    with_nan = np.array([0.2, np.nan, 0.9, np.nan], np.float32)
    assert [p.class_id for p in decoder.decode({"out": with_nan}, 0.0, 3)] == [2, 0]


def test_softmax_can_take_probabilities_as_they_are() -> None:
    decoder = create_decoder("softmax", {"apply_softmax": False})
    found = decoder.decode({"out": np.array([0.2, 0.5, 0.3], np.float32)}, 0.0, 1)
    assert found[0].class_id == 1 and found[0].score == pytest.approx(0.5)
