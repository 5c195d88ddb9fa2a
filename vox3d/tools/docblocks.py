"""Generated blocks in markdown documents: text between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->`` lines, printed by a script under ``bench/`` and checked against
it by the tests, so a figure in the README cannot drift from what the script prints."""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path

from vox3d.io import write_text_atomic

_OPEN = "<!-- bench:{} -->"
_CLOSE = "<!-- /bench:{} -->"
#: Any block opening line; group 1 is the block's name.
OPEN_RE = re.compile(r"^<!-- bench:([A-Za-z0-9_.-]+) -->$", re.M)
#: Any block closing line; group 1 is the block's name.
CLOSE_RE = re.compile(r"^<!-- /bench:([A-Za-z0-9_.-]+) -->$", re.M)


def _span(text: str, name: str, path: str | os.PathLike) -> tuple[int, int]:
    """(start, end) character offsets of block `name`'s body in `text` (error naming the file)."""
    o, c = _OPEN.format(name), _CLOSE.format(name)
    i = text.find(o + "\n")
    if i < 0 or text.count(o + "\n") != 1:
        raise ValueError(f"{path}: expected exactly one line '{o}'")
    start = i + len(o) + 1
    j = text.find(c, start)
    if j < 0 or (j > 0 and text[j - 1] != "\n"):
        raise ValueError(f"{path}: block '{name}' has no closing line '{c}'")
    return start, j


def block_names(path: str | os.PathLike) -> list[str]:
    """Names of the generated blocks in a markdown file, in order."""
    return OPEN_RE.findall(Path(path).read_text(encoding="utf-8"))


def read_block(path: str | os.PathLike, name: str) -> str:
    """The body of block `name` in the markdown file `path` (lines between the markers)."""
    text = Path(path).read_text(encoding="utf-8")
    start, end = _span(text, name, path)
    return text[start:end]


def replace_block(path: str | os.PathLike, name: str, body: str) -> None:
    """Replace block `name`'s body with `body` (newline-terminated), atomically."""
    if body and not body.endswith("\n"):
        body += "\n"
    text = Path(path).read_text(encoding="utf-8")
    start, end = _span(text, name, path)
    write_text_atomic(path, text[:start] + body + text[end:])


def sync_block(
    name: str,
    text: str,
    source: str,
    check: str | os.PathLike | None = None,
    write: str | os.PathLike | None = None,
) -> int:
    """A generator script's exit status: print `text` (neither file given), replace block
    `name` of `write` with it, or compare it with block `name` of `check` (prints a diff and
    returns 1 when stale).  `source` names what the text was made from, for the messages."""
    if write is not None:
        replace_block(write, name, text)
        print(f"{write}: block {name} written")
        return 0
    if check is not None:
        have = read_block(check, name)
        if have == text:
            print(f"{check}: block {name} matches {source}")
            return 0
        sys.stdout.writelines(
            difflib.unified_diff(
                have.splitlines(True), text.splitlines(True), f"{check} ({name})", source
            )
        )
        print(f"{check}: block {name} is stale (rerun with --write)")
        return 1
    sys.stdout.write(text)
    return 0
