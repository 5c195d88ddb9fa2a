"""Identity split (train / validation) and VoxCeleb1-style metadata.

The paper's split (Cross-Modal Perceptionist, VoxCeleb1 names): identities whose *name*
starts with A-E are validation, F-Z training.  Without names for every identity, a
deterministic hash split: an identity is validation when the first 8 bytes of
``sha256(identity)`` read as a fraction in [0, 1) fall below ``val_fraction``.  Either way
an identity lands on exactly one side (utterances never leak across the split), and both
sides are non-empty when there are at least two identities.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence

from vox3d.config import default
from vox3d.io import read_tsv, write_tsv

# Identity metadata (``meta_csv``) has one reader and writer: vox3d.media.metadata (re-exported).
from vox3d.media.metadata import META_COLUMNS, IdentityMeta, read_meta, write_meta  # noqa: F401

VAL_LETTERS = "ABCDE"
#: Fewer identities than these make a run a pipeline check (:func:`small_data_note`).
MIN_TRAIN_IDENTITIES, MIN_VAL_IDENTITIES = 20, 10


def hash_fraction(identity: str) -> float:
    """A stable pseudo-random number in [0, 1) for an identity (sha256, platform independent)."""
    h = hashlib.sha256(identity.encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def split_identities(
    identities: Iterable[str],
    meta: Mapping[str, IdentityMeta] | None = None,
    method: str = "auto",
    val_fraction: float = default("train.val_fraction"),
) -> tuple[list[str], list[str], str]:
    """Split identities into ``(train, val, method_used)``, each list sorted.

    method: ``names`` (A-E validation by metadata name; every identity needs a name),
    ``hash`` (``val_fraction``) or ``auto`` (names when every identity has one, else hash).
    With two or more identities both sides are non-empty (the identity nearest the
    boundary is moved when one side would be empty); fewer than two identities, or a side
    that is still empty, is a ValueError that says so.
    """
    ids = sorted(set(identities))
    meta = meta or {}
    if len(ids) < 2:
        raise ValueError(
            f"cannot split {len(ids)} identit{'y' if len(ids) == 1 else 'ies'} {ids} into "
            "training and validation: need at least 2 identities with features and a shape"
        )
    has_names = all(i in meta and meta[i].name for i in ids)
    if method == "auto":
        method = "names" if has_names else "hash"
    if method == "names":
        if not has_names:
            missing = [i for i in ids if i not in meta or not meta[i].name]
            raise ValueError(
                f"train.split 'names' needs a name (meta_csv column 2) for every identity; "
                f"{len(missing)} of {len(ids)} have none (first: {missing[:5]}); "
                "use train.split: hash (or auto)"
            )
        val = [i for i in ids if meta[i].name[:1].upper() in VAL_LETTERS]
    elif method == "hash":
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        val = [i for i in ids if hash_fraction(i) < val_fraction]
    else:
        raise ValueError(f"unknown split method {method!r} (auto | names | hash)")
    # both sides non-empty: move the identity nearest the boundary (deterministic)
    if not val:
        val = [min(ids, key=hash_fraction)]
    elif len(val) == len(ids):
        val.remove(max(ids, key=hash_fraction))
    vset = set(val)
    train = [i for i in ids if i not in vset]
    check_split(train, val, f"{method} split")
    return train, sorted(val), method


def check_split(train: Sequence[str], val: Sequence[str], source: str = "") -> None:
    """Raise ValueError naming the empty side when `train` or `val` is empty or when an
    identity is on both sides; `source` (the split method or file) is named too."""
    where = f" ({source})" if source else ""
    if not train:
        raise ValueError(f"the training split is empty{where}: {len(val)} validation identities")
    if not val:
        raise ValueError(
            f"the validation split is empty{where}: all {len(train)} identities are training; "
            "evaluation needs held-out identities (raise train.val_fraction)"
        )
    both = sorted(set(train) & set(val))
    if both:
        raise ValueError(f"identities on both sides of the split{where}: {both[:5]}")


def write_split(
    path: str | os.PathLike,
    train: Iterable[str],
    val: Iterable[str],
    meta: Mapping[str, IdentityMeta] | None = None,
) -> None:
    """Write ``identity, name, gender, set`` (set = train | val) as TSV, atomically."""
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
    rows = read_tsv(path)
    train = sorted(r["identity"] for r in rows if r["set"] == "train")
    val = sorted(r["identity"] for r in rows if r["set"] == "val")
    return train, val, {r["identity"]: r["gender"] for r in rows}


def small_data_note(n_train: int, n_val: int) -> str:
    """A warning for outputs when too few identities make the numbers meaningless, or ""."""
    if n_train >= MIN_TRAIN_IDENTITIES and n_val >= MIN_VAL_IDENTITIES:
        return ""
    return (
        f"only {n_train} training and {n_val} held-out identities: this run checks the "
        "pipeline; its metrics are not a result"
    )
