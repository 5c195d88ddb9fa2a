"""Identity split (train / validation) and VoxCeleb1-style metadata.

The paper's split (Cross-Modal Perceptionist, VoxCeleb1 names): identities whose *name*
starts with A-E are validation, F-Z training.  Without names for every identity, a
deterministic hash split: an identity is validation when the first 8 bytes of
``sha256(identity)`` read as a fraction in [0, 1) fall below ``val_fraction``.  Either way
an identity lands on exactly one side (utterances never leak across the split), and both
sides are non-empty when there are at least two identities.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: Header of the VoxCeleb1 metadata csv (tab separated).
META_COLUMNS = ("VoxCeleb1 ID", "VGGFace1 ID", "Gender", "Nationality", "Set")
VAL_LETTERS = "ABCDE"


@dataclass(frozen=True)
class IdentityMeta:
    identity: str
    name: str
    gender: str  # "m", "f" or "" (unknown)
    nationality: str = ""
    set: str = ""


def read_meta(path: str | os.PathLike | None) -> dict[str, IdentityMeta]:
    """Read VoxCeleb1-format metadata (tab separated, header row) -> ``{identity: meta}``.

    Missing file or ``None`` -> ``{}``.  Gender is normalised to ``m``/``f``/``""``.
    Rows with fewer than three fields are skipped.
    """
    if path is None or not Path(path).is_file():
        return {}
    out: dict[str, IdentityMeta] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = csv.reader(fh, delimiter="\t")
        header = next(rows, None)
        if header is None:
            return {}
        for row in rows:
            row = [c.strip() for c in row]
            if len(row) < 3 or not row[0]:
                continue
            g = row[2].lower()[:1]
            out[row[0]] = IdentityMeta(
                identity=row[0],
                name=row[1],
                gender=g if g in ("m", "f") else "",
                nationality=row[3] if len(row) > 3 else "",
                set=row[4] if len(row) > 4 else "",
            )
    return out


def hash_fraction(identity: str) -> float:
    """A stable pseudo-random number in [0, 1) for an identity (sha256, platform independent)."""
    h = hashlib.sha256(identity.encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def split_identities(
    identities: Iterable[str],
    meta: Mapping[str, IdentityMeta] | None = None,
    method: str = "auto",
    val_fraction: float = 0.2,
) -> tuple[list[str], list[str], str]:
    """Split identities into ``(train, val, method_used)``, each list sorted.

    method: ``names`` (A-E validation by metadata name; every identity needs a name),
    ``hash`` (``val_fraction``) or ``auto`` (names when every identity has one, else hash).
    """
    ids = sorted(set(identities))
    meta = meta or {}
    has_names = bool(ids) and all(i in meta and meta[i].name for i in ids)
    if method == "auto":
        method = "names" if has_names else "hash"
    if method == "names":
        if not has_names:
            missing = [i for i in ids if i not in meta or not meta[i].name][:5]
            raise ValueError(f"split by names needs a name for every identity; missing {missing}")
        val = [i for i in ids if meta[i].name[:1].upper() in VAL_LETTERS]
    elif method == "hash":
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        val = [i for i in ids if hash_fraction(i) < val_fraction]
    else:
        raise ValueError(f"unknown split method {method!r} (auto | names | hash)")
    if len(ids) >= 2:
        # both sides non-empty: move the identity nearest the boundary (deterministic)
        if not val:
            val = [min(ids, key=hash_fraction)]
        elif len(val) == len(ids):
            val.remove(max(ids, key=hash_fraction))
    vset = set(val)
    train = [i for i in ids if i not in vset]
    return train, sorted(val), method


def write_split(
    path: str | os.PathLike,
    train: Iterable[str],
    val: Iterable[str],
    meta: Mapping[str, IdentityMeta] | None = None,
) -> None:
    """Write ``identity, name, gender, set`` (set = train | val) as TSV, atomically."""
    from vox3d.io import write_tsv

    meta = meta or {}
    rows = []
    for side, ids in (("train", train), ("val", val)):
        for i in ids:
            m = meta.get(i)
            rows.append(
                {
                    "identity": i,
                    "name": m.name if m else "",
                    "gender": m.gender if m else "",
                    "set": side,
                }
            )
    rows.sort(key=lambda r: r["identity"])
    write_tsv(path, rows, ("identity", "name", "gender", "set"))


def read_split(path: str | os.PathLike) -> tuple[list[str], list[str], dict[str, str]]:
    """Read a split TSV -> ``(train, val, {identity: gender})``."""
    from vox3d.io import read_tsv

    rows = read_tsv(path)
    train = sorted(r["identity"] for r in rows if r["set"] == "train")
    val = sorted(r["identity"] for r in rows if r["set"] == "val")
    return train, val, {r["identity"]: r["gender"] for r in rows}
