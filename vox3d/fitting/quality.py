"""Per-frame quality filters of the fit stage.

A frame is kept when all hold (thresholds from config ``fit:``):

* ``no_face``: the detector found at least one face;
* ``low_score``: the chosen face's detector confidence >= ``min_score``;
* ``small_face``: the chosen box's shorter side >= ``min_face_px`` pixels;
* ``multiple_faces``: one face above ``min_score``, or the largest is at least
  ``face_margin`` times the area of the next largest (then the largest is used);
* ``yaw``: |yaw| <= ``max_yaw_deg`` (degrees, from the fitted pose);
* ``blur``: variance of the Laplacian of the grey 120x120 crop (its in-frame part)
  >= ``min_blur``;
* ``landmarks``: (only with ``landmarks: fan``) the NME between FAN landmarks and the
  projected model landmarks <= ``max_landmark_nme``.

A rejected frame carries the code of the *first* failing test in the order above
(:data:`REASONS`); stats count frames by that code, so the counts add up to the frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from vox3d.config import Settings, default, setting

#: Reason codes stored per frame (uint8 index into this tuple).  Order = test order.
REASONS: tuple[str, ...] = (
    "ok",
    "no_face",
    "low_score",
    "small_face",
    "multiple_faces",
    "yaw",
    "blur",
    "landmarks",
)
REASON_CODE: dict[str, int] = {r: i for i, r in enumerate(REASONS)}
_THRESHOLD_KEYS = ("min_score", "min_face_px", "max_yaw_deg", "min_blur", "face_margin",
                   "max_landmark_nme")  # fmt: skip


@dataclass(frozen=True)
class Thresholds(Settings):
    """Quality thresholds (units in the field names' docs; defaults: config.yaml's ``fit``)."""

    SECTION = "fit"
    OTHER_KEYS = tuple(k for k in default("fit") if k not in _THRESHOLD_KEYS)

    min_score: float = setting("fit.min_score")  # detector confidence, 0..1
    min_face_px: float = setting("fit.min_face_px")  # shorter box side, pixels of the frame
    max_yaw_deg: float = setting("fit.max_yaw_deg")  # |yaw|, degrees
    #: variance of the Laplacian of the in-frame grey crop (grey levels^2)
    min_blur: float = setting("fit.min_blur")
    face_margin: float = setting("fit.face_margin")  # area ratio largest / second largest face
    #: FAN vs model landmarks, NME (box-size normalised)
    max_landmark_nme: float = setting("fit.max_landmark_nme")

    def __post_init__(self) -> None:
        for k in _THRESHOLD_KEYS:
            object.__setattr__(self, k, float(getattr(self, k)))

    @classmethod
    def from_config(cls, fit_cfg: dict) -> Thresholds:
        """Build from the ``fit:`` section of the config (missing keys -> defaults)."""
        return cls.from_section(fit_cfg)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


#: Fewest Laplacian pixels of a crop's in-frame window; a smaller window (a face mostly
#: outside the frame) is measured over the whole crop instead.
MIN_BLUR_PIXELS = 24 * 24


def crop_windows(roi: np.ndarray, image_hw, size: int = 120) -> np.ndarray:
    """Rows and columns of each crop that show the frame, not the black padding.

    roi: ``(N, 4)`` sx, sy, ex, ey (frame pixels, as :func:`vox3d.face.crop.roi_box_from_bbox`);
    image_hw: the frames' (height, width), one pair for all or ``(N, 2)``, one per ROI.  Crop pixel ``d`` samples the frame at
    ``start + (d + 0.5) * side / size - 0.5`` (``start``, ``side`` the ROI rounded as the
    crop rounds it); it is in the window when that lies in ``[0, n - 1]``.  Returns
    ``(N, 4) int64`` r0, r1, c0, c1 (half-open, crop pixels).  float64 arithmetic in the
    same order as :func:`vox3d.fitting.fit_tensor.crop_windows_torch`, so both give the same windows.
    """
    r = np.round(np.asarray(roi, np.float64).reshape(-1, 4))
    hw = np.broadcast_to(np.asarray(image_hw, np.float64), (r.shape[0], 2))
    out = []
    for a, b, n in ((r[:, 1], r[:, 3], hw[:, 0]), (r[:, 0], r[:, 2], hw[:, 1])):
        scale = (b - a) / size
        lo = np.ceil((0.5 - a) / scale - 0.5)
        hi = np.floor((n - 0.5 - a) / scale - 0.5) + 1.0
        out += [np.clip(lo, 0, size), np.clip(hi, 0, size)]
    return np.stack(out, 1).astype(np.int64)


def laplacian_variance(crops: np.ndarray, windows: np.ndarray | None = None) -> np.ndarray:
    """Blur measure: variance of the 4-neighbour Laplacian of each grey crop.

    crops: (B, H, W, 3) uint8 BGR (or (B, H, W) grey).  Returns (B,) float64, grey
    levels squared; the kernel [[0,1,0],[1,-4,1],[0,1,0]] (OpenCV's ``Laplacian`` with
    ksize=1) over the interior pixels.  windows: ``(B, 4)`` r0, r1, c0, c1 from
    :func:`crop_windows`: only Laplacians whose 3x3 neighbourhood lies in the window count
    (the black padding of a ROI that leaves the frame draws a hard edge that reads as
    sharp whatever the face; fewer than :data:`MIN_BLUR_PIXELS` -> the whole crop).
    Measured (in-frame windows): real VoxCeleb2 crops 128-845 sharp, 12-63 after a
    Gaussian blur of sigma 2 frame pixels; config ``fit.min_blur`` (60) sits between.
    """
    x = np.asarray(crops)
    if x.ndim == 4:
        xf = x.astype(np.float64)
        g = 0.114 * xf[..., 0] + 0.587 * xf[..., 1] + 0.299 * xf[..., 2]
    elif x.ndim == 3:
        g = x.astype(np.float64)
    else:
        raise ValueError(f"crops must be (B,H,W,3) or (B,H,W), got {x.shape}")
    lap = (
        g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:] - 4.0 * g[:, 1:-1, 1:-1]
    )
    if windows is None:
        return lap.reshape(lap.shape[0], -1).var(axis=1)
    mask = laplacian_mask(np.asarray(windows), lap.shape[1], lap.shape[2])
    cnt = mask.sum((1, 2)).astype(np.float64)
    mean = (lap * mask).sum((1, 2)) / cnt
    return (np.square(lap - mean[:, None, None]) * mask).sum((1, 2)) / cnt


def laplacian_mask(windows: np.ndarray, h: int, w: int) -> np.ndarray:
    """``(B, h, w) bool``: Laplacian pixels (crop pixel + 1) inside each window, or all of
    them where the window holds fewer than :data:`MIN_BLUR_PIXELS`."""
    rows, cols = np.arange(h), np.arange(w)
    w_ = np.asarray(windows)
    mr = (rows[None] >= w_[:, :1]) & (rows[None] < w_[:, 1:2] - 2)
    mc = (cols[None] >= w_[:, 2:3]) & (cols[None] < w_[:, 3:4] - 2)
    mask = mr[:, :, None] & mc[:, None, :]
    small = mask.sum((1, 2)) < MIN_BLUR_PIXELS
    mask[small] = True
    return mask


@dataclass(frozen=True)
class FaceChoice:
    """The face chosen in one frame and the facts the filters need.

    index: row of the chosen box in the frame's detections (-1: none).
    n_faces: detections with score >= min_score.
    margin: area of the chosen face / area of the next largest above min_score
        (inf when it is alone, 0 when there is none).
    """

    index: int
    n_faces: int
    margin: float


def choose_face(boxes: np.ndarray, min_score: float) -> FaceChoice:
    """Pick the face of a frame: the largest box among those scoring >= `min_score`
    (if none does, the highest-scoring box, which the score filter then rejects).

    boxes: (N, 5) x1, y1, x2, y2, score in pixels.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    if boxes.shape[0] == 0:
        return FaceChoice(-1, 0, 0.0)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    good = np.flatnonzero(boxes[:, 4] >= min_score)
    if good.size == 0:
        return FaceChoice(int(np.argmax(boxes[:, 4])), 0, 0.0)
    order = good[np.lexsort((-boxes[good, 4], -area[good]))]  # largest, then best score
    best = int(order[0])
    if order.size == 1:
        return FaceChoice(best, 1, float("inf"))
    second = area[order[1]]
    margin = float(area[best] / second) if second > 0 else float("inf")
    return FaceChoice(best, int(order.size), margin)


def classify(
    th: Thresholds,
    has_face: np.ndarray,
    score: np.ndarray,
    face_px: np.ndarray,
    n_faces: np.ndarray,
    margin: np.ndarray,
    yaw_deg: np.ndarray,
    blur: np.ndarray,
    landmark_nme: np.ndarray | None = None,
) -> np.ndarray:
    """Reason code (N,) uint8 per frame: 0 = keep, else the first failing test's code.

    All inputs are (N,) arrays (NaN where a value does not exist, e.g. no face).
    """
    n = len(has_face)
    code = np.zeros(n, dtype=np.uint8)

    def mark(mask: np.ndarray, reason: str) -> None:
        m = np.asarray(mask, dtype=bool) & (code == 0)
        code[m] = REASON_CODE[reason]

    mark(~np.asarray(has_face, dtype=bool), "no_face")
    mark(~(np.asarray(score) >= th.min_score), "low_score")
    mark(~(np.asarray(face_px) >= th.min_face_px), "small_face")
    mark((np.asarray(n_faces) > 1) & ~(np.asarray(margin) >= th.face_margin), "multiple_faces")
    mark(~(np.abs(np.asarray(yaw_deg)) <= th.max_yaw_deg), "yaw")
    mark(~(np.asarray(blur) >= th.min_blur), "blur")
    if landmark_nme is not None:
        mark(~(np.asarray(landmark_nme) <= th.max_landmark_nme), "landmarks")
    return code


def count_reasons(codes: np.ndarray) -> dict[str, int]:
    """Frames per reason name (every reason listed, zeros included)."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64), minlength=len(REASONS))
    return {r: int(counts[i]) for i, r in enumerate(REASONS)}
