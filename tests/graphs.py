"""Small ONNX graphs with a decoder's exact I/O signature, built here with onnx.helper: each output is a
fixed tensor (per image, whatever the picture), so a test knows the right answer before it asks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def constant_model(
    path: Path, outputs: dict[str, np.ndarray], size: tuple[int, int], layout: str = "NCHW", dtype: str = "float32"
) -> Path:
    """A model with one image input [N, 3, H, W] (or NHWC) whose every output is ``outputs[name]`` for each
    image of the batch (the batch axis added in front); written to ``path``."""
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
