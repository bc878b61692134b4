"""Small ONNX graphs with a decoder's exact I/O signature, built here with onnx.helper: each output is a
fixed tensor (per image, whatever the picture), so a test knows the right answer before it asks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def constant_model(
    path: Path,
    outputs: dict[str, np.ndarray],
    size: tuple[int, int],
    layout: str = "NCHW",
    dtype: str = "float32",
    metadata: dict[str, str] | None = None,
) -> Path:
    """A model with one image input [N, 3, H, W] (or NHWC) whose every output is ``outputs[name]`` for each
    image of the batch (the batch axis added in front), with ``metadata`` as ONNX metadata_props; written to
    ``path``."""
    width, height = size
    dims = ["N", 3, height, width] if layout == "NCHW" else ["N", height, width, 3]
    elem = TensorProto.FLOAT if dtype == "float32" else TensorProto.UINT8
    nodes = [
        helper.make_node("Cast", ["images"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["as_float"], ["mean"], axes=[1, 2, 3], keepdims=1),  # [N, 1, 1, 1]
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),  # 0 per image: the batch axis, no value
        helper.make_node("Flatten", ["nothing"], ["per_image"], axis=1),  # [N, 1]
    ]
    initializers = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    graph_outputs = []
    for index, (name, value) in enumerate(outputs.items()):
        value = np.asarray(value, np.float32)
        const, shape = f"value{index}", f"shape{index}"
        initializers.append(numpy_helper.from_array(value[None], const))
        initializers.append(numpy_helper.from_array(np.asarray([-1] + [1] * value.ndim, np.int64), shape))
        nodes.append(helper.make_node("Reshape", ["per_image", shape], [f"zeros{index}"]))  # [N, 1, ...]
        nodes.append(helper.make_node("Add", [f"zeros{index}", const], [name]))
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *value.shape]))
    graph = helper.make_graph(
        nodes, "constant", [helper.make_tensor_value_info("images", elem, dims)], graph_outputs, initializers
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def channel_means_model(path: Path, size: tuple[int, int]) -> Path:
    """An 'encoder' whose embedding is the mean of each input channel: [N, 3, H, W] -> [N, 3]."""
    width, height = size
    nodes = [
        helper.make_node("ReduceMean", ["images", "axes"], ["pooled"], keepdims=0),
    ]
    axes = numpy_helper.from_array(np.asarray([2, 3], np.int64), "axes")
    graph = helper.make_graph(
        nodes,
        "means",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, height, width])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 3])],
        [axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_model(
    root: Path,
    name: str,
    model: Path,
    *,
    task: str,
    decoder: str,
    size: tuple[int, int],
    labels: list[str] | None = None,
    options: str = "",
    input_table: str = "",
    output_table: str = "",
    engine: str = "onnxruntime",
) -> Path:
    """A model folder ``root/name`` serving ``model`` (moved into its version folder); its config written."""
    folder = root / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    model.rename(folder / "1" / "model.onnx")
    labels_line = ""
    if labels is not None:
        (folder / "labels.txt").write_text("\n".join(labels) + "\n")
        labels_line = 'labels = "labels.txt"\n'
    (folder / "config.toml").write_text(
        f'task = "{task}"\nengine = "{engine}"\nfiles = ["model.onnx"]\n{labels_line}'
        f"[input]\nwidth = {size[0]}\nheight = {size[1]}\n{input_table}"
        f'[output]\ndecoder = "{decoder}"\nscore_threshold = 0.25\n{output_table}'
        f"[output.options]\n{options}"
        "[batching]\nmax_batch_size = 4\nmax_queue_delay_ms = 1\n"
    )
    return root


# ---- one model per task ----

YOLO_INPUT = 'resize = "letterbox"\nmean = 0.0\nstd = 255.0\n'
LABELS = ["ant", "bee", "cat"]
TASK_MODELS = ("yolo8", "yolo5", "seg", "pose", "tf", "rows", "encoder")


Objects = list[tuple[float, float, float, float, int, float]]


def yolo_head(objects: Objects, classes: int, extra: np.ndarray | None = None, anchors: int = 64) -> np.ndarray:
    """A YOLOv8 head [4 + C + E, A]: each object (cx, cy, w, h, class, score) in input pixels on its own anchor."""
    width = 0 if extra is None else extra.shape[1]
    head = np.zeros((4 + classes + width, anchors), np.float32)
    for anchor, (cx, cy, w, h, cls, score) in enumerate(objects):
        head[0:4, anchor], head[4 + cls, anchor] = (cx, cy, w, h), score
        if extra is not None:
            head[4 + classes :, anchor] = extra[anchor]
    return head


def task_repository(root: Path, engine: str = "onnxruntime") -> Path:
    """A repository with a model of each of TASK_MODELS, each answering fixed outputs whatever the picture
    (what tests/worker/test_tasks.py expects of them)."""
    build = root / "build"
    two_objects = yolo_head([(320, 320, 200, 100, 2, 0.9), (100, 600, 40, 40, 0, 0.5)], 3)
    write_model(root, "yolo8", constant_model(build / "a.onnx", {"output0": two_objects}, (640, 640)), task="detection",
                decoder="yolo", size=(640, 640), labels=LABELS, input_table=YOLO_INPUT, engine=engine)  # fmt: skip
    v5 = np.zeros((64, 8), np.float32)
    v5[0] = [160, 80, 64, 32, 0.8, 0.0, 0.0, 1.0]  # objectness 0.8 x class 2 at 1.0
    write_model(root, "yolo5", constant_model(build / "b.onnx", {"output": v5}, (320, 320)), task="detection",
                decoder="yolo", size=(320, 320), labels=LABELS, engine=engine)  # fmt: skip
    protos = np.zeros((32, 160, 160), np.float32)
    protos[0] = -8.0
    protos[0, 70:90, 60:100] = 8.0  # input pixels x 240..400, y 280..360
    coefficients = np.zeros((64, 32), np.float32)
    coefficients[0, 0] = 1.0
    seg = yolo_head([(320, 320, 200, 200, 1, 0.9)], 3, extra=coefficients)
    write_model(root, "seg", constant_model(build / "c.onnx", {"output0": seg, "output1": protos}, (640, 640)),
                task="segmentation", decoder="yolo-seg", size=(640, 640), labels=LABELS, input_table=YOLO_INPUT,
                engine=engine)  # fmt: skip
    keypoints = np.zeros((64, 51), np.float32)
    keypoints[0] = np.tile([320.0, 200.0, 0.9], 17)
    keypoints[0, 45:51] = [300.0, 440.0, 0.3, 340.0, 440.0, 0.95]  # the ankles
    pose = yolo_head([(320, 320, 160, 320, 0, 0.8)], 1, extra=keypoints)
    write_model(root, "pose", constant_model(build / "d.onnx", {"output0": pose}, (640, 640)), task="pose",
                decoder="yolo-pose", size=(640, 640), labels=["person"], input_table=YOLO_INPUT,
                engine=engine)  # fmt: skip
    tf = {
        "detection_boxes": np.array([[0.25, 0.1, 0.75, 0.5], [0, 0, 0, 0]], np.float32),
        "detection_scores": np.array([0.7, 0.0], np.float32),
        "detection_classes": np.array([1.0, 0.0], np.float32),
        "num_detections": np.array(1.0, np.float32),
    }
    write_model(root, "tf", constant_model(build / "e.onnx", tf, (300, 300), "NHWC", "uint8"), task="detection",
                decoder="boxes", size=(300, 300), labels=LABELS, engine=engine,
                input_table='layout = "NHWC"\ndtype = "uint8"\n')  # fmt: skip
    rows = np.zeros((100, 6), np.float32)
    rows[0] = [64, 64, 192, 128, 0.6, 0]
    write_model(root, "rows", constant_model(build / "f.onnx", {"output0": rows}, (256, 256)), task="detection",
                decoder="boxes", size=(256, 256), labels=LABELS, engine=engine)  # fmt: skip
    write_model(root, "encoder", channel_means_model(build / "g.onnx", (64, 64)), task="embedding",
                decoder="embedding", size=(64, 64), options="normalize = true\n", input_table="std = 255.0\n",
                engine=engine)  # fmt: skip
    return root


# ---- realistic heads, for measuring post-processing with visionpool bench ----


def benchmark_heads(root: Path, objects: int = 20, seed: int = 0) -> Path:
    """Models 'yolo-heads' and 'seg-heads' answering what a YOLOv8 head at 640x640 with 80 classes answers for a
    busy picture: ``objects`` objects, each seen by 20-40 of the 8,400 anchors with boxes a few % apart, every other
    score low; 'seg-heads' adds 32 mask coefficients and prototypes in which each object is an ellipse."""
    rng = np.random.default_rng(seed)
    anchors, classes, size = 8400, 80, 640
    head = np.zeros((4 + classes + 32, anchors), np.float32)
    head[4 : 4 + classes] = rng.random((classes, anchors), np.float32) * 0.02
    head[0:2], head[2:4] = rng.random((2, anchors)) * size, 8 + rng.random((2, anchors)) * 40
    protos = np.full((32, 160, 160), -6.0, np.float32)
    yy, xx = np.mgrid[0:160, 0:160]
    free = rng.permutation(anchors)
    for o in range(objects):
        w, h = rng.uniform(30, 260, 2)
        cx, cy = rng.uniform(w / 2, size - w / 2), rng.uniform(h / 2, size - h / 2)
        seen = free[: int(rng.integers(20, 41))]  # anchors of no other object
        free = free[seen.size :]
        head[0, seen], head[1, seen] = cx + rng.normal(0, w / 100, seen.size), cy + rng.normal(0, h / 100, seen.size)
        head[2, seen], head[3, seen] = w * rng.normal(1, 0.02, seen.size), h * rng.normal(1, 0.02, seen.size)
        head[4 + o * 3 % classes, seen] = rng.uniform(0.3, 0.95, seen.size)
        head[4 + classes :, seen] = 0.0
        head[4 + classes + o % 32, seen] = 1.0
        inside = ((xx * 4 + 2 - cx) / (w / 2)) ** 2 + ((yy * 4 + 2 - cy) / (h / 2)) ** 2 <= 1
        protos[o % 32][inside] = 6.0
    build, letterbox = root / "build", 'resize = "letterbox"\nmean = 0.0\nstd = 255.0\n'
    labels = [f"class{i}" for i in range(classes)]
    yolo = constant_model(build / "yolo.onnx", {"output0": head[: 4 + classes]}, (size, size))
    seg = constant_model(build / "seg.onnx", {"output0": head, "output1": protos}, (size, size))
    common = {"size": (size, size), "labels": labels, "input_table": letterbox}
    write_model(root, "yolo-heads", yolo, task="detection", decoder="yolo", **common)  # type: ignore[arg-type]
    write_model(root, "seg-heads", seg, task="segmentation", decoder="yolo-seg", **common)  # type: ignore[arg-type]
    return root


if __name__ == "__main__":
    import sys

    print(benchmark_heads(Path(sys.argv[1] if len(sys.argv) > 1 else "heads")))
