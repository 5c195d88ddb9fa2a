"""FaceBoxes: parity with 3DDFA-V2's detector on the upstream demo photographs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from vox3d import paths
from vox3d.face.detector import (
    FaceBoxes,
    FaceBoxesNet,
    detection_scale,
    load_faceboxes_net,
    nms,
    nms_batched_torch,
    prior_boxes,
)
from vox3d.safeload import BadModelFileError

NAMES = paths.TDDFA_EXAMPLES


@pytest.fixture(scope="module")
def detector():
    torch.set_num_threads(1)
    return FaceBoxes()


@pytest.mark.parametrize("name", NAMES)
def test_boxes_match_original(detector, images, ref, name):
    dets = detector.detect(images[name])
    want = ref[f"{name}/boxes"]
    assert dets.dtype == np.float32 and dets.shape == want.shape  # same faces, same order
    assert np.abs(dets[:, :4] - want[:, :4]).max() < 1.0  # pixels (measured: < 2e-4)
    assert np.abs(dets[:, 4] - want[:, 4]).max() < 1e-3


def test_batch_equals_single(detector, images):
    ims = [
        images["JianzhuGuo"],
        images["emma"],
        images["JianzhuGuo"][::-1].copy(),
        images["trump_hillary"],
    ]
    single = [detector.detect(im) for im in ims]
    batch = detector.detect_batch(ims)
    assert len(batch) == len(ims)
    for a, b in zip(single, batch, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_tensor_path_equals_numpy_path(detector, images):
    """The cv2-free batched path (GPU fit stage) gives the same detections."""
    for name in NAMES:
        want = detector.detect(images[name])
        dets, keep = detector.detect_tensor(torch.from_numpy(images[name])[None])
        got = dets[0][keep[0]].numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-2)
    # a batch of same-sized frames, one with no face: 224x224 like VoxCeleb
    face = cv2.resize(images["JianzhuGuo"], (224, 224))
    frames = np.stack([face, np.zeros_like(face), face[:, ::-1]])
    dets, keep = detector.detect_tensor(torch.from_numpy(frames))
    ref = detector.detect_batch(list(frames))
    for i in range(3):
        assert keep[i].sum().item() == len(ref[i])
        np.testing.assert_allclose(dets[i][keep[i]].numpy(), ref[i], atol=1e-2)
    assert len(ref[1]) == 0 and len(ref[0]) == 1


def test_no_face(detector):
    assert detector.detect(np.zeros((300, 400, 3), np.uint8)).shape == (0, 5)
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((30, 40, 3), np.float32))


def test_scaling_rule():
    assert detection_scale(600, 800) == (1.0, 600, 800)
    s, h, w = detection_scale(1901, 3913)  # emma.jpg: width-limited
    assert h <= 720 and w <= 1080 and w >= 1079 and s == pytest.approx(1080 / 3913)
    s, h, w = detection_scale(1440, 1000)  # height-limited
    assert (h, w) == (720, 500) and s == 0.5


def test_priors_layout():
    pri = prior_boxes(64, 96)  # feature maps 2x3, 1x2, 1x1
    assert pri.shape == (2 * 3 * 21 + 1 * 2 + 1, 4) and pri.dtype == np.float32
    # first cell: 16 dense 32-px anchors (cy outer, cx inner), 4 x 64 px, 1 x 128 px
    np.testing.assert_allclose(pri[0], [0, 0, 32 / 96, 32 / 64], atol=1e-7)
    np.testing.assert_allclose(pri[1, :2], [8 / 96, 0], atol=1e-7)
    np.testing.assert_allclose(pri[4, :2], [0, 8 / 64], atol=1e-7)
    np.testing.assert_allclose(pri[16], [0, 0, 64 / 96, 64 / 64], atol=1e-7)
    np.testing.assert_allclose(pri[17, :2], [16 / 96, 0], atol=1e-7)
    np.testing.assert_allclose(pri[20], [16 / 96, 16 / 64, 128 / 96, 128 / 64], atol=1e-7)
    # second cell along x
    np.testing.assert_allclose(pri[21, :2], [32 / 96, 0], atol=1e-7)
    # stride-64 anchors (256 px) and stride-128 anchor (512 px)
    np.testing.assert_allclose(pri[126], [32 / 96, 32 / 64, 256 / 96, 256 / 64], atol=1e-7)
    np.testing.assert_allclose(pri[128], [64 / 96, 64 / 64, 512 / 96, 512 / 64], atol=1e-7)
    # number of priors equals the network's output count for the size
    loc, conf = FaceBoxesNet().eval()(torch.zeros(1, 3, 70, 100))
    assert loc.shape[1] == len(prior_boxes(70, 100)) == conf.shape[1]


def _greedy_nms_reference(dets, thr):
    order = sorted(range(len(dets)), key=lambda i: -dets[i, 4])
    keep = []
    for i in order:
        ok = True
        for j in keep:
            xx1, yy1 = max(dets[i, 0], dets[j, 0]), max(dets[i, 1], dets[j, 1])
            xx2, yy2 = min(dets[i, 2], dets[j, 2]), min(dets[i, 3], dets[j, 3])
            inter = max(0.0, xx2 - xx1 + 1) * max(0.0, yy2 - yy1 + 1)
            a = lambda k: (dets[k, 2] - dets[k, 0] + 1) * (dets[k, 3] - dets[k, 1] + 1)  # noqa: E731
            if inter / (a(i) + a(j) - inter) >= thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def test_nms_matches_greedy_reference():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(1, 60))
        xy = rng.uniform(0, 100, (n, 2))
        wh = rng.uniform(5, 60, (n, 2))
        sc = rng.permutation(n) / n + 0.01  # distinct scores
        dets = np.hstack([xy, xy + wh, sc[:, None]]).astype(np.float32)
        want = _greedy_nms_reference(dets.astype(np.float64), 0.3)
        got = nms(dets, 0.3)
        assert list(got) == want, trial
        # batched torch NMS, padded rows, same answer
        order = np.argsort(-dets[:, 4])
        b = torch.zeros(2, n + 3, 4)
        s = torch.zeros(2, n + 3)
        v = torch.zeros(2, n + 3, dtype=torch.bool)
        b[0, :n], s[0, :n], v[0, :n] = (
            torch.from_numpy(dets[order, :4]),
            torch.from_numpy(dets[order, 4]),
            True,
        )
        keep = nms_batched_torch(b, s, v, 0.3)
        assert sorted(order[keep[0, :n].numpy()].tolist()) == sorted(want)
        assert not keep[1].any() and not keep[0, n:].any()
    # two identical boxes: the lower score goes; disjoint boxes both stay
    d = np.array([[0, 0, 10, 10, 0.9], [0, 0, 10, 10, 0.8], [50, 50, 60, 60, 0.7]], np.float32)
    assert list(nms(d, 0.3)) == [0, 2]
    assert len(nms(np.zeros((0, 5), np.float32), 0.3)) == 0


def test_bad_checkpoints(tmp_path):
    state = load_faceboxes_net().state_dict()
    # truncated file
    raw = paths.FACEBOXES_WEIGHTS.read_bytes()
    p = tmp_path / "trunc.pth"
    p.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(BadModelFileError, match="trunc.pth"):
        FaceBoxes(p)
    # wrong shape
    bad = dict(state)
    bad["conv1.conv.weight"] = torch.zeros(24, 3, 5, 5)
    p = tmp_path / "shape.pth"
    torch.save(bad, p)
    with pytest.raises(BadModelFileError, match=r"shape\.pth.*conv1\.conv\.weight"):
        FaceBoxes(p)
    # extra key, and a module.-prefixed state dict that is fine
    p = tmp_path / "extra.pth"
    torch.save({**state, "head.weight": torch.zeros(1)}, p)
    with pytest.raises(BadModelFileError, match=r"extra\.pth.*head\.weight"):
        FaceBoxes(p)
    p = tmp_path / "prefixed.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, p)
    assert FaceBoxes(p).detect(np.zeros((64, 64, 3), np.uint8)).shape == (0, 5)


def test_fused_batchnorm_detector(images, ref):
    """BN folded into the convolutions (the reduced-precision GPU option) keeps parity."""
    fb = FaceBoxes(fuse_bn=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fb.net.modules())
    dets = fb.detect(images["JianzhuGuo"])
    assert dets.shape == ref["JianzhuGuo/boxes"].shape
    assert np.abs(dets - ref["JianzhuGuo/boxes"]).max() < 1e-2
