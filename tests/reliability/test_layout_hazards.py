"""Layout hazards a hard probe found (issue 14): symbolic link loops and duplicate links under
``videos_dir``, tabs and line breaks in file names, long videos (bounded memory) and two
workflow runs on one ``out_dir`` from two working directories.  Each test adds its rows to
the reliability table (``conftest.py``)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from . import hostile

LONG_S = 30.0  # seconds of the long clip (CLIP looped): 151 frames at 5 fps


def _link(path: Path, target: str | Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


# ------------------------------------------------------------------ symbolic link loops


def test_symlink_loop_and_duplicate_links_give_each_file_once(tmp_path, caplog, outcomes):
    from vox3d.media.manifest import build_manifest, find_videos, write_manifest

    root = tmp_path / "videos"
    hostile.copy_real(hostile.CLIP)(root, "id1/yt/clip.mp4")
    _link(root / "id1/yt/loop", "..")  # id1/yt/loop/yt/loop/... : a loop inside id1
    _link(root / "id1/yt/up", "../..")  # back to videos_dir: would invent identity "id1/yt/up"
    _link(root / "id2/yt/same.mp4", "../../id1/yt/clip.mp4")  # a second path to one file
    _link(root / "id0/yt/first.mp4", "../../id1/yt/clip2.mp4")  # sorts before its target
    hostile.copy_real(hostile.CLIP2)(root, "id1/yt/clip2.mp4")
    outside = hostile.copy_real(hostile.CLIP2)(tmp_path / "elsewhere", "x/outside.mp4")
    _link(root / "id3/yt/ext.mp4", outside)  # the only path to a file outside: taken
    _link(root / "id4", root / "id1")  # a second link to a whole folder
    _link(root / "id5/yt/broken.mp4", tmp_path / "missing.mp4")  # listed; the probe says why

    with caplog.at_level(logging.WARNING, logger="vox3d.media.manifest"):
        found, bad = find_videos(root)
    assert found == [
        "id0/yt/first.mp4",
        "id1/yt/clip.mp4",
        "id3/yt/ext.mp4",
        "id5/yt/broken.mp4",
    ], found
    assert bad == []
    log = caplog.text
    for skipped in ("id1/yt/loop", "id1/yt/up", "id4", "id2/yt/same.mp4", "id1/yt/clip2.mp4"):
        assert repr(skipped) in log, (skipped, log)
    rows = build_manifest(root, progress=False)
    names = write_manifest(rows, tmp_path / "out/manifest.tsv", tmp_path / "out/shards", 2)
    assert [r["path"] for r in rows] == found and len(names) == 2
    assert {r["identity"] for r in rows} == {"id0", "id1", "id3", "id5"}
    assert [r["path"] for r in rows if r["probe_error"]] == ["id5/yt/broken.mp4"]
    outcomes.append(
        (
            "symlink_loop",
            "id1/yt/loop -> .., id1/yt/up -> ../.., id4 -> id1, two links to files",
            "manifest",
            f"each real file once: {len(rows)} rows in {len(names)} shards, skips logged",
        )
    )


# ------------------------------------------------------- tabs and line breaks in names


def test_tab_and_newline_names_become_extract_rejects(tmp_path, outcomes):
    from vox3d.io import read_tsv
    from vox3d.media.extract import aggregate, extract_shard
    from vox3d.media.manifest import BAD_NAME, build_manifest, escape_path, write_manifest

    root = tmp_path / "videos"
    hostile.copy_real(hostile.CLIP)(root, "id1/yt/good.mp4")
    odd = ["id1/yt/a\tb.mp4", "id1/yt/c\nd.mp4", "id1/y\rt/e\\f.mp4"]
    for rel in odd:
        hostile.copy_real(hostile.CLIP)(root, rel)
    out = tmp_path / "out"
    rows = build_manifest(root, progress=False)
    assert escape_path("id1/y\rt/e\\f.mp4") == "id1/y\\rt/e\\\\f.mp4"
    names = write_manifest(rows, out / "manifest.tsv", out / "shards", 64)
    for name in names:
        extract_shard(out / f"shards/{name}.tsv", root, out / f"extract/{name}.h5", progress=False)
    aggregate(
        [out / f"extract/{n}.h5" for n in names],
        out / "extract/rejects.tsv",
        out / "extract/stats.tsv",
    )
    text = (out / "extract/rejects.tsv").read_text(encoding="utf-8")
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == 1 + len(odd) + 1, text  # header, rows, final \n
    assert all(line.count("\t") == 2 for line in lines[:-1]), text  # path, stage, reason
    rejects = read_tsv(out / "extract/rejects.tsv")
    assert sorted(r["path"] for r in rejects) == sorted(escape_path(r) for r in odd)
    assert all(r["stage"] == "extract" and r["reason"] == BAD_NAME for r in rejects)
    total = read_tsv(out / "extract/stats.tsv")[-1]
    assert total["shard"] == "total"
    assert (total["videos"], total["extracted"], total["rejected"]) == ("4", "1", "3")
    assert total["rejected_bad_layout"] == "3"
    for r in rejects:
        outcomes.append(("name_with_tab_or_newline", r["path"], "extract", f"rejected: {BAD_NAME}"))


# ---------------------------------------------------------------- long videos, memory


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """CLIP looped (stream copy) to LONG_S seconds, at ``<root>/id1/yt/long.mp4``."""
    root = tmp_path_factory.mktemp("long")
    out = root / "id1/yt/long.mp4"
    out.parent.mkdir(parents=True)
    hostile.ffmpeg(
        "-stream_loop", "-1", "-i", str(hostile.CLIP), "-t", f"{LONG_S}", "-c", "copy", str(out)
    )  # fmt: skip
    return out


def test_streaming_decode_holds_a_bounded_number_of_frames(long_clip, outcomes):
    import tracemalloc

    from vox3d.media.video import decode

    chunk = 16
    sizes, times = [], []

    def sink(frames: np.ndarray, t: np.ndarray) -> None:
        assert frames.shape[1:] == (224, 224, 3) and frames.dtype == np.uint8
        assert len(frames) == len(t)
        sizes.append(len(frames))
        times.append(t)

    tracemalloc.start()
    try:
        dec = decode(long_clip, 5.0, "pyav", 1, sink=sink, chunk=chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    n = int(LONG_S * 5) + 1
    assert sum(sizes) == len(dec.frame_times) == n, (sum(sizes), n)
    assert (
        max(sizes) <= chunk and dec.max_held <= chunk and sizes[:-1] == [chunk] * (len(sizes) - 1)
    )
    assert dec.frames.shape[0] == 0 and (dec.height, dec.width) == (224, 224)
    np.testing.assert_array_equal(np.concatenate(times), dec.frame_times)
    all_frames = n * 224 * 224 * 3
    assert peak < all_frames / 2, (peak, all_frames)  # holding every frame would exceed this
    outcomes.append(
        (
            "long_video_decode",
            f"{LONG_S:.0f} s clip, {n} frames ({all_frames / 2**20:.0f} MB)",
            "extract",
            f"streamed: at most {dec.max_held} frames held, peak {peak / 2**20:.1f} MB traced",
        )
    )


def test_long_video_extract_writes_while_decoding_and_fit_reads_in_pieces(
    long_clip, tmp_path, outcomes
):
    from vox3d.fitting import frame_source
    from vox3d.media.extract import extract_shard
    from vox3d.media.extract_shard import ExtractShard
    from vox3d.media.manifest import build_manifest, write_manifest
    from vox3d.media.video import decode

    root = long_clip.parents[2]
    # rejected after decoding (truncated): its frames, already written, must be dropped
    hostile.truncate(long_clip, 0.5)(root, "id1/yt/cut.mp4")
    out = tmp_path / "out"
    rows = build_manifest(root, progress=False)
    (name,) = write_manifest(rows, out / "manifest.tsv", out / "shards", 64)
    h5 = out / f"extract/{name}.h5"
    res = extract_shard(out / f"shards/{name}.tsv", root, h5, progress=False)
    assert res == {"videos": 2, "extracted": 1, "rejected": 1}
    ref = decode(long_clip, 5.0)
    with ExtractShard(h5) as s:
        assert s.rejects[0]["path"] == "id1/yt/cut.mp4" and "truncated" in s.rejects[0]["reason"]
        assert list(s._f["frames"]) == ["000000"] and s.videos[0]["video"] == "id1/yt/long.mp4"
        frames, times = s.frames(0)
        np.testing.assert_array_equal(frames, ref.frames)
        np.testing.assert_array_equal(times, ref.frame_times)
        np.testing.assert_array_equal(s.audio(0), ref.audio)
        part, t = s.frames(0, 10, 25)
        np.testing.assert_array_equal(part, ref.frames[10:25])
        np.testing.assert_array_equal(t, ref.frame_times[10:25])
        pieces = list(frame_source.Prefetcher(s))
    n = len(ref.frame_times)
    assert [p[1] for p in pieces] == list(range(0, n, frame_source.READ_FRAMES))
    assert max(len(p[2]) for p in pieces) <= frame_source.READ_FRAMES and pieces[-1][5]
    assert not any(p[5] for p in pieces[:-1]) and all(p[4] is None for p in pieces)
    np.testing.assert_array_equal(np.concatenate([p[2] for p in pieces]), ref.frames)
    outcomes.append(
        (
            "long_video_extract_fit",
            f"{LONG_S:.0f} s clip + a truncated copy",
            "extract, fit",
            f"frames written per chunk (truncated copy's dropped); fit reads <= "
            f"{frame_source.READ_FRAMES} frames a piece",
        )
    )


# ------------------------------------------------------------------------ out_dir lock


def _try_lock(out: Path) -> subprocess.CompletedProcess:
    code = "import sys; from vox3d.outlock import lock_out_dir; lock_out_dir(sys.argv[1])"
    return subprocess.run(
        [sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=60
    )


def test_out_dir_lock_refuses_a_second_process_and_dies_with_its_holder(tmp_path, outcomes):
    import socket

    from vox3d.outlock import lock_out_dir, lock_path, release_out_dir

    out = tmp_path / "out"
    assert lock_out_dir(out) == lock_path(out)
    try:
        res = _try_lock(out)
        assert res.returncode != 0
        assert "OutDirLocked" in res.stderr and str(out) in res.stderr, res.stderr
        assert f"process {os.getpid()} on host {socket.gethostname()}" in res.stderr
    finally:
        release_out_dir(out)
    assert lock_path(out).read_text() == ""  # emptied on release
    assert _try_lock(out).returncode == 0  # released; and the child's lock died with it
    outcomes.append(("out_dir_lock", "two processes, one out_dir", "workflow", "refused"))


@pytest.mark.slow
def test_second_run_from_another_working_directory_is_refused(workflow, outcomes):
    first = workflow("shared")
    second = workflow("other")  # its own working directory (its own .snakemake) ...
    second.cfg.write_text(first.cfg.read_text())  # ... on the first run's out_dir
    lock = first.out / ".vox3d.lock"
    proc = first.start()
    try:
        t0 = time.monotonic()
        while not (lock.is_file() and "pid=" in lock.read_text()):
            assert proc.poll() is None, "the first run ended before it locked out_dir"
            assert time.monotonic() - t0 < 180, "the first run never locked out_dir"
            time.sleep(0.1)
        dry = second.run("-n", timeout=300)  # a dry run neither takes nor waits for the lock
        t1 = time.monotonic()
        res = second.run(timeout=300)
        took = time.monotonic() - t1
        assert proc.poll() is None, "the first run finished before the second was tried"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    assert dry.returncode == 0, dry.stderr[-3000:]
    msg = res.stdout + res.stderr
    assert res.returncode != 0, msg[-3000:]
    assert f"out_dir {first.out} is in use" in msg and f"process {proc.pid} " in msg, msg[-3000:]
    assert not (second.workdir / ".snakemake" / "locks").exists() or not any(
        (second.workdir / ".snakemake" / "locks").iterdir()
    ), "the refused run left its Snakemake lock"
    outcomes.append(
        (
            "out_dir_two_workdirs",
            "two snakemake runs, two working directories, one out_dir",
            "workflow",
            f"second refused in {took:.1f} s naming out_dir and pid {proc.pid}",
        )
    )
