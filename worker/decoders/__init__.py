"""Output decoders by name. A new output format is one small module and one line here.

ssd         raw SSD heads (box encodings + class logits per anchor): anchors, decoding, NMS here
softmax     class scores: the top-k classes
yolo        YOLOv5/7 and YOLOv8/11 detection heads: NMS here
boxes       detectors that decode and suppress inside the graph (TF OD API, end-to-end, torchvision)
yolo-seg    YOLO instance segmentation: boxes and masks
yolo-pose   YOLO pose: boxes and keypoints
embedding   image encoders: one feature vector per image
"""

from __future__ import annotations

from typing import Any

from .base import Decoder, MaskPatch, Prediction
from .boxes import BoxesDecoder
from .embedding import EmbeddingDecoder
from .softmax import SoftmaxDecoder
from .ssd import SSDDecoder
from .yolo import YoloDecoder
from .yolo_pose import YoloPoseDecoder
from .yolo_seg import YoloSegDecoder

DECODERS: dict[str, type[Decoder]] = {
    "ssd": SSDDecoder,
    "softmax": SoftmaxDecoder,
    "yolo": YoloDecoder,
    "boxes": BoxesDecoder,
    "yolo-seg": YoloSegDecoder,
    "yolo-pose": YoloPoseDecoder,
    "embedding": EmbeddingDecoder,
}
# The task each decoder answers for: a config's task must agree with its decoder.
TASK_OF = {
    "ssd": "detection",
    "softmax": "classification",
    "yolo": "detection",
    "boxes": "detection",
    "yolo-seg": "segmentation",
    "yolo-pose": "pose",
    "embedding": "embedding",
}

__all__ = ["DECODERS", "TASK_OF", "Decoder", "MaskPatch", "Prediction", "create_decoder"]


def create_decoder(name: str, options: dict[str, Any], input_size: tuple[int, int] = (1, 1)) -> Decoder:
    """The decoder called ``name`` for a model whose input is ``input_size`` (width, height) pixels;
    ValueError names the valid choices."""
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(sorted(DECODERS))}")
    return DECODERS[name](options, input_size)
