"""ARE and aligned RMSE on analytic meshes with known answers; bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from vox3d import metrics

# A toy "face": vertices placed so each ratio pair has a known length.
#   0-1 oicd (length 10), 2-3 ear (14), 4-5 forehead (12), 6-7 mid (7), 8-9 cheek (11)
PAIRS = {"oicd": (0, 1), "ear": (2, 3), "forehead": (4, 5), "mid": (6, 7), "cheek": (8, 9)}


def toy_mesh() -> np.ndarray:
    v = np.zeros((12, 3))
    v[0], v[1] = [-5, 0, 0], [5, 0, 0]
    v[2], v[3] = [-7, -2, -3], [7, -2, -3]
    v[4], v[5] = [-6, 5, 1], [6, 5, 1]
    v[6], v[7] = [0, 3, 2], [0, -4, 2]
    v[8], v[9] = [-5.5, -3, 0.5], [5.5, -3, 0.5]
    v[10], v[11] = [0, 0, 4], [1, -6, 1]
    return v


def rot(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def test_face_ratios_known_values():
    r = metrics.face_ratios(toy_mesh(), PAIRS)
    np.testing.assert_allclose(r, [1.4, 1.2, 0.7, 1.1], atol=1e-12)  # ER FR MR CR


def test_are_zero_for_scaled_rotated_copy_and_rmse_zero_after_alignment():
    v = toy_mesh()
    w = 2.5 * v @ rot(0.3, -0.7, 1.1).T + np.array([3.0, -1.0, 8.0])
    err = metrics.identity_errors(w[None], v, PAIRS)
    for r in metrics.RATIOS:
        assert err[f"are_{r}"] == pytest.approx(0.0, abs=1e-12)
    # rigid alignment keeps the scale error; similarity removes it
    assert metrics.aligned_rmse(w, v, scale=True) == pytest.approx(0.0, abs=1e-9)
    w1 = v @ rot(0.3, -0.7, 1.1).T + 5.0
    assert metrics.aligned_rmse(w1, v) == pytest.approx(0.0, abs=1e-9)
    c = v - v.mean(0)
    expect = 1.5 * np.sqrt((c**2).sum(1).mean())  # scale 2.5 vs 1 of a centred shape
    assert metrics.aligned_rmse(2.5 * c, c) == pytest.approx(expect, rel=1e-9)


def test_known_displacement():
    v = toy_mesh()
    w = v.copy()
    w[3, 0] += 1.4  # ear pair 14 -> 15.4: ER 1.4 -> 1.54, others unchanged
    err = metrics.identity_errors(np.stack([w, v]), v, PAIRS)
    # averaged over the identity's two predictions: (0.14 + 0) / 2
    assert err["are_er"] == pytest.approx(0.07, abs=1e-12)
    assert err["are_fr"] == pytest.approx(0.0, abs=1e-12)
    assert err["are_mean"] == pytest.approx(0.07 / 4, abs=1e-12)
    # RMSE: a translation of every vertex by (0, 0, 2) is removed by alignment,
    # a displacement of one vertex is not
    assert metrics.aligned_rmse(v + [0, 0, 2], v) == pytest.approx(0.0, abs=1e-9)
    assert metrics.aligned_rmse(w, v) > 0.1
    # RMSE over a vertex subset that excludes the moved vertex is ~0
    idx = np.array([0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11])
    e2 = metrics.identity_errors(w[None], v, PAIRS, metric_idx=idx)
    assert e2["rmse"] == pytest.approx(0.0, abs=1e-9)


def test_align_against_brute_rmse_with_known_noise():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(500, 3)) * [6, 8, 4]
    noise = rng.normal(size=v.shape) * 0.1
    w = (v + noise) @ rot(0.2, 0.4, -0.3).T + [1, 2, 3]
    # after rigid alignment, RMSE ~= the noise RMSE (slightly less: alignment absorbs some)
    target = np.sqrt((noise**2).sum(1).mean())
    got = metrics.aligned_rmse(w, v)
    assert 0.9 * target < got <= target + 1e-12


def test_bootstrap_ci_covers_mean_and_shrinks():
    rng = np.random.default_rng(1)
    small = rng.normal(1.0, 0.5, size=(10, 1))
    big = rng.normal(1.0, 0.5, size=(1000, 1))
    lo_s, hi_s = metrics.bootstrap_ci(small, 2000, seed=0)
    lo_b, hi_b = metrics.bootstrap_ci(big, 2000, seed=0)
    assert lo_s[0] < small.mean() < hi_s[0]
    assert lo_b[0] < big.mean() < hi_b[0]
    assert (hi_b - lo_b)[0] < (hi_s - lo_s)[0]
    # ~ 2 * 1.96 * sigma / sqrt(n)
    assert (hi_b - lo_b)[0] == pytest.approx(2 * 1.96 * 0.5 / np.sqrt(1000), rel=0.2)
    lo, hi = metrics.bootstrap_ci(small[:1], 100)
    assert np.isnan(lo).all() and np.isnan(hi).all()


def test_summarise_columns():
    rows = [{c: float(i) for c in metrics.METRIC_COLUMNS} for i in range(5)]
    s = metrics.summarise(rows, n_boot=200)
    assert s["are_mean"] == 2.0 and s["n_identities"] == 5
    assert s["are_mean_lo"] <= 2.0 <= s["are_mean_hi"]


def test_degenerate_mesh_rejected():
    v = toy_mesh()
    v[1] = v[0]
    with pytest.raises(ValueError, match="inter-ocular"):
        metrics.face_ratios(v, PAIRS)
