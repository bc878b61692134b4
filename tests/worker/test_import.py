"""visionpool import on small ONNX graphs with each family's exact signature (tests/graphs.py): the config
worked out from the file, each key's source, the photos it was tried on, and the refusals that write nothing."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
from graphs import channel_means_model, constant_model, yolo_head

from visionpool.worker.importer import ImportFailed, check_model, import_model

NAMES = "{0: 'ant', 1: 'bee', 2: 'cat'}"
ULTRALYTICS = {"names": NAMES, "imgsz": "[640, 640]", "stride": "32", "task": "detect", "author": "Ultralytics"}


def config(folder: Path) -> dict:
    return tomllib.loads((folder / "config.toml").read_text())


def comments(folder: Path) -> dict[str, str]:
    """Each written key's comment: where its value came from."""
    found = {}
    for line in (folder / "config.toml").read_text().splitlines():
        if " = " in line and "  # " in line:
            found[line.split(" = ")[0]] = line.split("  # ", 1)[1]
    return found


def yolov8(path: Path, metadata: dict[str, str] | None = ULTRALYTICS, size: tuple[int, int] = (640, 640)) -> Path:
    head = yolo_head([(320, 320, 200, 100, 2, 0.9)], 3, anchors=1200)
    return constant_model(path, {"output0": head}, size, metadata=metadata)


def test_an_ultralytics_yolov8_export_needs_no_flag(tmp_path: Path) -> None:
    report = import_model(yolov8(tmp_path / "yolov8n.onnx"), tmp_path / "models")
    folder = tmp_path / "models" / "yolov8n"
    written = config(folder)
    assert (written["task"], written["output"]["decoder"], written["input"]["resize"]) == (
        "detection",
        "yolo",
        "letterbox",
    )
    assert (written["input"]["width"], written["input"]["mean"], written["input"]["std"]) == (640, 0.0, 255.0)
    assert (folder / "labels.txt").read_text().split() == ["ant", "bee", "cat"]
    assert (folder / "1" / "yolov8n.onnx").is_file()
    said = comments(folder)
    assert said["labels"] == "3 classes from ONNX metadata 'names'"
    assert said["task"].startswith("ONNX metadata task 'detect'")
    assert said["mean"].startswith("Ultralytics export")
    assert report.draft.guessed() == []
    photo, found, stages = report.answers[0]
    assert found[0]["label"] == "cat" and {"decode", "inference", "postprocess"} <= set(stages)
    assert any("cat 0.90" in line for line in report.lines())


def test_a_yolov5_head_without_metadata_is_told_by_its_shape(tmp_path: Path) -> None:
    head = np.zeros((1200, 8), np.float32)
    head[0] = [320, 320, 100, 100, 0.9, 0, 0, 1.0]
    model = constant_model(tmp_path / "v5.onnx", {"output": head}, (640, 640))
    report = import_model(model, tmp_path / "models", labels=_labels(tmp_path, ["ant", "bee", "cat"]))
    written = config(tmp_path / "models" / "v5")
    assert written["output"]["decoder"] == "yolo" and "yolo" in comments(tmp_path / "models" / "v5")["task"].lower()
    assert {"task", "output.decoder", "input.mean", "input.std"} <= set(report.draft.guessed())
    assert report.answers[0][1][0]["label"] == "cat"


def test_a_detector_with_nms_inside(tmp_path: Path) -> None:
    rows = np.zeros((300, 6), np.float32)
    rows[0] = [100, 100, 300, 200, 0.8, 1]
    model = constant_model(tmp_path / "e2e.onnx", {"output0": rows}, (640, 640))
    import_model(model, tmp_path / "models", labels=_labels(tmp_path, ["ant", "bee", "cat"]))
    written = config(tmp_path / "models" / "e2e")
    assert (written["output"]["decoder"], written["output"]["options"]["convention"]) == ("boxes", "rows")


def test_segmentation_and_pose_exports(tmp_path: Path) -> None:
    protos = np.full((32, 160, 160), -8.0, np.float32)
    seg = yolo_head([(320, 320, 200, 200, 0, 0.9)], 3, extra=np.zeros((1200, 32), np.float32), anchors=1200)
    meta = {**ULTRALYTICS, "task": "segment"}
    import_model(constant_model(tmp_path / "seg.onnx", {"output0": seg, "output1": protos}, (640, 640), metadata=meta),
                 tmp_path / "models")  # fmt: skip
    written = config(tmp_path / "models" / "seg")
    assert (written["task"], written["output"]["options"]["output"]) == ("segmentation", "output0")
    pose = yolo_head([(320, 320, 100, 300, 0, 0.9)], 1, extra=np.zeros((1200, 51), np.float32), anchors=1200)
    meta = {**ULTRALYTICS, "task": "pose", "names": "{0: 'person'}", "kpt_shape": "[17, 3]"}
    import_model(
        constant_model(tmp_path / "pose.onnx", {"output0": pose}, (640, 640), metadata=meta), tmp_path / "models"
    )
    written = config(tmp_path / "models" / "pose")
    assert (written["output"]["decoder"], written["output"]["options"]["keypoints"]) == ("yolo-pose", 17)


def test_an_embedding_model(tmp_path: Path) -> None:
    report = import_model(channel_means_model(tmp_path / "encoder.onnx", (64, 64)), tmp_path / "models")
    written = config(tmp_path / "models" / "encoder")
    assert (written["task"], written["output"]["decoder"]) == ("embedding", "embedding")
    assert written["input"]["mean"] == [123.675, 116.28, 103.53]  # guessed: what most backbones expect
    assert "labels" not in written and report.answers[0][1] == [{"embedding": 3}]


@pytest.mark.parametrize(
    ("outputs", "flags", "words"),
    [
        pytest.param({"out": np.zeros(7, np.float32)}, {}, "--task classification (with --labels FILE) or --task "
                     "embedding", id="scores-or-embedding"),
        pytest.param({"a": np.zeros((5, 5, 5), np.float32)}, {}, "pass --task", id="unknown-outputs"),
    ],
)  # fmt: skip
def test_when_it_cannot_decide_it_writes_nothing_and_names_the_flag(tmp_path: Path, outputs, flags, words) -> None:
    model = constant_model(tmp_path / "m.onnx", outputs, (64, 64))
    with pytest.raises(ImportFailed, match=words.replace("(", r"\(").replace(")", r"\)")):
        import_model(model, tmp_path / "models", **flags)
    assert not (tmp_path / "models").exists()  # not even the repository folder


def test_a_flag_settles_what_the_file_leaves_open(tmp_path: Path) -> None:
    model = constant_model(tmp_path / "m.onnx", {"out": np.zeros(7, np.float32)}, (64, 64))
    import_model(model, tmp_path / "models", task="embedding")
    assert config(tmp_path / "models" / "m")["task"] == "embedding"


def test_an_open_input_size_needs_metadata_or_size(tmp_path: Path) -> None:
    from onnx import load, save

    model = yolov8(tmp_path / "open.onnx", metadata={})
    graph = load(str(model))
    for dim in graph.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "size"
    save(graph, str(model))
    with pytest.raises(ImportFailed, match=r"has an open size .*pass --size WxH"):
        import_model(model, tmp_path / "models")
    import_model(model, tmp_path / "models", size=(640, 640), labels=_labels(tmp_path, ["ant", "bee", "cat"]))
    assert comments(tmp_path / "models" / "open")["width"] == "the --size flag"


def test_an_existing_folder_is_replaced_only_with_force(tmp_path: Path) -> None:
    model = yolov8(tmp_path / "yolo.onnx")
    import_model(model, tmp_path / "models")
    (tmp_path / "models" / "yolo" / "config.toml").write_text("# mine\n")
    with pytest.raises(ImportFailed, match="exists: pass --force"):
        import_model(model, tmp_path / "models")
    assert (tmp_path / "models" / "yolo" / "config.toml").read_text() == "# mine\n"
    import_model(model, tmp_path / "models", force=True)
    assert config(tmp_path / "models" / "yolo")["output"]["decoder"] == "yolo"


def test_check_says_what_disagrees(tmp_path: Path) -> None:
    import_model(yolov8(tmp_path / "yolo.onnx"), tmp_path / "models")
    folder = tmp_path / "models" / "yolo"
    assert check_model(folder) == []
    (folder / "labels.txt").write_text("ant\nbee\n")
    [problem] = check_model(folder)
    assert "output 'output0' has shape [7, 1200] (per image), expected [6, A] (YOLOv8/11)" in problem
    assert "for the 2 classes of the labels file" in problem
    text = (folder / "config.toml").read_text()
    (folder / "config.toml").write_text(text.replace("width = 640", "width = 320").replace('"output0"', '"out"'))
    problems = check_model(folder)
    assert "input.width is 320, the model's input images [?, 3, 640, 640] float32 says 640" in problems


def _labels(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(names) + "\n")
    return path
