"""FaceBoxes face detector, numerically equivalent to the one 3DDFA-V2 ships.

Architecture facts (Zhang et al., "FaceBoxes: A CPU Real-time Face Detector with High
Accuracy", IJCB 2017, and the layer shapes of the official checkpoint
``FaceBoxesProd.pth``): a "rapidly digested" stem of two CReLU convolutions (7x7/4 and
5x5/2, each followed by a 3x3/2 max-pool), three Inception blocks at stride 32, then two
1x1 + 3x3/2 conv pairs (stride 64 and 128).  Anchors: 32, 64, 128 px densified 4x, 2x, 1x
on the stride-32 map (21 per cell), 256 px on stride 64, 512 px on stride 128; SSD box
decoding with variances (0.1, 0.2); softmax over (background, face).

3DDFA-V2's inference settings, reproduced here: images taller than 720 px or wider than
1080 px are scaled down (cv2 INTER_LINEAR) to fit before the forward pass and the boxes
scaled back; BGR input minus the mean (104, 117, 123); confidence > 0.05, at most 5000
boxes before NMS (IoU 0.3, boxes in pixel units with the "+1" area convention), at most
750 after, and only boxes with score > 0.5 reported.

Because greedy NMS lets a box be suppressed only by a higher-scoring one, dropping boxes
with score <= ``vis_threshold`` *before* NMS yields exactly the boxes the original reports
after NMS and the visibility filter; we use this to make NMS cheap.  Pass
``vis_threshold=None`` to get every box above ``conf_threshold`` after NMS.

Coordinates everywhere are image pixels of the input image, ``x1, y1, x2, y2``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vox3d import paths
from vox3d.config import default
from vox3d.face.crop import resize_uint8_torch
from vox3d.face.regressor import fold_batchnorm
from vox3d.safeload import BadModelFileError, check_state_dict, load_torch

#: Anchor sizes in pixels per detection source, and the sources' strides.
MIN_SIZES: tuple[tuple[int, ...], ...] = ((32, 64, 128), (256,), (512,))
STEPS: tuple[int, ...] = (32, 64, 128)
VARIANCES: tuple[float, float] = (0.1, 0.2)
#: BGR mean subtracted from the image (float pixel values).
BGR_MEAN: tuple[float, float, float] = (104.0, 117.0, 123.0)
#: 3DDFA-V2 scales images down to fit into MAX_HEIGHT x MAX_WIDTH before detection.
MAX_HEIGHT, MAX_WIDTH = 720, 1080


# ----------------------------------------------------------------------------- network
class _ConvBN(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU.  Checkpoint keys ``conv.*``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, **kw) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class _CReLU(_ConvBN):
    """Conv + BN, then concatenated ReLU: relu([x, -x]) doubles the channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(torch.cat([x, -x], 1))


class _Inception(nn.Module):
    """FaceBoxes' Inception block: 128 -> 4 x 32 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.branch1x1 = _ConvBN(128, 32, kernel_size=1)
        self.branch1x1_2 = _ConvBN(128, 32, kernel_size=1)
        self.branch3x3_reduce = _ConvBN(128, 24, kernel_size=1)
        self.branch3x3 = _ConvBN(24, 32, kernel_size=3, padding=1)
        self.branch3x3_reduce_2 = _ConvBN(128, 24, kernel_size=1)
        self.branch3x3_2 = _ConvBN(24, 32, kernel_size=3, padding=1)
        self.branch3x3_3 = _ConvBN(32, 32, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch1x1_2(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        c = self.branch3x3(self.branch3x3_reduce(x))
        d = self.branch3x3_3(self.branch3x3_2(self.branch3x3_reduce_2(x)))
        return torch.cat([a, b, c, d], 1)


class FaceBoxesNet(nn.Module):
    """The FaceBoxes network.

    Input ``(B, 3, H, W)`` float32, BGR minus :data:`BGR_MEAN`.  Output
    ``loc (B, P, 4)`` (encoded offsets) and ``conf (B, P, 2)`` (softmax probabilities),
    P = number of priors of :func:`prior_boxes` for (H, W).
    """

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = _CReLU(3, 24, kernel_size=7, stride=4, padding=3)
        self.conv2 = _CReLU(48, 64, kernel_size=5, stride=2, padding=2)
        self.inception1 = _Inception()
        self.inception2 = _Inception()
        self.inception3 = _Inception()
        self.conv3_1 = _ConvBN(128, 128, kernel_size=1)
        self.conv3_2 = _ConvBN(128, 256, kernel_size=3, stride=2, padding=1)
        self.conv4_1 = _ConvBN(256, 128, kernel_size=1)
        self.conv4_2 = _ConvBN(128, 256, kernel_size=3, stride=2, padding=1)
        n_anchor = [16 + 4 + 1, 1, 1]  # per cell: 32 px x16, 64 px x4, 128 px x1; 256; 512
        cins = [128, 256, 256]
        self.loc = nn.Sequential(
            *[
                nn.Conv2d(c, a * 4, kernel_size=3, padding=1)
                for c, a in zip(cins, n_anchor, strict=True)
            ]
        )
        self.conf = nn.Sequential(
            *[
                nn.Conv2d(c, a * num_classes, kernel_size=3, padding=1)
                for c, a in zip(cins, n_anchor, strict=True)
            ]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)
        x = F.max_pool2d(self.conv2(x), kernel_size=3, stride=2, padding=1)
        x = self.inception3(self.inception2(self.inception1(x)))
        s1 = x
        s2 = self.conv3_2(self.conv3_1(s1))
        s3 = self.conv4_2(self.conv4_1(s2))
        b = x.shape[0]
        locs, confs = [], []
        for src, lh, ch in zip((s1, s2, s3), self.loc, self.conf, strict=True):
            locs.append(lh(src).permute(0, 2, 3, 1).reshape(b, -1))
            confs.append(ch(src).permute(0, 2, 3, 1).reshape(b, -1))
        loc = torch.cat(locs, 1).view(b, -1, 4)
        conf = torch.cat(confs, 1).view(b, -1, self.num_classes)
        # softmax in float32 even for a half-precision network: near 1.0 fp16 resolves
        # only 5e-4, which would tie the scores that order the boxes for NMS
        return loc, F.softmax(conf.float(), dim=-1)


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter/buffer names and shapes of :class:`FaceBoxesNet` (checkpoint layout)."""
    return {k: tuple(v.shape) for k, v in FaceBoxesNet().state_dict().items()}


def fuse_faceboxes_bn(net: FaceBoxesNet) -> FaceBoxesNet:
    """Fold each BatchNorm into its convolution (in place; eval mode).  Besides saving
    passes, this avoids a cancellation in half precision: the first conv's outputs reach
    ~1500 and its BatchNorm subtracts a mean of similar size."""
    for m in net.modules():
        if isinstance(m, _ConvBN) and isinstance(m.bn, nn.BatchNorm2d):
            m.conv = fold_batchnorm(m.conv, m.bn)
            m.bn = nn.Identity()
    return net


def load_faceboxes_net(weights: str | os.PathLike = paths.FACEBOXES_WEIGHTS) -> FaceBoxesNet:
    """Build :class:`FaceBoxesNet` and load the official checkpoint (eval mode).

    Accepts a bare state dict or ``{"state_dict": ...}``; strips ``module.`` prefixes.
    Raises :class:`~vox3d.safeload.BadModelFileError` naming the file on any mismatch.
    """
    obj = load_torch(weights)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise BadModelFileError(f"{weights}: not a FaceBoxes state dict ({type(obj).__name__})")
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    net = FaceBoxesNet()
    check_state_dict(state, expected_shapes(), str(weights))
    net.load_state_dict(state)
    return net.eval()


# ----------------------------------------------------------------------------- priors
@lru_cache(maxsize=32)
def _prior_boxes_cached(height: int, width: int) -> np.ndarray:
    out = []
    for k, step in enumerate(STEPS):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        jj, ii = np.meshgrid(np.arange(fw, dtype=np.float64), np.arange(fh, dtype=np.float64))
        cells = []  # per cell, anchors in the original's order
        for ms in MIN_SIZES[k]:
            n = {32: 4, 64: 2}.get(ms, 1)
            offs = (np.arange(n) / n) if n > 1 else np.array([0.5])
            # for each (cy, cx) in product(dense_cy, dense_cx)
            oy, ox = np.meshgrid(offs, offs, indexing="ij")
            oy, ox = oy.ravel(), ox.ravel()
            cx = (jj[..., None] + ox) * step / width  # (fh, fw, n*n)
            cy = (ii[..., None] + oy) * step / height
            a = np.stack([cx, cy, np.full_like(cx, ms / width), np.full_like(cx, ms / height)], -1)
            cells.append(a)
        out.append(np.concatenate(cells, axis=2).reshape(-1, 4))
    pri = np.concatenate(out, 0).astype(np.float32)
    pri.setflags(write=False)
    return pri


def prior_boxes(height: int, width: int) -> np.ndarray:
    """Anchors for an input of ``height x width`` px: ``(P, 4) float32`` as
    (cx, cy, w, h) in units of the image size, in the network's output order.
    Not clipped (the original's ``clip=False``)."""
    return _prior_boxes_cached(int(height), int(width))


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """SSD decoding: ``loc (..., P, 4)`` offsets + ``priors (P, 4)`` -> ``(..., P, 4)``
    x1, y1, x2, y2 in units of the image size (variances :data:`VARIANCES`)."""
    c = priors[:, :2] + loc[..., :2] * VARIANCES[0] * priors[:, 2:]
    wh = priors[:, 2:] * torch.exp(loc[..., 2:] * VARIANCES[1])
    x1y1 = c - wh / 2
    return torch.cat([x1y1, x1y1 + wh], -1)


# ----------------------------------------------------------------------------- NMS
def nms(dets: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS on ``dets (N, 5)`` (x1, y1, x2, y2, score, pixels).

    Boxes are visited by descending score (stable order as ``argsort()[::-1]``); a box is
    dropped if its IoU with a kept box is ``>= threshold``; areas use the "+1" pixel
    convention of the Fast R-CNN NMS that 3DDFA-V2 uses.  Arithmetic in float32.
    Returns indices into ``dets`` of the kept boxes, best first.
    """
    dets = np.asarray(dets, dtype=np.float32)
    if len(dets) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2, s = (dets[:, i] for i in range(5))
    one = np.float32(1)
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    order = s.argsort()[::-1]
    suppressed = np.zeros(len(dets), dtype=bool)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1 :]
        rest = rest[~suppressed[rest]]
        if rest.size == 0:
            continue
        w = np.maximum(
            np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one
        )
        h = np.maximum(
            np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one
        )
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[ovr >= threshold]] = True
    return np.asarray(keep, dtype=np.int64)


def nms_batched_torch(
    boxes: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Greedy NMS for a padded batch, on any device, same rule as :func:`nms`.

    ``boxes (B, K, 4)`` pixels, ``scores (B, K)`` sorted descending per row,
    ``valid (B, K)`` bool (padding False).  Returns ``keep (B, K)`` bool.

    Greedy NMS is the unique solution of ``keep[i] = valid[i] and not any(keep[j] and
    IoU(j, i) >= t for j < i)``; iterating that map from "all kept" fixes one more
    position per step, so it converges (exactly) in at most K steps, usually a few.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    w = (
        torch.minimum(x2[:, :, None], x2[:, None, :])
        - torch.maximum(x1[:, :, None], x1[:, None, :])
        + 1
    ).clamp_min(0)
    h = (
        torch.minimum(y2[:, :, None], y2[:, None, :])
        - torch.maximum(y1[:, :, None], y1[:, None, :])
        + 1
    ).clamp_min(0)
    inter = w * h
    iou = inter / (areas[:, :, None] + areas[:, None, :] - inter)
    k = boxes.shape[1]
    earlier = torch.ones(k, k, dtype=torch.bool, device=boxes.device).triu(1)  # j < i
    sup = (iou >= threshold) & earlier & valid[:, :, None]
    keep = valid.clone()
    for _ in range(k + 1):
        new = valid & ~(sup & keep[:, :, None]).any(1)
        if torch.equal(new, keep):
            break
        keep = new
    del scores
    return keep


# ----------------------------------------------------------------------------- scaling
def detection_scale(height: int, width: int) -> tuple[float, int, int]:
    """3DDFA-V2's downscaling rule: ``(scale, h_s, w_s)``; scale 1 keeps the image."""
    scale = 1.0
    if height > MAX_HEIGHT:
        scale = MAX_HEIGHT / height
    if width * scale > MAX_WIDTH:
        scale *= MAX_WIDTH / (width * scale)
    if scale == 1:
        return 1.0, int(height), int(width)
    return scale, int(scale * height), int(scale * width)


def _resize_for_detection(image_bgr: np.ndarray) -> tuple[np.ndarray, float]:
    h, w = image_bgr.shape[:2]
    scale, hs, ws = detection_scale(h, w)
    if scale == 1:
        return image_bgr, 1.0
    import cv2

    return cv2.resize(image_bgr, dsize=(ws, hs), interpolation=cv2.INTER_LINEAR), scale


# ----------------------------------------------------------------------------- detector
class FaceBoxes:
    """FaceBoxes with 3DDFA-V2's settings.  Images are BGR uint8 ``(H, W, 3)``.

    ``precision`` fp16/bf16 and ``fuse_bn`` (BatchNorm folded into the convolutions;
    advisable for fp16) are speed options for GPUs; fp32 unfused is the parity path.

    ``detect`` returns ``(N, 5) float32``: x1, y1, x2, y2 (image pixels), score, best
    first.  ``detect_batch`` runs one forward pass per group of same-sized images.
    """

    def __init__(
        self,
        weights: str | os.PathLike = paths.FACEBOXES_WEIGHTS,
        device: str | torch.device = "cpu",
        conf_threshold: float = 0.05,
        nms_threshold: float = 0.3,
        top_k: int = 5000,
        keep_top_k: int = 750,
        vis_threshold: float | None = 0.5,
        precision: str = default("fit.precision"),
        fuse_bn: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.conf_threshold = float(conf_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.keep_top_k = int(keep_top_k)
        self.vis_threshold = None if vis_threshold is None else float(vis_threshold)
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
            precision
        ]
        net = load_faceboxes_net(weights)
        self.net = (fuse_faceboxes_bn(net) if fuse_bn else net).to(self.device, self.dtype)
        self._mean = torch.tensor(BGR_MEAN, device=self.device).view(1, 3, 1, 1)
        self._prior_cache: dict[tuple[int, int], torch.Tensor] = {}

    def _priors(self, h: int, w: int) -> torch.Tensor:
        key = (h, w)
        if key not in self._prior_cache:
            self._prior_cache[key] = torch.tensor(prior_boxes(h, w), device=self.device)
        return self._prior_cache[key]

    @property
    def _min_score(self) -> float:
        if self.vis_threshold is None:
            return self.conf_threshold
        return max(self.conf_threshold, self.vis_threshold)

    @torch.inference_mode()
    def forward_scaled(self, images_bgr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network + decoding on an already-scaled batch ``(B, h, w, 3) uint8`` tensor.

        Returns ``boxes (B, P, 4) float32`` in pixels of the scaled image and
        ``scores (B, P) float32``.
        """
        b, h, w, _ = images_bgr.shape
        x = images_bgr.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        x = (x - self._mean).to(self.dtype)
        if self.dtype == torch.float32:
            x = x.contiguous()
        loc, conf = self.net(x)
        pri = self._priors(h, w)
        size = torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
        boxes = decode_boxes(loc.float(), pri) * size
        return boxes, conf[..., 1].float()

    def _postprocess(self, boxes: np.ndarray, scores: np.ndarray, scale: float) -> np.ndarray:
        """Filter, top-k, NMS on one image's ``boxes (P, 4)`` (scaled px) -> ``(N, 5)``."""
        boxes = boxes / np.float32(scale)
        inds = np.nonzero(scores > self._min_score)[0]
        boxes, scores = boxes[inds], scores[inds]
        order = scores.argsort()[::-1][: self.top_k]
        dets = np.hstack([boxes[order], scores[order, None]]).astype(np.float32)
        keep = nms(dets, self.nms_threshold)
        return dets[keep][: self.keep_top_k]

    def detect(self, image_bgr: np.ndarray) -> np.ndarray:
        """Faces in one BGR image ``(H, W, 3) uint8`` -> ``(N, 5) float32``."""
        return self.detect_batch([image_bgr])[0]

    def detect_batch(self, images_bgr: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Faces in each of several BGR images; images of equal size share a forward pass.

        Returns one ``(N_i, 5) float32`` array per image, in input order.
        """
        groups: dict[tuple[int, int], list[int]] = {}
        scaled: list[np.ndarray] = []
        scales: list[float] = []
        for i, im in enumerate(images_bgr):
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ValueError(
                    f"image {i}: expected (H, W, 3) uint8 BGR, got {im.shape} {im.dtype}"
                )
            s_im, s = _resize_for_detection(im)
            scaled.append(s_im)
            scales.append(s)
            groups.setdefault(s_im.shape[:2], []).append(i)
        out: list[np.ndarray] = [np.zeros((0, 5), np.float32)] * len(images_bgr)
        for idx in groups.values():
            batch = torch.from_numpy(np.stack([scaled[i] for i in idx]))
            boxes, scores = self.forward_scaled(batch)
            boxes, scores = boxes.cpu().numpy(), scores.cpu().numpy()
            for j, i in enumerate(idx):
                out[i] = self._postprocess(boxes[j], scores[j], scales[i])
        return out

    @torch.inference_mode()
    def detect_tensor(
        self, images_bgr: torch.Tensor, max_candidates: int = 256
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fully batched detection on the device (no cv2, no per-image Python loop).

        ``images_bgr (B, H, W, 3) uint8`` (one size) -> ``dets (B, K, 5) float32`` pixels of
        the input images, best first, and ``keep (B, K) bool`` marking real detections.
        Scaling of large images uses :func:`vox3d.face.crop.resize_uint8_torch` (cv2-exact).  The candidate boxes
        (score > ``max(conf, vis)`` threshold) are capped at ``max_candidates`` per image
        (pass ``top_k`` for the original's cap; the result is identical unless an image
        has more candidates than the cap).
        """
        b, h, w, _ = images_bgr.shape
        scale, hs, ws = detection_scale(h, w)
        images_bgr = images_bgr.to(self.device, non_blocking=True)
        if scale != 1:
            images_bgr = resize_uint8_torch(images_bgr, hs, ws)
        boxes, scores = self.forward_scaled(images_bgr)
        boxes = boxes / scale
        k = min(max_candidates, self.top_k, scores.shape[1])
        top, order = scores.topk(k, dim=1, sorted=True)
        bx = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4))
        valid = top > self._min_score
        kk = int(valid.sum(1).max().item()) if valid.numel() else 0
        kk = max(kk, 1)
        top, bx, valid = top[:, :kk], bx[:, :kk], valid[:, :kk]
        keep = nms_batched_torch(bx, top, valid, self.nms_threshold)
        # compact kept boxes to the front, preserving score order
        rank = torch.cumsum(keep.int(), 1) - 1
        n_keep = keep.sum(1)
        kmax = max(int(n_keep.max().item()), 1)
        dets = torch.zeros(b, kmax, 5, device=self.device)
        src = torch.cat([bx, top[..., None]], -1)
        bi, ki = torch.nonzero(keep, as_tuple=True)
        dets[bi, rank[bi, ki]] = src[bi, ki]
        out_keep = torch.arange(kmax, device=self.device)[None] < n_keep[:, None]
        lim = min(kmax, self.keep_top_k)
        return dets[:, :lim], out_keep[:, :lim]
