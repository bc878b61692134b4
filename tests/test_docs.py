"""The docs stay findable and true: every relative link and anchor in README.md and docs/*.md resolves, every
page stays short, and every flag the docs show for a ``visionpool`` command is one that command takes.

Fast: it reads files and builds the command's argument parsers; it starts no process and opens no socket.
"""

from __future__ import annotations

import argparse
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from visionpool.serving.commands import build_parser, installed

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_LINES = 300

HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) and ![alt](target), with an optional "title"; the text may hold one level of brackets
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
EXTERNAL = ("http://", "https://", "mailto:")
# a token that names the command: the program itself, or its container image (visionpool:cpu worker ...)
PROGRAM = re.compile(r"^visionpool(:[\w.-]+)?$")
# tokens after which a command's arguments end (a comment, a pipe, the next command)
ENDS = {"|", "||", "&&", ";", "&"}


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def lines_outside_code(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) for the lines that are not inside a fenced code block."""
    for number, line, in_code in _lines(text):
        if not in_code:
            yield number, line


def code_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) for the lines inside fenced code blocks, fences excluded."""
    for number, line, in_code in _lines(text):
        if in_code:
            yield number, line


def _lines(text: str) -> Iterator[tuple[int, str, bool]]:
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        marker = re.match(r"(`{3,}|~{3,})", stripped)
        if fence is None and marker:
            fence = marker.group(1)
            continue
        if fence is not None and marker and marker.group(1).startswith(fence) and not stripped[len(fence) :].strip():
            fence = None
            continue
        yield number, line, fence is not None


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation but - and _ dropped, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    """Every anchor a page's headings give (a repeated heading gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in lines_outside_code(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def prose(text: str) -> str:
    """The text with fenced code blocks (fences too) emptied, so that line numbers still count."""
    kept = dict(lines_outside_code(text))
    return "\n".join(kept.get(number, "") for number in range(1, len(text.splitlines()) + 1))


def links(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, target) of every markdown link and image outside code (a link's text may wrap)."""
    text = prose(path.read_text(encoding="utf-8"))
    text = INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    for match in LINK.finditer(text):
        yield text.count("\n", 0, match.start()) + 1, match.group(1)


def broken_link(page: Path, target: str) -> str | None:
    """Why a link from ``page`` does not resolve, or None when it does."""
    if target.startswith(EXTERNAL):
        return None
    where, _, anchor = target.partition("#")
    destination = (page.parent / where).resolve() if where else page
    if not destination.exists():
        return f"{where} does not exist"
    if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
        return f"{relative(destination)} has no heading with the anchor #{anchor}"
    if anchor and destination.suffix != ".md":
        return f"#{anchor} points into {where}, which is not a markdown page"
    return None


@pytest.mark.parametrize("page", PAGES, ids=relative)
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = [
        f"{relative(page)}:{number}: ({target}) {why}"
        for number, target in links(page)
        if (why := broken_link(page, target)) is not None
    ]
    assert broken == [], "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=relative)
def test_every_page_is_short(page: Path) -> None:
    count = len(page.read_text(encoding="utf-8").splitlines())
    assert count < MAX_LINES, f"{relative(page)} has {count} lines; split it (the limit is {MAX_LINES})"


def test_the_docs_are_found() -> None:
    assert (ROOT / "docs").is_dir() and len(PAGES) > 1
    assert any(links(ROOT / "README.md")), "README.md links to nothing"


@functools.cache
def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser(installed())
    return dict(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def flags_of(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Code lines with their trailing-backslash continuations joined, numbered by their first line."""
    pending: list[str] = []
    start = 0
    for number, line in code_lines(text):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending.append(line.rstrip()[:-1])
            continue
        pending.append(line)
        yield start, " ".join(pending)
        pending = []
    if pending:
        yield start, " ".join(pending)


def commands_in(tokens: list[str]) -> Iterator[tuple[str, list[str]]]:
    """(subcommand, its arguments) for each ``visionpool SUBCOMMAND ...`` among shell tokens."""
    known = subcommands()
    index = 0
    while index < len(tokens) - 1:
        if PROGRAM.match(tokens[index]) and tokens[index + 1] in known:
            end = index + 2
            while end < len(tokens) and not (tokens[end] in ENDS or tokens[end].startswith("#")):
                if PROGRAM.match(tokens[end]):
                    break
                end += 1
            yield tokens[index + 1], tokens[index + 2 : end]
            index = end
        else:
            index += 1


def shown_commands(page: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, subcommand, arguments) of every ``visionpool`` command a page shows: in fenced code (wherever
    it starts on the line: after a prompt, a Procfile's ``worker:``, an image name, a ``# then:``) and in
    inline code that starts with it. A fenced line that starts with ``visionpool`` and names no known
    subcommand is yielded with the subcommand it names, so that it is reported."""
    text = page.read_text(encoding="utf-8")
    for number, line in logical_lines(text):
        command = line.strip().removeprefix("$ ").strip()
        tokens = command.split()
        if len(tokens) > 1 and tokens[0] == "visionpool" and tokens[1] not in subcommands():
            yield number, tokens[1], []
        for name, arguments in commands_in(tokens):
            yield number, name, arguments
    outside = prose(text)
    for match in INLINE_CODE.finditer(outside):
        tokens = match.group(2).split()
        if tokens and tokens[0] == "visionpool":
            number = outside.count("\n", 0, match.start()) + 1
            for name, arguments in commands_in(tokens):
                yield number, name, arguments


def unknown_flags(page: Path) -> list[str]:
    """'file:line: ...' for each command the page shows that does not exist, and each flag its command lacks."""
    known = subcommands()
    unknown = []
    for number, name, arguments in shown_commands(page):
        if name not in known:
            unknown.append(f"{relative(page)}:{number}: visionpool {name}: no such command")
            continue
        flags = flags_of(known[name])
        for argument in arguments:
            flag = argument.split("=", 1)[0].strip("`'\",;()")
            if flag.startswith("--") and flag not in flags:
                unknown.append(f"{relative(page)}:{number}: visionpool {name} takes no {flag}")
    return unknown


@pytest.mark.parametrize("page", PAGES, ids=relative)
def test_every_flag_shown_for_a_visionpool_command_exists(page: Path) -> None:
    unknown = unknown_flags(page)
    assert unknown == [], "\n".join(unknown)


def test_the_flag_check_sees_commands() -> None:
    """The check above looks at something: the docs show commands, with flags, for most subcommands."""
    shown = {name for page in PAGES for _, name, arguments in shown_commands(page) if arguments}
    assert {"worker", "proxy", "predict", "import", "bench", "chaos"} <= shown


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("The Open Inference Protocol (KServe v2)", "the-open-inference-protocol-kserve-v2"),
        ("Tasks and output formats", "tasks-and-output-formats"),
        ("What the Consul backend was verified against", "what-the-consul-backend-was-verified-against"),
        ("`visionpool bench`: the tool", "visionpool-bench-the-tool"),
        ("Set-up", "set-up"),
        ("snake_case and CamelCase", "snake_case-and-camelcase"),
    ],
)
def test_anchors_follow_githubs_rule(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_a_broken_link_is_reported(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## A part\n\n[x](#a-part) [y](#nowhere) [z](missing.md) [w](page.md#title)\n")
    found = {target: broken_link(page, target) for _, target in links(page)}
    assert found["#a-part"] is None and found["page.md#title"] is None
    assert found["#nowhere"] and found["missing.md"]


def test_a_wrong_flag_is_reported(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n```\n"
        "$ visionpool predict photos/ --drwa=out/\n"
        "visionpool worker --port 8000 \\\n"
        "    --no-such-flag   # then: visionpool proxy --model x\n"
        "visionpool nosuch --x\n"
        "```\n\nAnd `visionpool lookup --modle coco-ssd` in prose.\n"
    )
    assert unknown_flags(page) == [
        f"{page}:4: visionpool predict takes no --drwa",
        f"{page}:5: visionpool worker takes no --no-such-flag",
        f"{page}:5: visionpool proxy takes no --model",
        f"{page}:7: visionpool nosuch: no such command",
        f"{page}:10: visionpool lookup takes no --modle",
    ]
