"""Wall time of the README's first command, `make run`, on a fresh clone, and where it goes.

Clones the repository's HEAD into a temporary folder (with ``../shared`` linked beside it,
as in CI), then times ``make setup`` (the pinned environment from the registries: venv, pip
install, the Sim3DR build; pip's cache is the clone's own, so nothing is reused) and the
workflow (``make run`` after it), and prints, from the workflow's own Snakemake benchmark
files (``OUT/benchmarks/<rule>/*.tsv``), the summed job seconds per rule, with the load
average around it (numbers taken on a loaded machine are slower than the machine can do).

    python3 bench/make_run.py [--repo .] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vox3d.io import read_tsv  # noqa: E402


def rule_seconds(out_dir: Path) -> dict[str, tuple[int, float]]:
    """rule -> (jobs, summed wall seconds) from Snakemake's benchmark tsv files."""
    acc: dict[str, list] = defaultdict(lambda: [0, 0.0])
    for tsv in sorted((out_dir / "benchmarks").rglob("*.tsv")):
        rule = tsv.relative_to(out_dir / "benchmarks").parts[0]
        for row in read_tsv(tsv):
            acc[rule][0] += 1
            acc[rule][1] += float(row["s"])
    return {k: (v[0], v[1]) for k, v in acc.items()}


def timed(cmd: list[str], cwd: Path, log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        rc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT).returncode
    dt = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"{' '.join(cmd)} failed (rc {rc}); see {log}")
    return dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=str(REPO), help="repository to clone (its HEAD)")
    ap.add_argument("--keep", default=None, help="clone here and keep it (default: temporary)")
    a = ap.parse_args(argv)
    repo = Path(a.repo).resolve()
    shared = repo.parent / "shared"
    base = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="vox3d-makerun-"))
    base.mkdir(parents=True, exist_ok=True)
    clone = base / "main"
    try:
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone,
                              capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        if shared.is_dir() and not (base / "shared").exists():
            (base / "shared").symlink_to(shared)
        env_note = f"clone of {repo} at {head}, {os.cpu_count()} cores"
        print(f"make run on a fresh clone: {env_note}", flush=True)
        load0 = os.getloadavg()[0]
        log = base / "make_run.log"
        t_setup = timed(["make", "setup"], clone, log)
        t_run = timed(["make", "run"], clone, log)
        load1 = os.getloadavg()[0]
        rules = rule_seconds(clone / "results")
        print(f"load average (1 min) before {load0:.2f}, after {load1:.2f}")
        print(f"make setup (environment from the registries): {t_setup:.1f} s")
        print(f"make run (workflow, after set-up): {t_run:.1f} s")
        print(f"total: {t_setup + t_run:.1f} s = {(t_setup + t_run) / 60:.1f} min")
        print(f"{'rule':<24} {'jobs':>5} {'job s':>8}")
        for rule, (n, s) in sorted(rules.items(), key=lambda kv: -kv[1][1]):
            print(f"{rule:<24} {n:>5} {s:>8.1f}")
        print(f"{'all jobs':<24} {sum(v[0] for v in rules.values()):>5} "
              f"{sum(v[1] for v in rules.values()):>8.1f}")  # fmt: skip
    finally:
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
