"""A model written in Python: ``model.py`` in the version folder (like Triton's Python backend).

The file defines ``class Model`` with ``__init__(self, files, options)`` and
``run(self, batch) -> dict[str, numpy array]`` whose arrays have the batch as
their leading axis. Use it for models no other engine reads.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from .base import Engine, EngineHints, split_batch


class PythonEngine(Engine):
    """Loads the first file as a module and runs its ``Model``."""

    def __init__(
        self, files: tuple[Path, ...], input_name: str | None, options: dict[str, Any], hints: EngineHints
    ) -> None:
        path = files[0]
        spec = importlib.util.spec_from_file_location(f"visionpool_model_{abs(hash(path))}", path)
        if spec is None or spec.loader is None or path.suffix != ".py":
            raise ValueError(f"{path} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not hasattr(module, "Model"):
            raise ValueError(f"{path} defines no class Model")
        self.model = module.Model(files, dict(options))
        self.max_batch_size = int(getattr(self.model, "max_batch_size", 1_000_000))
        self.batch_limit = "the Python model's max_batch_size"

    def run(self, batch: np.ndarray) -> list[dict[str, np.ndarray]]:
        return split_batch(self.model.run(batch), batch.shape[0])
