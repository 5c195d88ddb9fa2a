"""ARE and aligned RMSE on analytic meshes with known answers; bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require

from vox3d.face import metrics

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


# ---------------------------------------------------------------------------------------
# paired bootstrap and similarity transforms
# ---------------------------------------------------------------------------------------


def test_paired_bootstrap_identical_perfect_and_noise():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.02, 0.08, size=20)  # a baseline's per-identity errors
    same = metrics.paired_bootstrap(base, base.copy(), n_boot=999, seed=0)
    assert same["delta"] == 0.0 and same["lo"] == 0.0 and same["hi"] == 0.0
    assert same["p"] == 1.0
    perfect = metrics.paired_bootstrap(np.zeros(20), base, n_boot=999, seed=0)
    assert perfect["delta"] == pytest.approx(-base.mean())
    assert perfect["hi"] < 0 and perfect["p"] == pytest.approx(2 / 1000)
    worse = metrics.paired_bootstrap(base + 0.05, base, n_boot=999, seed=0)
    assert worse["delta"] == pytest.approx(0.05) and worse["lo"] > 0 and worse["p"] < 0.01
    # pure noise around the baseline: the interval covers 0 and p is not small
    noisy = metrics.paired_bootstrap(base + rng.normal(0, 0.01, 20), base, 999)
    assert noisy["lo"] < 0 < noisy["hi"] and noisy["p"] > 0.05
    # deterministic for a seed; NaN without resampling
    assert metrics.paired_bootstrap(base + 0.01, base, 200, seed=4) == metrics.paired_bootstrap(
        base + 0.01, base, 200, seed=4
    )
    assert np.isnan(metrics.paired_bootstrap(base, base, n_boot=0)["p"])
    # pooled R^2 statistic: perfect (error 0) vs the reference itself (error = deviation)
    dev = rng.uniform(1, 2, size=20)
    r = metrics.paired_bootstrap(
        np.stack([np.zeros(20), dev], 1), np.stack([dev, dev], 1), 500, stat=metrics.pooled_r2_stat
    )
    assert r["delta"] == pytest.approx(1.0) and r["lo"] == pytest.approx(1.0) and r["p"] < 0.01


def test_similarity_transform_recovers_a_known_similarity():
    v = toy_mesh()
    w = 1.7 * v @ rot(0.4, 0.1, -0.9).T + [2.0, 3.0, -1.0]
    f = metrics.similarity_transform(v, w)
    np.testing.assert_allclose(f(v), w, atol=1e-9)
    np.testing.assert_allclose(metrics.align(v, w, scale=True), w, atol=1e-9)
    # rigid alignment cannot absorb the scale
    assert np.abs(metrics.align(v, w) - w).max() > 1.0


def test_unavailable_ratio_is_nan_and_left_out_of_the_mean():
    v = toy_mesh()
    w = v.copy()
    w[5, 0] += 1.2  # forehead 12 -> 13.2: FR error 0.12
    pairs = dict(PAIRS, ear=None)
    assert np.isnan(metrics.face_ratios(v, pairs)[0])
    err = metrics.identity_errors(w[None], v, pairs)
    assert np.isnan(err["are_er"])
    assert err["are_mean"] == pytest.approx(0.12 / 3)  # mean of FR, MR, CR
    with pytest.raises(ValueError, match="oicd"):
        metrics.face_ratios(v, dict(PAIRS, oicd=None))


# ---------------------------------------------------------------------------------------
# ARE vertex pairs of the face models (CMP's positions)
# ---------------------------------------------------------------------------------------

CMP_RATIOS = [1.41, 1.16, 1.11, 1.00]  # ER FR MR CR on CMP's mean face


@pytest.fixture(scope="module")
def ict_face():
    from vox3d.face.face_model import load_face_model
    from vox3d.paths import ICT_FACEKIT

    require(ICT_FACEKIT)
    return load_face_model("ict", subset="face", n_id=10, n_exp=0)


def test_ict_cmp_pairs_give_cmp_mean_face_ratios_and_are_mirror_pairs(ict_face):
    from vox3d.face import are_pairs, are_selection

    m = ict_face
    v = m.mean.astype(np.float64)
    # the default pairs follow from the measured transfer by the documented rule
    assert (
        are_pairs.symmetric_are_pairs(v, are_pairs.ICT_CMP_TRANSFER, np.arange(6706))
        == are_pairs.ICT_ARE_PAIRS
    )
    sel = are_selection.select_are_pairs(m, "cmp")
    assert sel.name == "cmp" and sel.note == "" and sel.pairs == are_pairs.ICT_ARE_PAIRS
    np.testing.assert_allclose(metrics.face_ratios(v, sel.pairs), CMP_RATIOS, atol=0.02)
    # the raw transfer gives them too (the measured fact), but is not mirror symmetric
    np.testing.assert_allclose(
        metrics.face_ratios(v, are_pairs.ICT_CMP_TRANSFER), CMP_RATIOS, atol=0.02
    )
    oicd = are_pairs.ICT_CMP_TRANSFER["oicd"]
    assert np.linalg.norm(v[oicd[0]] * [-1, 1, 1] - v[oicd[1]]) > 1.0
    # every pair: subject's right first, the two vertices mirror images across x = 0
    for key, (r, left) in sel.pairs.items():
        assert v[r, 0] < 0 < v[left, 0], key
        assert np.linalg.norm(v[r] * [-1, 1, 1] - v[left]) < 0.02, key
    # anatomy (cm, ICT axes): forehead at the outer brow ends, ear on the side below the eyes,
    # mid below the outer eye corners, cheek ~2.5 cm lateral of the mouth corners
    lm = m.landmarks68
    p = {k: v[a] for k, (a, _) in sel.pairs.items()}
    assert np.linalg.norm(p["forehead"][:2] - v[lm[17], :2]) < 1.0
    assert p["ear"][1] < v[lm[36], 1] and p["ear"][2] < v[lm[36], 2] - 3.0
    assert p["mid"][1] < v[lm[36], 1] - 1.0 and abs(p["mid"][0] - v[lm[36], 0]) < 1.5
    assert 1.5 < v[lm[48], 0] - p["cheek"][0] < 3.5 and abs(p["cheek"][1] - v[lm[48], 1]) < 1.0
    # the former landmark-rule pairs are far from CMP's ratios; they stay a named option
    rule = are_selection.select_are_pairs(m, "landmark_rule")
    assert rule.pairs == are_pairs.ICT_ARE_PAIRS_LANDMARK_RULE and "landmark" in rule.note
    r = metrics.face_ratios(v, rule.pairs)
    np.testing.assert_allclose(r, [1.65, 1.23, 1.63, 1.56], atol=0.01)
    assert np.abs(r - CMP_RATIOS).max() > 0.4
    # every ICT subset keeps the pairs
    assert m.subset("narrow_face").are_pairs == are_pairs.ICT_ARE_PAIRS
    with pytest.raises(ValueError, match="are_pairs"):
        are_selection.select_are_pairs(m, "nearest")


def test_cmp_bfm_indices_refused_outside_the_53k_topology():
    from vox3d.face import are_pairs

    with pytest.raises(ValueError, match=r"42117 is outside the bfm_noneck_v3 topology \(38,365"):
        are_pairs.cmp_are_pairs_bfm(38365, "bfm_noneck_v3")
    with pytest.raises(ValueError, match="53,215"):
        are_pairs.cmp_are_pairs_bfm(50000, "50,000-vertex BFM")  # in range, wrong topology
    assert are_pairs.cmp_are_pairs_bfm(53215, "53,215-vertex BFM") == are_pairs.CMP_ARE_PAIRS_BFM53K
    with pytest.raises(ValueError, match="my_mesh"):
        are_pairs.check_are_pairs({"oicd": (0, 10)}, 10, "my_mesh")
    assert are_pairs.check_are_pairs({"oicd": (0, 9), "ear": None}, 10, "my_mesh")["ear"] is None


def test_bfm_fallback_carries_pairs_by_landmarks_and_marks_the_ear_unavailable(ict_face):
    """A stand-in BFM (the ICT face re-ordered, rotated, scaled to um, moved): the fallback
    finds the same vertices, has no ear pair, and says why in its note."""
    import dataclasses

    from vox3d.face import are_pairs, are_selection

    m = ict_face
    rng = np.random.default_rng(0)
    perm = rng.permutation(m.n_vertices)
    inv = np.argsort(perm)
    fake = dataclasses.replace(
        m, name="bfm", mean=(m.mean[perm] * 1e4) @ rot(0.1, -0.2, 0.05).T + 300.0,
        landmarks68=inv[m.landmarks68], vertex_index=np.arange(m.n_vertices),
    )  # fmt: skip
    sel = are_selection.select_are_pairs(fake, "cmp")
    assert sel.name == "bfm_fallback_no_ear" and sel.pairs["ear"] is None
    assert "53,215" in sel.note and "ER unavailable" in sel.note and "9,409-vertex BFM" in sel.note
    got = {k: tuple(int(perm[i]) for i in p) for k, p in sel.pairs.items() if p is not None}
    assert got == {k: p for k, p in are_pairs.ICT_ARE_PAIRS.items() if k != "ear"}
    r = metrics.face_ratios(fake.mean, sel.pairs)
    assert np.isnan(r[0]) and np.allclose(r[1:], CMP_RATIOS[1:], atol=0.02)
    assert are_selection.select_are_pairs(fake, "landmark_rule").pairs["ear"] is not None
