"""Robust per-identity aggregation (vox3d.fitting.identities) on synthetic numbers."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from vox3d.fitting.identities import (
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
    """A fit shard through the stage's own writer (vox3d.fitting.fit_shard.write_fit_shard)."""
    from types import SimpleNamespace

    from vox3d.fitting.fit_shard import write_fit_shard
    from vox3d.fitting.quality import Thresholds
    from vox3d.params import ict_layout

    fitter = SimpleNamespace(
        cfg=SimpleNamespace(
            face_model="ict", thresholds=Thresholds(), precision="fp32", landmarks="none"
        ),
        layout=ict_layout(n_id, n_exp),
        model_file="ict_regressor.pth",
    )
    frames = {
        "video": np.asarray(frames_video, np.int32),
        "keep": np.asarray(keep, bool),
        "params": np.asarray(params, np.float32),
    }
    vids = [{"video": v[0], "identity": v[1]} for v in videos]
    write_fit_shard(path, vids, frames, [], {"frames": len(frames_video)}, fitter)


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
    # the one reader of the format reads what the writer wrote
    from vox3d.fitting.identities import IdentitiesFile, IdentitiesFileError

    rd = IdentitiesFile.read(out)
    assert rd.ids == ("idA", "idB") and rd.face_model == "ict" and rd.n_id == n_id
    assert rd.missing == () and rd.shape_robust is None and rd.rejects[0][0] == "idC"
    np.testing.assert_array_equal(rd.n_frames, [20, 10])
    np.testing.assert_allclose(rd.shapes()["idB"], truth["idB"], atol=0.08)
    with pytest.raises(IdentitiesFileError, match="s0.h5"):
        IdentitiesFile.read(tmp_path / "s0.h5")  # a fit shard is not an identities file
    # same inputs -> same bytes
    out2 = tmp_path / "identities2.h5"
    aggregate_identities([tmp_path / "s0.h5", tmp_path / "s1.h5"], out2)
    assert out.read_bytes() == out2.read_bytes()


# --------------------------------------------------------------------------------------
# calibrated multi-frame estimate


def _gaussian_frames(rng, s, bias, v, rho, sigma, n_people, per_person):
    """Draws of the frame model p = bias + s theta + u + w (per mode), theta ~ N(0,
    sigma^2), person-shared u ~ N(0, rho v), per-frame w ~ N(0, (1 - rho) v).
    Returns pred, true (n_people * per_person, K) and group (n_people * per_person,)."""
    k = len(s)
    theta = rng.normal(0, 1, (n_people, k)) * sigma
    u = rng.normal(0, 1, (n_people, k)) * np.sqrt(rho * v)
    w = rng.normal(0, 1, (n_people, per_person, k)) * np.sqrt((1 - rho) * v)
    pred = bias + s * theta[:, None] + u[:, None] + w
    true = np.broadcast_to(theta[:, None], pred.shape)
    group = np.repeat(np.arange(n_people), per_person)
    return pred.reshape(-1, k), true.reshape(-1, k), group


CAL_TRUTH = {
    "s": np.array([0.3, 0.5, 0.7, 1.0]),
    "bias": np.array([0.0, 0.1, -0.2, 0.05]),
    "v": np.array([0.5, 0.2, 0.8, 0.1]),
    "rho": np.array([0.0, 0.3, 0.6, 0.9]),
    "sigma": np.array([1.0, 2.0, 0.5, 1.5]),
}


def test_clipped_normal_std_matches_draws():
    from vox3d.fitting.identities import clipped_normal_std

    z = np.clip(np.random.default_rng(5).standard_normal(2_000_000), -3, 3)
    assert abs(clipped_normal_std(3.0) - z.std()) < 1e-3
    assert clipped_normal_std(3.0) < 1.0
    assert abs(clipped_normal_std(50.0) - 1.0) < 1e-12


def test_calibrate_identity_recovers_the_gaussian_model():
    from vox3d.fitting.identities import calibrate_identity

    t = CAL_TRUTH
    pred, true, group = _gaussian_frames(
        np.random.default_rng(6), t["s"], t["bias"], t["v"], t["rho"], t["sigma"], 4000, 8
    )
    cal = calibrate_identity(pred, true, group)  # sigma estimated from the groups
    assert cal["n_samples"] == 32000 and cal["n_groups"] == 4000
    np.testing.assert_allclose(cal["s"], t["s"], atol=0.02)
    np.testing.assert_allclose(cal["bias"], t["bias"], atol=0.02)
    np.testing.assert_allclose(cal["v"], t["v"], rtol=0.05)
    np.testing.assert_allclose(cal["rho"], t["rho"], atol=0.04)
    np.testing.assert_allclose(cal["sigma"], t["sigma"], rtol=0.03)
    given = calibrate_identity(pred, true, group, sigma=t["sigma"])
    np.testing.assert_array_equal(given["sigma"], t["sigma"])
    # unbalanced groups (drop frames at random): same answers within noise
    keep = np.random.default_rng(7).random(len(group)) < 0.6
    sub = calibrate_identity(pred[keep], true[keep], group[keep], sigma=t["sigma"])
    np.testing.assert_allclose(sub["rho"], t["rho"], atol=0.05)
    np.testing.assert_allclose(sub["v"], t["v"], rtol=0.07)
    with pytest.raises(ValueError, match="groups"):
        calibrate_identity(pred[:3], true[:3], np.arange(3))


def _slope(x, y):
    """Least-squares slope (K,) of y on x, per column."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    return np.sum(xc * yc, 0) / np.sum(xc**2, 0)


def test_calibrated_identity_is_the_posterior_mean():
    from vox3d.fitting.identities import (
        calibrated_frames,
        calibrated_gain,
        calibrated_identity,
        calibrated_posterior_std,
    )

    t = CAL_TRUTH
    s, v, rho, s2 = t["s"], t["v"], t["rho"], t["sigma"] ** 2
    rng = np.random.default_rng(8)
    for n in (1, 4, 32):
        pred, true, _ = _gaussian_frames(rng, s, t["bias"], v, rho, t["sigma"], 20000, n)
        means = pred.reshape(20000, n, -1).mean(1)
        est = (means - t["bias"]) * calibrated_gain(t, n)
        for i in range(3):
            np.testing.assert_allclose(
                calibrated_frames(pred[i * n : (i + 1) * n], t), est[i], rtol=1e-12
            )
        theta = true[::n]
        # calibrated: E[theta | estimate] = estimate (slope 1 of the truth on the estimate)
        b = _slope(est, theta)
        resid = theta - theta.mean(0) - b * (est - est.mean(0))
        se = np.sqrt(resid.var(0) / (len(est) * est.var(0)))  # standard error of b
        assert (np.abs(b - 1.0) < 4 * se).all(), (n, b, se)
        # slope of the estimate on the truth = its reliability
        rel = s * s * s2 / (s * s * s2 + v * (rho + (1 - rho) / n))
        np.testing.assert_allclose(_slope(theta, est), rel, atol=0.03)
        # and it beats the plain frame mean in squared error (per mode)
        mse_cal = np.mean((est - theta) ** 2, 0)
        assert (mse_cal <= np.mean((means - theta) ** 2, 0) + 1e-9).all()
        # its posterior std is the spread of the truth around it (below the prior's sigma)
        post = calibrated_posterior_std(t, n)
        np.testing.assert_allclose((theta - est).std(0), post, rtol=0.03)
        assert (post < t["sigma"]).all()
    # rho = 0: the slope on the truth tends to 1 as N grows; rho = 1: N does not matter
    c0 = {**t, "rho": np.zeros(4)}
    g = [calibrated_gain(c0, n) * s for n in (1, 10, 100, 10_000)]
    assert all((a < b).all() for a, b in zip(g, g[1:], strict=False))
    np.testing.assert_allclose(g[-1], 1.0, atol=0.01)
    c1 = {**t, "rho": np.ones(4)}
    single = s * s * s2 / (s * s * s2 + v)
    for n in (1, 10, 1000):
        np.testing.assert_allclose(calibrated_gain(c1, n) * s, single, rtol=1e-12)
    # the pooled-estimate form equals the frame form
    frames = rng.normal(0, 1, (7, 4))
    np.testing.assert_allclose(
        calibrated_identity(frames.mean(0), 7, t), calibrated_frames(frames, t), rtol=1e-12
    )


def test_aggregate_identities_with_and_without_calibration(tmp_path):
    from vox3d.fitting.identities import calibrated_identity

    rng = np.random.default_rng(9)
    n_id, n_exp = 4, 2
    videos = [("a/1.mp4", "idA"), ("a/2.mp4", "idA"), ("b/1.mp4", "idB")]
    fv, params = [], []
    for vi, _ in enumerate(videos):
        base = rng.normal(0, 0.5, n_id)
        for _ in range(9):
            p = np.zeros(12 + n_id + n_exp)
            p[12 : 12 + n_id] = base + rng.normal(0, 0.2, n_id)
            fv.append(vi)
            params.append(p)
    _write_fit_shard(tmp_path / "s0.h5", videos, fv, [True] * len(fv), params)
    plain, again = tmp_path / "plain.h5", tmp_path / "again.h5"
    s_plain = aggregate_identities([tmp_path / "s0.h5"], plain)
    s_again = aggregate_identities([tmp_path / "s0.h5"], again, calibration=None)
    assert plain.read_bytes() == again.read_bytes() and s_plain == s_again
    assert "estimate" not in s_plain
    # without calibration: shape = the robust shape exactly, no calibration record
    coeffs = np.asarray(params, np.float32)[:, 12 : 12 + n_id].astype(np.float64)  # as stored
    vids = np.array([videos[v][0] for v in fv])
    with h5py.File(plain, "r") as f:
        assert "shape_robust" not in f
        assert "calibration" not in f.attrs["estimator"]
        for row, ident in enumerate(["idA", "idB"]):
            sel = np.array([videos[v][1] == ident for v in fv])
            want = robust_identity_shape(coeffs[sel], vids[sel]).shape.astype(np.float32)
            np.testing.assert_array_equal(f["shape"][row], want)
        robust = f["shape"][()]
        nf = f["n_frames"][()]
    cal = {
        **{k: v.tolist() for k, v in CAL_TRUTH.items()},
        "face_model": "ict",
        "n_id": n_id,
        "n_samples": 10,
        "n_groups": 2,
    }
    out = tmp_path / "cal.h5"
    summary = aggregate_identities([tmp_path / "s0.h5"], out, calibration=cal)
    assert summary["estimate"] == "calibrated"
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["shape_robust"][()], robust)
        for row in range(2):
            want = calibrated_identity(robust[row].astype(np.float64), int(nf[row]), cal)
            np.testing.assert_allclose(f["shape"][row], want, rtol=1e-5, atol=1e-6)
        est = json.loads(f.attrs["estimator"])
        assert est["estimate"].startswith("calibrated")
        np.testing.assert_allclose(est["calibration"]["rho"], CAL_TRUTH["rho"])
    with pytest.raises(ValueError, match="does not fit"):
        aggregate_identities([tmp_path / "s0.h5"], out, calibration={**cal, "n_id": 40})
    with pytest.raises(ValueError, match="does not fit"):
        aggregate_identities([tmp_path / "s0.h5"], out, calibration={**cal, "face_model": "bfm"})


def test_load_identity_calibration(tmp_path):
    from vox3d.fitting.identities import load_identity_calibration

    meta = {"face_model": "ict", "n_id": 4, "param_mean": [0.0]}
    (tmp_path / "r.json").write_text(json.dumps(meta))
    assert load_identity_calibration(tmp_path / "r.pth") is None
    meta["identity_calibration"] = {k: v.tolist() for k, v in CAL_TRUTH.items()}
    (tmp_path / "r.json").write_text(json.dumps(meta))
    cal = load_identity_calibration(tmp_path / "r.pth")
    assert cal["face_model"] == "ict" and cal["n_id"] == 4
    np.testing.assert_array_equal(cal["s"], CAL_TRUTH["s"])
    meta["identity_calibration"]["v"] = [1.0, float("nan"), 1.0, 1.0]
    (tmp_path / "r.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="finite"):
        load_identity_calibration(tmp_path / "r.json")
