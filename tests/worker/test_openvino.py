"""The OpenVINO engine: bf16 answers within tolerance of f32, the model cache, each worker's share of the cores."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import cpu_bf16, iou

from visionpool.worker.engines import host_cores
from visionpool.worker.metrics import WorkerMetrics
from visionpool.worker.models import ModelManager
from visionpool.worker.repository import ConfigError
from visionpool.worker.settings import WorkerSettings

PHOTOS = ("chelsea", "coffee", "camera")


def set_openvino_option(config: Path, key: str, value: str) -> None:
    """Set one option of the config's [engine_options.openvino] table, keeping its others (a graph's cut)."""
    lines = [line for line in config.read_text().splitlines() if not line.startswith(f"{key} =")]
    if "[engine_options.openvino]" not in lines:
        lines.append("[engine_options.openvino]")
    lines.insert(lines.index("[engine_options.openvino]") + 1, f'{key} = "{value}"')
    config.write_text("\n".join(lines) + "\n")


def answers(repository: Path, precision: str, jpegs: dict[str, bytes], cache: Path) -> dict[str, dict]:
    """Both models' answers for the photos, on OpenVINO at ``precision``."""
    for name in ("ssd-mobilenet-v2", "efficientnet-lite0"):
        set_openvino_option(repository / name / "config.toml", "precision", precision)
    settings = WorkerSettings(
        models=["ssd-mobilenet-v2", "efficientnet-lite0"], model_repository=repository, cache_dir=cache
    )
    models = ModelManager(settings, WorkerMetrics(dict))
    models.load_all()
    assert models.failure is None, models.failure
    try:
        found = {}
        for model in ("ssd-mobilenet-v2", "efficientnet-lite0"):
            pipeline = models.get(model)
            found[model] = {"precision": pipeline.engine.precision}
            for photo, answer in zip(PHOTOS, pipeline.predict_batch([jpegs[p] for p in PHOTOS]), strict=True):
                found[model][photo] = answer.predictions
        return found
    finally:
        models.close()


@pytest.fixture
def own_repository(model_repository: Path, tmp_path: Path) -> Path:
    """A copy of the test repository whose configs this test may change."""
    import shutil

    target = tmp_path / "models"
    shutil.copytree(model_repository, target, symlinks=True)
    return target


@pytest.mark.skipif(cpu_bf16() is None, reason="this CPU has neither amx_bf16 nor avx512_bf16: no bf16 to compare")
def test_bf16_answers_are_f32_answers_within_tolerance(own_repository: Path, jpegs, tmp_path: Path) -> None:
    f32 = answers(own_repository, "f32", jpegs, tmp_path / "cache")
    fast = answers(own_repository, "auto", jpegs, tmp_path / "cache")
    assert f32["ssd-mobilenet-v2"]["precision"] == "f32"
    assert fast["ssd-mobilenet-v2"]["precision"] == "bf16"  # auto takes bf16 where the CPU has it
    for photo in PHOTOS:
        exact, quick = f32["ssd-mobilenet-v2"][photo], fast["ssd-mobilenet-v2"][photo]
        assert [p["label"] for p in quick[:1]] == [p["label"] for p in exact[:1]], photo
        assert iou(quick[0]["box"], exact[0]["box"]) >= 0.9 and abs(quick[0]["score"] - exact[0]["score"]) < 0.06
        top = f32["efficientnet-lite0"][photo][0], fast["efficientnet-lite0"][photo][0]
        assert top[0]["label"] == top[1]["label"], photo  # top-1 class unchanged


def test_compiled_models_are_cached_on_disk(own_repository: Path, jpegs, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    answers(own_repository, "auto", jpegs, cache)
    blobs = sorted((cache / "openvino").glob("*.blob"))
    assert len(blobs) == 2  # one per model: the next start loads these instead of compiling
    modified = [blob.stat().st_mtime_ns for blob in blobs]
    answers(own_repository, "auto", jpegs, cache)
    assert [blob.stat().st_mtime_ns for blob in sorted((cache / "openvino").glob("*.blob"))] == modified


def test_each_worker_takes_its_share_of_the_cores(tmp_path: Path) -> None:
    cores = host_cores()
    assert WorkerSettings(cache_dir=tmp_path).engine_hints().threads == cores
    assert WorkerSettings(workers_per_host=2, cache_dir=tmp_path).engine_hints().threads == max(1, cores // 2)
    assert WorkerSettings(workers_per_host=64, cache_dir=tmp_path).engine_hints().threads == 1
    assert WorkerSettings(engine_threads=3, workers_per_host=4, cache_dir=tmp_path).engine_hints().threads == 3


def test_a_bad_engine_option_names_itself(own_repository: Path, tmp_path: Path) -> None:
    set_openvino_option(own_repository / "ssd-mobilenet-v2" / "config.toml", "precision", "int4")
    settings = WorkerSettings(models=["ssd-mobilenet-v2"], model_repository=own_repository, cache_dir=tmp_path)
    models = ModelManager(settings, WorkerMetrics(dict))
    models.load_all()
    assert isinstance(models.failure, ConfigError)
    assert "precision must be one of auto, f32, bf16, f16, got 'int4'" in str(models.failure)
