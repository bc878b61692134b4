"""YOLO decoders on hand-built heads: layouts, thresholds, class-aware NMS, top_k, masks and keypoints."""

from __future__ import annotations

import numpy as np
import pytest

from visionpool.worker.decoders import create_decoder

SIZE = (640, 640)


def v8_head(objects: list[tuple[float, float, float, float, int, float]], classes: int = 3, anchors: int = 8,
            extra: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """[4 + C (+E), A]: each object (cx, cy, w, h, class, score) on its own anchor; the rest empty."""
    width = 0 if extra is None else extra.shape[1]
    head = np.zeros((4 + classes + width, anchors), np.float32)
    for anchor, (cx, cy, w, h, cls, score) in enumerate(objects):
        head[0:4, anchor] = cx, cy, w, h
        head[4 + cls, anchor] = score
        if extra is not None:
            head[4 + classes :, anchor] = extra[anchor]
    return head


def v5_head(objects: list[tuple[float, float, float, float, float, int, float]], classes: int = 3,
            anchors: int = 8) -> np.ndarray:  # fmt: skip
    """[A, 5 + C]: each object (cx, cy, w, h, objectness, class, class score)."""
    head = np.zeros((anchors, 5 + classes), np.float32)
    for anchor, (cx, cy, w, h, obj, cls, score) in enumerate(objects):
        head[anchor, 0:5] = cx, cy, w, h, obj
        head[anchor, 5 + cls] = score
    return head


def decode(name: str, outputs: dict[str, np.ndarray], threshold: float = 0.25, top_k: int = 100, classes: int = 0,
           **options: object):  # fmt: skip
    decoder = create_decoder(name, dict(options), SIZE)
    decoder.check({k: v.shape for k, v in outputs.items()}, classes)
    return decoder.decode(outputs, threshold, top_k)


def test_v8_two_overlapping_boxes_of_one_class_keep_the_better() -> None:
    head = v8_head([(100, 100, 80, 80, 0, 0.9), (104, 102, 80, 80, 0, 0.8), (300, 300, 50, 50, 1, 0.6)])
    found = decode("yolo", {"output0": head})
    assert [(p.class_id, round(p.score, 2)) for p in found] == [(0, 0.9), (1, 0.6)]
    np.testing.assert_allclose(found[0].box, np.array([60, 60, 140, 140]) / 640, atol=1e-6)


def test_v8_overlapping_boxes_of_two_classes_are_both_kept_unless_agnostic() -> None:
    head = v8_head([(100, 100, 80, 80, 0, 0.9), (100, 100, 80, 80, 2, 0.7)])
    assert [p.class_id for p in decode("yolo", {"o": head})] == [0, 2]
    assert [p.class_id for p in decode("yolo", {"o": head}, agnostic=True)] == [0]


def test_v8_box_at_the_image_edge_and_threshold_and_top_k() -> None:
    head = v8_head([(620, 10, 60, 40, 1, 0.5), (300, 300, 20, 20, 0, 0.2), (50, 500, 20, 20, 2, 0.4)])
    found = decode("yolo", {"o": head})
    assert [p.class_id for p in found] == [1, 2]  # 0.2 is under the 0.25 threshold
    np.testing.assert_allclose(found[0].box, np.array([590, -10, 650, 30]) / 640, atol=1e-6)  # clipped later
    assert len(decode("yolo", {"o": head}, top_k=1)) == 1


def test_more_candidates_than_top_k_keeps_the_best() -> None:
    objects = [(20 + 70 * i, 300, 30, 30, i % 3, 0.3 + 0.05 * i) for i in range(8)]
    found = decode("yolo", {"o": v8_head(objects)}, top_k=3)
    assert [round(p.score, 2) for p in found] == [0.65, 0.6, 0.55]


def test_zero_detections() -> None:
    assert decode("yolo", {"o": v8_head([])}) == []
    assert decode("yolo", {"o": v5_head([])}) == []


def test_v5_scores_are_objectness_times_class() -> None:
    head = v5_head([(100, 100, 80, 80, 0.9, 1, 0.5), (400, 400, 40, 40, 0.3, 2, 0.99), (200, 200, 10, 10, 0.8, 0, 0.8)])
    found = decode("yolo", {"o": head})
    assert [(p.class_id, round(p.score, 3)) for p in found] == [(0, 0.64), (1, 0.45), (2, 0.297)]


@pytest.mark.parametrize(
    ("shape", "classes", "version", "expected"),
    [
        pytest.param((84, 8400), 80, "v8", (True, 80), id="v8-with-labels"),
        pytest.param((84, 8400), 0, "v8", (True, 80), id="v8-no-labels"),
        pytest.param((8400, 84), 80, "v8", (False, 80), id="v8-transposed-with-labels"),
        pytest.param((25200, 85), 80, "v5", (False, 80), id="v5-with-labels"),
        pytest.param((25200, 85), 0, "v5", (False, 80), id="v5-no-labels"),
    ],
)
def test_layouts_are_told_apart_by_shape(shape, classes, version, expected) -> None:
    decoder = create_decoder("yolo", {}, SIZE)
    decoder.classes = classes
    layout = decoder.layout(shape, 0)
    assert (layout.version, (layout.channels_first, layout.classes)) == (version, expected)


def test_a_forced_version_wins() -> None:
    decoder = create_decoder("yolo", {"version": "v5"}, SIZE)
    layout = decoder.layout((8400, 84), 0)
    assert (layout.version, layout.classes) == ("v5", 79)


def test_normalised_boxes() -> None:
    head = v8_head([(0.5, 0.5, 0.2, 0.1, 0, 0.9)])
    [found] = decode("yolo", {"o": head}, normalized=True)
    np.testing.assert_allclose(found.box, [0.4, 0.45, 0.6, 0.55], atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "classes", "words"),
    [
        pytest.param((84, 8400), 3, "[7, A] (YOLOv8/11) or [A, 8] (YOLOv5/7) for the 3 classes", id="labels-disagree"),
        pytest.param((84, 8400, 1), 0, "[4+C, A] (YOLOv8/11) or [A, 5+C] (YOLOv5/7)", id="three-axes"),
    ],
)
def test_a_head_that_does_not_fit_is_refused_naming_output_and_shapes(shape, classes, words) -> None:
    decoder = create_decoder("yolo", {}, SIZE)
    with pytest.raises(ValueError) as refused:
        decoder.check({"output0": shape}, classes)
    assert "output 'output0' has shape " + str(list(shape)) in str(refused.value)
    assert words in str(refused.value)


def test_a_wrong_output_name_is_refused() -> None:
    decoder = create_decoder("yolo", {"output": "detections"}, SIZE)
    with pytest.raises(KeyError, match="no output 'detections' .*output0"):
        decoder.check({"output0": (84, 8400)}, 80)


def test_unknown_options_and_versions_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown option"):
        create_decoder("yolo", {"nms": 0.5})
    with pytest.raises(ValueError, match="'auto', 'v8', 'v5'"):
        create_decoder("yolo", {"version": "v9"})


# ---- segmentation -------------------------------------------------------------------------------------------


def seg_outputs(boxes: list[tuple[float, float, float, float, int, float]], coefficients: np.ndarray,
                protos: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
    padded = np.zeros((32, coefficients.shape[1]), np.float32)  # 32 anchors: more anchors than channels, as real
    padded[: len(coefficients)] = coefficients
    return {"output0": v8_head(boxes, anchors=32, extra=padded), "output1": protos}


def rectangle_protos(x1: int, y1: int, x2: int, y2: int, count: int = 4) -> np.ndarray:
    """Prototype 0 is +8 over input pixels x1..x2, y1..y2 (in 160x160 cells of 4 pixels), -8 elsewhere."""
    protos = np.zeros((count, 160, 160), np.float32)
    protos[0] = -8.0
    protos[0, y1 // 4 : y2 // 4, x1 // 4 : x2 // 4] = 8.0
    return protos


def test_seg_mask_is_the_prototype_under_the_box_cropped_to_it() -> None:
    protos = rectangle_protos(200, 200, 320, 280)  # an object 120x80 input pixels
    coefficients = np.zeros((8, 4), np.float32)
    coefficients[0, 0] = 1.0
    outputs = seg_outputs([(260, 240, 200, 200, 0, 0.9)], coefficients, protos)  # box 160..360 x 140..340
    [found] = decode("yolo-seg", outputs)
    mask = found.mask
    assert (mask.left, mask.top, mask.bits.shape) == (160, 140, (200, 200))
    ys, xs = np.nonzero(mask.bits)
    # bilinear upsampling moves the edge by up to half a cell (2 pixels), as Ultralytics' does
    assert abs(xs.min() + 160 - 200) <= 2 and abs(xs.max() + 160 - 319) <= 2
    assert abs(ys.min() + 140 - 200) <= 2 and abs(ys.max() + 140 - 279) <= 2


def test_seg_mask_is_cropped_to_a_box_smaller_than_the_blob() -> None:
    protos = rectangle_protos(100, 100, 400, 400)
    coefficients = np.zeros((8, 4), np.float32)
    coefficients[0, 0] = 1.0
    [found] = decode("yolo-seg", seg_outputs([(250, 250, 100, 100, 1, 0.8)], coefficients, protos))
    assert found.mask.bits.shape == (100, 100) and found.mask.bits.all()


def test_seg_protos_output_is_found_by_its_axes_and_its_size_checked() -> None:
    decoder = create_decoder("yolo-seg", {}, SIZE)
    decoder.check({"protos": (32, 160, 160), "det": (116, 8400)}, 80)
    with pytest.raises(ValueError, match=r"output 'det' has shape \[117, 8400\].*\[116, A\].*32 mask coefficients"):
        decoder.check({"protos": (32, 160, 160), "det": (117, 8400)}, 80)
    with pytest.raises(ValueError, match="name them with options output and masks_output"):
        decoder.check({"a": (116, 8400), "b": (116, 8400)}, 80)


# ---- pose ---------------------------------------------------------------------------------------------------


def test_pose_keypoints_come_with_their_person() -> None:
    keypoints = np.zeros((8, 17 * 3), np.float32)
    keypoints[0] = np.tile([320.0, 160.0, 0.9], 17)
    keypoints[0, 3:6] = [330.0, 150.0, 0.2]  # left eye, hardly visible
    head = v8_head([(320, 320, 200, 400, 0, 0.88)], classes=1, extra=keypoints)
    [person] = decode("yolo-pose", {"output0": head}, classes=1)
    assert person.keypoints.shape == (17, 3)
    np.testing.assert_allclose(person.keypoints[0], [0.5, 0.25, 0.9], atol=1e-6)
    np.testing.assert_allclose(person.keypoints[1], [330 / 640, 150 / 640, 0.2], atol=1e-6)


def test_pose_describes_its_skeleton_and_refuses_a_wrong_keypoint_count() -> None:
    decoder = create_decoder("yolo-pose", {}, SIZE)
    assert decoder.describe()["keypoints"]["names"][0] == "nose"
    assert [15, 13] in [list(pair) for pair in decoder.describe()["keypoints"]["skeleton"]]
    with pytest.raises(ValueError, match=r"\[57, 8400\].*\[56, A\].*17 keypoints of 3 values"):
        decoder.check({"o": (57, 8400)}, 1)
    with pytest.raises(ValueError, match="keypoint_names has 2 names for 3 keypoints"):
        create_decoder("yolo-pose", {"keypoints": 3, "keypoint_names": ["a", "b"]}, SIZE)
