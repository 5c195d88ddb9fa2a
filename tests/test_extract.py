"""Extract stage on real clips: rejects, audio length, frames at frame_rate, determinism, resume."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import h5py
import numpy as np
import pytest

from vox3d.io import read_tsv
from vox3d.media.extract import SAMPLE_RATE, aggregate, extract_shard
from vox3d.media.extract_shard import FORMAT_VERSION, ExtractShard
from vox3d.media.manifest import MANIFEST_COLUMNS, build_manifest, write_manifest
from vox3d.media.video import decode, to_mono_16k
from vox3d.media.video_frames import (
    NearestFrameSelector,
    expected_frame_count,
    select_frame_indices,
)
from vox3d.media.video_probe import MediaError

REPO = Path(__file__).resolve().parents[1]
FRAME_RATE = 5.0
ONE_VIDEO_FRAME = SAMPLE_RATE // 25  # 640 samples at 25 fps
ODD = "id 9ä/yt x/ütt ü.mp4"  # spaces + unicode
BAD_REASONS = {  # stem -> words the reason must contain
    "empty": "empty file",
    "not_a_video": "not a video",
    "truncated": "truncated",
    "no_audio": "no audio stream",
    "no_video": "no video stream",
    "too_short": "too short",
}


def _independent_durations(data_root: Path) -> dict[str, float]:
    """Container durations from real/manifest.csv (ffprobe 5.1, not our code)."""
    with open(data_root / "real" / "manifest.csv", newline="") as fh:
        return {r["path"]: float(r["duration_s"]) for r in csv.DictReader(fh) if r["duration_s"]}


def _source_frame_count(path: Path) -> int:
    """Video packets in the file (one frame each for these codecs), counted with PyAV demux."""
    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(video=0) if p.size)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, real_clips, other_clips, bad_files, data_root):
    """videos_dir with the real clips, other containers, broken files and an odd name."""
    root = tmp_path_factory.mktemp("videos")
    src: dict[str, Path] = {}
    for p in real_clips + other_clips:
        rel = p.relative_to(p.parents[2]).as_posix()
        src[rel] = p
    for p in bad_files.values():
        src[f"broken/bad/{p.name}"] = p
    src[ODD] = real_clips[0]
    for rel, p in src.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, root / rel)
    return root, src


@pytest.fixture(scope="module")
def extracted(corpus, tmp_path_factory):
    root, src = corpus
    out = tmp_path_factory.mktemp("out")
    rows = build_manifest(root, progress=False)
    write_manifest(rows, out / "manifest.tsv", out / "shards", shard_size=1000)
    res = extract_shard(out / "shards" / "shard-00000.tsv", root, out / "x.h5", progress=False)
    return out, rows, res


def test_rejects_and_reasons(extracted, corpus):
    out, rows, res = extracted
    _, src = corpus
    with ExtractShard(out / "x.h5") as s:
        rejects = {r["path"]: r for r in s.rejects}
        kept = {v["video"] for v in s.videos}
    expected = {f"broken/bad/{k}.mp4" for k in BAD_REASONS}
    assert set(rejects) == expected
    for stem, words in BAD_REASONS.items():
        assert words in rejects[f"broken/bad/{stem}.mp4"]["reason"]
    # everything else, the odd name and the fit-stage rejects (no face) included, is kept
    assert kept == set(src) - expected
    assert ODD in kept
    assert res == {"videos": len(src), "extracted": len(kept), "rejected": len(expected)}


def test_audio_length_and_format(extracted, corpus, data_root):
    """Audio length = duration x 16000 within one video frame (640 samples at 25 fps).

    Durations: the video's own length (source frames / 25 fps, counted by demuxing), the
    manifest's probed duration, and ffprobe 5.1's container duration from real/manifest.csv;
    MANIFEST.md documents that in the PC-AVS mp4s (real/voxceleb) that container duration is
    0.064 s longer than both streams, an edit-list artefact of the upstream files.
    """
    out, _, _ = extracted
    _, src = corpus
    durations = _independent_durations(data_root)
    checked = 0
    with ExtractShard(out / "x.h5") as s:
        assert s.sample_rate == SAMPLE_RATE == 16000
        for i, v in enumerate(s.videos):
            a = s.audio(i)
            name = v["video"]
            assert a.dtype == np.float32 and a.ndim == 1 and a.size == v["audio_length"]
            assert np.abs(a).max() <= 1.0 and np.sqrt(np.mean(a**2)) > 1e-3, name
            video_s = _source_frame_count(src[name]) / 25.0
            assert abs(a.size - video_s * SAMPLE_RATE) <= ONE_VIDEO_FRAME, (name, a.size, video_s)
            assert abs(a.size - v["duration_s"] * SAMPLE_RATE) <= ONE_VIDEO_FRAME, name
            key = src[name].relative_to(data_root / "real").as_posix()
            if key in durations:
                artefact = 0.064 if key.startswith("voxceleb/") else 0.0
                expect = durations[key] * SAMPLE_RATE
                slack = ONE_VIDEO_FRAME + artefact * SAMPLE_RATE
                assert abs(a.size - expect) <= slack, (name, a.size, expect)
                checked += 1
    assert checked >= 17  # 10 VoxCeleb2 + 7 other containers (stereo 44.1/48 kHz resampled)


def test_frames_at_frame_rate(extracted, corpus):
    out, _, _ = extracted
    _, src = corpus
    with ExtractShard(out / "x.h5") as s:
        assert s.frame_rate == FRAME_RATE
        for i, v in enumerate(s.videos):
            frames, times = s.frames(i)
            n_src = _source_frame_count(src[v["video"]])  # all sources here are 25 fps
            last = (n_src - 1) / 25.0
            expect_n = int(np.floor((last + 0.02) * FRAME_RATE + 1e-9)) + 1
            assert frames.shape == (expect_n, v["height"], v["width"], 3), v["video"]
            assert frames.dtype == np.uint8 and times.dtype == np.float64
            np.testing.assert_allclose(times, np.arange(expect_n) / FRAME_RATE, atol=2e-3)


def test_frames_are_the_nearest_source_frames(extracted, corpus, real_clips):
    """Frame k is the source frame at t = k / 5 s: every 5th frame of a 25 fps clip."""
    out, _, _ = extracted
    _, src = corpus
    with ExtractShard(out / "x.h5") as s:
        i = next(j for j, v in enumerate(s.videos) if src[v["video"]] == real_clips[1])
        frames, _ = s.frames(i)
    with av.open(str(real_clips[1])) as c:
        ref = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == len(ref[::5])
    for k, f in enumerate(frames):
        np.testing.assert_array_equal(f, ref[5 * k])


def test_hardware_frames_convert_to_the_cpu_pixels(real_clips):
    """NVDEC's frames arrive as NV12 with the CPU decoder's samples (H.264 is bit-exact):
    the hardware converter gives the CPU converter's pixels for them.  Simulated here by
    rearranging CPU frames into NV12 (lossless); PyAV's direct NV12 -> RGB, the control,
    differs (the up-to-50-grey-level gap measured on the GPU)."""
    from av.video.reformatter import VideoReformatter

    from vox3d.media.video import _rgb24_converter

    cpu, hw, to_nv12 = _rgb24_converter(None), _rgb24_converter("cuda"), VideoReformatter()
    direct_differs = 0
    with av.open(str(real_clips[0])) as c:
        for k, f in enumerate(c.decode(video=0)):
            if k % 5:
                continue
            nv = to_nv12.reformat(f, format="nv12", threads=1)
            assert nv.format.name == "nv12"
            want = cpu(f)
            np.testing.assert_array_equal(hw(nv), want)
            np.testing.assert_array_equal(hw(f), want)  # a CPU-decoded frame: unchanged
            direct_differs += not np.array_equal(nv.to_ndarray(format="rgb24"), want)
    assert direct_differs > 0


def test_file_attributes_and_layout(extracted):
    out, _, _ = extracted
    with h5py.File(out / "x.h5", "r") as f:
        assert f.attrs["format_version"] == FORMAT_VERSION
        assert f.attrs["sample_rate"] == 16000 and f.attrs["frame_rate"] == 5.0
        assert f.attrs["decoder"] == "pyav"
        n = len(f["video"])
        assert f["audio"].shape == (int(f["audio_length"][()].sum()),)
        assert f["frame_times"].shape == (int(f["frame_count"][()].sum()),)
        assert len(f["frames"]) == n
        sizes = {tuple(f["frames"][k].shape[1:3]) for k in f["frames"]}
        assert sizes == {(224, 224), (288, 360)}  # different frame sizes coexist


def test_rerun_gives_identical_bytes(corpus, tmp_path):
    root, _ = corpus
    rows = [r for r in build_manifest(root, progress=False) if r["path"].startswith("broken/")]
    rows += [r for r in build_manifest(root, progress=False) if r["path"].startswith("pcavs0")]
    write_manifest(sorted(rows, key=lambda r: r["path"]), tmp_path / "m.tsv", tmp_path / "sh", 100)
    shard = tmp_path / "sh" / "shard-00000.tsv"
    extract_shard(shard, root, tmp_path / "a.h5", progress=False)
    time.sleep(1.1)  # a stored wall-clock time would now differ
    extract_shard(shard, root, tmp_path / "b.h5", progress=False)
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


@pytest.mark.slow
def test_killed_then_resumed_shard(corpus, tmp_path):
    root, _ = corpus
    rows = [r for r in build_manifest(root, progress=False) if not r["path"].startswith("broken/")]
    write_manifest(rows, tmp_path / "m.tsv", tmp_path / "sh", 100)
    shard = tmp_path / "sh" / "shard-00000.tsv"
    final = tmp_path / "out" / "x.h5"
    cmd = [
        sys.executable,
        "-m",
        "vox3d.tools.cli",
        "extract",
        str(shard),
        "--videos-dir",
        str(root),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd + ["--out", str(final)], env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    part = None
    while time.time() < deadline and proc.poll() is None:
        parts = list(final.parent.glob(".x.h5.*.part")) if final.parent.exists() else []
        if parts and parts[0].stat().st_size > 1_000_000:  # some videos written
            part = parts[0]
            break
        time.sleep(0.01)
    assert part is not None and proc.poll() is None, "could not catch the job mid-way"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not final.exists()  # nothing at the final path after a kill
    assert part.exists()  # the killed job's temporary file is left behind ...
    subprocess.run(cmd + ["--out", str(final)], env=env, check=True, stderr=subprocess.DEVNULL)
    assert not part.exists()  # ... and removed by the rerun
    assert list(final.parent.glob("*.part")) == []
    extract_shard(shard, root, tmp_path / "clean.h5", progress=False)
    assert final.read_bytes() == (tmp_path / "clean.h5").read_bytes()


@pytest.mark.parametrize(
    "rel, exact_audio",
    [
        ("voxceleb/id06209/pcavs/00105.mp4", False),  # AAC: libavcodec versions differ by ~1e-7
        ("other/grid_bbaf2n/grid/bbaf2n.mpg", True),  # MP2 44.1 kHz stereo, 360x288
        ("other/pcavs00473/clip/00003.avi", True),  # MJPEG + PCM 48 kHz stereo
        ("other/pcavs00473/clip/00002.mpg", True),  # MPEG-PS, streams start at 0.53 s
        ("other/pcavs00473/clip/00001.webm", None),  # Opus: pre-skip handled differently
    ],
)
def test_decoders_agree(data_root, rel, exact_audio):
    a = decode(data_root / "real" / rel, FRAME_RATE, "pyav")
    b = decode(data_root / "real" / rel, FRAME_RATE, "ffmpeg")
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.frame_times, b.frame_times)
    if exact_audio:
        np.testing.assert_array_equal(a.audio, b.audio)
    elif exact_audio is False:
        assert a.audio.shape == b.audio.shape
        np.testing.assert_allclose(a.audio, b.audio, atol=1e-6)
    else:
        assert abs(a.audio.size - b.audio.size) <= SAMPLE_RATE // 100  # within 10 ms


@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg"])
def test_decoders_reject_with_reasons(bad_files, decoder):
    for stem, words in [
        ("empty", "empty file"),
        ("no_audio", "no audio"),
        ("no_video", "no video"),
    ]:
        with pytest.raises(MediaError, match=words):
            decode(bad_files[stem], FRAME_RATE, decoder)
    with pytest.raises(MediaError, match="damaged or truncated MP4"):
        decode(bad_files["truncated"], FRAME_RATE, decoder)
    with pytest.raises(MediaError, match="not a video"):
        decode(bad_files["not_a_video"], FRAME_RATE, decoder)


def test_selector_rules():
    t25 = np.arange(100) / 25.0
    assert select_frame_indices(t25, 5.0) == list(range(0, 100, 5))
    # 30 fps -> 5 fps: every 6th frame
    assert select_frame_indices(np.arange(60) / 30.0, 5.0) == list(range(0, 60, 6))
    # slower source than frame_rate: each frame once
    assert select_frame_indices(np.arange(10) / 3.0, 5.0) == list(range(10))
    # nearest with jitter; times are relative to the first frame (here 0.53 s)
    t = 0.53 + np.array([0.0, 0.11, 0.19, 0.32, 0.41, 0.58])
    assert select_frame_indices(t, 5.0) == [0, 2, 4, 5]  # targets 0, .2, .4, .6
    # tie -> the earlier frame
    assert select_frame_indices([0.0, 0.1, 0.3, 0.45], 5.0) == [0, 1, 3]
    # a target past the last frame by more than half an interval is dropped
    assert select_frame_indices([0.0, 0.06, 0.12, 0.18], 5.0) == [0, 3]  # 0.2 - 0.18 < 0.03
    assert select_frame_indices([0.0, 0.04, 0.08, 0.12], 5.0) == [0]
    sel = NearestFrameSelector(5.0)
    assert sel.finish() == []
    for n, fps in [(108, 25.0), (244, 25.0), (90, 30.0), (7, 3.0)]:
        times = np.arange(n) / fps
        assert expected_frame_count(n, fps, 5.0) == len(select_frame_indices(times, 5.0))
    assert expected_frame_count(108, 25.0, 5.0) == 22


def test_to_mono_16k_mixes_and_resamples():
    sr = 44100
    t = np.arange(sr) / sr
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([left, -left + 0.2], axis=1).astype(np.float32)  # mean = 0.1 (DC)
    y = to_mono_16k(stereo, sr)
    assert y.dtype == np.float32 and y.shape == (16000,)
    np.testing.assert_allclose(y[2000:-2000], 0.1, atol=1e-3)
    tone = to_mono_16k(np.stack([left, left], 1).astype(np.float32), sr)
    spec = np.abs(np.fft.rfft(tone))
    assert abs(np.argmax(spec) * 16000 / len(tone) - 440) <= 1
    assert np.abs(to_mono_16k(np.full((100, 1), 3.0, np.float32), 16000)).max() == 1.0


def test_reader_refuses_other_files(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f.attrs["format"] = "something else"
    with pytest.raises(ValueError, match=str(p)):
        ExtractShard(p)


def test_aggregate_tables(extracted, tmp_path):
    out, _, _ = extracted
    totals = aggregate([out / "x.h5"], tmp_path / "rejects.tsv", tmp_path / "stats.tsv")
    rj = read_tsv(tmp_path / "rejects.tsv")
    assert list(rj[0]) == ["path", "stage", "reason"]
    assert {r["stage"] for r in rj} == {"extract"} and len(rj) == len(BAD_REASONS)
    stats = read_tsv(tmp_path / "stats.tsv")
    assert [r["shard"] for r in stats] == ["x", "total"]
    assert int(stats[-1]["rejected"]) == totals["rejected"] == len(BAD_REASONS)
    assert int(stats[-1]["rejected_no_audio"]) == 1
    assert int(stats[-1]["videos"]) == int(stats[-1]["extracted"]) + int(stats[-1]["rejected"])


def test_manifest_columns_reach_the_shard(extracted):
    out, _, _ = extracted
    with open(out / "shards" / "shard-00000.tsv", encoding="utf-8") as fh:
        assert fh.readline().rstrip("\n").split("\t") == list(MANIFEST_COLUMNS)


@pytest.mark.slow
def test_snakemake_manifest_extract_end_to_end(corpus, tmp_path):
    root, src = corpus
    out = tmp_path / "results"
    cmd = [
        str(Path(sys.executable).with_name("snakemake")),
        "manifest",
        "extract",
        "--cores",
        "2",
        "--nolock",  # outputs are in tmp_path; do not contend with other runs in the repo
        "--config",
        f"videos_dir={root}",
        f"out_dir={out}",
        "shard_size=8",
        "extract={keep_frames: true}",  # the extract stage alone (else stream_shard fits too)
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    shards = sorted((out / "shards").glob("shard-*.tsv"))
    assert len(shards) == -(-len(src) // 8)
    assert len(list((out / "extract").glob("shard-*.h5"))) == len(shards)
    rj = read_tsv(out / "extract" / "rejects.tsv")
    assert {r["path"] for r in rj} == {f"broken/bad/{k}.mp4" for k in BAD_REASONS}
    assert all(r["reason"] for r in rj)
    stats = read_tsv(out / "extract" / "stats.tsv")
    assert int(stats[-1]["extracted"]) == len(src) - len(BAD_REASONS)
    for rule in ("manifest", "extract_shard", "extract"):
        assert any((out / "logs" / rule).iterdir()) and any((out / "benchmarks" / rule).iterdir())


@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg"])
def test_cut_streamable_mp4_is_rejected(real_clips, tmp_path, decoder):
    """An mp4 with its index first (faststart) cut in half opens fine but decodes half."""
    root = tmp_path / "v"
    (root / "a" / "y").mkdir(parents=True)
    (root / "b" / "y").mkdir(parents=True)
    whole = tmp_path / "fs.mp4"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(real_clips[3]), "-c", "copy",
         "-movflags", "+faststart", str(whole)],
        check=True,
    )  # fmt: skip
    data = whole.read_bytes()
    (root / "a" / "y" / "cut.mp4").write_bytes(data[: len(data) // 2])
    shutil.copyfile(real_clips[0], root / "b" / "y" / "ok.mp4")
    write_manifest(build_manifest(root, progress=False), tmp_path / "m.tsv", tmp_path / "s", 10)
    extract_shard(tmp_path / "s" / "shard-00000.tsv", root, tmp_path / "x.h5", decoder=decoder,
                  progress=False)  # fmt: skip
    with ExtractShard(tmp_path / "x.h5") as s:
        assert [v["video"] for v in s.videos] == ["b/y/ok.mp4"]
        (rj,) = s.rejects
    assert rj["path"] == "a/y/cut.mp4" and rj["code"] == "truncated"
    assert "truncated or damaged: only" in rj["reason"]


def test_files_outside_identity_folders(real_clips, bad_files, tmp_path):
    """Files directly in videos_dir: rejected, a broken one with its own reason."""
    root = tmp_path / "v"
    (root / "id1" / "yt").mkdir(parents=True)
    shutil.copyfile(real_clips[0], root / "id1" / "yt" / "ok.mp4")
    shutil.copyfile(real_clips[1], root / "top.mp4")
    shutil.copyfile(bad_files["no_audio"], root / "no_audio.mp4")
    shutil.copyfile(bad_files["empty"], root / "empty.mp4")
    write_manifest(build_manifest(root, progress=False), tmp_path / "m.tsv", tmp_path / "s", 10)
    extract_shard(tmp_path / "s" / "shard-00000.tsv", root, tmp_path / "x.h5", progress=False)
    with ExtractShard(tmp_path / "x.h5") as s:
        assert [v["video"] for v in s.videos] == ["id1/yt/ok.mp4"]
        reasons = {r["path"]: r["reason"] for r in s.rejects}
    assert reasons["top.mp4"].startswith("not in an identity folder")
    assert reasons["no_audio.mp4"] == "no audio stream (video only)"
    assert reasons["empty.mp4"] == "empty file (0 bytes)"


def test_threaded_frame_read_equals_plain_read(extracted):
    """ExtractShard(threads=N) inflates the per-frame gzip chunks in threads: same arrays."""
    out, _, _ = extracted
    with ExtractShard(out / "x.h5") as plain, ExtractShard(out / "x.h5", threads=3) as fast:
        assert fast._pool is not None and len(plain) == len(fast) > 0
        for i in range(len(plain)):
            a, ta = plain.frames(i)
            b, tb = fast.frames(i)
            assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape and a.shape[0] > 1
            assert np.array_equal(a, b) and np.array_equal(ta, tb)
