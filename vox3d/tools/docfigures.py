"""Measured figures in markdown documents, checked against the bench output they cite.

A *claim* is one table row, or one paragraph / list item, of a markdown file.  A claim that
names one or more recorded bench outputs (``bench/results/NAME``) is checked (a table row
that names none takes those of the paragraph just above its table, the caption): every figure
in it must occur in one of those files, at the precision the document gives.  A figure is a
number written with a decimal point (``4.60``, ``2e-4``) or with thousands separators
(``52,218``), or an integer of three or more digits; numbers inside inline code (``...``,
commands and settings), inside the cited paths and issue numbers (``#123``) are not figures.  A figure matches a
number of the file when that number, rounded to the figure's decimals, equals it (``0.64``
matches ``0.6397``; ``52,218`` matches ``52218.4``), signs ignored.

So a figure in the README cannot outlive the bench output it quotes: rerunning a bench and
committing its new output makes every claim that quotes the old value fail
(``tests/test_readme_figures.py``).  Generated blocks (:mod:`vox3d.tools.docblocks`) are checked
against their scripts instead and are skipped here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vox3d.tools.docblocks import CLOSE_RE, OPEN_RE

#: A cited recorded bench output; group 1 is the file name under bench/results/.
CITE_RE = re.compile(r"bench/results/([A-Za-z0-9_.\-]+[A-Za-z0-9_])")
_CODE_RE = re.compile(r"`[^`]*`")
_NUM_RE = re.compile(
    r"(?<![\w.])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\d{3,})"
    r"(?![\w.]?\d)"
)
_FILE_NUM_RE = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?)")


@dataclass(frozen=True)
class Claim:
    """One table row or paragraph of a document: where it starts (1-based line), its text
    and the bench outputs it cites (file names under ``bench/results/``)."""

    line: int
    text: str
    cites: tuple[str, ...]


def claims(text: str) -> list[Claim]:
    """The claims of markdown `text` that cite a recorded bench output, in order.  Generated
    blocks and fenced code are skipped."""
    out: list[Claim] = []
    buf: list[str] = []
    start = 0
    in_block = in_fence = False
    caption: tuple[str, ...] = ()  # cites of the paragraph just before a table

    def flush(row: bool = False) -> None:
        nonlocal caption
        if buf:
            body = "\n".join(buf)
            cites = tuple(dict.fromkeys(CITE_RE.findall(body)))
            if row:
                cites = cites or caption
            else:
                caption = cites
            if cites:
                out.append(Claim(start, body, cites))
        buf.clear()

    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("```"):
            flush()
            in_fence = not in_fence
        elif in_fence:
            continue
        elif OPEN_RE.match(s):
            flush()
            in_block = True
        elif CLOSE_RE.match(s):
            in_block = False
        elif in_block:
            continue
        elif s.startswith("|"):  # a row is a claim; rows citing nothing take the caption's
            flush()
            buf.append(line)
            start = i
            flush(row=True)
        elif not s:
            flush()
        elif s.startswith("#"):
            flush()
            caption = ()
        else:
            if re.match(r"(?:[-*]|\d+\.) ", s):  # a list item starts a new claim
                flush()
            if not buf:
                start = i
            buf.append(line)
    flush()
    return out


def _decimals(token: str) -> int:
    """Decimal places the figure is written to (``2e-4``: 4, ``1.1e-6``: 7)."""
    mant, _, exp = token.lower().partition("e")
    k = len(mant.split(".")[1]) if "." in mant else 0
    return k - int(exp) if exp else k


def figures(claim_text: str) -> list[str]:
    """The figures (tokens as written) of a claim; see the module doc."""
    t = _CODE_RE.sub(" ", claim_text)
    t = CITE_RE.sub(" ", t)
    t = re.sub(r"#\d+", " ", t)  # issue / pull-request numbers (owner/repo#123)
    t = re.sub(r"\[[^\]]*\]\([^)]*\)", lambda m: m.group(0).split("](")[0], t)  # link targets
    return _NUM_RE.findall(t)


def file_numbers(text: str) -> list[float]:
    """Every number of a bench output, thousands separators dropped, signs ignored."""
    vals = []
    for tok in _FILE_NUM_RE.findall(text):
        tok = tok.rstrip(",")
        if "," in tok and not re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?(?:[eE][-+]?\d+)?", tok):
            vals.extend(float(p) for p in tok.split(",") if p and p[0].isdigit())
            continue
        try:
            vals.append(float(tok.replace(",", "")))
        except ValueError:
            continue
    return vals


def matches(token: str, values: list[float]) -> bool:
    """Whether figure `token` equals one of `values` at the figure's precision."""
    want = float(token.replace(",", ""))
    k = _decimals(token)
    eps = 0.5 * 10.0**-k * (1 + 1e-9)
    return any(abs(v - want) <= eps for v in values)


def stale_figures(doc: str | os.PathLike, results_dir: str | os.PathLike) -> list[str]:
    """Messages for every figure of `doc` not found in the bench output its claim cites
    (and for cited outputs that do not exist); empty when the document is in step."""
    doc = Path(doc)
    results_dir = Path(results_dir)
    problems = []
    cache: dict[str, list[float] | None] = {}
    for c in claims(doc.read_text(encoding="utf-8")):
        values: list[float] = []
        for name in c.cites:
            if name not in cache:
                p = results_dir / name
                cache[name] = file_numbers(p.read_text(encoding="utf-8")) if p.is_file() else None
            if cache[name] is None:
                problems.append(
                    f"{doc.name}:{c.line}: cites bench/results/{name}, which is missing"
                )
            else:
                values.extend(cache[name])
        for tok in figures(c.text):
            if values and not matches(tok, values):
                problems.append(f"{doc.name}:{c.line}: {tok} is in none of {', '.join(c.cites)}")
    return problems
