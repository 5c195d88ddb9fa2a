"""vox3d.fitting.consistency: identity-consistency figures and similarity alignment (fast)."""

from __future__ import annotations

import numpy as np
import pytest

from vox3d.fitting.consistency import (
    consistency,
    consistency_from_distances,
    pairwise_distances,
    procrustes_reference,
    safe_ratio,
    shuffled_control,
    similarity_align,
)

# two tested persons (6 and 5 clips) and 10 one-clip distractors, like the real bench
LABELS = np.array(["a"] * 6 + ["b"] * 5 + [f"d{i}" for i in range(10)])
SESSIONS = np.array(
    ["a1", "a1", "a2", "a2", "a3", "a3"] + ["b1"] * 5 + [f"s{i}" for i in range(10)]
)


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_constant_vectors_give_ratio_one_and_chance():
    x = np.ones((len(LABELS), 7))
    c = consistency(x, LABELS)
    assert c.ratio == 1.0 and c.d_same == 0.0 and c.d_diff == 0.0
    # chance: queries of a see 5 of 20, of b 4 of 20
    want = (6 * 5 / 20 + 5 * 4 / 20) / 11
    assert c.chance == pytest.approx(want)
    assert c.nn_accuracy == pytest.approx(want)
    assert c.n_queries == 11
    assert c.n_same_pairs == 15 + 10
    # pairs with a tested clip: a-b 30, a-d 60, b-d 50 (d-d left out)
    assert c.n_diff_pairs == 140


def test_well_separated_clusters():
    rng = np.random.default_rng(0)
    centres = {lab: rng.normal(size=5) * 100 for lab in np.unique(LABELS)}
    x = np.stack([centres[lab] + rng.normal(size=5) * 0.01 for lab in LABELS])
    c = consistency(x, LABELS)
    assert c.ratio < 0.01
    assert c.nn_accuracy == 1.0
    cs = consistency(x, LABELS, sessions=SESSIONS, cross_session=True, persons=["a"])
    assert cs.n_same_pairs == 12 and cs.nn_accuracy == 1.0 and cs.ratio < 0.01
    assert cs.chance == pytest.approx(4 / 19)  # same-session clip not in the gallery


def test_shuffled_labels_give_ratio_near_one():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(len(LABELS), 20))
    r, acc, chance = shuffled_control(x, LABELS, n_perm=300, seed=2)
    assert abs(r - 1.0) < 0.03
    assert abs(acc - chance) < 0.05
    # and with real structure the unshuffled ratio is far below the shuffled one
    centres = {lab: rng.normal(size=20) * 3 for lab in np.unique(LABELS)}
    y = np.stack([centres[lab] + rng.normal(size=20) for lab in LABELS])
    assert consistency(y, LABELS).ratio < 0.5 < shuffled_control(y, LABELS, 100)[0]


def test_ratio_and_accuracy_on_a_hand_example():
    x = np.array([[0.0], [1.0], [3.0], [10.0]])
    c = consistency(x, ["p", "p", "q", "r"])
    assert c.d_same == 1.0
    assert c.d_diff == pytest.approx((3 + 10 + 2 + 9) / 4)
    assert c.ratio == pytest.approx(1 / 6)
    assert c.nn_accuracy == 1.0 and c.chance == pytest.approx(1 / 3)
    # the second p clip moved next to q: its nearest is q
    c2 = consistency(np.array([[0.0], [2.9], [3.0], [10.0]]), ["p", "p", "q", "r"])
    assert c2.nn_accuracy == 0.5


def test_nan_and_edge_cases():
    assert np.isnan(safe_ratio(float("nan"), 1.0))
    assert safe_ratio(1.0, 0.0) == float("inf")
    c = consistency(np.arange(3.0)[:, None], ["p", "q", "r"])  # nobody has 2 clips
    assert np.isnan(c.ratio) and np.isnan(c.nn_accuracy) and c.n_queries == 0
    with pytest.raises(ValueError):
        consistency(np.array([[np.nan], [1.0]]), ["p", "p"])
    with pytest.raises(ValueError):
        consistency(np.zeros((2, 1)), ["p", "p"], cross_session=True)


def test_pairwise_distances():
    x = np.array([[0.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(pairwise_distances(x), [[0, 5], [5, 0]])
    rng = np.random.default_rng(6)
    y = rng.normal(size=(len(LABELS), 4))
    a = consistency(y, LABELS, sessions=SESSIONS, cross_session=True)
    assert a == consistency_from_distances(
        pairwise_distances(y), LABELS, sessions=SESSIONS, cross_session=True
    )


def test_similarity_align_recovers_known_transform():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(50, 3))
    r_true, s_true, t_true = _rotation(rng), 2.7, np.array([1.0, -4.0, 0.5])
    dst = s_true * src @ r_true.T + t_true
    np.testing.assert_allclose(similarity_align(src, dst), dst, atol=1e-11)
    # the inverse: dst moved back onto src
    np.testing.assert_allclose(similarity_align(dst, src), src, atol=1e-11)


def test_reflection_is_not_allowed():
    rng = np.random.default_rng(4)
    src = rng.normal(size=(30, 3))
    mirrored = src * np.array([-1.0, 1.0, 1.0])
    assert np.abs(similarity_align(src, mirrored) - mirrored).max() > 0.1


def test_similar_meshes_have_distance_zero_after_alignment():
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(40, 3))
    moved = 0.3 * ref @ _rotation(rng).T + np.array([5.0, 2.0, -1.0])
    np.testing.assert_allclose(similarity_align(moved, ref), ref, atol=1e-10)
    other = ref + rng.normal(size=ref.shape) * 0.2  # a different shape stays different
    assert np.abs(similarity_align(other, ref) - ref).max() > 0.05
    # a set of similar copies: Procrustes mean is the shape itself (at the first's size)
    copies = np.stack([s * ref @ _rotation(rng).T + rng.normal(size=3) for s in (1, 2, 0.5)])
    gpa = procrustes_reference(copies)
    np.testing.assert_allclose(similarity_align(ref, gpa), gpa, atol=1e-9)
