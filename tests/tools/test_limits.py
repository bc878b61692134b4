"""The model's own limits, which the bench holds the pool against: the CPU ceiling takes each stage at its cheapest."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from visionpool.tools.limits import cpu_costs
from visionpool.worker.metrics import WorkerMetrics
from visionpool.worker.models import ModelManager
from visionpool.worker.settings import WorkerSettings

BUSY_MODEL = '''
import time
import numpy as np

class Model:
    """Spends the same CPU on every call, whatever the batch: a batch of two costs half as much an image."""

    def __init__(self, files, options):
        pass

    def run(self, batch):
        stop = time.thread_time() + 0.004
        while time.thread_time() < stop:
            pass
        return {"logits": np.zeros((len(batch), 3), np.float32)}
'''


def test_the_ceiling_takes_inference_at_its_cheapest_batch(tmp_path: Path) -> None:
    folder = tmp_path / "busy"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_text(BUSY_MODEL)
    (folder / "labels.txt").write_text("a\nb\nc\n")
    (folder / "config.toml").write_text('task = "classification"\nengine = "python"\nfiles = ["model.py"]\n'
                                        'labels = "labels.txt"\n[input]\nwidth = 8\nheight = 8\n'
                                        '[output]\ndecoder = "softmax"\n[batching]\nmax_batch_size = 2\n')  # fmt: skip
    settings = WorkerSettings(models=["busy"])
    settings.model_repository = tmp_path
    models = ModelManager(settings, WorkerMetrics(dict))
    models.load_all()
    try:
        jpeg = io.BytesIO()
        Image.new("RGB", (32, 24), (90, 120, 200)).save(jpeg, "JPEG")
        pipeline = models.get("busy")
        costs = cpu_costs(pipeline, [jpeg.getvalue()], [1, 2], seconds=0.3)
        assert costs["inference_batch"] == 2  # half the CPU an image of batch 1's, whichever ran faster
        alone = cpu_costs(pipeline, [jpeg.getvalue()], [1], seconds=0.3)  # one batch given: that one
        assert alone["inference_batch"] == 1
    finally:
        models.close()
