"""Image encoders (CLIP, DINO, any backbone) -> one feature vector per image, for search and de-duplication.

Output, per image: [D] (singleton axes aside), or with ``pool``: "cls" takes the first token of [T, D],
"mean" averages the tokens of [T, D] or the positions of a [D, H, W] feature map. Options: output,
normalize (L2, for cosine similarity by dot product; false), pool ("none", "cls", "mean").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Decoder, Prediction, Shapes, output_name, pick_output, shape_error

POOLS = ("none", "cls", "mean")


class EmbeddingDecoder(Decoder):
    """The image's embedding; no predictions."""

    def __init__(self, options: dict[str, Any], input_size: tuple[int, int] = (1, 1)) -> None:
        super().__init__(options, input_size)
        self.output = self.option("output", None)
        self.normalize = bool(self.option("normalize", False))
        self.pool = self.choice("pool", "none", POOLS)
        self.size = 0
        self.check_options()

    def check(self, shapes: Shapes, classes: int) -> None:
        name = output_name(shapes, self.output, 0)
        shape = tuple(d for d in shapes[name] if d != 1) or (1,)
        expected = {"none": "[D] (one vector per image; set pool for tokens or feature maps)",
                    "cls": "[T, D] (tokens; the first is the class token)",
                    "mean": "[T, D] (tokens) or [D, H, W] (a feature map)"}[self.pool]  # fmt: skip
        if len(shape) != {"none": 1, "cls": 2, "mean": len(shape) if len(shape) in (2, 3) else 0}[self.pool]:
            raise shape_error(name, tuple(shapes[name]), expected)
        self.size = shape[0] if self.pool == "mean" and len(shape) == 3 else shape[-1]

    def decode(self, outputs: dict[str, np.ndarray], threshold: float, top_k: int) -> list[Prediction]:
        return []

    def embed(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        value = np.asarray(pick_output(outputs, self.output, 0), np.float32)
        value = value.squeeze() if value.size > 1 else value.reshape(1)
        if self.pool == "cls":
            value = value[0]
        elif self.pool == "mean":
            value = value.mean(axis=0) if value.ndim == 2 else value.reshape(value.shape[0], -1).mean(axis=1)
        vector = value.reshape(-1)
        if self.normalize:
            vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return vector

    def describe(self) -> dict[str, Any]:
        return {"embedding": {"size": self.size, "normalized": self.normalize}}
