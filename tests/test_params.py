"""The parameter layouts and 3DDFA-V2 pose / projection conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vox3d import params as P
from vox3d.paths import PARAM_MEAN_STD
from vox3d.safeload import load_pickle


def test_layouts():
    L = P.TDDFA_LAYOUT
    assert (L.n, L.pose, L.shape, L.exp) == (62, slice(0, 12), slice(12, 52), slice(52, 62))
    ict = P.ict_layout(60, 20)
    assert ict.n == 92 and ict.shape == slice(12, 72) and ict.exp == slice(72, 92)
    assert P.ParamLayout.from_attrs(ict.as_attrs()) == ict
    with pytest.raises(ValueError):
        P.ict_layout(-1, 3)


def test_split_compose_roundtrip_numpy_and_torch():
    import torch

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 62)).astype(np.float32)
    Pm, a, e = P.split(x, P.TDDFA_LAYOUT)
    assert Pm.shape == (5, 3, 4) and a.shape == (5, 40) and e.shape == (5, 10)
    assert np.array_equal(Pm[2, 1], x[2, 4:8])  # row major
    assert np.array_equal(P.compose(Pm, a, e), x)
    xt = torch.from_numpy(x)
    Pt, at, et = P.split(xt, P.TDDFA_LAYOUT)
    assert torch.equal(P.compose(Pt, at, et), xt)
    p1, a1, e1 = P.split(x[0], P.TDDFA_LAYOUT)  # 1-D
    assert p1.shape == (3, 4) and a1.shape == (40,)
    with pytest.raises(ValueError):
        P.split(x[:, :60], P.TDDFA_LAYOUT)


def test_euler_convention_matches_3ddfa_formulas():
    rng = np.random.default_rng(1)
    for _ in range(50):
        yaw, pitch, roll = rng.uniform(-1.2, 1.2), rng.uniform(-1, 1), rng.uniform(-1, 1)
        R = P.euler_to_rotation(yaw, pitch, roll)
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(R), 1)
        # 3DDFA-V2 matrix2angle: x = asin(R[2,0]), y = atan2(R[2,1], R[2,2]), z = atan2(R[1,0], R[0,0])
        assert np.isclose(math.asin(R[2, 0]), yaw)
        assert np.isclose(math.atan2(R[2, 1], R[2, 2]), pitch)
        assert np.isclose(math.atan2(R[1, 0], R[0, 0]), roll)
        assert np.allclose(P.rotation_to_euler(R), (yaw, pitch, roll))
    # gimbal lock branch: roll reported as 0, yaw +-90 deg
    y, p, r = P.rotation_to_euler(P.euler_to_rotation(math.pi / 2, 0.3, 0.0))
    assert np.isclose(y, math.pi / 2) and r == 0.0


def test_pose_srt_roundtrip_and_real_3ddfa_mean_pose():
    R = P.euler_to_rotation(0.3, -0.2, 0.1)
    Pm = P.srt_to_pose(4.5e-4, R, [60.0, 70.0, -66.0])
    s, R2, t = P.pose_to_srt(Pm)
    assert np.isclose(s, 4.5e-4) and np.allclose(R2, R) and np.allclose(t, [60, 70, -66])
    # the real 3DDFA-V2 parameter mean: a near-frontal pose at scale ~5e-4 (BFM um -> px)
    mean = np.asarray(load_pickle(PARAM_MEAN_STD)["mean"], np.float64)
    s, R, t = P.pose_to_srt(mean[:12].reshape(3, 4))
    assert 2e-4 < s < 8e-4
    yaw, pitch, roll = P.rotation_to_euler(R)
    assert max(abs(yaw), abs(pitch), abs(roll)) < math.radians(15)


def test_transform_vertices_batched():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(7, 3)).astype(np.float32)
    Pm = rng.normal(size=(3, 4))
    expect = (Pm @ np.c_[v, np.ones(7)].T).T
    assert np.allclose(P.transform_vertices(v, Pm), expect, atol=1e-5)
    vb = np.stack([v, 2 * v])
    Pb = np.stack([Pm, Pm])
    out = P.transform_vertices(vb, Pb)
    assert out.shape == (2, 7, 3) and np.allclose(out[0], expect, atol=1e-5)


def test_to_image_is_3ddfa_similar_transform():
    # hand-computed 3DDFA-V2 similar_transform for a 120 crop and roi (10, 20, 250, 380)
    pts = np.array([[1.0, 120.0, 1.0], [61.0, 60.0, 11.0], [121.0, 0.0, 3.0]])
    roi = (10.0, 20.0, 250.0, 380.0)
    sx, sy = 240 / 120, 360 / 120
    out = P.to_image(pts, roi)
    assert out.dtype == np.float32
    assert np.allclose(out[:, 0], [10, 60 * sx + 10, 120 * sx + 10])
    assert np.allclose(out[:, 1], [20, 60 * sy + 20, 120 * sy + 20])
    s = (sx + sy) / 2
    assert np.allclose(out[:, 2], [0, 10 * s, 2 * s])  # (z - 1) * s, shifted to min 0
    back = P.from_image(out[:, :2], roi)
    assert np.allclose(back, pts[:, :2], atol=1e-4)
