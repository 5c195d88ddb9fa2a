"""MobileNet-V1 regressor: parity with 3DDFA-V2 (mb05) and checkpoint error handling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from vox3d import paths
from vox3d.face.crop import crop_image, roi_box_from_bbox
from vox3d.face.detector import FaceBoxes
from vox3d.face.regressor import (
    Regressor,
    build_mobilenet,
    load_mobilenet,
    load_param_mean_std,
)
from vox3d.safeload import BadModelFileError, load_torch

NAMES = paths.TDDFA_EXAMPLES


@pytest.fixture(scope="module")
def reg():
    torch.set_num_threads(1)
    return Regressor()


def test_raw_output_matches_original(reg, ref):
    raw = reg.raw(ref["crops_bgr_uint8"])
    assert raw.shape == (3, 62) and raw.dtype == np.float32
    assert np.abs(raw - ref["crops_raw_output"]).max() < 1e-4  # measured ~1.1e-6
    params = reg.predict(ref["crops_bgr_uint8"])
    # parameters reach 5e5 (shape coefficients): compare in whitened units
    assert (np.abs(params - ref["crops_params"]) / reg.std).max() < 1e-4
    # single crop
    np.testing.assert_allclose(reg.raw(ref["crops_bgr_uint8"][0]), raw[:1], atol=1e-5)


def test_full_image_matches_original(reg, ref):
    """detect -> ROI -> crop -> regress on the photographs == the original's outputs."""
    fb = FaceBoxes()
    for name in NAMES:
        img = cv2.imread(str(paths.TDDFA_DIR / "examples" / f"{name}.jpg"))
        dets = fb.detect(img)
        rois = np.stack([roi_box_from_bbox(b) for b in dets])
        assert np.abs(rois - ref[f"{name}/roi_boxes"]).max() < 1.0  # measured < 1e-4
        params = reg.predict(np.stack([crop_image(img, r) for r in rois]))
        want = ref[f"{name}/params"]
        # Compared in whitened units (the network's own output scale): a de-whitened value is
        # `raw * std + mean`, and where std and mean nearly cancel (parameter 30: std 44,872,
        # mean -13,031) float32 resolves only ~1e-3, so an absolute tolerance there tests
        # float32 cancellation, not the network.  Measured < 1.1e-6 whitened.
        np.testing.assert_allclose((params - want) / reg.std, 0.0, rtol=0.0, atol=1e-4)


def test_architecture_widths():
    for widen, last in [(0.5, 512), (1.0, 1024)]:
        m = build_mobilenet(widen, 62)
        assert m.fc.in_features == last and m.fc.out_features == 62
        assert m(torch.zeros(2, 3, 120, 120)).shape == (2, 62)
    # the official checkpoint's keys (minus fc_lm, fc_param -> fc) are exactly ours
    ck = load_torch(paths.MB05_WEIGHTS)["state_dict"]
    ours = set(build_mobilenet(0.5).state_dict())
    theirs = {k.removeprefix("module.").replace("fc_param", "fc") for k in ck}
    assert theirs - ours == {"fc_lm.weight", "fc_lm.bias"} and ours <= theirs


def _save_ckpt(path, widen, extra=None, prefix="module.", fc="fc_param"):
    sd = build_mobilenet(widen).state_dict()
    out = {}
    for k, v in sd.items():
        k = k.replace("fc.", f"{fc}.") if k.startswith("fc.") else k
        out[prefix + k] = v
    out.update(extra or {})
    torch.save({"state_dict": out, "epoch": 1}, path)


def test_mb1_checkpoint_and_wrong_widen(tmp_path):
    p = tmp_path / "mb1_120x120.pth"
    _save_ckpt(p, 1.0, extra={"module.fc_lm.weight": torch.zeros(136, 1024)})
    r = Regressor(p, widen=1.0)
    assert r.predict(np.zeros((2, 120, 120, 3), np.uint8)).shape == (2, 62)
    with pytest.raises(BadModelFileError, match=r"mb1_120x120\.pth.*shape"):
        Regressor(p, widen=0.5)


def test_extra_and_missing_keys(tmp_path):
    p = tmp_path / "extra.pth"
    _save_ckpt(p, 0.5, extra={"module.head.weight": torch.zeros(3)})
    with pytest.raises(BadModelFileError, match=r"extra\.pth.*unexpected.*head\.weight"):
        load_mobilenet(p, 0.5)
    p = tmp_path / "plain.pth"  # no prefix, final layer already named fc: accepted
    _save_ckpt(p, 0.5, prefix="", fc="fc")
    load_mobilenet(p, 0.5)
    sd = load_torch(p)["state_dict"]
    del sd["dw6.bn_sep.running_var"]
    p2 = tmp_path / "missing.pth"
    torch.save(sd, p2)
    with pytest.raises(BadModelFileError, match=r"missing\.pth.*missing.*dw6\.bn_sep"):
        load_mobilenet(p2, 0.5)


def test_truncated_and_garbage_checkpoints(tmp_path):
    raw = paths.MB05_WEIGHTS.read_bytes()
    p = tmp_path / "truncated.pth"
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BadModelFileError, match=r"truncated\.pth"):
        Regressor(p)
    p = tmp_path / "text.pth"
    p.write_text("not a checkpoint")
    with pytest.raises(BadModelFileError, match=r"text\.pth"):
        Regressor(p)
    with pytest.raises(BadModelFileError, match=r"nothere\.pth"):
        Regressor(tmp_path / "nothere.pth")
    p = tmp_path / "ms.pkl"
    p.write_bytes(b"\x80\x04garbage")
    with pytest.raises(BadModelFileError, match=r"ms\.pkl"):
        load_param_mean_std(p)


def test_in_memory_weights_and_bad_input(reg, ref):
    sd = load_torch(paths.MB05_WEIGHTS)
    r2 = Regressor(sd, (reg.mean, reg.std))
    np.testing.assert_array_equal(r2.raw(ref["crops_bgr_uint8"]), reg.raw(ref["crops_bgr_uint8"]))
    with pytest.raises(ValueError, match="uint8"):
        reg.raw(ref["crops_bgr_uint8"].astype(np.float32))
    with pytest.raises(ValueError, match="120"):
        reg.raw(np.zeros((1, 64, 64, 3), np.uint8))


def test_reduced_precision_close(ref):
    """bf16 on CPU (the GPU path uses fp16/bf16): close to fp32 in whitened units."""
    r = Regressor(precision="bf16")
    d = np.abs(r.raw(ref["crops_bgr_uint8"]) - ref["crops_raw_output"]).max()
    assert d < 0.1
    r = Regressor(channels_last=True)
    assert np.abs(r.raw(ref["crops_bgr_uint8"]) - ref["crops_raw_output"]).max() < 1e-4


def test_fused_batchnorm_same_output(ref):
    """BN folded into the convolutions (speed option) keeps parity with the original."""
    r = Regressor(fuse_bn=True, channels_last=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in r.model.modules())
    assert np.abs(r.raw(ref["crops_bgr_uint8"]) - ref["crops_raw_output"]).max() < 1e-4


@pytest.mark.parametrize("channels_last", [False, True])
def test_padded_input_same_output(ref, channels_last):
    """pad_input (8-channel first conv, zero weights on the extra channels) keeps parity."""
    r = Regressor(pad_input=True, fuse_bn=True, channels_last=channels_last)
    assert r.model.conv1.in_channels == 8
    assert float(r.model.conv1.weight[:, 3:].abs().max()) == 0.0
    assert np.abs(r.raw(ref["crops_bgr_uint8"]) - ref["crops_raw_output"]).max() < 1e-4


def test_padded_normalisation_matches_plain():
    from vox3d.face.regressor import normalize_crops, normalize_crops_padded

    g = torch.Generator().manual_seed(0)
    c = torch.randint(0, 256, (2, 120, 120, 3), dtype=torch.uint8, generator=g)
    p = normalize_crops_padded(c)
    assert p.shape == (2, 8, 120, 120)
    assert torch.equal(p[:, :3], normalize_crops(c))
    assert float(p[:, 3:].abs().max()) == 0.0
