"""Concurrency (issue 10, item 4): a second workflow run on the same out_dir refuses with
Snakemake's lock message while the first runs; the jobs of one run (shards in parallel)
never share an output, log, benchmark or temporary file."""

from __future__ import annotations

import os
import re
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest


def _locks_mention(workdir: Path, out: Path) -> bool:
    locks = workdir / ".snakemake" / "locks"
    if not locks.is_dir():
        return False
    for p in locks.iterdir():
        try:
            if str(out) in p.read_text():
                return True
        except OSError:
            continue
    return False


@pytest.mark.slow
def test_second_run_on_the_same_out_dir_is_refused(workflow):
    wf = workflow("shared")
    first = wf.start()
    try:
        t0 = time.monotonic()
        while not _locks_mention(wf.workdir, wf.out):
            assert first.poll() is None, "the first run ended before it locked"
            assert time.monotonic() - t0 < 120, "the first run never took its lock"
            time.sleep(0.05)
        second = wf.run(timeout=120)
        assert first.poll() is None, "the first run finished before the second was tried"
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGTERM)  # graceful: Snakemake removes its lock
        first.wait(timeout=60)
    msg = second.stdout + second.stderr
    print(msg[-1500:])
    assert second.returncode != 0
    assert "LockException" in msg and "cannot be locked" in msg, msg[-3000:]
    wf.run("--unlock")


def _dry_run_jobs(text: str) -> list[tuple[str, str, list[str]]]:
    """(rule, wildcards, files it writes: output + log + benchmark) per job of a dry run."""
    jobs, cur = [], None
    for line in text.splitlines():
        m = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):$", line)
        if m:
            cur = [m.group(1), "", []]
            jobs.append(cur)
            continue
        m = re.match(r"^\s+(output|log|benchmark|wildcards): (.*)$", line)
        if cur is not None and m:
            if m.group(1) == "wildcards":
                cur[1] = m.group(2)
            else:
                cur[2] += [s.strip() for s in m.group(2).split(", ") if s.strip()]
    return [(r, w, files) for r, w, files in jobs]


@pytest.mark.slow
def test_parallel_shard_jobs_never_write_the_same_file(clean_run):
    """The DAG of every stage after the manifest (shards resolved): each written path
    belongs to exactly one job, and per-shard rules write under their own shard's name."""
    n_shards = len(list((clean_run.out / "shards").glob("shard-*.tsv")))
    # the default path (one stream_shard job per shard) and the two-stage one (frames kept)
    for extra, rules in (
        ((), ("stream_shard",)),
        (("--config", "extract={keep_frames: true}"), ("extract_shard", "fit_shard", "features_shard")),
    ):  # fmt: skip
        res = clean_run.run("-n", "--forcerun", rules[0], *extra)
        assert res.returncode == 0, res.stderr[-3000:]
        jobs = _dry_run_jobs(res.stdout + res.stderr)
        writers = defaultdict(list)
        for rule, wc, files in jobs:
            for f in files:
                writers[f].append(f"{rule}[{wc}]")
        shared = {f: w for f, w in writers.items() if len(w) > 1}
        assert not shared, shared
        per_shard = [(r, w, fs) for r, w, fs in jobs if w.startswith("shard=")]
        for rule in rules:
            assert sum(r == rule for r, _, _ in per_shard) == n_shards >= 2, rule
        for _, wc, files in per_shard:
            shard = wc.removeprefix("shard=")
            assert files and all(shard in Path(f).name for f in files), (wc, files)
    # temporary files: vox3d.io.atomic_path names them after the final file, next to it
    from vox3d.io import atomic_path

    target = clean_run.out / "probe" / "shard-00001.h5"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".shard-00001.h5.")
        tmp.write_bytes(b"x")
    target.unlink()
    target.parent.rmdir()
