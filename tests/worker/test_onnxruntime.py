"""The onnxruntime engine off the GPU: choosing the device, refusing a GPU it cannot use, IO binding, TensorRT's
options and engine cache. What needs a GPU is in test_gpu.py."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from graphs import channel_means_model

from visionpool.worker.batching import Batcher
from visionpool.worker.engines import EngineHints, create_engine
from visionpool.worker.engines import onnxruntime as engine_module
from visionpool.worker.metrics import WorkerMetrics
from visionpool.worker.models import ModelManager
from visionpool.worker.repository import BatchingSpec, ConfigError, ModelRepository
from visionpool.worker.settings import WorkerSettings, parse_device

SSD = "ssd-mobilenet-v2"


@pytest.mark.parametrize(
    ("given", "device"),
    [
        pytest.param("cpu", "cpu", id="cpu"),
        pytest.param("CUDA", "cuda:0", id="cuda-alone-is-the-first"),
        pytest.param("cuda:3", "cuda:3", id="cuda-n"),
        pytest.param(" cuda:01 ", "cuda:1", id="spaces-and-zeros"),
    ],
)
def test_devices_a_worker_takes(given: str, device: str) -> None:
    assert parse_device(given) == device
    assert WorkerSettings(device=given).engine_hints().device == device


@pytest.mark.parametrize("given", ["gpu", "cuda:", "cuda:-1", "cuda:x", "tpu:0", ""])
def test_other_devices_are_refused_naming_the_choices(given: str) -> None:
    with pytest.raises(ValueError, match=r"device must be cpu or cuda:N"):
        WorkerSettings(device=given)


def test_on_a_gpu_openvino_models_go_to_onnxruntime_and_openvino_is_refused() -> None:
    gpu = WorkerSettings(device="cuda:1")
    assert (gpu.engine_for("openvino"), gpu.engine_for("python"), gpu.engine_for("onnxruntime")) == (
        "onnxruntime",
        "python",
        "onnxruntime",
    )
    assert WorkerSettings().engine_for("openvino") == "openvino"
    assert WorkerSettings(engine="onnxruntime").engine_for("openvino") == "onnxruntime"
    with pytest.raises(ValueError, match="openvino runs on none: use --engine onnxruntime"):
        WorkerSettings(device="cuda:0", engine="openvino")


def test_a_gpu_worker_on_a_machine_without_cuda_refuses_to_start(model_repository: Path, tmp_path: Path) -> None:
    """Serving on the CPU when a GPU was asked for would be slow without a word: the worker fails, saying why."""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: test_gpu.py covers that")
    settings = WorkerSettings(models=[SSD], model_repository=model_repository, device="cuda:0", cache_dir=tmp_path)
    models = ModelManager(settings, WorkerMetrics(dict))
    assert models.configs[0].engine == "onnxruntime"  # its config says openvino
    models.load_all()
    assert isinstance(models.failure, ConfigError) and models.state() == "failed"
    message = str(models.failure)
    assert "the onnxruntime engine could not load" in message and "cannot use a GPU" in message
    assert "pip install 'visionpool[gpu]'" in message


def test_io_binding_answers_what_a_plain_run_answers(onnx_models: Path) -> None:
    config = ModelRepository(onnx_models).load(SSD)
    plain, bound = (
        create_engine("onnxruntime", config.files, config.input.name, {"io_binding": io}, EngineHints(threads=2))
        for io in (False, True)
    )
    assert (plain.details()["io_binding"], bound.details()["io_binding"]) == (False, True)
    batch = np.random.default_rng(7).uniform(-1, 1, (3, 300, 300, 3)).astype(np.float32)
    for one, other in zip(plain.run(batch), bound.run(batch), strict=True):
        assert one.keys() == other.keys()
        for name in one:
            np.testing.assert_allclose(one[name], other[name], rtol=1e-5, atol=1e-5)


def test_on_a_cpu_batches_run_in_parallel_each_on_its_share_of_the_cores(tmp_path: Path) -> None:
    model = (channel_means_model(tmp_path / "means.onnx", (32, 32)),)
    engine = create_engine("onnxruntime", model, "images", {}, EngineHints(threads=2))
    assert engine.details()["parallel"] == 2  # as OpenVINO's streams: at most 2 within the worker's share
    assert engine.session.get_session_options().intra_op_num_threads == 1
    batcher = Batcher("means", [engine], BatchingSpec(max_batch_size=4))
    assert len(batcher.threads) == 2  # a batcher thread per run in flight
    batcher.close()
    one = create_engine("onnxruntime", model, "images", {"parallel": 1}, EngineHints(threads=2))
    assert one.parallel == 1 and one.session.get_session_options().intra_op_num_threads == 2
    assert create_engine("onnxruntime", model, "images", {}, EngineHints(threads=4, streams=4)).parallel == 4

    batches = [np.random.default_rng(seed).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32) for seed in range(8)]
    together: list[list[dict[str, np.ndarray]]] = [[] for _ in batches]
    runs = [threading.Thread(target=lambda i=i: together[i].extend(engine.run(batches[i]))) for i in range(8)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    for batch, got in zip(batches, together, strict=True):  # runs at once answer each its own batch
        np.testing.assert_allclose([out["pooled"] for out in got], batch.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)


def test_on_a_cpu_each_run_takes_one_image_unless_the_config_says_more(tmp_path: Path) -> None:
    """Batches of two or more ran their images one after another while another run waited: one image a run, as the
    batcher then forms them, and what the batch limit says of it; ``max_batch`` lifts it."""
    model = (channel_means_model(tmp_path / "means.onnx", (32, 32)),)
    engine = create_engine("onnxruntime", model, "images", {}, EngineHints(threads=2))
    assert engine.max_batch_size == 1 and "batches of one image" in engine.batch_limit
    batcher = Batcher("means", [engine], BatchingSpec(max_batch_size=4))
    try:
        assert batcher.max_batch == 1 and batcher.batch_limit == engine.batch_limit
        images = [np.full((3, 32, 32), value, np.float32) for value in range(6)]
        jobs = [batcher.submit(image, time.monotonic() + 30) for image in images]
        for value, job in enumerate(jobs):
            np.testing.assert_allclose(job.wait()["pooled"], [value] * 3)
            assert job.batch_size == 1
    finally:
        batcher.close()
    wider = create_engine("onnxruntime", model, "images", {"max_batch": 4}, EngineHints(threads=2))
    wide = Batcher("means", [wider], BatchingSpec(max_batch_size=4))
    assert wider.max_batch_size == 4 and wide.max_batch == 4 and not wide.batch_limit
    wide.close()
    two = create_engine("onnxruntime", model, "images", {"max_batch": 2}, EngineHints(threads=2))
    assert two.max_batch_size == 2 and "parallel batches of 2 images" in two.batch_limit


@pytest.mark.parametrize("engine_name", ["onnxruntime", "openvino"])
def test_on_a_cpu_a_batch_does_not_wait_for_images_still_decoding(tmp_path: Path, engine_name: str) -> None:
    """An image costs about as much in a batch as alone on a CPU: a lone image runs at once, whatever the config's
    max_queue_delay_ms, and the batcher does not count arrivals it would never wait for."""
    model = (channel_means_model(tmp_path / "means.onnx", (32, 32)),)
    engine = create_engine(engine_name, model, "images", {}, EngineHints(threads=2))
    assert engine.details()["batch_waits"] is False
    batcher = Batcher("means", [engine], BatchingSpec(max_batch_size=4, max_queue_delay_ms=5000))
    try:
        image = np.zeros((3, 32, 32), np.float32)
        with batcher.arriving() as first, batcher.arriving():  # the second is still decoding, and stays so
            assert batcher._arriving == 0
            started = time.monotonic()
            job = batcher.submit(image, started + 30, first)
            job.wait()
            assert job.batch_size == 1 and time.monotonic() - started < 2.5  # (a waiting batch: 5 s)
    finally:
        batcher.close()


def test_engine_options_are_checked_by_name(model_repository: Path) -> None:
    config = ModelRepository(model_repository).load(SSD)
    for options, message in (
        ({"device_id": 1}, "--device cuda:N chooses the GPU"),
        ({"warp_speed": True}, "unknown engine_options warp_speed"),
        ({"max_batch": 0}, "max_batch must be at least 1"),
        ({"parallel": 0}, "parallel must be at least 1"),
    ):
        with pytest.raises(ValueError, match=message):
            create_engine("onnxruntime", config.files, config.input.name, options, EngineHints())


def test_tensorrt_gets_its_cache_its_precision_and_every_batch_the_batcher_forms(
    onnx_models: Path, tmp_path: Path
) -> None:
    ssd, classifier = (ModelRepository(onnx_models).load(m) for m in (SSD, "efficientnet-lite0"))
    plan = engine_module.TensorrtPlan.of(classifier.files[0], None, 16, tmp_path, True)
    assert plan.profile == {
        "trt_profile_min_shapes": "input:1x3x224x224",
        "trt_profile_opt_shapes": "input:16x3x224x224",
        "trt_profile_max_shapes": "input:16x3x224x224",
    }
    assert plan.build_at == ()
    # onnxruntime's profile syntax splits at ':': the SSD's "Preprocessor/sub:0" is built for at load instead
    colon = engine_module.TensorrtPlan.of(ssd.files[0], ssd.input.name, 8, tmp_path, False)
    assert (colon.name, colon.rest, colon.profile, colon.build_at) == ("Preprocessor/sub:0", (300, 300, 3), {}, (1, 8))
    [(trt, trt_options), (cuda, cuda_options)] = engine_module.gpu_providers(["tensorrt", "cuda"], 2, plan)
    assert (trt, cuda) == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    assert trt_options["device_id"] == 2 and cuda_options == {"device_id": 2}
    assert trt_options["trt_engine_cache_enable"] and trt_options["trt_engine_cache_path"] == str(plan.cache)
    assert plan.cache.parent == tmp_path / "tensorrt"
    assert trt_options["trt_fp16_enable"] is True
    assert trt_options["trt_profile_max_shapes"] == "input:16x3x224x224"
    with pytest.raises(ValueError, match="providers must name one or more of tensorrt, cuda"):
        engine_module.gpu_providers(["cudnn"], 0, None)


def test_a_fixed_batch_is_the_only_one_tensorrt_builds_for(tmp_path: Path) -> None:
    fixed = engine_module.TensorrtPlan.for_input("pixels", [1, 3, 8, 8], 32, tmp_path, False)
    assert fixed.batches == (1, 1, 1) and fixed.profile["trt_profile_max_shapes"] == "pixels:1x3x8x8"
    dynamic = engine_module.TensorrtPlan.for_input("pixels", ["N", 3, 8, 8], 32, tmp_path, False)
    assert dynamic.batches == (1, 32, 32)
    with pytest.raises(ValueError, match="TensorRT needs the input's sizes past the batch"):
        engine_module.TensorrtPlan.for_input("pixels", ["N", 3, "H", "W"], 32, tmp_path, False)


def test_a_retrained_model_does_not_find_the_old_tensorrt_engines(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"weights, first training")
    first = engine_module._tensorrt_cache(model, tmp_path / "cache")
    assert first.is_dir() and first.parent == tmp_path / "cache" / "tensorrt"
    assert engine_module._tensorrt_cache(model, tmp_path / "cache") == first  # a restart finds its engines
    model.write_bytes(b"weights, second training!")
    os.utime(model, ns=(1, 1))
    assert engine_module._tensorrt_cache(model, tmp_path / "cache") != first


def test_a_model_served_by_another_engine_leaves_its_configured_engines_options_behind(
    onnx_models: Path, tmp_path: Path
) -> None:
    """Plain [engine_options] keys belong to the configured engine (openvino here): onnxruntime, serving the
    model on a GPU or by --engine, must not be handed them."""
    import shutil

    repository = tmp_path / "models"
    shutil.copytree(onnx_models, repository, symlinks=True)
    config = repository / SSD / "config.toml"
    text = config.read_text().replace(
        "[engine_options.onnxruntime]", '[engine_options]\nprecision = "f32"\n\n[engine_options.onnxruntime]'
    )
    config.write_text(text)
    settings = WorkerSettings(models=[SSD], model_repository=repository, engine="onnxruntime", cache_dir=tmp_path)
    models = ModelManager(settings, WorkerMetrics(dict))
    models.load_all()
    try:
        assert models.failure is None, models.failure
        assert models.get(SSD).describe()["engine"] == "onnxruntime"
    finally:
        models.close()
