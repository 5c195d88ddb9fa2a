"""The stream stage (vox3d.fitting.stream, extract.keep_frames: false) against the two-stage path
(extract_shard stores the frames, fit_shard reads them), on real clips and broken files."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from vox3d.audio.features import features_shard
from vox3d.config import load_config
from vox3d.fitting.fit import FitConfig, fit_shard
from vox3d.fitting.fit_shard import FitShard
from vox3d.fitting.stream import stream_shard
from vox3d.media.extract import extract_shard
from vox3d.media.extract_shard import ExtractShard
from vox3d.media.manifest import build_manifest, write_manifest


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _datasets(p: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(p, "r") as f:
        f.visititems(
            lambda k, o: out.__setitem__(k, o[()]) if isinstance(o, h5py.Dataset) else None
        )
    return out


@pytest.fixture(scope="module")
def cfg() -> FitConfig:
    return FitConfig.from_config(load_config())


@pytest.fixture(scope="module")
def shard(tmp_path_factory, real_clips, bad_files):
    """videos_dir with the 10 real VoxCeleb2 clips and the broken files; one shard."""
    root = tmp_path_factory.mktemp("videos")
    for p in real_clips:
        dst = root / p.relative_to(p.parents[2])
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dst)
    for p in bad_files.values():
        (root / "idbad/yt").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, root / "idbad/yt" / p.name)
    out = tmp_path_factory.mktemp("out")
    rows = build_manifest(root, progress=False)
    (name,) = write_manifest(rows, out / "manifest.tsv", out / "shards", 1000)
    return root, out / "shards" / f"{name}.tsv"


@pytest.fixture(scope="module")
def runs(shard, cfg, tmp_path_factory):
    """The two-stage path, the stream path, and the stream path with nothing held back
    (every video streams before its decode ends; two decode workers)."""
    root, tsv = shard
    d = tmp_path_factory.mktemp("runs")
    extract_shard(tsv, root, d / "two/extract/s.h5", progress=False)
    fit_shard(d / "two/extract/s.h5", d / "two/fit/s.h5", cfg, progress=False)
    features_shard(d / "two/extract/s.h5", d / "two/features/s.h5", progress=False)
    res = stream_shard(
        tsv, root, d / "one/extract/s.h5", d / "one/fit/s.h5", cfg, progress=False,
        features_h5=d / "one/features/s.h5", keep_audio=False,
    )  # fmt: skip
    res0 = stream_shard(
        tsv, root, d / "zero/extract/s.h5", d / "zero/fit/s.h5", cfg, workers=2, progress=False,
        hold_frames=0,
    )  # fmt: skip
    return d, res, res0


def test_stream_fit_shard_is_the_two_stage_bytes(runs):
    d, res, _ = runs
    assert res["extract"] == {"videos": 18, "extracted": 12, "rejected": 6}  # 2 without a face
    assert res["fit"]["frames"] > 300 and res["fit"]["kept"] > 0
    assert _sha(d / "one/fit/s.h5") == _sha(d / "two/fit/s.h5")


def test_stream_features_are_the_features_stage_bytes(runs):
    d, res, _ = runs
    assert res["features"] == {"utterances": 12, "rejected": 0}
    assert _sha(d / "one/features/s.h5") == _sha(d / "two/features/s.h5")


@pytest.mark.parametrize("name, audio", [("one", False), ("zero", True)])
def test_stream_extract_shard_is_the_two_stage_one_without_frames(runs, name, audio):
    d, _, _ = runs
    one, two = _datasets(d / name / "extract/s.h5"), _datasets(d / "two/extract/s.h5")
    stored = {k for k in two if k.startswith("frames/")}
    assert len(stored) == 12 and not any(k.startswith("frames/") for k in one)
    assert set(one) == set(two) - stored
    assert len(two["audio"]) > 16000 * 60 and len(one["audio"]) == (
        len(two["audio"]) if audio else 0
    )
    for k in one:
        if k != "audio" or audio:
            np.testing.assert_array_equal(one[k], two[k], err_msg=k)
    flags = ("frames_stored", "audio_stored")
    with h5py.File(d / name / "extract/s.h5") as a, h5py.File(d / "two/extract/s.h5") as b:
        assert [int(a.attrs[k]) for k in flags] == [0, int(audio)]
        assert [int(b.attrs[k]) for k in flags] == [1, 1]
        assert {k: str(v) for k, v in a.attrs.items() if k not in flags} == {
            k: str(v) for k, v in b.attrs.items() if k not in flags
        }
    # no full frame on disk: the stream's extract shard is a fraction of the two-stage one
    assert (d / name / "extract/s.h5").stat().st_size < 0.2 * (
        d / "two/extract/s.h5"
    ).stat().st_size


def test_a_frameless_shard_says_so_and_decodes_frames_and_audio(runs, shard):
    d, _, _ = runs
    root, _ = shard
    with ExtractShard(d / "one/extract/s.h5") as one, ExtractShard(d / "two/extract/s.h5") as two:
        assert not one.frames_stored and two.frames_stored
        with pytest.raises(ValueError, match="keep_frames"):
            one.frames(0)
        with pytest.raises(ValueError, match="videos_dir"):
            one.frame(0, 0)
        for i, k in ((0, 0), (3, 7), (9, two.videos[9]["frame_count"] - 1)):
            np.testing.assert_array_equal(one.frame(i, k, root), two.frames(i)[0][k])
            np.testing.assert_array_equal(two.frame(i, k), two.frames(i)[0][k])
        with pytest.raises(IndexError):
            one.frame(0, one.videos[0]["frame_count"], root)
        assert not one.audio_stored and two.audio_stored
        with pytest.raises(ValueError, match="keep_audio"):
            one.audio(0)
        with pytest.raises(ValueError, match="keep_audio"):
            next(one.audio_blocks())
        for i in (0, 11):
            np.testing.assert_array_equal(one.video_audio(i, root), two.audio(i))


def test_a_video_rejected_after_it_streamed_is_dropped(runs):
    """hold_frames 0: the truncated clip reaches the fit before its decode ends and is then
    rejected; its rows go and the other videos keep their numbers and fields."""
    d, _, res0 = runs
    with ExtractShard(d / "zero/extract/s.h5") as z, ExtractShard(d / "two/extract/s.h5") as t:
        assert z.rejects == t.rejects and any("truncated" in r["reason"] for r in z.rejects)
        assert z.videos == t.videos
    a = FitShard.read(d / "zero/fit/s.h5")
    b = FitShard.read(d / "two/fit/s.h5")
    assert a.video_paths == b.video_paths and a.rejects == b.rejects
    assert res0["fit"]["frames"] == len(b.frames["video"])
    for k in ("video", "frame", "time", "keep", "reason", "n_faces"):
        np.testing.assert_array_equal(a.frames[k], b.frames[k], err_msg=k)
    for k in ("box", "roi", "params", "score", "yaw", "blur"):
        np.testing.assert_allclose(a.frames[k], b.frames[k], rtol=1e-4, atol=1e-4, err_msg=k)


def test_decode_processes_give_the_same_bytes(runs, shard, cfg, tmp_path):
    """extract.decode_workers: processes: two spawned decode processes (each video decoded
    whole, handed over in order) write the same fit, features and extract files as the
    threads; the rejects (broken files, the truncated clip) are the same rows."""
    d, res, _ = runs
    root, tsv = shard
    got = stream_shard(
        tsv, root, tmp_path / "extract/s.h5", tmp_path / "fit/s.h5", cfg, workers=2,
        progress=False, features_h5=tmp_path / "features/s.h5", keep_audio=False,
        processes=True,
    )  # fmt: skip
    assert got == res
    for stage in ("fit", "features", "extract"):
        assert _sha(tmp_path / stage / "s.h5") == _sha(d / "one" / stage / "s.h5"), stage
    assert _spill_folders() == []  # the frames' files went with the job


def test_decode_workers_auto_takes_processes_from_two_workers():
    from vox3d.fitting.stream import decode_in_processes

    assert [decode_in_processes("auto", n) for n in (1, 2, 15)] == [False, True, True]
    assert not decode_in_processes("threads", 15) and decode_in_processes("processes", 1)
    with pytest.raises(ValueError, match="extract.decode_workers 'gil'"):
        decode_in_processes("gil", 2)


def _spill_folders() -> list[Path]:
    import os
    import tempfile

    import vox3d.fitting.stream as stream

    roots = {Path("/dev/shm"), Path(tempfile.gettempdir())}
    return [p for r in roots for p in r.glob(f"{stream._SPILL_PREFIX}*-{os.getpid()}")]


def test_spilled_frames_come_back_whole_and_leave_no_file(tmp_path):
    """Decode processes hand their frames over through a file: chunks of any shape come
    back equal, in order, and the file is gone once read."""
    from vox3d.fitting.stream import _Spilled

    rng = np.random.default_rng(0)
    chunks = [
        (rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8), np.arange(n) / 5.0 + k)
        for k, (n, h, w) in enumerate([(3, 224, 224), (1, 224, 224), (2, 288, 360)])
    ]
    sp = _Spilled.write(chunks, str(tmp_path))
    assert len(list(tmp_path.iterdir())) == 1
    back = sp.read()
    assert list(tmp_path.iterdir()) == []
    assert len(back) == len(chunks)
    for (f, t), (g, u) in zip(chunks, back, strict=True):
        np.testing.assert_array_equal(f, g)
        np.testing.assert_array_equal(t, u)


def test_frames_are_pickled_where_no_file_can_be_written(shard, tmp_path):
    """A spill folder that cannot take the file (here: gone) falls back to the pickle, with
    the frames a file would have carried."""
    from vox3d.fitting.stream import _decode_in_process, _Spilled
    from vox3d.media.manifest import read_shard

    root, tsv = shard
    row = next(r for r in sorted(read_shard(tsv), key=lambda r: r["path"]) if "pcavs" in r["path"])
    job = (row, root / row["path"], 5.0, 1.0, "pyav", 1, None, None)
    pickled, result = _decode_in_process(job, str(tmp_path / "gone"))
    assert result[0] == "done" and isinstance(pickled, list) and pickled
    spilled, _ = _decode_in_process(job, str(tmp_path))
    assert isinstance(spilled, _Spilled)
    back = spilled.read()
    assert len(back) == len(pickled) and list(tmp_path.iterdir()) == []
    for (f, t), (g, u) in zip(pickled, back, strict=True):
        np.testing.assert_array_equal(f, g)
        np.testing.assert_array_equal(t, u)


def test_spill_folders_of_dead_jobs_are_removed(tmp_path, monkeypatch):
    """A killed job leaves its folder; the next job removes it (its process is gone) but
    not a folder of a job still running."""
    import os
    import subprocess
    import sys
    import tempfile

    import vox3d.fitting.stream as stream

    monkeypatch.setattr(os, "access", lambda p, m: False if p == "/dev/shm" else True)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (tmp_path / f"{stream._SPILL_PREFIX}abc-{dead}").mkdir()
    (tmp_path / f"{stream._SPILL_PREFIX}abc-{dead}" / "x.frames").write_bytes(b"x")
    (tmp_path / f"{stream._SPILL_PREFIX}def-1").mkdir()  # pid 1 runs
    new = Path(stream._spill_dir())
    assert new.parent == tmp_path and new.name.endswith(f"-{os.getpid()}")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([f"{stream._SPILL_PREFIX}def-1", new.name])


def test_a_crashed_decode_process_fails_the_job(shard, cfg, tmp_path, monkeypatch):
    """A decode process that dies (here: os._exit in the worker, as a segfault would) fails
    the job with the pool's error; nothing is written."""
    import vox3d.fitting.stream as stream

    root, tsv = shard
    monkeypatch.setattr(stream, "_decode_in_process", _die)
    with pytest.raises(Exception, match="terminated abruptly"):
        stream_shard(
            tsv, root, tmp_path / "ex.h5", tmp_path / "fit.h5", cfg, workers=2, progress=False,
            processes=True,
        )  # fmt: skip
    assert not list(tmp_path.rglob("*.h5"))


def _die(job, spill_dir=None):
    import os

    os._exit(3)


def test_a_failed_fit_leaves_neither_file(shard, cfg, tmp_path, monkeypatch):
    from vox3d.fitting import fit

    root, tsv = shard

    def boom(self, frames):
        raise RuntimeError("killed mid-shard")

    monkeypatch.setattr(fit.Fitter, "fit_frames", boom)
    with pytest.raises(RuntimeError, match="killed mid-shard"):
        stream_shard(tsv, root, tmp_path / "x/ex.h5", tmp_path / "f/fit.h5", cfg, progress=False)
    left = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert left == []


def test_a_decoder_crash_fails_the_job_not_the_video(shard, cfg, tmp_path, monkeypatch):
    """Only a bad video (MediaError) is a reject; any other decode failure ends the job."""
    from vox3d.fitting import stream

    root, tsv = shard

    def broken(*a, **k):
        raise OSError("decoder library missing")

    monkeypatch.setattr(stream, "decode", broken)
    with pytest.raises(OSError, match="decoder library missing"):
        stream_shard(tsv, root, tmp_path / "ex.h5", tmp_path / "fit.h5", cfg, progress=False)
    assert not (tmp_path / "ex.h5").exists() and not (tmp_path / "fit.h5").exists()


def test_hardware_decode_matches_the_cpu_or_falls_back(real_clips):
    """``hwaccel="cuda"``: where NVDEC is missing (here) the video is decoded on the CPU and
    the result is the CPU's exactly, the fallback counted; where it runs (the GPU machine),
    too: frame times, audio and pixels (NVDEC's NV12 rearranged into the CPU decoder's
    YUV420P before the same RGB conversion; bench/results/h100_stream_decode_onectx.txt:
    0 grey levels on all 10 clips, where PyAV's own NV12 -> RGB differed by up to 50)."""
    from vox3d.media import video

    for clip in real_clips[:3]:
        cpu = video.decode(clip, 5.0)
        before = sum(video.HW_FAILURES.values())
        hw = video.decode(clip, 5.0, hwaccel="cuda")
        fell_back = sum(video.HW_FAILURES.values()) == before + 1
        assert np.array_equal(hw.frame_times, cpu.frame_times), clip
        assert np.array_equal(hw.audio, cpu.audio), clip
        assert hw.frames.shape == cpu.frames.shape, clip
        d = np.abs(hw.frames.astype(np.int16) - cpu.frames.astype(np.int16))
        assert d.max() == 0, (clip, "fell back" if fell_back else "NVDEC", d.max())


def test_failed_hardware_decode_gives_the_sink_only_the_cpu_frames(real_clips, monkeypatch):
    """A hardware decode that fails after decoding some frames must hand the sink none of
    them: the sink sees the CPU decode's frames once, in order."""
    from vox3d.media import video

    clip = real_clips[0]
    want = video.decode(clip, 5.0)
    real = video._decode_pyav

    def half_then_fail(path, frame_rate, threads, out, hwaccel=None):
        if hwaccel is None:
            return real(path, frame_rate, threads, out)
        for k in range(3):  # frames reach the holder, then the device breaks
            out.add(float(want.frame_times[k]), want.frames[k])
        out.flush()
        raise RuntimeError("NVDEC went away")

    monkeypatch.setattr(video, "_decode_pyav", half_then_fail)
    got_f, got_t = [], []
    video.decode(clip, 5.0, sink=lambda f, t: (got_f.append(f), got_t.append(t)), hwaccel="cuda")
    assert np.array_equal(np.concatenate(got_t), want.frame_times)
    assert np.array_equal(np.concatenate(got_f), want.frames)
