"""VoxCeleb-style identity metadata (config ``meta_csv``): the one reader and writer.

The format is VoxCeleb1's ``vox1_meta.csv``: UTF-8 text, tab separated, a header row
``VoxCeleb1 ID, VGGFace1 ID, Gender, Nationality, Set`` (:data:`META_COLUMNS`), one row per
identity.  VoxCeleb2's ``vox2_meta.csv`` (``VoxCeleb2 ID, VGGFace2 ID, Gender, Set``: no
nationality, comma separated) is read too.  Columns are found by their header name (case
and surrounding spaces ignored), so their order does not matter:

* identity: ``VoxCeleb<n> ID``;  name: ``VGGFace<n> ID``;  ``Gender``;  ``Set`` (required);
* ``Nationality`` (optional: empty when absent).

Gender is normalised to ``m`` (``m``, ``male``), ``f`` (``f``, ``female``) or ``""``
(anything else, empty included: unknown).  Rows with an empty identity are skipped; a
later row of the same identity replaces an earlier one.

A file that is not such a table is refused with a :class:`MetadataError` (a ``ValueError``)
naming the file and what is wrong: missing, empty, not UTF-8 text (or binary), or without
the required columns (listed by name).  It is never read as "no metadata".
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vox3d.io import write_text_atomic

#: Header of the VoxCeleb1 metadata table (tab separated), as written by :func:`write_meta`.
META_COLUMNS = ("VoxCeleb1 ID", "VGGFace1 ID", "Gender", "Nationality", "Set")

#: Header patterns (lower case, stripped) of each field, and the name a message uses for it.
_FIELDS = {
    "identity": (re.compile(r"voxceleb\d* id"), "VoxCeleb1 ID"),
    "name": (re.compile(r"vggface\d* id"), "VGGFace1 ID"),
    "gender": (re.compile(r"gender"), "Gender"),
    "nationality": (re.compile(r"nationality"), "Nationality"),
    "set": (re.compile(r"set"), "Set"),
}
_OPTIONAL = ("nationality",)
_GENDERS = {"m": "m", "male": "m", "f": "f", "female": "f"}


class MetadataError(ValueError):
    """A ``meta_csv`` file that cannot be read as identity metadata; names the file."""


@dataclass(frozen=True)
class IdentityMeta:
    """What the metadata says about one identity (strings; ``""`` = unknown)."""

    identity: str
    name: str
    gender: str  # "m", "f" or "" (unknown)
    nationality: str = ""
    set: str = ""

    def fields(self) -> dict[str, str]:
        """``{name, gender, nationality, set}`` (the manifest's metadata columns)."""
        return {"name": self.name, "gender": self.gender,
                "nationality": self.nationality, "set": self.set}  # fmt: skip


def normalise_gender(value: str) -> str:
    """``m`` / ``f`` / ``""`` for a gender field (see the module docstring)."""
    return _GENDERS.get(value.strip().lower(), "")


def _text(path: Path) -> str:
    """The file's text (UTF-8, an optional BOM dropped), or a :class:`MetadataError`."""
    if not path.is_file():
        raise MetadataError(f"meta_csv {path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MetadataError(f"meta_csv {path}: cannot be read ({e.strerror or e})") from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise MetadataError(
            f"meta_csv {path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
            f"expected a tab-separated table with the header {', '.join(META_COLUMNS)}"
        ) from e
    if "\x00" in text:
        raise MetadataError(
            f"meta_csv {path}: a binary file (NUL bytes), not a tab-separated table with the "
            f"header {', '.join(META_COLUMNS)}"
        )
    if not text.strip():
        raise MetadataError(
            f"meta_csv {path}: empty file; expected a tab-separated table with the header "
            f"{', '.join(META_COLUMNS)}"
        )
    return text


def read_meta(path: str | os.PathLike | None) -> dict[str, IdentityMeta]:
    """Read a metadata table -> ``{identity: IdentityMeta}`` (format: module docstring).

    ``None`` (no ``meta_csv`` configured) -> ``{}``.  Raises :class:`MetadataError`
    naming `path` for a missing, empty, non-UTF-8 / binary file or missing columns.
    """
    if path is None:
        return {}
    path = Path(path)
    lines = [ln for ln in _text(path).splitlines() if ln.strip()]
    delim = "\t" if "\t" in lines[0] else ","
    rows = csv.reader(lines, delimiter=delim)
    header = [h.strip().lower() for h in next(rows)]
    col: dict[str, int | None] = {
        f: next((i for i, h in enumerate(header) if pat.fullmatch(h)), None)
        for f, (pat, _) in _FIELDS.items()
    }
    missing = [_FIELDS[f][1] for f, i in col.items() if i is None and f not in _OPTIONAL]
    if missing:
        shown = ", ".join(repr(h) for h in header[:8]) + (", ..." if len(header) > 8 else "")
        raise MetadataError(
            f"meta_csv {path}: missing column(s) {', '.join(missing)} (header: {shown}; "
            f"expected {', '.join(META_COLUMNS)}, tab separated)"
        )

    def field(row: list[str], f: str) -> str:
        i = col[f]
        return row[i] if i is not None and i < len(row) else ""

    out: dict[str, IdentityMeta] = {}
    for row in rows:
        row = [c.strip() for c in row]
        ident = field(row, "identity")
        if not ident:
            continue
        out[ident] = IdentityMeta(
            identity=ident,
            name=field(row, "name"),
            gender=normalise_gender(field(row, "gender")),
            nationality=field(row, "nationality"),
            set=field(row, "set"),
        )
    return out


def write_meta(path: str | os.PathLike, rows: Iterable[IdentityMeta]) -> None:
    """Write metadata in the VoxCeleb1 format that ``meta_csv`` expects (tab separated,
    header :data:`META_COLUMNS`, one row per identity, sorted by identity), atomically.

    Unknown fields are written empty (an empty name means "no name": the ``names`` split
    then refuses and ``auto`` falls back to the hash split)."""
    lines = ["\t".join(META_COLUMNS)]
    for m in sorted(rows, key=lambda m: m.identity):
        fields = (m.identity, m.name, m.gender, m.nationality, m.set)
        if any("\t" in f or "\n" in f for f in fields):
            raise ValueError(f"metadata of {m.identity!r} holds a tab or a newline")
        lines.append("\t".join(fields))
    write_text_atomic(path, "\n".join(lines) + "\n")
