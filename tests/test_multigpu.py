"""vox3d.fitting.multigpu: one fit process per device, merged into the same bytes as one process.

Runs on the CPU: the device list ``["cpu", "cpu"]`` (the ``VOX3D_FIT_DEVICES`` hook) stands
in for two GPUs; each worker is a real spawned process."""

from __future__ import annotations

import h5py
import kit_frames
import numpy as np
import pytest
from extract_shards import write_extract_shard  # noqa: E402

from vox3d import paths
from vox3d.fitting.fit import FitConfig, fit_shard
from vox3d.fitting.multigpu import (
    clean_boundaries,
    devices_for,
    fit_shard_multi,
    pin_one_gpu,
    split_videos,
    visible_cards,
)

needs_assets = pytest.mark.shared_data(paths.FACEBOXES_WEIGHTS)


def _host_chunks(counts: list[int], bs: int) -> list[list[int]]:
    """The videos of each chunk of vox3d.fitting.fit_loop._run_shard's host path (reference model)."""
    chunks, cur, n = [], [], 0
    for i, c in enumerate(counts):
        if c > 0:
            cur.append(i)
            n += c
            if n >= bs:
                chunks.append(cur)
                cur, n = [], 0
    if cur:
        chunks.append(cur)
    return chunks


def test_clean_boundaries_host_path_are_chunk_ends():
    counts = [3, 5, 2, 7, 1, 0, 4, 6, 2]
    bs = 4
    clean = clean_boundaries(counts, [(224, 224)] * len(counts), bs, tensor_path=False)
    ends = {c[-1] + 1 for c in _host_chunks(counts, bs)} - {len(counts)}
    assert clean == sorted(ends) == [2, 4, 7, 8]


def test_clean_boundaries_tensor_path_multiples_and_size_changes():
    # batch 4: cumulative 2, 4 (clean before video 2), 7, 8 (clean before 4); size change
    # before video 5 closes the batch there; 0-frame video 6 keeps the state (clean at 7)
    counts = [2, 2, 3, 1, 3, 4, 0, 1]
    sizes = [(224, 224)] * 5 + [(112, 112)] * 3
    clean = clean_boundaries(counts, sizes, 4, tensor_path=True)
    assert clean == [2, 4, 5, 6, 7]


def test_split_videos_covers_all_and_cuts_at_clean():
    counts = [10, 10, 10, 10, 10, 10]
    parts = split_videos(counts, [2, 5], 2)
    assert parts == [(0, 2), (2, 6)]  # 20 | 40: nearest clean cut to 30 frames
    parts = split_videos(counts, [1, 2, 3, 4, 5], 3)
    assert parts == [(0, 2), (2, 4), (4, 6)]
    assert split_videos(counts, [], 4) == [(0, 1), (1, 3), (3, 4), (4, 6)]  # ties: earlier end
    assert split_videos([5], [], 2) == [(0, 1)]
    assert split_videos([], [], 2) == []
    # no clean cut near the share: falls back to the nearest video end
    assert split_videos([10] * 10, [1], 2) == [(0, 5), (5, 10)]


def test_devices_for_env_hook():
    assert devices_for(1, env={}) == []
    assert devices_for(3, env={}) == ["cuda:0", "cuda:1", "cuda:2"]
    assert devices_for(0, env={"VOX3D_FIT_DEVICES": "cpu, cpu"}) == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="gpu7"):
        devices_for(2, env={"VOX3D_FIT_DEVICES": "gpu7"})


@pytest.fixture(scope="module")
def face_frames():
    return np.stack([s.frame for s in kit_frames.face_frames(4)])


COUNTS = [3, 5, 2, 7, 1, 4, 6]
FIT = {"fit": {"device": "cpu", "batch_size": 4, "min_blur": 0.0}}


@pytest.fixture(scope="module")
def shard_and_reference(tmp_path_factory, face_frames):
    """An extract shard of 7 videos (one without a face) and its one-process fit file."""
    tmp = tmp_path_factory.mktemp("mgpu")
    videos = []
    for i, n in enumerate(COUNTS):
        frames = np.stack([face_frames[(i + j) % len(face_frames)] for j in range(n)])
        if i == 4:
            frames = np.zeros_like(frames)  # no face: a reject row, merged in order
        videos.append((f"id{i % 3}/yt/{i:05d}.mp4", f"id{i % 3}", frames))
    ext = tmp / "shard-00000.h5"
    write_extract_shard(ext, videos)
    one = tmp / "one.h5"
    stats = fit_shard(ext, one, FitConfig.from_config(FIT), progress=False)
    return ext, one, stats


@needs_assets
@pytest.mark.parametrize("n_dev", [2, 3])
def test_multi_process_fit_is_byte_identical(tmp_path, shard_and_reference, n_dev):
    ext, one, st1 = shard_and_reference
    counts = COUNTS
    cfg = FitConfig.from_config(FIT)
    many = tmp_path / "many.h5"
    stn = fit_shard_multi(ext, many, cfg, ["cpu"] * n_dev)
    assert st1 == stn and st1["frames"] == sum(counts) and st1["videos_rejected"] >= 1
    with h5py.File(many, "r") as f:
        np.testing.assert_array_equal(
            f["frames/video"][()], np.repeat(np.arange(len(counts)), counts)
        )
        assert np.isfinite(f["frames/params"][:3]).all()
    assert one.read_bytes() == many.read_bytes()


@needs_assets
def test_workers_do_not_rerun_an_unguarded_main_script(tmp_path, shard_and_reference):
    """Snakemake runs scripts/fit.py as __main__ without a main guard: spawned workers must
    not re-run it (they would fail outside the job, or fit the shard again)."""
    import subprocess
    import sys

    ext, one, _ = shard_and_reference
    out = tmp_path / "many.h5"
    marker = tmp_path / "main_runs.txt"
    script = tmp_path / "job_script.py"
    script.write_text(
        "from vox3d.fitting.fit import FitConfig\n"
        "from vox3d.fitting.multigpu import fit_shard_multi\n"
        f"open({str(marker)!r}, 'a').write('x')\n"
        f"fit_shard_multi({str(ext)!r}, {str(out)!r}, FitConfig.from_config({FIT!r}), "
        "['cpu', 'cpu'])\n"
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert marker.read_text() == "x"  # the script ran once, in the parent only
    assert out.read_bytes() == one.read_bytes()


def test_pin_one_gpu_gives_each_job_its_own_card(tmp_path):
    """One-GPU jobs on a node of three cards: each takes a card no other holds (locks are
    per open file, so three claims in one process stand for three jobs), the fourth finds
    none free, a finished job's card is taken again; CUDA_VISIBLE_DEVICES follows."""
    held, envs = [], []
    for _ in range(3):
        env = {}
        card, fh = pin_one_gpu(["3", "5", "7"], tmp_path, env, wait=False)
        held.append((card, fh))
        envs.append(env)
    assert [c for c, _ in held] == ["3", "5", "7"]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["3", "5", "7"]
    with pytest.raises(RuntimeError, match="held by other jobs"):
        pin_one_gpu(["3", "5", "7"], tmp_path, {}, wait=False)
    held[1][1].close()  # the job on card 5 ends
    env = {}
    assert pin_one_gpu(["3", "5", "7"], tmp_path, env, wait=False)[0] == "5"
    assert env["CUDA_VISIBLE_DEVICES"] == "5"
    # one card (a scheduler gave the job its card) or none: nothing to do
    assert pin_one_gpu(["2"], tmp_path, {}) is None and pin_one_gpu([], tmp_path, {}) is None


def test_pin_one_gpu_lock_is_released_when_a_job_is_killed(tmp_path):
    """A job killed while it holds a card (SIGKILL: no cleanup runs) leaves the card free."""
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import time; from vox3d.fitting.multigpu import pin_one_gpu; "
        f"h = pin_one_gpu(['0', '1'], {str(tmp_path)!r}, {{}}, wait=False); "
        "print(h[0], flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "0"
        other = pin_one_gpu(["0", "1"], tmp_path, {}, wait=False)
        assert other[0] == "1"  # card 0 is the running job's
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(0.1)
    assert pin_one_gpu(["0", "1"], tmp_path, {}, wait=False)[0] == "0"  # freed by the kill
    other[1].close()


def test_visible_cards_reads_the_environment_first():
    assert visible_cards({"CUDA_VISIBLE_DEVICES": "3, 5"}) == ["3", "5"]
    assert visible_cards({"CUDA_VISIBLE_DEVICES": ""}) == []
