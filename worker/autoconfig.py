"""A model's config worked out from what its file says, each key with where it came from.

Usage:
    draft = draft_config(read_facts(path), task=None, labels=None, size=None)
    draft.sections["input"]["width"]      # Key(640, "from ONNX metadata 'imgsz'")

Nothing here runs the model: keys the file cannot settle are marked guessed, and where two answers are as
plausible (or none fits) ``Undecided`` says which flag or config key settles it. The importer then tries
the normalisations a float input may want on real photos (``NORMALISATIONS``) and keeps the one the model
is surest of.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .model_facts import ModelFacts, Tensor
from .repository import BUILTIN_REPOSITORY

LABEL_SETS = Path(__file__).parent / "labels"
COCO91 = BUILTIN_REPOSITORY / "coco-ssd" / "labels.txt"
ULTRALYTICS_TASKS = {"detect": "detection", "segment": "segmentation", "pose": "pose", "classify": "classification"}
DECODER_OF = {"segmentation": "yolo-seg", "pose": "yolo-pose"}
# (mean, std) on 0..255 pixels that float inputs commonly take, tried in this order
NORMALISATIONS = {
    "0..1 (pixels / 255)": (0.0, 255.0),
    "-1..1 (pixels / 127.5 - 1)": (127.5, 127.5),
    "ImageNet mean and std": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    "0..255 (raw pixels)": (0.0, 1.0),
}
EMBEDDING_NAMES = re.compile(r"embed|feature|pool|vector|hidden|descriptor", re.IGNORECASE)
PROBABILITY_NAMES = re.compile(r"prob|softmax", re.IGNORECASE)  # scores already summing to 1
SCORE_NAMES = re.compile(r"logit|prob|softmax|class|score|predict", re.IGNORECASE)
ANCHORS = 1000  # a YOLO head has thousands of anchors; an end-to-end export a few hundred rows


class Undecided(ValueError):
    """The file does not settle a key; the message says which flag or config key does."""


@dataclass(frozen=True)
class Key:
    """One config value and where it came from (``guessed``: no statement in the file backs it)."""

    value: Any
    source: str
    guessed: bool = False


@dataclass
class Draft:
    """The config to write, section by section ("" is the top level, "output.options" the decoder's)."""

    sections: dict[str, dict[str, Key]] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    normalise: bool = False  # a float input whose normalisation the file does not state: the importer tries them

    def set(self, section: str, key: str, value: Any, source: str, guessed: bool = False) -> None:
        self.sections.setdefault(section, {})[key] = Key(value, source, guessed)

    def get(self, section: str, key: str, default: Any = None) -> Any:
        found = self.sections.get(section, {}).get(key)
        return default if found is None else found.value

    def guessed(self) -> list[str]:
        return [f"{s + '.' if s else ''}{k}" for s, keys in self.sections.items() for k, v in keys.items() if v.guessed]


def draft_config(
    facts: ModelFacts, task: str | None = None, labels: list[str] | None = None, size: tuple[int, int] | None = None
) -> Draft:
    """Every key of the model's config that the file (and the flags) settle."""
    draft = Draft()
    image = _image_input(facts)
    draft.set("", "engine", "openvino", "the CPU engine, which reads every format (onnxruntime serves it on a GPU)")
    _input(draft, facts, image, size)
    outputs = _per_image(facts, image)
    _labels(draft, facts, labels)
    _task(draft, facts, outputs, task)
    origin = draft.sections[""].pop("labels_from", None)
    if draft.labels and origin is not None:
        draft.set("", "labels", "labels.txt", origin.source, origin.guessed)
    _batching(draft, image)
    return draft


def _image_input(facts: ModelFacts) -> Tensor:
    for tensor in facts.inputs:
        if len(tensor.shape) == 4 and 3 in (tensor.shape[1], tensor.shape[3]):
            return tensor
    listed = ", ".join(t.describe() for t in facts.inputs)
    raise Undecided(f"no image input (four axes, three channels first or last) among the model's inputs: {listed}")


def _input(draft: Draft, facts: ModelFacts, image: Tensor, size: tuple[int, int] | None) -> None:
    nchw = image.shape[1] == 3 and image.shape[3] != 3
    draft.set("input", "name", image.name, f"the model's image input: {image.describe()}")
    draft.set("input", "layout", "NCHW" if nchw else "NHWC", f"the input's shape {_dims(image.shape)}")
    height, width = image.shape[2:4] if nchw else image.shape[1:3]
    imgsz = _literal(facts.metadata.get("imgsz"))
    if size is not None:
        (width, height), source = size, "the --size flag"
    elif height and width:
        source = f"the input's shape {_dims(image.shape)}"
    elif isinstance(imgsz, list) and len(imgsz) == 2:
        (height, width), source = imgsz, "ONNX metadata 'imgsz'"
    elif facts.resize_to:
        (width, height), source = facts.resize_to, "the graph's own resize of its input (any size goes in)"
    else:
        raise Undecided(
            f"the input {image.describe()} has an open size and the file does not say which: pass --size WxH"
        )
    draft.set("input", "width", int(width), source)
    draft.set("input", "height", int(height), source)
    if image.dtype == "uint8":
        draft.set("input", "dtype", "uint8", "the input's element type u8: the model scales pixels itself")
        return
    draft.set("input", "dtype", "float32", f"the input's element type {image.dtype}")
    if "imgsz" in facts.metadata and "stride" in facts.metadata:
        draft.set("input", "mean", 0.0, "Ultralytics export (ONNX metadata 'imgsz', 'stride'): pixels / 255")
        draft.set("input", "std", 255.0, "Ultralytics export (ONNX metadata 'imgsz', 'stride'): pixels / 255")
        draft.set("input", "resize", "letterbox", "Ultralytics export: YOLO's letterbox")
    else:
        draft.normalise = True


def _per_image(facts: ModelFacts, image: Tensor) -> list[Tensor]:
    """The outputs' shapes for one image: the batch axis dropped when the input has one."""
    batched = image.shape[0] in (None, 1)
    return [Tensor(t.name, t.shape[1:] if batched and t.shape else t.shape, t.dtype) for t in facts.outputs]


def _labels(draft: Draft, facts: ModelFacts, given: list[str] | None) -> None:
    names = _literal(facts.metadata.get("names"))
    if given is not None:
        draft.labels, source = given, "the --labels flag"
    elif isinstance(names, dict) and names:
        draft.labels = [str(names.get(i, names.get(str(i), i))) for i in range(max(int(k) for k in names) + 1)]
        source = "ONNX metadata 'names'"
    elif facts.labels:
        draft.labels, source = facts.labels, facts.labels_source
    else:
        return
    draft.set("", "labels_from", None, f"{len(draft.labels)} classes from {source}")


def _known_labels(draft: Draft, classes: int, why: str) -> None:
    """Classes the file does not name, from a well-known set of that size (a guess the importer reports)."""
    if draft.labels:
        return
    imagenet = _read(LABEL_SETS / "imagenet.txt")
    sets = {
        91: ("COCO with background (TF Object Detection API ids)", _read(COCO91)),
        80: ("COCO's 80 classes", [n for n in _read(COCO91)[1:] if n != "n/a"]),
        1000: ("ImageNet's 1000 classes", imagenet),
        1001: ("ImageNet's 1000 classes after a background class", ["background", *imagenet]),
    }
    if classes in sets:
        what, names = sets[classes]
        draft.labels = names
        draft.set("", "labels_from", None, f"guessed: {what}, for {classes} {why}", guessed=True)


def _task(draft: Draft, facts: ModelFacts, outputs: list[Tensor], task: str | None) -> None:
    said = ULTRALYTICS_TASKS.get(facts.metadata.get("task", ""))
    names = {t.name.split(":")[0].split("/")[-1]: t for t in outputs}
    shape_words = ", ".join(f"{t.name} {_dims(t.shape)}" for t in outputs)
    if said and task in (None, said):
        _ultralytics(draft, facts, outputs, said)
    elif "detection_boxes" in names and "detection_scores" in names and task in (None, "detection"):
        _decoder(draft, "detection", "boxes", f"outputs {shape_words} (TF Object Detection API, NMS in the graph)")
        draft.set("output.options", "convention", "tf", "outputs named detection_boxes, detection_scores, ...")
        _known_labels(draft, 91, "class ids of the TF Object Detection API")
    elif {"boxes", "scores", "labels"} <= set(names) and task in (None, "detection"):
        _decoder(draft, "detection", "boxes", f"outputs {shape_words} (torchvision-style, NMS in the graph)")
        draft.set("output.options", "convention", "torchvision", "outputs named boxes, labels, scores")
    else:
        _by_shape(draft, outputs, task, shape_words)
    if draft.get("output", "decoder") in ("softmax", "embedding") and draft.get("input", "resize") is None:
        draft.set("input", "resize", "crop", "guessed: image models are evaluated on a centre crop", guessed=True)
        short = round(max(draft.get("input", "width"), draft.get("input", "height")) / 0.875)
        draft.set("input", "resize_shorter", short, "guessed: the short side at size / 0.875, as ImageNet models", True)


def _ultralytics(draft: Draft, facts: ModelFacts, outputs: list[Tensor], task: str) -> None:
    source = f"ONNX metadata task '{facts.metadata['task']}' (an Ultralytics export)"
    if task == "classification":
        _decoder(draft, task, "softmax", source)
        draft.set("output.options", "apply_softmax", False, "Ultralytics classifiers end in a softmax")
        return
    _decoder(draft, task, DECODER_OF.get(task, "yolo"), source, threshold=0.25)
    draft.set("output.options", "nms_iou", 0.7, "Ultralytics' default")
    if task == "pose":
        shape = _literal(facts.metadata.get("kpt_shape")) or [17, 3]
        draft.set("output.options", "keypoints", int(shape[0]), "ONNX metadata 'kpt_shape'")
        draft.set("output.options", "keypoint_dims", int(shape[1]), "ONNX metadata 'kpt_shape'")
    if len(outputs) > 1:
        head = next(t for t in outputs if len(t.shape) == 2)
        draft.set("output.options", "output", head.name, f"the detection head {_dims(head.shape)}")
    if task == "detection" and not draft.labels:
        head = next(t for t in outputs if len(t.shape) == 2)
        _known_labels(draft, min(d or 0 for d in head.shape) - 4, "classes in the head")


def _by_shape(draft: Draft, outputs: list[Tensor], task: str | None, words: str) -> None:
    ranks = sorted(len(t.shape) for t in outputs)
    first = outputs[0]
    source = f"guessed from output shapes {words}"
    if len(outputs) == 2 and _ssd_pair(outputs) and task in (None, "detection"):
        boxes, scores = _ssd_pair(outputs)  # type: ignore[misc]
        _decoder(draft, "detection", "ssd", source + " (box encodings and class logits per anchor)", guessed=True)
        draft.set("output.options", "boxes_output", boxes.name, f"box encodings {_dims(boxes.shape)}")
        draft.set("output.options", "scores_output", scores.name, f"class logits {_dims(scores.shape)}")
        _known_labels(draft, scores.shape[-1] or 0, "class columns")
    elif len(outputs) == 2 and ranks == [2, 3] and _yolo_seg(outputs) and task in (None, "segmentation"):
        head = next(t for t in outputs if len(t.shape) == 2)
        _decoder(draft, "segmentation", "yolo-seg", source + " (a YOLO head and mask prototypes)", True, 0.25)
        draft.set("output.options", "output", head.name, "the detection head (two axes)")
    elif len(outputs) == 1 and len(first.shape) == 2 and first.shape[-1] == 6 and (first.shape[0] or 0) < ANCHORS:
        _decoder(draft, "detection", "boxes", source + " (rows of x1, y1, x2, y2, score, class)", guessed=True)
        draft.set("output.options", "convention", "rows", "one output of rows of six")
    elif len(outputs) == 1 and len(first.shape) == 2 and max(d or 0 for d in first.shape) >= ANCHORS:
        kind = task if task in ("detection", "pose") else "detection"
        _decoder(draft, kind, "yolo" if kind == "detection" else "yolo-pose", source + " (a YOLO head)", True, 0.25)
        if kind == "detection":
            channels = min(d or 0 for d in first.shape)
            _known_labels(draft, channels - (4 if first.shape[0] == channels else 5), "classes in the head")
    elif _vector(first) and len(outputs) == 1:
        _vector_task(draft, first, task, words)
    else:
        raise Undecided(f"cannot tell what the outputs {words} are: pass --task (detection, segmentation, pose, "
                        "classification, embedding), or write the config's [output] by hand")  # fmt: skip


def _vector_task(draft: Draft, output: Tensor, task: str | None, words: str) -> None:
    classes = [d for d in output.shape if d != 1][0] if any(d != 1 for d in output.shape) else 1
    is_scores = classes in (1000, 1001) or len(draft.labels) == classes or SCORE_NAMES.search(output.name)
    is_embedding = bool(EMBEDDING_NAMES.search(output.name))
    if task == "embedding" or (task is None and is_embedding and not is_scores):
        _decoder(draft, "embedding", "embedding", f"a vector per image {words}", guessed=task is None)
        draft.labels = []
        return
    if task == "classification" or (task is None and is_scores and not is_embedding):
        why = "the --task flag" if task else f"guessed: {classes} scores per image {words}"
        _decoder(draft, "classification", "softmax", why, guessed=task is None, threshold=0.0, top_k=5)
        _known_labels(draft, classes or 0, "scores")
        if output.dtype == "uint8":
            draft.set("output.options", "apply_softmax", False, "a quantised (u8) output: probabilities already")
        elif PROBABILITY_NAMES.search(output.name):
            draft.set("output.options", "apply_softmax", False, f"guessed: an output named {output.name}", True)
        return
    raise Undecided(
        f"one vector per image ({words}) is a classifier's scores or an embedding: pass --task classification "
        "(with --labels FILE) or --task embedding"
    )


def _decoder(draft: Draft, task: str, decoder: str, source: str, guessed: bool = False, threshold: float = 0.5,
             top_k: int = 100) -> None:  # fmt: skip
    draft.set("", "task", task, source, guessed)
    draft.set("output", "decoder", decoder, source, guessed)
    draft.set("output", "score_threshold", threshold, f"the usual for a {decoder} model")
    draft.set("output", "top_k", top_k, f"the usual for a {decoder} model")


def _ssd_pair(outputs: list[Tensor]) -> tuple[Tensor, Tensor] | None:
    """(box encodings [A, 1, 4] or [A, 4], class logits [A, C]) when the two outputs are that."""
    for boxes, scores in (outputs, outputs[::-1]):
        if boxes.shape[-1] == 4 and len(scores.shape) == 2 and boxes.shape[0] == scores.shape[0] and scores.shape[0]:
            return boxes, scores
    return None


def _yolo_seg(outputs: list[Tensor]) -> bool:
    """A head with thousands of anchors beside prototypes [M, H, W] whose M the head's channels can hold."""
    head = next(t for t in outputs if len(t.shape) == 2)
    protos = next(t for t in outputs if len(t.shape) == 3)
    channels = min(d or 0 for d in head.shape)
    return max(d or 0 for d in head.shape) >= ANCHORS and 0 < (protos.shape[0] or 0) < channels - 4


def _vector(tensor: Tensor) -> bool:
    return sum(1 for d in tensor.shape if d != 1) == 1


def _batching(draft: Draft, image: Tensor) -> None:
    if image.shape[0] is None:
        draft.set("batching", "max_batch_size", 8, "the input's open batch axis")
    else:
        draft.set("batching", "max_batch_size", int(image.shape[0]), f"the input's fixed batch of {image.shape[0]}")


def _literal(text: str | None) -> Any:
    try:
        return ast.literal_eval(text) if text else None
    except (ValueError, SyntaxError):
        return None


def _read(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]


def _dims(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
