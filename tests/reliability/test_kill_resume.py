"""Kill and resume (issue 10, item 2): SIGKILL the whole Snakemake process group while
extract, fit and train jobs are writing, rerun, and get exactly the uninterrupted result.

One out_dir is interrupted three times, each time at the moment a stage's job is
mid-write (its temporary ``.<name>.*.part`` file exists, or its log has appeared), then
the workflow is rerun to completion with ``--rerun-incomplete``.  Afterwards no temporary
file is left, every output of the clean run exists, and :func:`vox3d.tools.compare.compare_runs`
finds no differing byte (logs, benchmarks and TensorBoard aside).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from vox3d.tools.compare import compare_runs

#: (stage, what to wait for under OUT): kill the moment one of the globs matches.
KILL_POINTS = [
    ("extract_shard", ("extract/.*.part", "extract/shard-*.h5")),
    ("fit_shard", ("fit/.*.part", "logs/fit_shard/*", "fit/shard-*.h5")),
    ("train", ("train/.*.part", "train/ckpt*", "train/*.pt", "logs/train/*")),
]


def _wait_for(out: Path, globs, proc, timeout: float = 300) -> str | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for g in globs:
            hits = sorted(out.glob(g))
            if hits:
                return hits[0].relative_to(out).as_posix()
        if proc.poll() is not None:
            return None
        time.sleep(0.02)
    return None


def _partials(out: Path) -> list[str]:
    return sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if any(part.endswith((".part", ".tmp")) for part in p.relative_to(out).parts)
    )


@pytest.mark.slow
def test_sigkill_mid_write_then_rerun_equals_clean_run(clean_run, workflow):
    wf = workflow("killed")
    seen = []
    for stage, globs in KILL_POINTS:
        proc = wf.start("--rerun-incomplete")
        try:
            hit = _wait_for(wf.out, globs, proc)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert hit is not None, f"never saw {stage} start: {wf.out.with_suffix('.log')}"
        seen.append((stage, hit))
        # a SIGKILLed Snakemake leaves its lock behind; releasing it is the user's step
        unlock = wf.run("--unlock")
        assert unlock.returncode == 0, unlock.stderr[-2000:]
    print("killed at:", seen)
    # What a SIGKILL inside vox3d.io.atomic_path leaves: `.<name>.<random><suffix>.part`
    # next to the output.  Plant one for every output the kills left unwritten (their jobs
    # rerun), as if each had been killed mid-write; the rerun must not leave them.
    planted = []
    for p in sorted(clean_run.out.rglob("*")):
        rel = p.relative_to(clean_run.out)
        skip = rel.parts[0] in ("logs", "benchmarks") or "tb" in rel.parts  # not atomic
        if p.is_file() and not skip and not (wf.out / rel).exists():
            stale = (wf.out / rel).with_name(f".{p.name}.k1ll3d{p.suffix}.part")
            stale.parent.mkdir(parents=True, exist_ok=True)
            stale.write_bytes(b"half a file")
            planted.append(stale.relative_to(wf.out).as_posix())
    assert planted, "the kills left nothing to rerun"
    print("planted:", planted)

    done = wf.run("--rerun-incomplete")
    assert done.returncode == 0, done.stderr[-4000:]
    left = _partials(wf.out)
    assert left == [], f"temporary files left after the rerun: {left}"
    again = wf.run("-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    diffs = compare_runs(clean_run.out, wf.out)
    assert diffs == [], "killed+resumed run differs from the clean run:\n" + "\n".join(
        f"{rel}: {why}" for rel, why in diffs
    )
