"""Workers on an NVIDIA GPU (onnxruntime-gpu: CUDA and TensorRT), against the same models on the CPU.

Marked ``gpu``: skipped where there is no NVIDIA GPU with onnxruntime-gpu (tests/conftest.py says why).
Run them on a GPU machine with: pip install -e '.[test]' && pip uninstall -y onnxruntime &&
pip install -e '.[tensorrt]' && python3 -m pytest -m gpu
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers import iou, scrape

from visionpool.worker.metrics import WorkerMetrics
from visionpool.worker.models import ModelManager
from visionpool.worker.pipeline import Pipeline
from visionpool.worker.settings import WorkerSettings

pytestmark = pytest.mark.gpu

SSD, CLASSIFIER = "ssd-mobilenet-v2", "efficientnet-lite0"
PHOTOS = ("chelsea", "coffee", "camera")


@pytest.fixture
def gpu_repository(model_repository: Path, tmp_path: Path) -> Path:
    """A copy of the test repository whose onnxruntime options a test may change."""
    target = tmp_path / "models"
    shutil.copytree(model_repository, target, symlinks=True)
    return target


def onnxruntime_options(repository: Path, model: str, options: str) -> None:
    """Replace the model's [engine_options.onnxruntime] table."""
    config = repository / model / "config.toml"
    text = config.read_text().split("\n[engine_options.onnxruntime]")[0]
    config.write_text(text + f"\n[engine_options.onnxruntime]\n{options}\n")


@pytest.fixture
def load(tmp_path: Path) -> Iterator:
    """Load models as a worker does (every one warmed up), on a device; all closed after the test."""
    managers: list[ModelManager] = []

    def make(repository: Path, device: str, *models: str, cache: Path | None = None) -> ModelManager:
        settings = WorkerSettings(
            models=list(models),
            model_repository=repository,
            device=device,
            engine="onnxruntime",  # on the CPU too: the reference is f32 (openvino would run bf16 on AMX)
            cache_dir=cache or tmp_path / "cache",
        )
        manager = ModelManager(settings, WorkerMetrics(dict))
        managers.append(manager)
        manager.load_all()
        assert manager.failure is None, manager.failure
        return manager

    yield make
    for manager in managers:
        manager.close()


def found(pipeline: Pipeline, jpegs: dict[str, bytes]) -> dict[str, list[dict]]:
    return {
        photo: answer.predictions
        for photo, answer in zip(PHOTOS, pipeline.predict_batch([jpegs[p] for p in PHOTOS]), strict=True)
    }


def assert_same_findings(gpu: dict[str, list[dict]], cpu: dict[str, list[dict]], score_tolerance: float) -> None:
    for photo in PHOTOS:
        assert gpu[photo] and gpu[photo][0]["label"] == cpu[photo][0]["label"], photo
        assert abs(gpu[photo][0]["score"] - cpu[photo][0]["score"]) < score_tolerance, photo
        if "box" in cpu[photo][0]:
            assert iou(gpu[photo][0]["box"], cpu[photo][0]["box"]) >= 0.9, photo


def test_a_cuda_worker_finds_what_the_cpu_finds_and_says_where_it_runs(gpu_repository: Path, load, jpegs) -> None:
    gpu = load(gpu_repository, "cuda:0", SSD, CLASSIFIER)
    cpu = load(gpu_repository, "cpu", SSD, CLASSIFIER)
    for model in (SSD, CLASSIFIER):
        described = gpu.get(model).describe()
        assert (described["engine"], described["device"], described["provider"]) == ("onnxruntime", "cuda:0", "cuda")
        assert_same_findings(found(gpu.get(model), jpegs), found(cpu.get(model), jpegs), 0.02)
    assert found(gpu.get(SSD), jpegs)["chelsea"][0]["label"] == "cat"
    assert found(gpu.get(CLASSIFIER), jpegs)["coffee"][0]["label"] == "espresso"


def test_every_batch_size_gives_each_image_its_own_answer(gpu_repository: Path, load) -> None:
    onnxruntime_options(gpu_repository, SSD, 'providers = ["cuda"]')
    engine = load(gpu_repository, "cuda:0", SSD).get(SSD).engine
    images = np.random.default_rng(3).uniform(-1, 1, (64, 300, 300, 3)).astype(np.float32)
    alone = [engine.run(images[i : i + 1])[0] for i in range(64)]
    for size in (2, 8, 32, 64):
        together = engine.run(images[:size])
        for one, other in zip(alone[:size], together, strict=True):
            # cuDNN may pick other kernels per batch size (and TF32 where it likes): close, not equal
            np.testing.assert_allclose(one["concat_1:0"], other["concat_1:0"], rtol=1e-2, atol=2e-2)


def test_io_binding_on_the_gpu_answers_what_a_plain_run_answers(gpu_repository: Path, load, jpegs) -> None:
    plain = found(load(gpu_repository, "cuda:0", SSD).get(SSD), jpegs)
    onnxruntime_options(gpu_repository, SSD, 'providers = ["cuda"]\nio_binding = true')
    bound_model = load(gpu_repository, "cuda:0", SSD).get(SSD)
    assert bound_model.describe()["io_binding"] is True
    assert_same_findings(found(bound_model, jpegs), plain, 0.001)


def engines_in(cache: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in sorted((cache / "tensorrt").rglob("*.engine"))}


def test_tensorrt_engines_are_built_once_then_loaded_from_the_cache(gpu_repository: Path, load, tmp_path) -> None:
    pytest.importorskip("tensorrt_libs", reason="TensorRT's libraries: pip install -e '.[tensorrt]'")
    onnxruntime_options(gpu_repository, SSD, 'providers = ["tensorrt", "cuda"]\nmax_batch = 4')
    cache = tmp_path / "trt-cache"
    first = load(gpu_repository, "cuda:0", SSD, cache=cache).get(SSD)
    assert first.describe()["provider"] == "tensorrt" and first.batcher.max_batch == 4  # the config says 8
    batches = np.zeros((4, 300, 300, 3), np.float32)
    for size in (1, 3, 4):  # every batch the batcher can form: built for at load, none builds now
        first.engine.run(batches[:size])
    built = engines_in(cache)
    assert built, f"no TensorRT engine under {cache}"
    again = load(gpu_repository, "cuda:0", SSD, cache=cache).get(SSD)  # a restart
    assert again.describe()["provider"] == "tensorrt"
    again.engine.run(batches)
    assert engines_in(cache) == built


def test_tensorrt_fp16_finds_what_f32_finds(gpu_repository: Path, load, jpegs, tmp_path) -> None:
    pytest.importorskip("tensorrt_libs", reason="TensorRT's libraries: pip install -e '.[tensorrt]'")
    onnxruntime_options(gpu_repository, SSD, 'providers = ["tensorrt", "cuda"]\nmax_batch = 4')
    exact = found(load(gpu_repository, "cuda:0", SSD, cache=tmp_path / "f32").get(SSD), jpegs)
    onnxruntime_options(gpu_repository, SSD, 'providers = ["tensorrt", "cuda"]\nmax_batch = 4\nfp16 = true')
    fast = load(gpu_repository, "cuda:0", SSD, cache=tmp_path / "f16").get(SSD)
    assert fast.describe()["precision"] == "fp16"
    assert_same_findings(found(fast, jpegs), exact, 0.06)


@pytest.mark.slow
def test_a_gpu_worker_process_reports_its_device(start_worker, model_repository: Path, jpegs) -> None:
    worker = start_worker("--model", SSD, "--model-repository", str(model_repository), "--device", "cuda:0")
    [model] = requests.get(worker.url + "/models", timeout=10).json()["models"]
    assert (model["device"], model["engine"]) == ("cuda:0", "onnxruntime")
    samples = scrape(worker.url)
    info = [labels for (name, labels) in samples if name == "visionpool_worker_model_info"]
    assert dict(info[0])["device"] == "cuda:0"
    answer = requests.post(worker.url + "/predict", data=jpegs["chelsea"], timeout=30).json()
    assert answer["predictions"][0]["label"] == "cat"
