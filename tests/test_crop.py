"""3DDFA-V2 ROI policy and crop: parity with the original's crops; cv2-free torch crop."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from vox3d import paths
from vox3d.face.crop import (
    CROP_SIZE,
    crop_batch_torch,
    crop_image,
    crop_roi,
    resize_uint8_torch,
    roi_box_from_bbox,
    roi_boxes_from_bboxes,
)

NAMES = paths.TDDFA_EXAMPLES


@pytest.mark.parametrize("name", NAMES)
def test_roi_policy_matches_original(ref, name):
    boxes = ref[f"{name}/boxes"]
    want = ref[f"{name}/roi_boxes"]
    got = np.stack([roi_box_from_bbox(b) for b in boxes])
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(roi_boxes_from_bboxes(boxes), got, atol=1e-9)
    np.testing.assert_allclose(roi_box_from_bbox(boxes[0, :4]), got[0])
    side = got[:, 2] - got[:, 0]
    np.testing.assert_allclose(side, np.round(side))  # integer square
    np.testing.assert_allclose(side, got[:, 3] - got[:, 1])


def test_crops_match_original(ref, images):
    for k, name in enumerate(NAMES):  # crops_bgr_uint8: first face of each photograph
        crop = crop_image(images[name], ref[f"{name}/roi_boxes"][0])
        assert crop.shape == (CROP_SIZE, CROP_SIZE, 3) and crop.dtype == np.uint8
        diff = np.abs(crop.astype(int) - ref["crops_bgr_uint8"][k])
        assert diff.max() <= 1  # measured: 0 (identical)


def test_crop_roi_pads_black():
    img = np.full((10, 20, 3), 200, np.uint8)
    roi = crop_roi(img, [-5, -5, 5, 5])
    assert roi.shape == (10, 10, 3)
    assert (roi[:5] == 0).all() and (roi[:, :5] == 0).all() and (roi[5:, 5:] == 200).all()
    # rounding of corners is Python's round (half to even)
    assert crop_roi(img, [0.5, 0, 2.5, 2]).shape == (2, 2, 3)
    assert crop_roi(img, [100, 100, 110, 110]).max() == 0  # fully outside


def test_torch_crop_matches_cv2_on_real_faces(ref, images):
    for name in NAMES:
        rois = ref[f"{name}/roi_boxes"]
        im = torch.from_numpy(images[name])[None]
        got = crop_batch_torch(im, rois, image_index=torch.zeros(len(rois), dtype=torch.long))
        for j, roi in enumerate(rois):
            want = crop_image(images[name], roi)
            diff = np.abs(got[j].numpy().astype(int) - want)
            assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # measured: identical


def test_torch_crop_matches_cv2_random():
    rng = np.random.default_rng(1)
    n_same = n_tot = 0
    for _ in range(60):
        h, w = rng.integers(16, 260, 2)
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        side = int(rng.uniform(3, 350))  # up- and downscaling, partly outside the image
        x0, y0 = rng.uniform(-80, w), rng.uniform(-80, h)
        roi = [x0, y0, x0 + side, y0 + side]
        want = crop_image(img, roi)
        got = crop_batch_torch(torch.from_numpy(img)[None], torch.tensor([roi]))[0].numpy()
        d = np.abs(got.astype(int) - want)
        assert d.max() <= 1
        n_same += (d == 0).sum()
        n_tot += d.size
    assert n_same / n_tot > 0.99


def test_resize_uint8_torch_matches_cv2():
    rng = np.random.default_rng(2)
    for h, w, oh, ow in [
        (689, 1536, 484, 1080),
        (100, 80, 37, 53),
        (50, 60, 100, 120),
        (64, 64, 32, 32),
    ]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        want = cv2.resize(img, (ow, oh), interpolation=cv2.INTER_LINEAR)
        got = resize_uint8_torch(torch.from_numpy(img)[None], oh, ow)[0].numpy()
        assert np.abs(got.astype(int) - want).max() <= 1


def test_torch_crop_errors():
    img = torch.zeros(2, 10, 10, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="image_index"):
        crop_batch_torch(img, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="empty"):
        crop_batch_torch(img, np.array([[0, 0, 0, 0], [0, 0, 4, 4]], float))
