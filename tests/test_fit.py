"""Fit stage (vox3d.fitting.fit) on small hand-made extract shards: rendered ICT faces with known
ground truth, black frames (no face), reasons counted, determinism, bad input."""

from __future__ import annotations

import dataclasses
import json
import time

import h5py
import numpy as np
import pytest
from conftest import require
from extract_shards import write_extract_shard  # noqa: E402
from kit_frames import face_frames

from vox3d import paths
from vox3d.fitting.fit import FitConfig, Fitter, StageClock, fit_shard
from vox3d.fitting.fit_tables import write_fit_tables
from vox3d.fitting.quality import REASON_CODE, REASONS
from vox3d.io import read_tsv

needs_tddfa = pytest.mark.shared_data(paths.FACEBOXES_WEIGHTS, paths.MB05_WEIGHTS)


@pytest.fixture(scope="module")
def frames():
    """Three synthetic frames of the kit (kit_frames.face_frames), one person each."""
    return face_frames(3)


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    """A randomly initialised ICT regressor in the committed layout (wiring, not accuracy)."""
    import torch

    from vox3d.face.regressor import build_mobilenet
    from vox3d.fitting.ict_generator import GenConfig
    from vox3d.fitting.ict_train import TrainConfig, save_checkpoint
    from vox3d.params import ict_layout

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
    faces = np.stack([f.frame for f in frames])
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
        # the detector box surrounds the true landmarks and overlaps their box
        from vox3d.fitting.regressor_cache import box_iou

        for i, fm in enumerate(frames):
            x1, y1, x2, y2 = fr["box"][i, :4]
            lm = fm.landmarks
            assert x1 < lm[:, 0].mean() < x2 and y1 < lm[:, 1].mean() < y2
        iou = box_iou(fr["box"][:3, :4].astype(np.float64), np.stack([f.face_box for f in frames]))
        assert (iou > 0.5).all(), iou
        rej_paths = [s.decode() for s in f["rejects/path"][()]]
        rej_reasons = [s.decode() for s in f["rejects/reason"][()]]
    assert rej_paths == ["idB/yt/00001.mp4"]
    assert "no usable frame" in rej_reasons[0] and "3 no face" in rej_reasons[0]
    # the format's one reader reads what the writer wrote
    from vox3d.fitting.fit_shard import FRAME_FIELDS, FitShard, FitShardError

    sh = FitShard.read(out1)
    assert set(sh.frames) == set(FRAME_FIELDS) - {"landmark_nme"} and sh.layout.n_id == 8
    assert sh.video_identities[0] != "" and list(sh.n_frames) == [3, 3]
    assert list(sh.n_kept) == [3, 0] and sh.rejects[0][0] == "idB/yt/00001.mp4"
    assert sh.stats["kept"] == 3 and sh.attrs["face_model"] == "ict"
    with pytest.raises(FitShardError, match="shard-00000.h5"):
        FitShard.read(ext)  # an extract shard is not a fit shard
    time.sleep(1.1)  # any stored timestamp would now differ
    out2 = tmp_path / "fit2.h5"
    fit_shard(ext, out2, cfg, fitter=fitter, progress=False)
    assert out1.read_bytes() == out2.read_bytes()
    # aggregate tables: every frame counted by reason, the black video in rejects
    from vox3d.fitting.identities import aggregate_identities

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
def test_fit_stores_at_most_crops_per_video_crops(tmp_path, frames, random_checkpoint):
    """fit.keep_crops with fit.crops_per_video: min(cap, kept) crops a video, spread over
    its kept frames; every frame's fit fields as without a cap."""
    from vox3d.fitting.fit_shard import FitShard

    faces = np.stack([f.frame for f in frames])
    ext = tmp_path / "shard-00000.h5"
    write_extract_shard(
        ext,
        [("idA/yt/00001.mp4", "idA", faces), ("idB/yt/00001.mp4", "idB", faces[::-1][:2])],
    )
    shards = {}
    for cap in (2, None):
        cfg = _ict_cfg(random_checkpoint, keep_crops=True, crops_per_video=cap)
        assert cfg.keep_crops and cfg.crops_per_video == cap
        shards[cap] = tmp_path / f"fit-{cap}.h5"
        fit_shard(ext, shards[cap], cfg, fitter=Fitter(cfg), progress=False)
    capped, full = FitShard.read(shards[2]), FitShard.read(shards[None])
    assert list(full.n_kept) == [3, 2]  # idA: 3 kept frames > cap
    assert capped.crops_per_video == 2 and full.crops_per_video is None
    for k, v in full.frames.items():
        np.testing.assert_array_equal(capped.frames[k], v, err_msg=k)
    rows, imgs = capped.crops()
    assert rows.tolist() == [0, 2, 3, 4]  # idA's first and last, idB's two
    assert np.bincount(capped.frames["video"][rows]).tolist() == [2, 2]
    full_rows, full_imgs = full.crops()
    assert full_rows.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(imgs, full_imgs[[0, 2, 3, 4]])
    assert FitShard.crop_storage(shards[2])[0] == 4
    assert FitShard.crop_storage(shards[None])[0] == 5


@needs_tddfa
def test_filters_reject_by_reason(tmp_path, frames, random_checkpoint):
    faces = np.stack([f.frame for f in frames])
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
    require(paths.FACEBOXES_WEIGHTS)
    cfg = _ict_cfg(random_checkpoint)
    fitter = Fitter(cfg)
    stats = fit_shard(ext, tmp_path / "empty.h5", cfg, fitter=fitter, progress=False)
    assert stats["frames"] == 0 and stats["videos"] == 0
    ext2 = tmp_path / "shard-00003.h5"
    write_extract_shard(ext2, [("x/y/z.mp4", "x", np.zeros((2, 64, 64, 3), np.uint8))])
    with h5py.File(ext2, "a") as f:
        del f["frames/000000"]  # the index promises frames that are not there
    for tensor_path in (False, True):  # both paths: no crash, the same reject
        fitter.tensor_path = tensor_path
        stats = fit_shard(ext2, tmp_path / "broken.h5", cfg, fitter=fitter, progress=False)
        assert stats["videos_rejected"] == 1 and stats["frames"] == 0
        with h5py.File(tmp_path / "broken.h5", "r") as f:
            assert "frames unreadable" in f["rejects/reason"][0].decode()
        stats = fit_shard(ext, tmp_path / "empty.h5", cfg, fitter=fitter, progress=False)
        assert stats["frames"] == 0 and stats["videos"] == 0


def test_config_mismatch_names_the_checkpoint(random_checkpoint):
    from vox3d.fitting.ict_checkpoint import make_regressor
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

    from vox3d.media.extract import extract_shard
    from vox3d.media.manifest import cli as manifest_cli

    real = paths.DATA_ROOT / "real"
    srcs = {
        "idbad/clip/no_face.mp4": real / "bad" / "no_face.mp4",
        "idbad/clip/no_face_background.mp4": real / "bad" / "no_face_background.mp4",
    }
    good = sorted((real / "voxceleb").glob("id06811/*/*.mp4"))
    require(*srcs.values())
    assert good, f"no shared real clip of id06811 under {real / 'voxceleb'}"
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


# --------------------------------------------------------------------------------------
# the batched tensor path (what runs on CUDA) against the cv2 reference path, on the CPU


def _assert_same_fit(ref_h5, got_h5, param_scale):
    """Per-frame outputs of two fit shards: boxes within 1e-3 px, params within 1e-4 of
    each parameter's scale, identical counts, keep and reason."""
    with h5py.File(ref_h5, "r") as a, h5py.File(got_h5, "r") as b:
        fa, fb = a["frames"], b["frames"]
        assert set(fa) == set(fb)
        for k in ("video", "frame", "time", "n_faces", "keep", "reason"):
            np.testing.assert_array_equal(fb[k][()], fa[k][()], err_msg=k)
        for k in ("box", "roi", "score", "face_px", "margin"):
            np.testing.assert_allclose(fb[k][()], fa[k][()], rtol=0, atol=1e-3, err_msg=k)
        pa, pb = fa["params"][()], fb["params"][()]
        np.testing.assert_array_equal(np.isnan(pb), np.isnan(pa))
        # whitened units (params / the regressor's std): float rounding of other batches
        np.testing.assert_allclose(pb / param_scale, pa / param_scale, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(fb["blur"][()], fa["blur"][()], rtol=1e-6, err_msg="blur")
        for k in ("yaw", "pitch", "roll"):
            np.testing.assert_allclose(fb[k][()], fa[k][()], rtol=0, atol=1e-3, err_msg=k)
        for k in ("path", "reason"):
            assert list(b["rejects"][k][()]) == list(a["rejects"][k][()])
        assert json.loads(b.attrs["stats"]) == json.loads(a.attrs["stats"])


def _decode(path, n, step=10):
    import av

    with av.open(str(path)) as c:
        out = [
            f.to_ndarray(format="rgb24") for i, f in enumerate(c.decode(video=0)) if i % step == 0
        ]
    return np.stack(out[:n])


@needs_tddfa
def test_tensor_path_matches_cpu_path_on_real_frames(tmp_path, real_clips):
    """Real VoxCeleb2 frames, two-face frames (one of another size, which closes a batch),
    black frames: the tensor path (device cpu) gives the reference path's outputs."""
    import cv2

    from vox3d.face.regressor import load_param_mean_std

    clips = real_clips[:3]
    real = [_decode(c, 3) for c in clips]
    assert all(r.shape[1:] == (224, 224, 3) for r in real)
    a, b = real[0][0], real[1][0]
    two = np.zeros((3, 224, 448, 3), np.uint8)
    two[:, :, :224] = a  # two equal-sized faces: multiple faces
    two[0, :, 224:] = b
    two[1, 32:192, 256:416] = cv2.resize(b, (160, 160))  # a smaller second face
    two[2, 72:152, 296:376] = cv2.resize(b, (80, 80))
    videos = [
        ("r0/yt/1.mp4", "r0", real[0]),
        ("two/yt/1.mp4", "two", two),
        ("r1/yt/1.mp4", "r1", real[1]),
        ("blk/yt/1.mp4", "blk", np.zeros((2, 224, 224, 3), np.uint8)),
        ("r2/yt/1.mp4", "r2", real[2]),
    ]
    ext = tmp_path / "shard-00000.h5"
    write_extract_shard(ext, videos)
    cfg = FitConfig.from_config(
        {"face_model": {"name": "bfm"}, "fit": {"device": "cpu", "batch_size": 4}}
    )
    ref, got = tmp_path / "ref.h5", tmp_path / "tensor.h5"
    fitter = Fitter(cfg)
    assert not fitter.tensor_path  # the CPU keeps the cv2 path by default
    stats = fit_shard(ext, ref, cfg, fitter=fitter, progress=False)
    assert stats["multiple_faces"] >= 1 and stats["no_face"] == 2 and stats["ok"] >= 9
    fitter.tensor_path = True
    clock = StageClock()
    fit_shard(ext, got, cfg, fitter=fitter, progress=False, clock=clock)
    # the step timings (bench/node.py) cover every step and change nothing in the output
    assert {"read wait", "detect", "crop", "regress", "blur", "write"} <= set(clock.seconds)
    assert all(v >= 0 for v in clock.seconds.values()) and clock.seconds["regress"] > 0
    assert fitter.clock is None
    with h5py.File(ref, "r") as f:
        assert f["frames/n_faces"][3:6].tolist()[0] == 2  # both faces of the wide frame seen
    _, std = load_param_mean_std(paths.PARAM_MEAN_STD)
    _assert_same_fit(ref, got, std)


def test_choose_faces_torch_matches_choose_face():
    import torch

    from vox3d.fitting.fit_tensor import choose_faces_torch
    from vox3d.fitting.quality import choose_face

    rng = np.random.default_rng(0)
    b, k = 200, 6
    xy = rng.uniform(0, 200, (b, k, 2))
    wh = rng.choice([0.0, 10.0, 20.0, 40.0], (b, k, 2))  # ties in area, zero areas
    score = rng.choice([0.55, 0.6, 0.7, 0.9, 0.99], (b, k))  # ties in score, below 0.6
    dets = np.concatenate([xy, xy + wh, score[..., None]], -1).astype(np.float32)
    n_det = rng.integers(0, k + 1, b)
    keep = np.arange(k)[None] < n_det[:, None]
    dets[~keep] = 0
    index, n_faces, margin = choose_faces_torch(torch.from_numpy(dets), torch.from_numpy(keep), 0.6)
    for i in range(b):
        ch = choose_face(dets[i, : n_det[i]], 0.6)
        assert (int(index[i]), int(n_faces[i])) == (ch.index, ch.n_faces), i
        assert float(margin[i]) == ch.margin, i


def test_vectorised_pose_and_blur_match_reference():
    import torch

    from vox3d.fitting.fit_tensor import laplacian_variance_torch
    from vox3d.fitting.quality import laplacian_variance
    from vox3d.params import euler_to_rotation, pose_angles_deg, pose_angles_deg_batch

    rng = np.random.default_rng(1)
    params = []
    for yaw in (-89.9, -80.0, -30.0, 0.0, 45.0, 88.0, 89.9):  # both gimbal branches too
        P = np.zeros((3, 4))
        P[:, :3] = 1e-3 * euler_to_rotation(np.radians(yaw), *rng.uniform(-0.5, 0.5, 2))
        P[:, 3] = rng.normal(size=3)
        params.append(np.concatenate([P.ravel(), rng.normal(size=50)]))
    params.append(np.full(62, np.nan))
    params.append(np.zeros(62))  # zero rotation rows
    params = np.asarray(params, np.float32)
    want = np.array([pose_angles_deg(p) for p in params])
    got = pose_angles_deg_batch(params)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert np.nanmax(np.abs(got[:, 0])) > 89.0
    crops = rng.integers(0, 256, (5, 120, 120, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        laplacian_variance_torch(torch.from_numpy(crops)).numpy(),
        laplacian_variance(crops),
        rtol=1e-12,
    )


def test_blur_windows_host_and_device_agree():
    """In-frame windows of ROIs that leave the frame: numpy and torch give the same windows
    and the same masked Laplacian variance."""
    import torch

    from vox3d.fitting.fit_tensor import crop_windows_torch, laplacian_variance_torch
    from vox3d.fitting.quality import crop_windows, laplacian_variance

    roi = np.array(
        [[10.2, 20.7, 90.2, 100.7], [-40.0, -30.0, 180.0, 190.0], [150.0, 150.0, 400.0, 400.0],
         [-500.0, -500.0, -300.0, -300.0]]
    )  # fmt: skip
    w_np = crop_windows(roi, (224, 224))
    w_t = crop_windows_torch(torch.from_numpy(roi), (224, 224)).numpy()
    np.testing.assert_array_equal(w_np, w_t)
    assert w_np[0].tolist() == [0, 120, 0, 120]  # inside the frame
    assert 0 < w_np[1, 0] < 30 and w_np[1, 1] == 120  # padding above, frame below
    assert w_np[2, 1] < 60 and w_np[2, 3] < 60  # padding below and right
    assert w_np[3, 0] == w_np[3, 1] or w_np[3, 2] == w_np[3, 3]  # nothing in the frame
    crops = np.random.default_rng(2).integers(0, 256, (4, 120, 120, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        laplacian_variance_torch(torch.from_numpy(crops), torch.from_numpy(w_np)).numpy(),
        laplacian_variance(crops, w_np),
        rtol=1e-12,
    )


def test_blur_ignores_the_black_padding_of_a_crop():
    """A blurred face whose ROI leaves the frame: the padding's hard edge no longer reads as
    sharpness (it did: whole-crop variance stays high however blurred the face)."""
    import cv2

    from vox3d.face.crop import crop_image
    from vox3d.fitting.quality import crop_windows, laplacian_variance

    clip = sorted((paths.DATA_ROOT / "real" / "voxceleb").glob("*/*/*.mp4"))[0]
    frame = np.ascontiguousarray(_decode(clip, 1)[0][..., ::-1])
    blurred = cv2.GaussianBlur(frame, (0, 0), 4)
    roi = np.array([[-40.0, -40.0, 200.0, 200.0]])  # padding on two sides
    win = crop_windows(roi, frame.shape[:2])
    sharp_c, blur_c = crop_image(frame, roi[0])[None], crop_image(blurred, roi[0])[None]
    whole = laplacian_variance(blur_c)[0]
    inside_sharp = laplacian_variance(sharp_c, win)[0]
    inside_blur = laplacian_variance(blur_c, win)[0]
    assert inside_blur < 0.2 * whole  # the edge dominated the whole-crop measure
    assert inside_sharp > 5 * inside_blur


def test_model_files_are_the_files_the_fitter_reads(tmp_path):
    """The fit jobs' model inputs (rules/common.smk fit_models) name exactly what the Fitter
    loads, for both face models: a new checkpoint must refit (tests/test_workflow.py runs it)."""
    require(paths.FACEBOXES_WEIGHTS, paths.MB05_WEIGHTS, paths.PARAM_MEAN_STD)
    ict = FitConfig.from_config({"face_model": {"name": "ict"}, "fit": {}, "assets": {}})
    assert ict.model_files() == [
        str(paths.FACEBOXES_WEIGHTS),
        str(paths.REPO_ROOT / "vox3d" / "data" / "ict_regressor.pth"),
        str(paths.REPO_ROOT / "vox3d" / "data" / "ict_regressor.json"),
    ]
    moved = FitConfig.from_config(
        {"fit": {"ict_regressor": str(tmp_path / "r.pth")}, "assets": {"faceboxes": "fb.pth"}}
    )
    assert moved.model_files() == ["fb.pth", str(tmp_path / "r.pth"), str(tmp_path / "r.json")]
    bfm = FitConfig.from_config({"face_model": {"name": "bfm"}, "assets": {}})
    assert bfm.model_files() == [
        str(paths.FACEBOXES_WEIGHTS), str(paths.MB05_WEIGHTS), str(paths.PARAM_MEAN_STD)
    ]  # fmt: skip
    for cfg in (ict, bfm):
        fitter = Fitter(dataclasses.replace(cfg, device="cpu"))
        assert fitter.model_file == cfg.regressor_file == cfg.model_files()[1]
