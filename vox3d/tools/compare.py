"""Compare two workflow output folders file by file (determinism check, issue 10).

`vox3d compare-runs A B` prints every file that exists in only one of the folders or whose
bytes differ, and exits 1 if there is any.  Files that legitimately differ between runs
are ignored: job logs and Snakemake benchmarks (timings), TensorBoard event files (wall
clock), Snakemake's own bookkeeping, and the out_dir lock file (`.vox3d.lock`: its holder's pid).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import sys
from pathlib import Path

#: Glob patterns (relative paths) whose content is expected to differ between runs.
IGNORED = (
    "logs/*",
    "benchmarks/*",
    "*/tb/*",
    "*events.out.tfevents*",
    ".snakemake/*",
    ".vox3d.lock",
)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(root: Path) -> dict[str, Path]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            rel = p.relative_to(root).as_posix()
            if not any(fnmatch.fnmatch(rel, pat) for pat in IGNORED):
                out[rel] = p
    return out


def compare_runs(a: str | Path, b: str | Path) -> list[tuple[str, str]]:
    """(relative path, what differs) for every differing file of the two folders, sorted."""
    fa, fb = _files(Path(a)), _files(Path(b))
    diffs = [(rel, f"only in {a}") for rel in sorted(set(fa) - set(fb))]
    diffs += [(rel, f"only in {b}") for rel in sorted(set(fb) - set(fa))]
    for rel in sorted(set(fa) & set(fb)):
        if fa[rel].stat().st_size != fb[rel].stat().st_size or _digest(fa[rel]) != _digest(fb[rel]):
            diffs.append((rel, "bytes differ"))
    return sorted(diffs)


def cli(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="vox3d compare-runs", description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="first out_dir")
    ap.add_argument("b", help="second out_dir")
    args = ap.parse_args(argv)
    for d in (args.a, args.b):
        if not Path(d).is_dir():
            print(f"vox3d compare-runs: {d}: not a folder", file=sys.stderr)
            return 2
    diffs = compare_runs(args.a, args.b)
    n = len(_files(Path(args.a)))
    for rel, what in diffs:
        print(f"{rel}\t{what}")
    print(f"{len(diffs)} differing of {n} files compared", file=sys.stderr)
    return 1 if diffs else 0
