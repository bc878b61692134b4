"""OpenCV DNN: reads a TensorFlow frozen graph (.pb + .pbtxt) as it is, no conversion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .base import Engine


class OpenCVEngine(Engine):
    """cv2.dnn over a TF frozen graph; options: threads, backend ("opencv" or "cuda")."""

    def __init__(self, files: tuple[Path, ...], input_name: str | None, options: dict[str, Any]) -> None:
        options = dict(options)
        if len(files) != 2:
            raise ValueError("the opencv engine takes two files: the frozen graph (.pb) and its text graph (.pbtxt)")
        cv2.setNumThreads(int(options.pop("threads", cv2.getNumThreads())))
        backend = options.pop("backend", "opencv")
        if options:
            raise ValueError(f"unknown engine_options {', '.join(sorted(options))} for opencv")
        self.net = cv2.dnn.readNetFromTensorflow(str(files[0]), str(files[1]))
        if backend == "cuda":
            self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
        self.device = "cuda:0" if backend == "cuda" else "cpu"
        self.max_batch_size = 64

    def run(self, batch: np.ndarray) -> list[dict[str, np.ndarray]]:
        self.net.setInput(batch)
        rows = self.net.forward().reshape(-1, 7)
        # DetectionOutput mixes the batch's rows; column 0 says whose each one is.
        image_ids = rows[:, 0].astype(np.int64)
        return [{"detections": rows[image_ids == i]} for i in range(batch.shape[0])]
