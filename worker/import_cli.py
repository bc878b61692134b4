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
from dataclasses import dataclass
from pathlib import Path

from visionpool.serving.commands import command
from visionpool.serving.options import option

from .autoconfig import ULTRALYTICS_TASKS
from .importer import ImportFailed, check_model, import_model

TASKS = sorted({*ULTRALYTICS_TASKS.values(), "embedding"})


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT, like 640x640, got {text!r}")
    return int(width), int(height)


@dataclass
class ImportSettings:
    """``visionpool import``: the file, where its folder goes, and what to say where the file says nothing."""

    model: Path | None = option(
        None, "The model file (or SavedModel folder) to import.", positional=True, nargs="?", kind=Path
    )
    name: str | None = option(None, "The model's name in the repository (default: the file's).", no_env=True)
    repository: Path = option(Path("models"), "The model repository.", kind=Path, metavar="DIR", no_env=True)
    task: str | None = option(None, "What the model does, if its outputs leave it open.", choices=tuple(TASKS),
                              no_env=True)  # fmt: skip
    labels: Path | None = option(
        None, "A labels file (line i = class i), over the file's own.", kind=Path, metavar="FILE", no_env=True
    )
    size: tuple[int, int] | None = option(
        None, "The input's WIDTHxHEIGHT, if the file leaves it open.", kind=_size, metavar="WxH", no_env=True
    )
    image: list[Path] = option(
        default_factory=list, help="Photos to try it on (default: three built-in ones).",
        kind=Path, nargs="*", metavar="PHOTO", no_env=True,
    )  # fmt: skip
    force: bool = option(False, "Replace an existing model folder.", no_env=True)
    check: Path | None = option(None, "Re-validate a model folder.", kind=Path, metavar="DIR/NAME", no_env=True)


def run(args: ImportSettings) -> int:
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
        report = import_model(
            args.model, args.repository, args.name, args.task, args.labels, args.size, args.image, args.force
        )
    except ImportFailed as error:
        print(f"visionpool import: {error}")
        print("visionpool import: nothing was written")
        return 1
    print("\n".join(report.lines()))
    return 0


COMMAND = command(
    "import",
    "turn a model file into a served model folder",
    "Read a model file, work out its config (each key saying where it came from), try it on photos, and write "
    "DIR/NAME/config.toml, labels.txt and 1/<file>.",
    ImportSettings,
    run,
)
