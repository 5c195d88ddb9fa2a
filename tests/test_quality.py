"""Quality filters (vox3d.fitting.quality): each reason counted, first failing test wins."""

from __future__ import annotations

import numpy as np

from vox3d.fitting.quality import (
    REASON_CODE,
    REASONS,
    Thresholds,
    choose_face,
    classify,
    count_reasons,
    laplacian_variance,
)


def test_laplacian_variance_matches_opencv_and_orders_blur():
    import cv2

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
    ours = laplacian_variance(img)
    for i in range(2):
        g = cv2.cvtColor(img[i], cv2.COLOR_BGR2GRAY).astype(np.float64)
        ref = cv2.Laplacian(g, cv2.CV_64F, ksize=1)[1:-1, 1:-1].var()
        # cv2's grey conversion rounds to uint8; allow for that
        assert abs(ours[i] - ref) / ref < 0.01
    sharp = np.zeros((1, 60, 60, 3), np.uint8)
    sharp[:, :, ::4] = 255
    blurred = cv2.GaussianBlur(sharp[0], (0, 0), 3)[None]
    assert laplacian_variance(sharp)[0] > 100 * laplacian_variance(blurred)[0]
    assert laplacian_variance(np.full((1, 20, 20, 3), 128, np.uint8))[0] == 0.0


def test_choose_face_largest_and_margin():
    assert choose_face(np.zeros((0, 5)), 0.6).index == -1
    boxes = np.array([[0, 0, 10, 10, 0.9], [0, 0, 40, 40, 0.8], [0, 0, 50, 50, 0.3]])
    c = choose_face(boxes, 0.6)
    assert c.index == 1 and c.n_faces == 2 and abs(c.margin - 16.0) < 1e-9
    c = choose_face(boxes[2:], 0.6)  # only a low-score face: pick it, nothing counted
    assert c.index == 0 and c.n_faces == 0
    c = choose_face(boxes[:1], 0.6)
    assert c.n_faces == 1 and c.margin == float("inf")


def test_classify_counts_each_reason():
    th = Thresholds(min_score=0.6, min_face_px=40, max_yaw_deg=60, min_blur=15, face_margin=1.5)
    nan = np.nan
    rows = {  # has_face, score, face_px, n_faces, margin, yaw, blur -> expected
        "ok": (1, 0.9, 80, 1, np.inf, 10, 100),
        "no_face": (0, nan, nan, 0, 0, nan, nan),
        "low_score": (1, 0.5, 80, 0, 0, 10, 100),
        "small_face": (1, 0.9, 30, 1, np.inf, 10, 100),
        "multiple_faces": (1, 0.9, 80, 2, 1.2, 10, 100),
        "yaw": (1, 0.9, 80, 2, 3.0, -70, 100),
        "blur": (1, 0.9, 80, 1, np.inf, 10, 5),
    }
    cols = list(zip(*rows.values(), strict=True))
    codes = classify(th, *[np.array(c, dtype=float) for c in cols])
    assert [REASONS[c] for c in codes] == list(rows)
    # a frame failing several tests carries the first reason only
    codes2 = classify(th, *[np.array([v], float) for v in (1, 0.3, 10, 1, np.inf, 80, 1)])
    assert codes2[0] == REASON_CODE["low_score"]
    counts = count_reasons(np.concatenate([codes, codes2]))
    assert counts["low_score"] == 2 and counts["ok"] == 1 and sum(counts.values()) == 8
    nme = np.array([0.05, 0.5])
    c3 = classify(
        th,
        *[np.array([1, 1], float)] * 1,
        np.array([0.9, 0.9]),
        np.array([80, 80]),
        np.array([1, 1]),
        np.array([np.inf, np.inf]),
        np.array([0, 0]),
        np.array([100, 100]),
        landmark_nme=nme,
    )
    assert [REASONS[c] for c in c3] == ["ok", "landmarks"]


def test_thresholds_from_config():
    th = Thresholds.from_config({"min_score": 0.7, "device": "cpu", "max_yaw_deg": 45})
    assert th.min_score == 0.7 and th.max_yaw_deg == 45.0 and th.min_blur == 60.0
