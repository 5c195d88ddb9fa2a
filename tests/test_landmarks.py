"""Optional FAN landmark check (vox3d.face.landmarks): geometry, missing weights, and the wiring
through the fit stage with a randomly initialised FAN in the upstream layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import require

from vox3d.face import landmarks as lmk


def test_missing_weights_names_file_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        lmk.load_fan(None)
    msg = str(e.value)
    assert lmk.FAN_URL in msg and str(tmp_path) in msg and lmk.FAN_FILE in msg


def test_heatmap_peaks_recover_gaussians():
    rng = np.random.default_rng(0)
    true = rng.uniform(3, 60, (2, 68, 2))
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    hm = np.exp(-((xx - true[..., 0, None, None]) ** 2 + (yy - true[..., 1, None, None]) ** 2) / 4)
    got = lmk.heatmap_peaks(hm)
    assert np.abs(got - true).max() <= 0.5


def test_fan_crop_maps_points_consistently():
    img = np.zeros((300, 320, 3), np.uint8)
    box = np.array([100.0, 80.0, 220.0, 230.0])
    pt = np.array([170, 140])
    img[pt[1] - 1 : pt[1] + 2, pt[0] - 1 : pt[0] + 2] = 255
    crop = lmk.crop_for_fan(img, box)
    ys, xs = np.nonzero(crop[..., 0] > 0)
    w = crop[ys, xs, 0].astype(float)
    u = np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()]) + 0.5  # pixel centres
    c, side = lmk.fan_crop_params(box)
    back = c + (u / lmk.INPUT_SIZE - 0.5) * side
    assert np.abs(back - (pt + 0.5)).max() < 1.0


def _random_fan(path):
    from face_alignment.models.fan import FAN

    torch.manual_seed(0)
    torch.save(FAN(1).state_dict(), path)  # one hourglass: the 2DFAN layout, small


def test_fit_with_fan_landmarks(tmp_path, monkeypatch):
    from vox3d import paths

    require(paths.FACEBOXES_WEIGHTS, paths.ICT_FACEKIT)
    from kit_frames import face_frames
    from test_fit import write_extract_shard

    from vox3d.fitting.fit import FitConfig, Fitter, fit_shard
    from vox3d.fitting.ict_generator import GenConfig

    ckpt_dir = tmp_path / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    _random_fan(ckpt_dir / lmk.FAN_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert lmk.default_fan_path() == ckpt_dir / lmk.FAN_FILE
    # the random ICT checkpoint of the fit tests
    from vox3d.face.regressor import build_mobilenet
    from vox3d.fitting.ict_train import TrainConfig, save_checkpoint
    from vox3d.params import ict_layout

    lay = ict_layout(8, 4)
    mean = np.zeros(lay.n, np.float32)
    mean[[0, 5, 10]] = 1.0
    save_checkpoint(build_mobilenet(0.5, lay.n).eval(), tmp_path / "ict.pth",
                    GenConfig(n_id=8, n_exp=4), TrainConfig(), mean, np.full(lay.n, 0.01, np.float32))  # fmt: skip
    cfg = FitConfig.from_config({
        "face_model": {"name": "ict", "n_id": 8, "n_exp": 4},
        "fit": {"device": "cpu", "ict_regressor": str(tmp_path / "ict.pth"), "landmarks": "fan",
                "max_yaw_deg": 90, "min_blur": 0, "max_landmark_nme": 1e-6},
    })  # fmt: skip
    fitter = Fitter(cfg)
    frames = np.stack([s.frame for s in face_frames(2)])
    ext = tmp_path / "shard-00000.h5"
    write_extract_shard(ext, [("a/b/c.mp4", "a", frames)])
    stats = fit_shard(ext, tmp_path / "fit.h5", cfg, fitter=fitter, progress=False)
    import h5py

    with h5py.File(tmp_path / "fit.h5", "r") as f:
        nme = f["frames/landmark_nme"][()]
        assert f.attrs["landmarks"] == "fan"
    assert nme.shape == (2,) and np.isfinite(nme).all() and (nme > 0).all()
    # a threshold no random network can meet: every frame rejected for its landmarks
    assert stats["landmarks"] == 2
