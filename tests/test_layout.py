"""The packages' dependencies point one way: neither service imports the other, the shared serving code imports
only the wire contract, and nothing but the tools imports the tools."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# package -> the visionpool packages it may import (the client's command line takes the settings layer from serving)
ALLOWED = {
    "client": {"serving"},
    "serving": {"client"},
    "discovery": {"client", "serving"},
    "worker": {"client", "serving", "discovery"},
    "proxy": {"client", "serving", "discovery"},
    "tools": {"client", "serving", "discovery", "worker", "proxy"},
}


def imported_packages(folder: Path) -> dict[str, set[str]]:
    """Each visionpool package the folder's modules import, with the files that do."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                parts = name.split(".")
                if parts[0] == "visionpool" and len(parts) > 1:
                    found.setdefault(parts[1], set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependencies_point_one_way(package: str) -> None:
    imported = imported_packages(ROOT / package)
    outside = {other: files for other, files in imported.items() if other != package and other not in ALLOWED[package]}
    assert outside == {}, f"{package} imports {', '.join(outside)} (from {outside})"


def test_only_the_command_line_of_the_client_takes_anything_from_serving() -> None:
    assert imported_packages(ROOT / "client").get("serving", set()) <= {"client/cli.py", "client/__main__.py"}
