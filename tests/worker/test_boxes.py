"""Detectors with decoding and NMS inside the graph, and image encoders, on hand-built outputs."""

from __future__ import annotations

import numpy as np
import pytest

from visionpool.worker.decoders import create_decoder

SIZE = (320, 240)


def decode(name: str, outputs: dict[str, np.ndarray], threshold: float = 0.3, top_k: int = 100, classes: int = 0,
           **options: object):  # fmt: skip
    decoder = create_decoder(name, dict(options), SIZE)
    decoder.check({k: np.shape(v) for k, v in outputs.items()}, classes)
    return decoder.decode(outputs, threshold, top_k)


def tf_outputs(count: int = 2) -> dict[str, np.ndarray]:
    """TF Object Detection API outputs: 4 rows, ``count`` of them real, y1 x1 y2 x2 normalised, 1-based classes."""
    return {
        "detection_boxes:0": np.array(
            [[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.4, 0.4], [0, 0, 0, 0]], np.float32
        ),  # fmt: skip
        "detection_scores:0": np.array([0.9, 0.4, 0.8, 0.0], np.float32),
        "detection_classes:0": np.array([17.0, 1.0, 3.0, 0.0], np.float32),
        "num_detections:0": np.array(count, np.float32),
    }


def test_tf_object_detection_outputs_by_their_names() -> None:
    found = decode("boxes", tf_outputs())
    assert [(p.class_id, round(p.score, 2)) for p in found] == [(17, 0.9), (1, 0.4)]
    np.testing.assert_allclose(found[0].box, [0.2, 0.1, 0.6, 0.5], atol=1e-6)  # x1 y1 x2 y2


def test_tf_rows_past_num_detections_are_ignored() -> None:
    assert [p.class_id for p in decode("boxes", tf_outputs(count=3))] == [17, 3, 1]


def test_end_to_end_rows_in_pixels() -> None:
    rows = np.zeros((300, 6), np.float32)
    rows[0] = [32, 24, 160, 120, 0.95, 2]
    rows[1] = [0, 0, 320, 240, 0.5, 0]
    rows[2] = [10, 10, 20, 20, 0.1, 1]
    found = decode("boxes", {"output0": rows}, top_k=1)
    assert [(p.class_id, round(p.score, 2)) for p in found] == [(2, 0.95)]
    np.testing.assert_allclose(found[0].box, [0.1, 0.1, 0.5, 0.5], atol=1e-6)


def test_torchvision_boxes_labels_scores() -> None:
    outputs = {
        "boxes": np.array([[16, 12, 48, 36], [0, 0, 10, 10]], np.float32),
        "labels": np.array([5, 7], np.int64),
        "scores": np.array([0.2, 0.7], np.float32),
    }
    found = decode("boxes", outputs, threshold=0.1)
    assert [p.class_id for p in found] == [7, 5]
    np.testing.assert_allclose(found[1].box, [0.05, 0.05, 0.15, 0.15], atol=1e-6)


def test_options_name_outputs_order_and_units() -> None:
    outputs = {"b": np.array([[0.5, 0.5, 0.2, 0.4]], np.float32), "s": np.array([0.9]), "c": np.array([1])}
    [found] = decode("boxes", outputs, convention="torchvision", boxes_output="b", scores_output="s",
                     classes_output="c", box_order="cxcywh", normalized=True, class_offset=-1)  # fmt: skip
    assert found.class_id == 0
    np.testing.assert_allclose(found.box, [0.4, 0.3, 0.6, 0.7], atol=1e-6)


def test_zero_detections() -> None:
    assert decode("boxes", tf_outputs(count=0)) == []
    assert decode("boxes", {"output0": np.zeros((100, 6), np.float32)}) == []


def test_outputs_that_fit_no_convention_are_refused_naming_them() -> None:
    with pytest.raises(ValueError, match=r"a \[10, 5\].*convention = 'tf', 'rows' or 'torchvision'"):
        decode("boxes", {"a": np.zeros((10, 5)), "b": np.zeros(10)})
    with pytest.raises(ValueError, match=r"output 'output0' has shape \[100, 5\].*\[K, 6\]"):
        decode("boxes", {"output0": np.zeros((100, 5))}, convention="rows")
    with pytest.raises(ValueError, match=r"'detection_scores:0' has shape \[3\].*\[4\] \(one per box"):
        decode("boxes", {**tf_outputs(), "detection_scores:0": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="no output 'boxes' for boxes_output"):
        decode("boxes", {"output0": np.zeros((100, 6))}, convention="torchvision")


# ---- embeddings -------------------------------------------------------------------------------------------


def test_embedding_is_the_vector_l2_normalised_when_asked() -> None:
    decoder = create_decoder("embedding", {"normalize": True}, SIZE)
    decoder.check({"features": (1, 4, 1, 1)}, 0)
    vector = decoder.embed({"features": np.array([3.0, 0, 4.0, 0], np.float32).reshape(1, 4, 1, 1)})
    np.testing.assert_allclose(vector, [0.6, 0, 0.8, 0], atol=1e-6)
    assert decoder.describe() == {"embedding": {"size": 4, "normalized": True}}
    assert decoder.decode({}, 0.5, 5) == []


@pytest.mark.parametrize(
    ("pool", "value", "expected"),
    [
        pytest.param("cls", np.array([[1.0, 2.0], [5.0, 6.0], [7.0, 8.0]]), [1.0, 2.0], id="cls-token"),
        pytest.param("mean", np.array([[1.0, 2.0], [5.0, 6.0], [6.0, 7.0]]), [4.0, 5.0], id="mean-tokens"),
        pytest.param("mean", np.arange(8.0).reshape(2, 2, 2), [1.5, 5.5], id="mean-feature-map"),
    ],
)
def test_embedding_pools_tokens_and_feature_maps(pool, value, expected) -> None:
    decoder = create_decoder("embedding", {"pool": pool}, SIZE)
    decoder.check({"o": value.shape}, 0)
    np.testing.assert_allclose(decoder.embed({"o": value.astype(np.float32)}), expected)


def test_embedding_refuses_tokens_without_a_pool() -> None:
    with pytest.raises(ValueError, match=r"output 'last_hidden_state' has shape \[197, 768\].*set pool"):
        create_decoder("embedding", {}, SIZE).check({"last_hidden_state": (197, 768)}, 0)


def test_ssd_and_softmax_refuse_outputs_that_disagree_with_the_labels() -> None:
    with pytest.raises(ValueError, match=r"output 'logits' has shape \[1001\].*\[1000\] \(one score per line"):
        create_decoder("softmax", {}).check({"logits": (1001,)}, 1000)
    ssd = create_decoder("ssd", {"boxes_output": "b", "scores_output": "s"})
    with pytest.raises(ValueError, match=r"output 's' has shape \[1917, 91\].*\[1917, 90\] for the 90 lines"):
        ssd.check({"b": (1917, 1, 4), "s": (1917, 91)}, 90)
    with pytest.raises(ValueError, match=r"output 'b' has shape \[1000, 1, 4\].*1917 anchors"):
        ssd.check({"b": (1000, 1, 4), "s": (1000, 91)}, 91)
