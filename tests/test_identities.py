"""Robust per-identity aggregation (vox3d.identities) on synthetic numbers."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from vox3d.identities import (
    aggregate_identities,
    huber_mean,
    mahalanobis_inliers,
    read_identity_rejects,
    robust_identity_shape,
)


def _frames(rng, truth, n_videos=4, per_video=12, noise=0.3, video_bias=0.1):
    xs, vs = [], []
    for v in range(n_videos):
        bias = rng.normal(0, video_bias, truth.shape)
        xs.append(truth + bias + rng.normal(0, noise, (per_video, truth.size)))
        vs += [f"v{v}"] * per_video
    return np.concatenate(xs), np.array(vs)


def test_mahalanobis_rejects_planted_outliers():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (200, 10))
    x[:5] += 25.0  # five frames far out
    keep = mahalanobis_inliers(x, 0.999)
    assert not keep[:5].any()
    assert keep[5:].mean() > 0.97


def test_huber_mean_resists_gross_errors_and_equals_mean_without_them():
    rng = np.random.default_rng(1)
    clean = rng.normal(2.0, 0.5, (50, 3))
    np.testing.assert_allclose(huber_mean(clean, k=1e9), clean.mean(0), atol=1e-9)
    dirty = np.concatenate([clean, np.full((8, 3), 40.0)])
    est = huber_mean(dirty)
    assert np.all(np.abs(est - 2.0) < 0.5)
    assert np.all(np.abs(dirty.mean(0) - 2.0) > 4.0)


def test_robust_estimate_beats_plain_mean_with_outliers():
    rng = np.random.default_rng(2)
    errs_robust, errs_mean = [], []
    for _ in range(20):
        truth = rng.normal(0, 1, 12)
        x, v = _frames(rng, truth)
        # 10% of frames are failed fits: coefficients far from the truth
        bad = rng.choice(len(x), len(x) // 10, replace=False)
        x[bad] = rng.normal(0, 6, (len(bad), 12))
        # one video fitted badly throughout (biased)
        x[v == "v3"] += 3.0
        est = robust_identity_shape(x, v)
        errs_robust.append(np.linalg.norm(est.shape - truth))
        errs_mean.append(np.linalg.norm(x.mean(0) - truth))
        assert est.n_outliers >= len(bad) // 2
        assert est.n_videos in (3, 4)  # the biased video may go entirely
        assert est.n_frames + est.n_outliers == len(x)
    assert np.mean(errs_robust) < 0.5 * np.mean(errs_mean)


def test_single_frame_and_spread():
    est = robust_identity_shape(np.array([[1.0, 2.0]]), np.array(["a"]))
    np.testing.assert_allclose(est.shape, [1.0, 2.0])
    assert est.n_frames == 1 and est.n_videos == 1
    np.testing.assert_allclose(est.spread, 0.0)
    rng = np.random.default_rng(3)
    x = rng.normal(0, [0.1, 2.0], (400, 2))
    est = robust_identity_shape(x, np.zeros(400))
    assert 0.07 < est.spread[0] < 0.13 and 1.5 < est.spread[1] < 2.5


def test_nonfinite_frames_ignored_and_all_nan_raises():
    x = np.array([[1.0, 1.0], [np.nan, 0.0], [1.0, 1.0]])
    est = robust_identity_shape(x, np.array([0, 0, 1]))
    np.testing.assert_allclose(est.shape, [1.0, 1.0])
    with pytest.raises(ValueError):
        robust_identity_shape(np.full((2, 2), np.nan), np.array([0, 1]))


def _write_fit_shard(path, videos, frames_video, keep, params, n_id=4, n_exp=2):
    from vox3d.params import ict_layout

    lay = ict_layout(n_id, n_exp)
    str_dt = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.create_dataset("videos/path", data=[v[0] for v in videos], dtype=str_dt)
        f.create_dataset("videos/identity", data=[v[1] for v in videos], dtype=str_dt)
        f.create_dataset("frames/video", data=np.asarray(frames_video, np.int32))
        f.create_dataset("frames/keep", data=np.asarray(keep, bool))
        f.create_dataset("frames/params", data=np.asarray(params, np.float32))
        f.attrs["face_model"] = "ict"
        f.attrs["n_id"] = n_id
        for k, v in lay.as_attrs().items():
            f.attrs[k] = v


def test_aggregate_identities_file(tmp_path):
    rng = np.random.default_rng(4)
    n_id, n_exp = 4, 2
    truth = {"idA": rng.normal(0, 1, n_id), "idB": rng.normal(0, 1, n_id)}
    videos = [("a/1.mp4", "idA"), ("a/2.mp4", "idA"), ("b/1.mp4", "idB"), ("c/1.mp4", "idC")]
    fv, keep, params = [], [], []
    for vi, (_, ident) in enumerate(videos):
        for _ in range(10):
            p = np.zeros(12 + n_id + n_exp)
            if ident in truth:
                p[12 : 12 + n_id] = truth[ident] + rng.normal(0, 0.05, n_id)
            fv.append(vi)
            keep.append(ident in truth)  # idC: every frame rejected
            params.append(p)
    _write_fit_shard(tmp_path / "s0.h5", videos[:2], fv[:20], keep[:20], params[:20])
    fv2 = [v - 2 for v in fv[20:]]
    _write_fit_shard(tmp_path / "s1.h5", videos[2:], fv2, keep[20:], params[20:])
    out = tmp_path / "identities.h5"
    summary = aggregate_identities([tmp_path / "s1.h5", tmp_path / "s0.h5"], out)
    assert summary == {"identities": 2, "rejected": 1, "rejects": summary["rejects"]}
    with h5py.File(out, "r") as f:
        names = [s.decode() for s in f["identity"][()]]
        assert names == ["idA", "idB"]
        assert f["shape"].shape == (2, n_id) and f["shape"].dtype == np.float32
        assert f["spread"].shape == (2, n_id)
        np.testing.assert_array_equal(f["n_frames"][()], [20, 10])
        np.testing.assert_array_equal(f["n_videos"][()], [2, 1])
        assert f.attrs["face_model"] == "ict" and f.attrs["n_id"] == n_id
        np.testing.assert_allclose(f["shape"][0], truth["idA"], atol=0.05)
        np.testing.assert_allclose(f["shape"][1], truth["idB"], atol=0.08)
    rej = read_identity_rejects(out)
    assert len(rej) == 1 and rej[0]["path"] == "idC" and "no usable frame" in rej[0]["reason"]
    # same inputs -> same bytes
    out2 = tmp_path / "identities2.h5"
    aggregate_identities([tmp_path / "s0.h5", tmp_path / "s1.h5"], out2)
    assert out.read_bytes() == out2.read_bytes()
