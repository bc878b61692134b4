"""``visionpool import``: a model file in, a served model folder out.

Usage:
    visionpool import MODEL [--name NAME] [--repository DIR] [--task T] [--labels FILE] [--size WxH]
                            [--image PHOTO ...] [--force]
    visionpool import --check DIR/NAME

MODEL: ONNX (.onnx), OpenVINO IR (.xml), a TensorFlow frozen graph (.pb) or SavedModel folder, TFLite
(.tflite), or an MXNet checkpoint (prefix-symbol.json beside prefix-0000.params), converted to ONNX first.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from visionpool.serving.commands import Command

from .autoconfig import ULTRALYTICS_TASKS
from .importer import ImportFailed, check_model, import_model

TASKS = sorted({*ULTRALYTICS_TASKS.values(), "embedding"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", type=Path, help="the model file (or SavedModel folder) to import")
    parser.add_argument("--name", default=None, help="the model's name in the repository (default: the file's)")
    parser.add_argument("--repository", type=Path, default=Path("models"), help="the model repository (default models)")
    parser.add_argument("--task", choices=TASKS, default=None, help="what the model does, if its outputs leave it open")
    parser.add_argument("--labels", type=Path, default=None, help="a labels file (line i = class i), over the file's")
    parser.add_argument("--size", type=_size, default=None, help="the input's WIDTHxHEIGHT, if the file leaves it open")
    parser.add_argument("--image", type=Path, action="append", default=[], help="a photo to try (default: built-in)")
    parser.add_argument("--force", action="store_true", help="replace an existing model folder")
    parser.add_argument("--check", type=Path, default=None, metavar="DIR/NAME", help="re-validate a model folder")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.check is not None:
        problems = check_model(args.check)
        for problem in problems:
            print(f"{args.check}: {problem}")
        print(f"{args.check}: {'config and model agree' if not problems else f'{len(problems)} disagreement(s)'}")
        return 1 if problems else 0
    if args.model is None:
        raise ValueError("name a model file to import (or --check DIR/NAME)")
    try:
        model = args.model
        if model.name.endswith("-symbol.json"):
            from .mxnet_import import convert_checkpoint

            model = convert_checkpoint(model, args.repository / ".mxnet", size=args.size)
        report = import_model(
            model, args.repository, args.name or _default_name(args.model), args.task, args.labels, args.size,
            args.image, args.force,
        )  # fmt: skip
    except ImportFailed as error:
        print(f"visionpool import: {error}")
        print("visionpool import: nothing was written")
        return 1
    print("\n".join(report.lines()))
    return 0


def _default_name(model: Path) -> str:
    stem = model.name if model.is_dir() else model.stem
    return stem.removesuffix("-symbol") or "model"


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT, like 640x640, got {text!r}")
    return int(width), int(height)


COMMAND = Command(
    "import",
    "turn a model file into a served model folder",
    "Read a model file, work out its config (each key saying where it came from), try it on photos, and write "
    "DIR/NAME/config.toml, labels.txt and 1/<file>.",
    add_arguments,
    run,
)
