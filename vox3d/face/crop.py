"""3DDFA-V2's face box -> region of interest policy and the 120x120 crop.

Policy ("box" crop of 3DDFA-V2, facts from its ``parse_roi_box_from_bbox``): from a
detector box (x1, y1, x2, y2) take ``old = (w + h) / 2``, the centre moved down by
``0.14 * old``, and a square of side ``int(1.58 * old)`` around it.  The crop rounds the
square's corners to integer pixels (round half to even), fills the part outside the
image with black, and resizes the square to 120x120 with bilinear interpolation
(cv2 INTER_LINEAR: half-pixel centres, edge pixels replicated within the square).

Two implementations: :func:`crop_image` (numpy + cv2, the reference) and
:func:`crop_batch_torch` (pure torch, batched, any device; within one grey level of the
reference: same fixed-point arithmetic as cv2, bit-identical in our tests).
"""

from __future__ import annotations

import numpy as np
import torch

#: Side of the regressor's input crop, pixels.
CROP_SIZE = 120
#: Centre shift (fraction of the mean box side) and square side factor of the policy.
CENTER_SHIFT = 0.14
SIDE_FACTOR = 1.58


def roi_box_from_bbox(box) -> np.ndarray:
    """ROI square for a detector box ``(4,)`` or ``(5,)`` x1, y1, x2, y2[, score] (px).

    Returns ``(4,) float64`` sx, sy, ex, ey in image pixels (``ex - sx`` = ``ey - sy``
    = an integer side length).
    """
    left, top, right, bottom = (float(v) for v in np.asarray(box, dtype=np.float64)[:4])
    old_size = (right - left + bottom - top) / 2
    center_x = right - (right - left) / 2.0
    center_y = bottom - (bottom - top) / 2.0 + old_size * CENTER_SHIFT
    size = int(old_size * SIDE_FACTOR)
    sx = center_x - size / 2
    sy = center_y - size / 2
    return np.array([sx, sy, sx + size, sy + size], dtype=np.float64)


def roi_boxes_from_bboxes(boxes: np.ndarray) -> np.ndarray:
    """Vectorised :func:`roi_box_from_bbox`: ``(N, 4|5)`` -> ``(N, 4) float64``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(
        -1, np.shape(boxes)[-1] if np.ndim(boxes) else 4
    )
    left, top, right, bottom = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    old_size = (right - left + bottom - top) / 2
    cx = right - (right - left) / 2.0
    cy = bottom - (bottom - top) / 2.0 + old_size * CENTER_SHIFT
    size = np.trunc(old_size * SIDE_FACTOR)
    sx, sy = cx - size / 2, cy - size / 2
    return np.stack([sx, sy, sx + size, sy + size], 1)


def roi_boxes_torch(boxes: torch.Tensor) -> torch.Tensor:
    """:func:`roi_boxes_from_bboxes` in torch on the boxes' device:
    ``(N, 4|5)`` -> ``(N, 4) float64`` (same arithmetic, float64)."""
    b = boxes[:, :4].to(torch.float64)
    left, top, right, bottom = b.unbind(1)
    old_size = (right - left + bottom - top) / 2
    cx = right - (right - left) / 2.0
    cy = bottom - (bottom - top) / 2.0 + old_size * CENTER_SHIFT
    size = torch.trunc(old_size * SIDE_FACTOR)
    sx, sy = cx - size / 2, cy - size / 2
    return torch.stack([sx, sy, sx + size, sy + size], 1)


def _int_corners(roi_box) -> tuple[int, int, int, int]:
    return tuple(int(round(float(v))) for v in roi_box[:4])  # type: ignore[return-value]


def crop_roi(image: np.ndarray, roi_box) -> np.ndarray:
    """The ROI square of ``image (H, W[, C]) uint8`` at integer corners, black outside."""
    h, w = image.shape[:2]
    sx, sy, ex, ey = _int_corners(roi_box)
    dh, dw = ey - sy, ex - sx
    out = np.zeros((max(dh, 0), max(dw, 0), *image.shape[2:]), dtype=image.dtype)
    # overlap of [sx, ex) x [sy, ey) with the image
    x0, x1 = max(sx, 0), min(ex, w)
    y0, y1 = max(sy, 0), min(ey, h)
    if x1 > x0 and y1 > y0:
        out[y0 - sy : y1 - sy, x0 - sx : x1 - sx] = image[y0:y1, x0:x1]
    return out


def crop_image(image: np.ndarray, roi_box, size: int = CROP_SIZE) -> np.ndarray:
    """Crop ``image (H, W, 3) uint8`` to the ROI and resize to ``(size, size, 3) uint8``
    exactly like 3DDFA-V2 (cv2 INTER_LINEAR).  Colour order is kept (BGR in, BGR out)."""
    import cv2

    roi = crop_roi(image, roi_box)
    if roi.shape[0] < 1 or roi.shape[1] < 1:
        raise ValueError(f"empty ROI {tuple(roi_box)}")
    return cv2.resize(roi, dsize=(size, size), interpolation=cv2.INTER_LINEAR)


#: cv2's fixed-point resize: interpolation weights are integers summing to 2**11.
_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS


def _axis_taps(start: torch.Tensor, length: torch.Tensor, size: int, clamp_weights: bool):
    """Integer bilinear taps along one axis for N ROIs, as cv2 INTER_LINEAR computes them.

    ``start (N,)`` integer ROI origin and ``length (N,)`` integer side, float64.  Source
    coordinate ``f = (d + 0.5) * scale - 0.5`` with ``scale = 1 / (size / length)``
    (double, then float32), weights ``round(2048 * (1 - frac))``, ``round(2048 * frac)``.
    Columns (``clamp_weights``) put the whole weight on the edge pixel outside the ROI;
    rows keep the weights and clamp the row index (cv2 does it this way).
    Returns left/right source indices in image coordinates ``(N, size) long`` and the two
    weights ``(N, size) int32``.
    """
    d = torch.arange(size, device=start.device, dtype=torch.float64)
    scale = 1.0 / (size / length)
    f = ((d[None] + 0.5) * scale[:, None] - 0.5).float()
    i0 = torch.floor(f)
    a = f - i0
    last = (length[:, None] - 1).float()
    zero = torch.zeros_like(i0)
    if clamp_weights:
        lo = i0 < 0
        i0 = torch.where(lo, zero, i0)
        a = torch.where(lo, zero, a)
        hi = i0 >= last
        i0 = torch.where(hi, last.expand_as(i0), i0)
        a = torch.where(hi, zero, a)
    w0 = torch.round((1 - a) * _COEF_SCALE).int()
    w1 = torch.round(a * _COEF_SCALE).int()
    i1 = torch.minimum(torch.maximum(i0 + 1, zero), last)
    i0 = torch.minimum(torch.maximum(i0, zero), last)
    org = start[:, None]
    return (i0.double() + org).long(), (i1.double() + org).long(), w0, w1


def crop_batch_torch(
    images: torch.Tensor,
    roi_boxes: torch.Tensor | np.ndarray,
    size: int = CROP_SIZE,
    image_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Batched :func:`crop_image` in torch, on the device of ``images`` (no cv2).

    ``images (B, H, W, C) uint8``; ``roi_boxes (N, 4)`` sx, sy, ex, ey px (float); by
    default ``N == B`` and ROI n is cut from image n, else ``image_index (N,) long``
    names each ROI's image (several faces per frame).  Returns ``(N, size, size, C) uint8``.
    Pixels outside the image are black, as in the reference.

    Integer arithmetic reproduces cv2's fixed-point INTER_LINEAR for 8-bit images (11-bit
    weights, horizontal pass into int32, vertical pass as its SIMD kernel rounds:
    ``(((h0 >> 4) * b0 >> 16) + ((h1 >> 4) * b1 >> 16) + 2) >> 2``): bit-identical to
    ``cv2.resize`` on this machine's cv2 in our tests, and never more than one grey
    level off.
    """
    dev = images.device
    if torch.is_tensor(roi_boxes):
        rb = roi_boxes.to(device=dev, dtype=torch.float64)
    else:
        rb = torch.as_tensor(np.asarray(roi_boxes, dtype=np.float64), device=dev)
    rb = rb.reshape(-1, 4)
    n = rb.shape[0]
    if image_index is None:
        if n != images.shape[0]:
            raise ValueError(f"{n} ROIs for {images.shape[0]} images: pass image_index")
        image_index = torch.arange(n, device=dev)
    corners = torch.round(rb)  # half to even, like Python's round()
    return resize_rois_torch(images, corners, size, size, image_index)


def resize_uint8_torch(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``cv2.resize(img, (width, height), interpolation=INTER_LINEAR)`` for a batch
    ``(B, H, W, C) uint8`` -> ``(B, height, width, C) uint8``, in torch (no cv2)."""
    b, h, w, _ = images.shape
    corners = torch.tensor([[0.0, 0.0, w, h]], dtype=torch.float64, device=images.device)
    idx = torch.arange(b, device=images.device)
    return resize_rois_torch(images, corners.expand(b, 4), height, width, idx)


def resize_rois_torch(
    images: torch.Tensor,
    corners: torch.Tensor,
    out_h: int,
    out_w: int,
    image_index: torch.Tensor,
) -> torch.Tensor:
    """Cut integer ROIs ``corners (N, 4)`` (sx, sy, ex, ey; float64 holding integers;
    black outside the image) from ``images[image_index]`` and resize each to
    ``(out_h, out_w)`` with cv2's fixed-point INTER_LINEAR.  ``(N, out_h, out_w, C) uint8``.
    """
    dev = images.device
    image_index = image_index.to(dev).long()
    sx, sy = corners[:, 0], corners[:, 1]
    dw, dh = corners[:, 2] - sx, corners[:, 3] - sy
    if corners.shape[0] and (dw.min() < 1 or dh.min() < 1):
        raise ValueError("empty ROI")
    x0, x1, wx0, wx1 = _axis_taps(sx, dw, out_w, clamp_weights=True)  # (N, out_w)
    y0, y1, wy0, wy1 = _axis_taps(sy, dh, out_h, clamp_weights=False)  # (N, out_h)
    _, h, w, _ = images.shape
    bi = image_index[:, None, None]

    def sample(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        # yi (N, size, 1), xi (N, 1, size) -> (N, size, size, C) int32, zero outside
        inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        v = images[bi, yi.clamp(0, h - 1), xi.clamp(0, w - 1)].int()
        return v * inside[..., None]

    x0e, x1e = x0[:, None, :], x1[:, None, :]
    a0, a1 = wx0[:, None, :, None], wx1[:, None, :, None]

    def hpass(yi: torch.Tensor) -> torch.Tensor:
        yi = yi[:, :, None]
        return sample(yi, x0e) * a0 + sample(yi, x1e) * a1

    b0, b1 = wy0[:, :, None, None], wy1[:, :, None, None]
    v = (((hpass(y0) >> 4) * b0) >> 16) + (((hpass(y1) >> 4) * b1) >> 16)
    return ((v + 2) >> 2).clamp_(0, 255).to(torch.uint8)
