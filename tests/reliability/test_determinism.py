"""Determinism (issue 10, item 3): two runs of the workflow on the CPU give byte-identical
outputs (logs, benchmarks and TensorBoard aside).  The reference run is the session's
clean run (shared with the kill/resume test); the differing files are printed."""

from __future__ import annotations

import pytest

from vox3d.tools.compare import compare_runs


@pytest.mark.slow
def test_two_runs_give_the_same_bytes(clean_run, workflow):
    wf = workflow("again")
    res = wf.run()
    assert res.returncode == 0, res.stderr[-4000:]
    diffs = compare_runs(clean_run.out, wf.out)
    for rel, why in diffs:
        print(f"DIFFERS: {rel}: {why}")
    assert diffs == [], "outputs differ between two identical runs:\n" + "\n".join(
        f"{rel}: {why}" for rel, why in diffs
    )
    n = sum(1 for p in wf.out.rglob("*") if p.is_file())
    assert n > 20, f"only {n} files written"
