"""``visionpool predict``: a photo collection through the pool, resumable, with a summary.

Usage:
    visionpool predict photos/ --out results.jsonl --draw annotated/ --concurrency 8

Each image's outcome is one JSON line in --out, flushed as it completes; a run
with the same --out skips the images the file holds a result for, so a long job
can be stopped and resumed without losing or repeating work. Images that failed
are tried again; the last line for a path is its outcome.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .draw import annotate
from .errors import ClientError
from .sync import Client
from .types import Result

logger = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def collect(arguments: Iterable[str], stdin: IO[str]) -> Iterator[tuple[Path, Path]]:
    """(image, its name under --draw) for files named directly, found in folders (recursively, sorted),
    or listed on stdin for '-'. Two images that would share a name under --draw keep their whole path."""
    used: set[Path] = set()
    for path, name in _named(arguments, stdin):
        name = _relative(path) if name in used else name
        used.add(name)
        yield path, name


def _named(arguments: Iterable[str], stdin: IO[str]) -> Iterator[tuple[Path, Path]]:
    for argument in arguments:
        if argument == "-":
            yield from ((Path(line.strip()), _relative(Path(line.strip()))) for line in stdin if line.strip())
        elif Path(argument).is_dir():
            root = Path(argument)
            found = (p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            yield from ((p, p.relative_to(root)) for p in sorted(found))
        else:
            yield Path(argument), Path(Path(argument).name)


class Journal:
    """The --out JSON-lines file: what is done already, and one line appended per outcome."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.done = path, set[str]()
        self.file: IO[str] | None = None
        if path is None:
            return
        if path.exists():
            self.done = self._read_and_mend(path)
        self.file = path.open("a", encoding="utf-8")

    @staticmethod
    def _read_and_mend(path: Path) -> set[str]:
        """The paths ``path`` holds a result for; a last line cut off by an interruption is cut away."""
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            os.truncate(path, len(data))  # in place: an interruption now cannot lose the lines before
        outcomes: dict[str, bool] = {}
        for line in data.decode("utf-8").splitlines():
            try:
                entry = json.loads(line)
                outcomes[entry["path"]] = "error" not in entry  # the last line for a path wins
            except (ValueError, KeyError, TypeError):
                logger.warning("ignoring an unreadable line in %s", path)
        return {image for image, succeeded in outcomes.items() if succeeded}

    def record(self, entry: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


@dataclass
class Summary:
    """What a run did."""

    images: int = 0
    skipped: int = 0
    failures: int = 0
    objects: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def add(self, outcome: Result | Exception) -> None:
        self.images += 1
        if isinstance(outcome, Exception):
            self.failures += 1
        else:
            self.objects.update(p.label for p in outcome.predictions)

    def text(self) -> str:
        seconds = max(time.monotonic() - self.started, 1e-9)
        found = ", ".join(f"{label} {count}" for label, count in self.objects.most_common()) or "none"
        return (
            f"{self.images} images in {seconds:.1f} s ({self.images / seconds:.1f} images/s), "
            f"{self.failures} failed, {self.skipped} already done\nfound: {found}"
        )


def run(
    client: Client,
    images: list[tuple[Path, Path]],
    *,
    journal: Journal,
    draw: Path | None,
    concurrency: int,
    quiet: bool,
    **options: Any,
) -> Summary:
    """Predict every image not yet in the journal; record, draw and count each outcome."""
    names = {path: name for path, name in images if str(path) not in journal.done}
    summary = Summary(skipped=len(images) - len(names))
    with progress_bar(len(names), quiet) as progress:
        for path, outcome in client.predict_many(list(names), concurrency=concurrency, **options):
            if isinstance(outcome, Result) and draw is not None:
                outcome = _drawn(path, outcome, draw / names[path])
            journal.record(_entry(path, outcome))
            summary.add(outcome)
            progress.update(1)
    return summary


def _drawn(path: Path, result: Result, target: Path) -> Result | Exception:
    try:
        annotate(path, result, target)
    except OSError as error:
        return ClientError(f"could not draw {path}: {error}", code="draw_failed")
    return result


def _relative(path: Path) -> Path:
    """A path made relative (no anchor, no ..), to mirror it inside the --draw folder."""
    return Path(*[part for part in path.parts if part not in (path.anchor, "..", ".")])


def _entry(path: Path, outcome: Result | Exception) -> dict[str, Any]:
    if isinstance(outcome, Exception):
        code = getattr(outcome, "code", type(outcome).__name__)
        return {"path": str(path), "error": {"code": code, "message": str(getattr(outcome, "message", outcome))}}
    return {"path": str(path), **outcome.to_json()}


def progress_bar(total: int, quiet: bool) -> Any:
    """A tqdm bar with images/s and an ETA on a terminal; silent when quiet or not a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, unit="img", disable=quiet or not sys.stderr.isatty(), file=sys.stderr)
