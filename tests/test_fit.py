"""Fit stage (vox3d.fit) on small hand-made extract shards: rendered ICT faces with known
ground truth, black frames (no face), reasons counted, determinism, bad input."""

from __future__ import annotations

import json
import time

import h5py
import numpy as np
import pytest

from vox3d import paths
from vox3d.fit import FitConfig, Fitter, fit_shard, write_fit_tables
from vox3d.io import read_tsv
from vox3d.quality import REASON_CODE, REASONS

needs_tddfa = pytest.mark.skipif(
    not (paths.FACEBOXES_WEIGHTS.is_file() and paths.MB05_WEIGHTS.is_file()),
    reason="3DDFA-V2 assets not found under VOX3D_DATA",
)


def write_extract_shard(path, videos):
    """An extract shard in vox3d.extract's format: videos = [(path, identity, frames RGB)]."""
    from vox3d.extract import FORMAT, FORMAT_VERSION

    s = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.attrs.update(
            format=FORMAT, format_version=FORMAT_VERSION, sample_rate=16000, frame_rate=5.0,
            min_duration=1.0, decoder="pyav",
        )  # fmt: skip
        idx = {k: [] for k in ("video", "identity", "audio_offset", "audio_length",
                               "frame_offset", "frame_count", "height", "width")}  # fmt: skip
        times, off = [], 0
        for i, (name, ident, frames) in enumerate(videos):
            f.create_dataset(f"frames/{i:06d}", data=np.asarray(frames, np.uint8))
            n = len(frames)
            for k, v in (("video", name), ("identity", ident), ("audio_offset", 0),
                         ("audio_length", 0), ("frame_offset", off), ("frame_count", n),
                         ("height", frames.shape[1]), ("width", frames.shape[2])):  # fmt: skip
                idx[k].append(v)
            times += list(np.arange(n) / 5.0)
            off += n
        for k, v in idx.items():
            f.create_dataset(
                k, data=np.array(v, dtype=s if k in ("video", "identity") else "int64")
            )
        f.create_dataset("duration_s", data=np.ones(len(videos)))
        f.create_dataset("av_offset", data=np.zeros(len(videos)))
        f.create_dataset("audio", data=np.zeros(0, np.float32))
        f.create_dataset("frame_times", data=np.asarray(times, np.float64))
        for k in ("path", "code", "reason"):
            f.create_dataset(f"rejects/{k}", data=np.array([], dtype=s))


@pytest.fixture(scope="module")
def gen_model():
    from vox3d.ict_regressor import build_gen_model

    try:
        return build_gen_model(8, 4)
    except Exception as e:  # the ICT archive is a shared asset
        pytest.skip(f"ICT-FaceKit not available: {e}")


@pytest.fixture(scope="module")
def frames(gen_model):
    from vox3d.ict_regressor import GenConfig, render_frame

    cfg = GenConfig(n_id=8, n_exp=4, yaw_deg=25, pitch_deg=10, roll_deg=5)
    return [render_frame(gen_model, cfg, i, degrade=False) for i in range(3)]


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory, gen_model):
    """A randomly initialised ICT regressor in the committed layout (wiring, not accuracy)."""
    import torch

    from vox3d.ict_regressor import GenConfig, TrainConfig, save_checkpoint
    from vox3d.params import ict_layout
    from vox3d.regressor import build_mobilenet

    torch.manual_seed(0)
    lay = ict_layout(8, 4)
    model = build_mobilenet(0.5, lay.n)
    mean = np.zeros(lay.n, np.float32)
    mean[[0, 5, 10]] = 1.0  # identity-ish rotation so pose angles are finite
    std = np.full(lay.n, 0.01, np.float32)
    out = tmp_path_factory.mktemp("ckpt") / "ict.pth"
    save_checkpoint(model.eval(), out, GenConfig(n_id=8, n_exp=4), TrainConfig(), mean, std)
    return out


def _ict_cfg(ckpt, **kw):
    fit = {"device": "cpu", "batch_size": 4, "ict_regressor": str(ckpt), "max_yaw_deg": 90.0,
           "min_blur": 0.0, **kw}  # fmt: skip
    return FitConfig.from_config({"face_model": {"name": "ict", "n_id": 8, "n_exp": 4}, "fit": fit})


@needs_tddfa
def test_fit_shard_faces_black_frames_and_determinism(tmp_path, frames, random_checkpoint):
    faces = np.stack([f.image for f in frames])
    black = np.zeros((3, 224, 224, 3), np.uint8)
    ext = tmp_path / "shard-00000.h5"
    write_extract_shard(
        ext, [("idA/yt/00001.mp4", "idA", faces), ("idB/yt/00001.mp4", "idB", black)]
    )
    cfg = _ict_cfg(random_checkpoint)
    fitter = Fitter(cfg)
    out1 = tmp_path / "fit1.h5"
    stats = fit_shard(ext, out1, cfg, fitter=fitter, progress=False)
    assert stats["frames"] == 6 and stats["no_face"] == 3 and stats["kept"] == 3
    assert stats["videos_rejected"] == 1
    assert sum(stats[r] for r in REASONS) == 6
    with h5py.File(out1, "r") as f:
        assert f.attrs["face_model"] == "ict" and f.attrs["param_n_id"] == 8
        assert json.loads(f.attrs["reason_names"]) == list(REASONS)
        fr = f["frames"]
        np.testing.assert_array_equal(fr["video"][()], [0, 0, 0, 1, 1, 1])
        np.testing.assert_array_equal(fr["frame"][()], [0, 1, 2, 0, 1, 2])
        assert fr["params"].shape == (6, 12 + 8 + 4)
        assert np.isfinite(fr["params"][:3]).all() and np.isnan(fr["params"][3:]).all()
        assert (fr["reason"][3:] == REASON_CODE["no_face"]).all()
        assert (fr["score"][:3] > 0.9).all() and (fr["n_faces"][:3] == 1).all()
        assert (fr["blur"][:3] > 0).all()
        # the detector box surrounds the true landmarks
        for i, fm in enumerate(frames):
            x1, y1, x2, y2 = fr["box"][i, :4]
            lm = fm.landmarks
            assert x1 < lm[:, 0].mean() < x2 and y1 < lm[:, 1].mean() < y2
        rej_paths = [s.decode() for s in f["rejects/path"][()]]
        rej_reasons = [s.decode() for s in f["rejects/reason"][()]]
    assert rej_paths == ["idB/yt/00001.mp4"]
    assert "no usable frame" in rej_reasons[0] and "3 no face" in rej_reasons[0]
    time.sleep(1.1)  # any stored timestamp would now differ
    out2 = tmp_path / "fit2.h5"
    fit_shard(ext, out2, cfg, fitter=fitter, progress=False)
    assert out1.read_bytes() == out2.read_bytes()
    # aggregate tables: every frame counted by reason, the black video in rejects
    from vox3d.identities import aggregate_identities

    ids = tmp_path / "identities.h5"
    summary = aggregate_identities([out1], ids)
    assert summary["identities"] == 1 and summary["rejected"] == 1
    write_fit_tables([out1], ids, tmp_path / "rejects.tsv", tmp_path / "stats.tsv")
    rows = read_tsv(tmp_path / "stats.tsv")
    assert [r["shard"] for r in rows] == ["fit1", "total"]
    assert rows[-1]["no_face"] == "3" and rows[-1]["kept"] == "3" and rows[-1]["frames"] == "6"
    rej = read_tsv(tmp_path / "rejects.tsv")
    assert {r["path"] for r in rej} == {"idB/yt/00001.mp4", "idB"}
    assert all(r["stage"] == "fit" for r in rej)


@needs_tddfa
def test_filters_reject_by_reason(tmp_path, frames, random_checkpoint):
    faces = np.stack([f.image for f in frames])
    ext = tmp_path / "shard-00001.h5"
    write_extract_shard(ext, [("idA/yt/00002.mp4", "idA", faces)])
    # thresholds no face can pass: every frame rejected for the first failing test
    for key, value, reason in (
        ("min_score", 0.9999, "low_score"),
        ("min_face_px", 1000, "small_face"),
        ("min_blur", 1e9, "blur"),
    ):
        stats = fit_shard(ext, tmp_path / f"{key}.h5", _ict_cfg(random_checkpoint, **{key: value}),
                          progress=False)  # fmt: skip
        assert stats[reason] == 3 and stats["kept"] == 0 and stats["videos_rejected"] == 1


def test_empty_shard_and_unreadable_video(tmp_path, random_checkpoint):
    """A shard with no videos and one whose frames cannot be read: no crash, rejects."""
    ext = tmp_path / "shard-00002.h5"
    write_extract_shard(ext, [])
    if not paths.FACEBOXES_WEIGHTS.is_file():
        pytest.skip("FaceBoxes weights not found")
    cfg = _ict_cfg(random_checkpoint)
    fitter = Fitter(cfg)
    stats = fit_shard(ext, tmp_path / "empty.h5", cfg, fitter=fitter, progress=False)
    assert stats["frames"] == 0 and stats["videos"] == 0
    ext2 = tmp_path / "shard-00003.h5"
    write_extract_shard(ext2, [("x/y/z.mp4", "x", np.zeros((2, 64, 64, 3), np.uint8))])
    with h5py.File(ext2, "a") as f:
        del f["frames/000000"]  # the index promises frames that are not there
    stats = fit_shard(ext2, tmp_path / "broken.h5", cfg, fitter=fitter, progress=False)
    assert stats["videos_rejected"] == 1
    with h5py.File(tmp_path / "broken.h5", "r") as f:
        assert "frames unreadable" in f["rejects/reason"][0].decode()


def test_config_mismatch_names_the_checkpoint(random_checkpoint):
    from vox3d.ict_regressor import make_regressor
    from vox3d.safeload import BadModelFileError

    with pytest.raises(BadModelFileError, match="n_id=8"):
        make_regressor(random_checkpoint, 40, 10)
    with pytest.raises(BadModelFileError, match="json"):
        make_regressor(random_checkpoint.with_name("missing.pth"), 8, 4)


@needs_tddfa
def test_real_no_face_videos_become_rejects(tmp_path):
    """The shared real broken files without a face (black frames, blue background) and a
    real VoxCeleb2 clip through manifest -> extract -> fit: rejects, no crash."""
    import shutil

    from vox3d.extract import extract_shard
    from vox3d.manifest import cli as manifest_cli

    real = paths.DATA_ROOT / "real"
    srcs = {
        "idbad/clip/no_face.mp4": real / "bad" / "no_face.mp4",
        "idbad/clip/no_face_background.mp4": real / "bad" / "no_face_background.mp4",
    }
    good = sorted((real / "voxceleb").glob("id06811/*/*.mp4"))
    if not all(p.is_file() for p in srcs.values()) or not good:
        pytest.skip("shared real clips not found")
    srcs["id06811/clip/00001.mp4"] = good[0]
    vids = tmp_path / "videos"
    for rel, src in srcs.items():
        (vids / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, vids / rel)
    assert manifest_cli([str(vids), "--out-dir", str(tmp_path), "--shard-size", "8"]) == 0
    shard = tmp_path / "shards" / "shard-00000.tsv"
    extract_shard(shard, vids, tmp_path / "extract.h5", frame_rate=2.0, progress=False)
    cfg = FitConfig.from_config({"face_model": {"name": "bfm"}, "fit": {"device": "cpu"}})
    stats = fit_shard(tmp_path / "extract.h5", tmp_path / "fit.h5", cfg, progress=False)
    assert stats["videos"] == 3 and stats["videos_rejected"] == 2
    assert stats["kept"] > 0 and stats["no_face"] > 0
    with h5py.File(tmp_path / "fit.h5", "r") as f:
        rej = dict(zip([s.decode() for s in f["rejects/path"][()]],
                       [s.decode() for s in f["rejects/reason"][()]], strict=True))  # fmt: skip
        assert f["frames/params"].shape[1] == 62 and f.attrs["face_model"] == "bfm"
    assert set(rej) == {"idbad/clip/no_face.mp4", "idbad/clip/no_face_background.mp4"}
    assert all("no usable frame" in r and "no face" in r for r in rej.values())
