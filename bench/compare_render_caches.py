"""Compare two runs of rule ``train_regressor`` array by array (render caches, checkpoint).

    python bench/compare_render_caches.py RUN_A/regressor RUN_B/regressor [--caches-only]

Each argument is a rule's work folder (``OUT/regressor``): its render caches (every
``shard-*.npz`` below it, matched by relative path) and its ``ict_regressor.pth``.  Prints
per cache the shards and samples that differ (valid flags, boxes, crops) and whether the
checkpoints are byte-identical: the rule reproduces itself only if everything is equal.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare(a: Path, b: Path, caches_only: bool = False) -> bool:
    same = True
    shards = sorted(p.relative_to(a) for p in a.rglob("shard-*.npz"))
    by_cache: dict[str, list[Path]] = {}
    for rel in shards:
        by_cache.setdefault(str(rel.parent), []).append(rel)
    for cache, rels in sorted(by_cache.items()):
        n = n_valid_a = n_valid_b = 0
        diff = {"valid": 0, "box": 0, "crops": 0}
        missing = 0
        for rel in rels:
            if not (b / rel).is_file():
                missing += 1
                continue
            with np.load(a / rel) as za, np.load(b / rel) as zb:
                va, vb = za["valid"], zb["valid"]
                n += len(va)
                n_valid_a += int(va.sum())
                n_valid_b += int(vb.sum())
                diff["valid"] += int((va != vb).sum())
                box_a, box_b = za["box"], zb["box"]
                diff["box"] += int(
                    (~((box_a == box_b) | (np.isnan(box_a) & np.isnan(box_b)))).any(1).sum()
                )
                diff["crops"] += int((za["crops"] != zb["crops"]).reshape(len(va), -1).any(1).sum())
        ok = not missing and not any(diff.values())
        same &= ok
        print(
            f"{cache}: {len(rels)} shards ({missing} missing in B), {n} samples; valid {n_valid_a} vs "
            f"{n_valid_b}; samples differing: valid {diff['valid']}, box {diff['box']}, "
            f"crops {diff['crops']} -> {'IDENTICAL' if ok else 'DIFFERENT'}"
        )
    for name in () if caches_only else ("ict_regressor.pth", "ict_regressor.json"):
        pa, pb = a / name, b / name
        if pa.is_file() and pb.is_file():
            eq = _sha(pa) == _sha(pb)
            same &= eq
            print(
                f"{name}: {_sha(pa)[:16]} vs {_sha(pb)[:16]} -> {'IDENTICAL' if eq else 'DIFFERENT'}"
            )
        else:
            same = False
            print(f"{name}: missing in {'A' if not pa.is_file() else 'B'}")
    what = "CACHES" if caches_only else "RULE"
    print(f"{what} REPRODUCED" if same else f"{what} NOT REPRODUCED")
    return same


if __name__ == "__main__":
    args = [x for x in sys.argv[1:] if x != "--caches-only"]
    if len(args) != 2:
        sys.exit(__doc__)
    sys.exit(0 if compare(Path(args[0]), Path(args[1]), "--caches-only" in sys.argv) else 1)
