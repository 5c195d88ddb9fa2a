"""The ICT-FaceKit regressor: 3DDFA-V2's MobileNet-V1 trained on Sim3DR renders of ICT faces.

Training data (all generated, deterministic: sample ``i`` of data seed ``s`` is drawn from
``numpy.random.default_rng([s, i])`` alone, so the data do not depend on workers or batch
order):

* a random ICT face: identity coefficients from the prior N(0, id_std) (truncated at
  +-3 std), expression coefficients in [0, 1] (each active with probability
  ``exp_active``), pose yaw +-``yaw_deg``, pitch +-``pitch_deg``, roll +-``roll_deg``;
* a per-sample skin tone (light to dark) with smooth per-vertex variation, redder lips,
  darker brows, eyes and mouth interior, directional + ambient lighting with a specular
  term, and a textured background (random smooth colour fields and stripes);
* a *virtual video frame*: the face at a random scale; a detector-style box derived from
  the projected 68 landmarks (:data:`GenConfig.box_model`) with random jitter; the ROI by
  the 3DDFA-V2 policy (:func:`vox3d.crop.roi_box_from_bbox`); and the 120x120 crop rendered
  *straight at crop resolution* (the crop is a similarity of the frame, so this equals
  rendering the frame and cropping it, up to resampling), then degraded (blur, down/up
  sampling, noise) like a compressed video frame;
* the target: the parameters in :func:`vox3d.params.ict_layout` order, pose ``P = [s R | t]``
  mapping model vertices (cm) to crop coordinates in the 3DDFA-V2 convention, so that
  :func:`vox3d.params.to_image` with the ROI maps them to frame pixels.

Network: :func:`vox3d.regressor.build_mobilenet` (widen 0.5, ``ict_layout(n_id, n_exp).n``
outputs), input ``(BGR - 127.5) / 128``, outputs whitened parameters (``(p - mean) / std``
with mean/std measured on 20,000 samples of the generator, stored in the json).  Loss:
MSE on whitened parameters + ``vertex_weight`` x the mean distance (crop pixels) of posed
face-area vertices (the 3DDFA "VDC" idea).

Imports are light (numpy, torch, vox3d.params / crop / face_model / render) so that the
generator and the training loop run on a GPU machine without h5py or OpenCV.
``python -m vox3d.ict_regressor --device cuda --steps N --out X.pth`` trains;
``--eval-only`` measures a checkpoint on held-out renders.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vox3d.params import CROP_SIZE, ict_layout

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_CHECKPOINT = DATA_DIR / "ict_regressor.pth"

#: Data seed of held-out evaluation renders (training uses GenConfig.seed; the sample
#: index ranges never meet because the seeds differ).
EVAL_SEED_OFFSET = 1_000_003

#: Vertex groups rendered (ICT vertex sets) and their base colours (RGB 0..1).
RENDER_SETS = ("skin", "mouth_socket", "gums_tongue", "teeth", "eyeball_left", "eyeball_right")


# --------------------------------------------------------------------------------------
# generator configuration


@dataclass(frozen=True)
class GenConfig:
    """Distribution of the training renders (all angles in degrees)."""

    n_id: int = 40
    n_exp: int = 10
    seed: int = 0
    yaw_deg: float = 60.0
    pitch_deg: float = 25.0
    roll_deg: float = 15.0
    id_trunc: float = 3.0  # identity coefficients truncated at +- this many std
    exp_active: float = 0.45  # probability that an expression coefficient is non-zero
    face_px: tuple[float, float] = (60.0, 200.0)  # landmark-box width in frame pixels
    # detector box from the 68-landmark box (width w, height h, centre cx, cy):
    # box centre = (cx + bx*w, cy + by*h), size = (bw*w, bh*h); jitter std below
    box_model: tuple[float, float, float, float] = (0.0, -0.135, 1.06, 1.35)
    box_shift_std: float = 0.06  # fraction of the box side
    box_scale_std: float = 0.09  # log-scale std
    blur_max: float = 1.3  # Gaussian blur sigma upper bound, crop pixels
    noise_max: float = 5.0  # additive noise std upper bound, grey levels
    lowres_prob: float = 0.3  # probability of a down/up-sampling (small faces)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["face_px"] = list(self.face_px)
        d["box_model"] = list(self.box_model)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GenConfig:
        d = dict(d)
        for k in ("face_px", "box_model"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# --------------------------------------------------------------------------------------
# the face model arrays the generator needs


@dataclass
class GenModel:
    """ICT arrays for rendering and losses (render subset of the full topology).

    mean: (V, 3) float32 cm; id_basis: (n_id, V, 3); exp_basis: (n_exp, V, 3);
    triangles: (F, 3) int32; landmarks68: (68,) indices into V; face_idx: (M,) indices of
    the narrow face area (losses and metrics); albedo_class: (V,) uint8 region code
    (0 skin, 1 lips, 2 brows, 3 mouth interior, 4 teeth, 5 sclera, 6 iris);
    id_std: (n_id,) float32.
    """

    mean: np.ndarray
    id_basis: np.ndarray
    exp_basis: np.ndarray
    triangles: np.ndarray
    landmarks68: np.ndarray
    face_idx: np.ndarray
    albedo_class: np.ndarray
    id_std: np.ndarray
    smooth_basis: np.ndarray = field(default=None)  # (V, 6) low-frequency fields

    @property
    def n_id(self) -> int:
        return int(self.id_basis.shape[0])

    @property
    def n_exp(self) -> int:
        return int(self.exp_basis.shape[0])

    def digest(self) -> str:
        """sha256 of the model arrays (identifies the face model the data came from)."""
        h = hashlib.sha256()
        for k in ("mean", "id_basis", "exp_basis", "triangles", "landmarks68", "albedo_class"):
            h.update(np.ascontiguousarray(getattr(self, k)).tobytes())
        return h.hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write the arrays to an ``.npz`` (for a machine without the ICT archive)."""
        np.savez_compressed(
            path,
            **{k: getattr(self, k) for k in self.__dataclass_fields__ if k != "smooth_basis"},
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> GenModel:
        with np.load(path, allow_pickle=False) as z:
            m = cls(**{k: z[k] for k in z.files})
        m.__post_init__()
        return m

    def __post_init__(self) -> None:
        if self.smooth_basis is None:
            c = self.mean - self.mean.mean(0)
            sc = c / (np.abs(c).max(0) + 1e-6)
            self.smooth_basis = np.stack(
                [
                    np.sin(2.1 * sc[:, 0] + 0.3), np.cos(1.7 * sc[:, 1] + 1.1),
                    np.sin(1.3 * sc[:, 0] * sc[:, 1] + 0.7), np.cos(2.9 * sc[:, 1] - 0.4),
                    np.sin(3.7 * sc[:, 0] + 2.0 * sc[:, 1]), np.cos(4.3 * sc[:, 2] + 1.3 * sc[:, 0]),
                ],
                axis=1,
            ).astype(np.float32)  # fmt: skip

    def vertices(self, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """(V, 3) float32 vertices (cm) of one face."""
        v = self.mean.reshape(-1) + alpha @ self.id_basis.reshape(self.n_id, -1)
        if self.n_exp:
            v = v + beta @ self.exp_basis.reshape(self.n_exp, -1)
        return v.reshape(-1, 3).astype(np.float32)


def _polyline_distance(p: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance (N,) of 2-D points (N, 2) to a polyline (M, 2)."""
    d = np.full(len(p), np.inf)
    for a, b in zip(line[:-1], line[1:], strict=True):
        ab = b - a
        t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-12), 0, 1)
        d = np.minimum(d, np.linalg.norm(p - (a + t[:, None] * ab), axis=1))
    return d


def _inside_polygon(p: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule: (N,) bool for 2-D points (N, 2) inside a closed polygon (M, 2)."""
    x, y = p[:, 0], p[:, 1]
    inside = np.zeros(len(p), bool)
    for a, b in zip(poly, np.roll(poly, -1, axis=0), strict=True):
        cond = (a[1] > y) != (b[1] > y)
        xint = a[0] + (y - a[1]) * (b[0] - a[0]) / ((b[1] - a[1]) or 1e-12)
        inside ^= cond & (x < xint)
    return inside


def build_gen_model(n_id: int = 40, n_exp: int = 10, ict_path: str | None = None) -> GenModel:
    """Arrays for the generator from the ICT-FaceKit model (:func:`load_face_model`)."""
    from vox3d.face_model import load_face_model

    fm = load_face_model("ict", path=ict_path, subset="head", n_id=n_id, n_exp=n_exp)
    sets = fm.vertex_sets
    keep = np.unique(np.concatenate([sets[s] for s in RENDER_SETS if s in sets]))
    remap = np.full(fm.n_vertices, -1, np.int64)
    remap[keep] = np.arange(len(keep))
    tri = remap[fm.triangles]
    tri = tri[(tri >= 0).all(1)].astype(np.int32)
    mean = fm.mean[keep]
    lm = remap[fm.landmarks68]
    cls = np.zeros(len(keep), np.uint8)
    lmk = fm.mean[fm.landmarks68]
    skin = np.zeros(len(keep), bool)
    skin[remap[sets["skin"]][remap[sets["skin"]] >= 0]] = True
    front = skin & (mean[:, 2] > lmk[:, 2].min() - 1.0)
    # lips: between the outer (48-59) and inner (60-67) lip contours, in the frontal view
    outer = lmk[48:60, :2]
    inner = lmk[60:68, :2]
    in_outer = _inside_polygon(mean[:, :2], outer)
    in_inner = _inside_polygon(mean[:, :2], inner)
    near = _polyline_distance(mean[:, :2], np.vstack([outer, outer[:1]])) < 0.12
    cls[front & (in_outer | near) & ~in_inner] = 1
    # brows: a band along each brow polyline (17-21, 22-26)
    for seg in (lmk[17:22, :2], lmk[22:27, :2]):
        brow = _polyline_distance(mean[:, :2], seg) < 0.32
        cls[front & brow & (mean[:, 2] > lmk[17:27, 2].min() - 1.2)] = 2
    for s, c in (("mouth_socket", 3), ("gums_tongue", 3), ("teeth", 4)):
        if s in sets:
            cls[remap[sets[s]][remap[sets[s]] >= 0]] = c
    for s in ("eyeball_left", "eyeball_right"):
        if s not in sets:
            continue
        idx = remap[sets[s]]
        idx = idx[idx >= 0]
        e = mean[idx]
        front_z = e[:, 2].max()
        cls[idx] = 5
        cls[idx[e[:, 2] > front_z - 0.25]] = 6  # iris / pupil: the front cap
    face = remap[np.asarray(sets["narrow_face"])]
    face = face[face >= 0]
    return GenModel(
        mean=np.ascontiguousarray(mean, np.float32),
        id_basis=np.ascontiguousarray(fm.id_basis[:, keep], np.float32),
        exp_basis=np.ascontiguousarray(fm.exp_basis[:, keep], np.float32),
        triangles=tri,
        landmarks68=lm.astype(np.int64),
        face_idx=face.astype(np.int64),
        albedo_class=cls,
        id_std=np.asarray(fm.id_std, np.float32),
    )


# --------------------------------------------------------------------------------------
# one sample


@dataclass
class Sample:
    """One training render: crop (120, 120, 3) uint8 BGR, params (P,) float32, and facts."""

    crop: np.ndarray
    params: np.ndarray
    yaw: float
    roi: np.ndarray  # (4,) in the virtual frame
    box: np.ndarray  # (4,) detector-style box in the virtual frame


def _skin_tone(rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(0, 1)
    light = np.array([0.93, 0.78, 0.68])
    dark = np.array([0.36, 0.22, 0.15])
    tone = light * (1 - t) + dark * t
    return tone * rng.uniform(0.92, 1.08, 3)


def _albedo(gm: GenModel, rng: np.random.Generator) -> np.ndarray:
    """(V, 3) float32 RGB albedo 0..1."""
    skin = _skin_tone(rng)
    var = gm.smooth_basis @ rng.normal(0, 0.035, 6)
    col = np.empty((gm.mean.shape[0], 3), np.float32)
    base = {
        0: skin,
        1: skin * np.array([1.0, 0.72, 0.72]) * rng.uniform(0.8, 1.0),
        2: skin * rng.uniform(0.25, 0.6),
        3: np.array([0.35, 0.12, 0.12]),
        4: np.array([0.85, 0.82, 0.74]),
        5: np.array([0.88, 0.86, 0.84]),
        6: rng.uniform(0.05, 0.35) * np.array([0.7, 0.55, 0.4]) + 0.02,
    }
    for c, b in base.items():
        col[gm.albedo_class == c] = b
    skinlike = gm.albedo_class <= 2
    col[skinlike] *= (1.0 + var[skinlike])[:, None]
    return np.clip(col, 0, 1)


def _light(rng: np.random.Generator):
    """Random :class:`vox3d.render.Light`: ambient + one directional light (image axes:
    x right, y down, z to the viewer) + a Phong specular term."""
    from vox3d.render import Light

    d = rng.normal(0, 1, 3)
    d[2] = abs(d[2]) + 0.6
    d /= np.linalg.norm(d)
    tint = rng.uniform(0.9, 1.1, 3)
    amb = rng.uniform(0.25, 0.6) * tint
    dif = rng.uniform(0.35, 0.85) * tint
    return Light(
        ambient=tuple(amb),
        directional=[(tuple(d), tuple(dif))],
        specular=float(rng.uniform(0.0, 0.25)),
        shininess=float(rng.uniform(8, 30)),
    )


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) bilinear upsampling weights (half-pixel centres, edges clamped)."""
    x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    x = np.clip(x, 0, n_in - 1)
    i0 = np.floor(x).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    a = x - i0
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), i0] += 1 - a
    m[np.arange(n_out), i1] += a
    return m


def _resample(img: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> np.ndarray:
    """Separable linear resampling of (h, w, C) by (H, h) and (W, w) -> (H, W, C)."""
    t = np.moveaxis(img, -1, 0)  # (C, h, w)
    return np.moveaxis(wy @ t @ wx.T, 0, -1)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 RGB 0..1: smooth colour field + finer texture + stripes."""
    out = np.zeros((size, size, 3))
    for cells, amp in ((rng.integers(2, 5), 1.0), (rng.integers(6, 20), rng.uniform(0.05, 0.35))):
        w = _interp_matrix(size, cells)
        g = rng.uniform(0, 1, (cells, cells, 3))
        out += amp * _resample(g, w, w)
    out /= out.max() + 1e-6
    if rng.uniform() < 0.5:
        yy, xx = np.mgrid[0:size, 0:size]
        th = rng.uniform(0, np.pi)
        f = rng.uniform(0.05, 0.4)
        s = 0.5 + 0.5 * np.sin(f * (xx * np.cos(th) + yy * np.sin(th)) + rng.uniform(0, 6.3))
        out = out * (1 - 0.3 * s[..., None]) + 0.3 * s[..., None] * rng.uniform(0, 1, 3)
    out *= rng.uniform(0.3, 1.0)
    return out.astype(np.float32)


def _gauss_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.2:
        return img
    r = int(math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")
    tmp = sum(k[i] * p[:, i : i + img.shape[1]] for i in range(2 * r + 1))
    return sum(k[i] * tmp[i : i + img.shape[0]] for i in range(2 * r + 1))


def _rasterize(
    v_px: np.ndarray, tri: np.ndarray, colors: np.ndarray, bg: np.ndarray, light
) -> np.ndarray:
    """Render per-vertex colours (V, 3) 0..1 of vertices (V, 3) (image x, y pixels with
    pixel centres at +0.5, z larger = nearer) over `bg` (H, W, 3) uint8 with Sim3DR
    (:func:`vox3d.render.render`, per-pixel Phong shading); returns (H, W, 3) uint8 RGB."""
    from vox3d.render import render

    return render(v_px, tri, colors, image=bg, light=light)


def sample_pose_and_coeffs(gm: GenModel, cfg: GenConfig, rng: np.random.Generator):
    """Identity, expression and Euler angles (degrees) of one sample."""
    k = gm.n_id
    alpha = np.clip(rng.normal(0, 1, k), -cfg.id_trunc, cfg.id_trunc) * gm.id_std[:k]
    active = rng.uniform(0, 1, gm.n_exp) < cfg.exp_active
    beta = np.where(active, rng.uniform(0, 1, gm.n_exp) ** 1.5, 0.0)
    yaw = rng.uniform(-cfg.yaw_deg, cfg.yaw_deg)
    pitch = rng.uniform(-cfg.pitch_deg, cfg.pitch_deg)
    roll = rng.uniform(-cfg.roll_deg, cfg.roll_deg)
    return alpha.astype(np.float32), beta.astype(np.float32), yaw, pitch, roll


def _pose_in_frame(gm: GenModel, cfg: GenConfig, rng: np.random.Generator, with_vertices: bool):
    """Draw a face and place it in a virtual frame (y down, frame pixels).

    Returns (alpha, beta, yaw, R, s0, tx, ty, rv) with ``rv`` the camera-space vertices
    (V, 3) cm (only the 68 landmarks when not `with_vertices`)."""
    from vox3d.params import euler_to_rotation

    alpha, beta, yaw, pitch, roll = sample_pose_and_coeffs(gm, cfg, rng)
    R = euler_to_rotation(*np.radians([yaw, pitch, roll]))
    if with_vertices:
        v = gm.vertices(alpha, beta)
    else:
        li = gm.landmarks68
        v = gm.mean[li].reshape(-1) + alpha @ gm.id_basis[:, li].reshape(gm.n_id, -1)
        if gm.n_exp:
            v = v + beta @ gm.exp_basis[:, li].reshape(gm.n_exp, -1)
        v = v.reshape(-1, 3)
    rv = v.astype(np.float64) @ R.T  # camera space, cm, y up
    lm = rv[gm.landmarks68] if with_vertices else rv
    s0 = rng.uniform(*cfg.face_px) / max(float(np.ptp(lm[:, 0])), 1e-3)  # frame px per cm
    tx, ty = 400.0 + rng.uniform(-3, 3), 400.0 + rng.uniform(-3, 3)
    return alpha, beta, yaw, R, s0, tx, ty, rv


def detector_box(lx: np.ndarray, ly: np.ndarray, cfg: GenConfig, rng: np.random.Generator | None):
    """A detector-style box (4,) from frame landmarks (68,) x and y, with jitter if `rng`."""
    w, h = np.ptp(lx), np.ptp(ly)
    cx, cy = (lx.max() + lx.min()) / 2, (ly.max() + ly.min()) / 2
    bx, by, bw, bh = cfg.box_model
    side = math.sqrt(w * h)
    cx += bx * w
    cy += by * h
    sc = 1.0
    if rng is not None:
        cx += rng.normal(0, cfg.box_shift_std) * side
        cy += rng.normal(0, cfg.box_shift_std) * side
        sc = math.exp(rng.normal(0, cfg.box_scale_std))
    bw_, bh_ = bw * w * sc, bh * h * sc
    return np.array([cx - bw_ / 2, cy - bh_ / 2, cx + bw_ / 2, cy + bh_ / 2])


def pose_matrix(R: np.ndarray, s0: float, tx: float, ty: float, roi) -> np.ndarray:
    """``P (3, 4)`` mapping model vertices to crop coordinates (3DDFA-V2 convention, y up)
    for a face at frame position ``x = s0 (R v)_x + tx``, ``y = -s0 (R v)_y + ty``."""
    k = (roi[2] - roi[0]) / CROP_SIZE
    P = np.zeros((3, 4))
    P[:, :3] = (s0 / k) * R
    P[0, 3] = (tx - roi[0]) / k + 1
    P[1, 3] = CROP_SIZE - (ty - roi[1]) / k
    P[2, 3] = 1.0
    return P


def make_sample(
    gm: GenModel, cfg: GenConfig, index: int, seed: int | None = None, render: bool = True
) -> Sample:
    """Generate sample `index` (deterministic in (seed, index)); see the module doc."""
    from vox3d.crop import roi_box_from_bbox

    rng = np.random.default_rng([cfg.seed if seed is None else seed, index])
    alpha, beta, yaw, R, s0, tx, ty, rv = _pose_in_frame(gm, cfg, rng, render)
    xi = s0 * rv[:, 0] + tx  # virtual frame, y down
    yi = -s0 * rv[:, 1] + ty
    li = gm.landmarks68 if render else slice(None)
    box = detector_box(xi[li], yi[li], cfg, rng)
    roi = roi_box_from_bbox(box)
    P = pose_matrix(R, s0, tx, ty, roi)
    params = np.concatenate([P.reshape(-1), alpha, beta]).astype(np.float32)
    crop = np.zeros((CROP_SIZE, CROP_SIZE, 3), np.uint8)
    if render:
        # crop pixel raster: the crop takes the ROI at integer corners and resizes it with
        # half-pixel centres (cv2 INTER_LINEAR), see vox3d.crop
        rx1, ry1, rx2, _ = (int(round(float(c))) for c in roi)
        kk = (rx2 - rx1) / CROP_SIZE
        vp = np.empty_like(rv)  # Sim3DR pixel centres are at +0.5
        vp[:, 0] = (xi - rx1 + 0.5) / kk
        vp[:, 1] = (yi - ry1 + 0.5) / kk
        vp[:, 2] = s0 / kk * rv[:, 2]
        img = _shade_and_degrade(gm, cfg, rng, vp, CROP_SIZE)
        crop = img[..., ::-1].copy()  # BGR
    return Sample(crop=crop, params=params, yaw=float(yaw), roi=roi, box=box)


def _shade_and_degrade(gm, cfg, rng, vp, size) -> np.ndarray:
    """Colour, light, background, render, blur, down/up sampling, noise -> RGB uint8."""
    colors = _albedo(gm, rng)
    bg = np.round(_background(rng, size) * 255).astype(np.uint8)
    img = _rasterize(vp, gm.triangles, colors, bg, _light(rng)).astype(np.float32) / 255.0
    img = _gauss_blur(img, rng.uniform(0, cfg.blur_max))
    if rng.uniform() < cfg.lowres_prob:
        n = int(rng.integers(size // 4, size // 2))
        down = _interp_matrix(n, size)
        down /= down.sum(1, keepdims=True)
        up = _interp_matrix(size, n)
        img = _resample(_resample(img, down, down), up, up)
    img = img * 255.0 + rng.normal(0, rng.uniform(0, cfg.noise_max), img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


@dataclass
class Frame:
    """A whole synthetic video frame with its ground truth (for tests and calibration).

    image: (size, size, 3) uint8 RGB; landmarks: (68, 2) frame pixels (centres at
    integers, the convention of :func:`vox3d.params.to_image`); alpha (n_id,), beta (n_exp,);
    R (3, 3), s0 (frame px per cm), tx, ty (frame px): frame ``x = s0 (R v)_x + tx``,
    ``y = -s0 (R v)_y + ty``.
    """

    image: np.ndarray
    landmarks: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    yaw: float
    R: np.ndarray
    s0: float
    tx: float
    ty: float

    def params_for_roi(self, roi) -> np.ndarray:
        """The true parameter vector (ict layout) for a given ROI of this frame."""
        P = pose_matrix(self.R, self.s0, self.tx, self.ty, roi)
        return np.concatenate([P.reshape(-1), self.alpha, self.beta]).astype(np.float32)


def render_frame(
    gm: GenModel,
    cfg: GenConfig,
    index: int,
    seed: int = 7,
    size: int = 224,
    face_px: tuple[float, float] = (70.0, 120.0),
    degrade: bool = True,
) -> Frame:
    """Render a whole (size x size) frame with one face, VoxCeleb-like framing."""
    from dataclasses import replace

    rng = np.random.default_rng([seed, index])
    c = replace(cfg, face_px=face_px)
    if not degrade:
        c = replace(c, blur_max=0.0, noise_max=0.0, lowres_prob=0.0)
    alpha, beta, yaw, R, s0, _, _, rv = _pose_in_frame(gm, c, rng, True)
    lm = rv[gm.landmarks68]
    # centre the landmark box near the frame centre (VoxCeleb crops are face-centred)
    tx = size / 2 - s0 * (lm[:, 0].max() + lm[:, 0].min()) / 2 + rng.uniform(-8, 8)
    ty = size / 2 + s0 * (lm[:, 1].max() + lm[:, 1].min()) / 2 + rng.uniform(-8, 8)
    xi, yi = s0 * rv[:, 0] + tx, -s0 * rv[:, 1] + ty
    vp = np.stack([xi + 0.5, yi + 0.5, s0 * rv[:, 2]], 1)
    img = _shade_and_degrade(gm, c, rng, vp, size)
    lms = np.stack([xi[gm.landmarks68], yi[gm.landmarks68]], 1)
    return Frame(img, lms, alpha, beta, float(yaw), R, float(s0), float(tx), float(ty))


def param_stats(gm: GenModel, cfg: GenConfig, n: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (P,) float32 of the target parameters over `n` generator draws
    (no rendering).  Entries with (near) zero spread get std 1."""
    p = np.stack([make_sample(gm, cfg, i, render=False).params for i in range(n)]).astype(
        np.float64
    )
    mean, std = p.mean(0), p.std(0)
    std = np.where(std < 1e-6, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


# --------------------------------------------------------------------------------------
# torch data set


class RenderDataset:
    """Map-style dataset: item i -> (crop (120,120,3) uint8 BGR tensor, params (P,) float32,
    yaw degrees).  Deterministic in (seed, i).  Safe with DataLoader workers."""

    def __init__(self, gm: GenModel, cfg: GenConfig, n: int, seed: int | None = None) -> None:
        self.gm, self.cfg, self.n = gm, cfg, n
        self.seed = cfg.seed if seed is None else seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import torch

        s = make_sample(self.gm, self.cfg, int(i), self.seed)
        return torch.from_numpy(s.crop), torch.from_numpy(s.params), torch.tensor(s.yaw)


def _worker_init(_: int) -> None:
    """One thread per render worker (torch and the BLAS under numpy): many workers with a
    full BLAS thread pool each oversubscribe the cores many times over."""
    import torch

    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # set OMP_NUM_THREADS=1 / OPENBLAS_NUM_THREADS=1 instead
        pass


# --------------------------------------------------------------------------------------
# training


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    vertex_weight: float = 0.02  # per crop pixel of mean posed-vertex distance
    n_loss_vertices: int = 600
    widen: float = 0.5
    workers: int = 0
    device: str = "cpu"
    threads: int = 1
    max_minutes: float = 0.0  # > 0: stop early after this wall time (steps_done < steps)
    # train_from_cache only:
    id_weight: float = 0.0  # x identity error after similarity removal (mean sq., mm^2)
    warmup_frac: float = 0.03  # linear warm-up (fraction of steps), then cosine to lr/100
    amp: bool = True  # CUDA: bf16 autocast
    seed: int = 0  # torch init and batch draws


def _loss_vertex_index(gm: GenModel, n: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    face = np.sort(rng.choice(gm.face_idx, min(n, len(gm.face_idx)), replace=False))
    return np.unique(np.concatenate([face, gm.landmarks68]))


class _PosedVertices:
    """Torch: parameters (B, P) -> posed vertices (B, M, 3) in crop coordinates of a fixed
    vertex subset."""

    def __init__(self, gm: GenModel, idx: np.ndarray, device) -> None:
        import torch

        self.mean = torch.from_numpy(gm.mean[idx]).to(device)
        self.idb = torch.from_numpy(gm.id_basis[:, idx].reshape(gm.n_id, -1)).to(device)
        self.exb = torch.from_numpy(gm.exp_basis[:, idx].reshape(gm.n_exp, -1)).to(device)
        self.n_id, self.n_exp = gm.n_id, gm.n_exp

    def __call__(self, p):
        b = p.shape[0]
        P = p[:, :12].reshape(b, 3, 4)
        a = p[:, 12 : 12 + self.n_id]
        e = p[:, 12 + self.n_id : 12 + self.n_id + self.n_exp]
        v = (a @ self.idb + e @ self.exb).reshape(b, -1, 3) + self.mean
        return v @ P[:, :, :3].transpose(1, 2) + P[:, None, :, 3]


def _training_device(tc: TrainConfig):
    """``torch.device(tc.device)`` set up for a deterministic training run: ``tc.threads``
    CPU threads, or cuDNN without autotuning and with deterministic kernels."""
    import torch

    dev = torch.device(tc.device)
    if dev.type == "cpu":
        torch.set_num_threads(max(1, tc.threads))
    else:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return dev


def train(
    gm: GenModel,
    gen: GenConfig,
    tc: TrainConfig,
    mean: np.ndarray,
    std: np.ndarray,
    progress: bool = True,
    log=None,
):
    """Train the MobileNet on `tc.steps` batches of fresh renders; returns the model (eval).

    Deterministic on CPU for fixed (gen, tc) (torch seeded with gen.seed, fixed data).
    """
    import torch
    from tqdm import tqdm

    from vox3d.regressor import build_mobilenet, normalize_crops

    torch.manual_seed(gen.seed)
    dev = _training_device(tc)
    n_params = ict_layout(gm.n_id, gm.n_exp).n
    model = build_mobilenet(tc.widen, n_params).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=tc.lr, total_steps=tc.steps, pct_start=0.15, div_factor=10, final_div_factor=100
    )
    mean_t = torch.from_numpy(mean).to(dev)
    std_t = torch.from_numpy(std).to(dev)
    posed = _PosedVertices(gm, _loss_vertex_index(gm, tc.n_loss_vertices), dev)
    ds = RenderDataset(gm, gen, tc.steps * tc.batch_size)
    dl = torch.utils.data.DataLoader(
        ds, batch_size=tc.batch_size, shuffle=False, num_workers=tc.workers,
        worker_init_fn=_worker_init if tc.workers else None, drop_last=True,
        persistent_workers=False, prefetch_factor=4 if tc.workers else None,
        pin_memory=dev.type == "cuda",
    )  # fmt: skip
    model.train()
    bar = tqdm(
        dl, total=tc.steps, desc="train ict regressor", disable=not progress, file=sys.stderr
    )
    t0 = time.time()
    t_wait = 0.0
    t_last = time.time()
    for step, (crops, params, _) in enumerate(bar):
        t_wait += time.time() - t_last
        x = normalize_crops(crops.to(dev, non_blocking=True))
        y = params.to(dev, non_blocking=True)
        out = model(x)
        loss_p = torch.mean((out - (y - mean_t) / std_t) ** 2)
        pred = out * std_t + mean_t
        loss_v = torch.mean(torch.linalg.norm(posed(pred) - posed(y), dim=-1))
        loss = loss_p + tc.vertex_weight * loss_v
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        model.steps_done = step + 1
        if tc.max_minutes > 0 and time.time() - t0 > 60 * tc.max_minutes:
            print(f"stopping early after {step + 1} steps (max_minutes)", file=sys.stderr)
            break
        if step % 25 == 0 or step == tc.steps - 1:
            lp, lv = float(loss_p.detach()), float(loss_v.detach())
            bar.set_postfix(param=f"{lp:.3f}", vdc_px=f"{lv:.2f}")
            if log is not None:
                log.write(f"{step}\t{lp:.5f}\t{lv:.4f}\t{time.time() - t0:.1f}\t{t_wait:.1f}\n")
                log.flush()
        t_last = time.time()
    return model.eval()


# --------------------------------------------------------------------------------------
# evaluation


YAW_BINS = ((0.0, 20.0), (20.0, 40.0), (40.0, 60.0), (60.0, 75.0), (75.0, 90.0))
#: Identity modes whose R^2 / slope :func:`accuracy_tables` reports (the leading ones).
R2_MODES = 10


def evaluate(
    model,
    gm: GenModel,
    gen: GenConfig,
    mean: np.ndarray,
    std: np.ndarray,
    n: int = 600,
    device: str = "cpu",
    batch_size: int = 100,
) -> dict:
    """Accuracy on `n` held-out renders (data seed ``gen.seed + EVAL_SEED_OFFSET``).

    Per yaw bin (|yaw| degrees) and overall: ``vertex_mm`` mean face-area (narrow face)
    vertex error of the shape + expression (model space, mm, no pose), ``id_vertex_mm``
    of the identity alone, ``mean_face_mm`` the same for the mean face (baseline), and
    ``nme`` the 68-landmark 2-D error in the crop over sqrt(w*h) of the true landmark box.
    """
    import torch

    from vox3d.regressor import normalize_crops

    seed = gen.seed + EVAL_SEED_OFFSET
    samples = [make_sample(gm, gen, i, seed) for i in range(n)]
    crops = torch.from_numpy(np.stack([s.crop for s in samples]))
    y = np.stack([s.params for s in samples]).astype(np.float64)
    yaw = np.array([s.yaw for s in samples])
    preds = []
    with torch.inference_mode():
        for b in range(0, n, batch_size):
            x = normalize_crops(crops[b : b + batch_size].to(device))
            preds.append(model(x).float().cpu().numpy())
    pred = np.concatenate(preds) * std + mean
    return accuracy_tables(gm, pred, y, yaw)


def accuracy_tables(gm: GenModel, pred: np.ndarray, y: np.ndarray, yaw: np.ndarray) -> dict:
    """Metrics of predicted vs true parameters (B, P); see :func:`evaluate`.

    Besides those: per yaw bin ``id_sim_mm``, the identity's narrow-face error after a
    similarity alignment (Umeyama with scale: absolute size and placement are invisible
    in an image), ``mean_face_sim_mm`` the same for the mean face, ``id_sim_ratio`` their
    ratio, and ``yaw_err_deg`` the mean |yaw error| (deg, yaw read from the predicted pose
    as the fit stage reads it); overall ``id_r2`` / ``id_slope`` / ``id_spread`` of the
    leading :data:`R2_MODES` identity coefficients (R^2 of predicted vs true over the
    samples, least-squares slope of predicted on true, std ratio) and their means.
    """
    from vox3d.fit import pose_angles_deg_batch
    from vox3d.metrics import align

    k, j = gm.n_id, gm.n_exp
    fi = gm.face_idx

    def verts(p, with_exp=True):
        a = p[:, 12 : 12 + k]
        e = p[:, 12 + k : 12 + k + j] if with_exp else np.zeros((len(p), j))
        v = a @ gm.id_basis[:, fi].reshape(k, -1) + e @ gm.exp_basis[:, fi].reshape(j, -1)
        return v.reshape(len(p), -1, 3) + gm.mean[fi]

    vt, vp = verts(y), verts(pred)
    vert_mm = np.linalg.norm(vp - vt, axis=2).mean(1) * 10.0
    it, ip = verts(y, False), verts(pred, False)
    id_mm = np.linalg.norm(ip - it, axis=2).mean(1) * 10.0
    mean_mm = np.linalg.norm(gm.mean[fi][None] - it, axis=2).mean(1) * 10.0

    def lm2d(p):
        a = p[:, 12 : 12 + k]
        e = p[:, 12 + k : 12 + k + j]
        li = gm.landmarks68
        v = a @ gm.id_basis[:, li].reshape(k, -1) + e @ gm.exp_basis[:, li].reshape(j, -1)
        v = v.reshape(len(p), -1, 3) + gm.mean[li]
        P = p[:, :12].reshape(-1, 3, 4)
        return (v @ P[:, :, :3].transpose(0, 2, 1) + P[:, None, :, 3])[..., :2]

    lt, lp = lm2d(y), lm2d(pred)
    norm = np.sqrt(np.ptp(lt[..., 0], axis=1) * np.ptp(lt[..., 1], axis=1))
    nme = np.linalg.norm(lp - lt, axis=2).mean(1) / norm
    mean_f = gm.mean[fi].astype(np.float64)
    id_sim = np.array(
        [np.linalg.norm(align(a, b, True) - b, axis=1).mean() for a, b in zip(ip, it, strict=True)]
    )
    mf_sim = np.array([np.linalg.norm(align(mean_f, b, True) - b, axis=1).mean() for b in it])
    id_sim, mf_sim = id_sim * 10.0, mf_sim * 10.0
    with np.errstate(invalid="ignore"):
        yaw_pred = pose_angles_deg_batch(pred.astype(np.float64))[:, 0]
    yaw_err = np.abs(yaw_pred - yaw)
    m = min(R2_MODES, k)
    at, ap = y[:, 12 : 12 + m], pred[:, 12 : 12 + m]
    var_t = at.var(0)
    r2 = 1.0 - ((ap - at) ** 2).mean(0) / np.where(var_t > 0, var_t, np.nan)
    cov = ((ap - ap.mean(0)) * (at - at.mean(0))).mean(0)
    slope = cov / np.where(var_t > 0, var_t, np.nan)
    spread = ap.std(0) / np.where(var_t > 0, np.sqrt(var_t), np.nan)
    out = {
        "n": len(y),
        "id_r2": [float(x) for x in r2],
        "id_slope": [float(x) for x in slope],
        "id_spread": [float(x) for x in spread],
        "id_r2_mean": float(np.mean(r2)),
        "id_slope_mean": float(np.mean(slope)),
    }
    bins = [*YAW_BINS, (0.0, 90.0)]
    for lo, hi in bins:
        sel = (np.abs(yaw) >= lo) & (np.abs(yaw) < hi)
        key = "all" if (lo, hi) == (0.0, 90.0) else f"yaw_{int(lo)}_{int(hi)}"
        mean = lambda a, sel=sel: float(np.nanmean(a[sel])) if sel.any() else float("nan")  # noqa: E731
        out[key] = {
            "n": int(sel.sum()),
            "vertex_mm": mean(vert_mm),
            "id_vertex_mm": mean(id_mm),
            "mean_face_mm": mean(mean_mm),
            "nme": mean(nme),
            "id_sim_mm": mean(id_sim),
            "mean_face_sim_mm": mean(mf_sim),
            "id_sim_ratio": mean(id_sim) / mean(mf_sim) if sel.any() else float("nan"),
            "yaw_err_deg": mean(yaw_err),
        }
    return out


def format_accuracy(acc: dict) -> str:
    """A small table of :func:`accuracy_tables` output."""
    lines = [
        f"{'yaw bin':<12}{'n':>6}{'vertex mm':>11}{'id mm':>9}{'mean-face mm':>14}{'NME':>9}"
        f"{'id sim mm':>11}{'mean sim mm':>13}{'ratio':>7}{'yaw err':>9}"
    ]
    for key, v in acc.items():
        if not isinstance(v, dict):
            continue
        lines.append(
            f"{key:<12}{v['n']:>6}{v['vertex_mm']:>11.3f}{v['id_vertex_mm']:>9.3f}"
            f"{v['mean_face_mm']:>14.3f}{v['nme']:>9.4f}{v.get('id_sim_mm', np.nan):>11.3f}"
            f"{v.get('mean_face_sim_mm', np.nan):>13.3f}{v.get('id_sim_ratio', np.nan):>7.2f}"
            f"{v.get('yaw_err_deg', np.nan):>9.2f}"
        )
    if "id_r2" in acc:
        f = lambda xs: " ".join(f"{x:.2f}" for x in xs)  # noqa: E731
        lines.append(f"identity R^2 modes 0-{len(acc['id_r2']) - 1}: {f(acc['id_r2'])} "
                     f"(mean {acc['id_r2_mean']:.3f})")  # fmt: skip
        lines.append(f"identity slope: {f(acc['id_slope'])} (mean {acc['id_slope_mean']:.3f})")
        lines.append(f"identity spread (pred std / true std): {f(acc['id_spread'])}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# training from a render cache (vox3d.regressor_data)


def identity_form(gm: GenModel) -> np.ndarray:
    """``(n_id, n_id)`` float64 quadratic form of the identity-geometry loss, in mm^2:
    ``d^T Q d`` = mean squared narrow-face vertex error of an identity-coefficient error
    ``d`` after removing its similarity component at the mean face
    (:func:`vox3d.regressor_data.identity_geometry_form`)."""
    from vox3d.regressor_data import identity_geometry_form

    fi = gm.face_idx
    return identity_geometry_form(gm.id_basis[:, fi], gm.mean[fi]) * 100.0  # cm^2 -> mm^2


def lr_at(step: int, tc: TrainConfig) -> float:
    """Learning rate of `step`: linear warm-up from lr/10 over ``warmup_frac`` of the
    steps, then a cosine down to lr/100 at the last step."""
    w = max(1, int(tc.warmup_frac * tc.steps))
    if step < w:
        return tc.lr * (0.1 + 0.9 * step / w)
    t = (step - w) / max(1, tc.steps - w)
    return tc.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def batch_indices(seed: int, step: int, n: int, batch: int) -> np.ndarray:
    """Sample indices (batch,) of training step `step`: uniform with replacement, drawn
    from ``default_rng([seed, step])`` alone (resuming gives the same batches)."""
    return np.random.default_rng([seed, step]).integers(0, n, batch)


def _losses(model, crops, y, mean_t, std_t, posed, qform, tc, amp_dtype):
    """(total, whitened-parameter MSE, posed-vertex px, identity mm^2) of one batch."""
    import torch

    from vox3d.regressor import normalize_crops

    x = normalize_crops(crops)
    if amp_dtype is not None:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=amp_dtype):
            out = model(x)
        out = out.float()
    else:
        out = model(x)
    loss_p = torch.mean((out - (y - mean_t) / std_t) ** 2)
    pred = out * std_t + mean_t
    loss_v = torch.mean(torch.linalg.norm(posed(pred) - posed(y), dim=-1))
    k = qform.shape[0]
    d = pred[:, 12 : 12 + k] - y[:, 12 : 12 + k]
    loss_id = torch.mean(torch.einsum("bi,ij,bj->b", d, qform, d))
    total = loss_p + tc.vertex_weight * loss_v + tc.id_weight * loss_id
    return total, loss_p, loss_v, loss_id


def train_from_cache(
    gm: GenModel,
    cache: str | os.PathLike,
    tc: TrainConfig,
    state_path: str | os.PathLike,
    time_budget: float | None = None,
    progress: bool = True,
    log=None,
):
    """Train on the valid samples of a render cache (:mod:`vox3d.regressor_data`).

    The whole cache sits on the device (uint8 crops); step ``k`` draws its batch with
    :func:`batch_indices`; loss = whitened-parameter MSE + ``vertex_weight`` x mean posed
    face-vertex distance (crop px, VDC-like) + ``id_weight`` x :func:`identity_form`
    (mm^2).  Whitening mean/std are measured on the cache's targets.  Every call resumes
    from `state_path` when it exists (model, optimiser, step, curve) and writes it when it
    stops: after `time_budget` seconds or at ``tc.steps``.

    Returns ``(model (eval), mean (P,), std (P,), curve, finished)``; curve rows are
    ``[step, param_mse, vertex_px, identity_mm2, lr, elapsed_s]`` every 100 steps.
    """
    import torch
    from tqdm import tqdm

    from vox3d.io import save_torch_atomic
    from vox3d.regressor import build_mobilenet
    from vox3d.regressor_data import load_cache
    from vox3d.safeload import load_torch

    t0 = time.time()
    dev = _training_device(tc)
    data = load_cache(cache, keys=("crops", "params"))
    y64 = data["params"].astype(np.float64)
    n = len(y64)
    mean, std = y64.mean(0), y64.std(0)
    std = np.where(std < 1e-6, 1.0, std)
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    crops = torch.from_numpy(data["crops"]).to(dev)
    ys = torch.from_numpy(data["params"]).to(dev)
    del data
    torch.manual_seed(tc.seed)
    n_params = ict_layout(gm.n_id, gm.n_exp).n
    model = build_mobilenet(tc.widen, n_params).to(dev)
    amp_dtype = torch.bfloat16 if (tc.amp and dev.type == "cuda") else None
    if amp_dtype is not None:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    step0, curve = 0, []
    state_path = Path(state_path)
    cfg_key = json.dumps(asdict(tc) | {"device": "", "threads": 0, "workers": 0}, sort_keys=True)
    if state_path.is_file():
        st = load_torch(state_path, map_location=str(dev))
        if st["config"] != cfg_key or int(st["n"]) != n:
            raise RuntimeError(
                f"{state_path}: a training state of other settings or data; remove it to restart"
            )
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step0, curve = int(st["step"]), [list(r) for r in st["curve"]]
        print(f"resuming at step {step0} of {tc.steps}", file=sys.stderr)
    mean_t, std_t = torch.from_numpy(mean).to(dev), torch.from_numpy(std).to(dev)
    posed = _PosedVertices(gm, _loss_vertex_index(gm, tc.n_loss_vertices), dev)
    qform = torch.from_numpy(identity_form(gm).astype(np.float32)).to(dev)
    model.train()
    bar = tqdm(range(step0, tc.steps), initial=step0, total=tc.steps, disable=not progress,
               desc="train ict regressor", file=sys.stderr)  # fmt: skip
    acc = np.zeros(4)
    n_acc = 0
    step = step0
    finished = True
    for step in bar:
        lr = lr_at(step, tc)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.from_numpy(batch_indices(tc.seed, step, n, tc.batch_size)).to(dev)
        loss, lp, lv, li = _losses(model, crops[idx], ys[idx], mean_t, std_t, posed, qform, tc,
                                   amp_dtype)  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0:  # a host sync every 10 steps only
            acc += [
                float(loss.detach()),
                float(lp.detach()),
                float(lv.detach()),
                float(li.detach()),
            ]
            n_acc += 1
        if (step + 1) % 100 == 0 or step + 1 == tc.steps:
            m = acc / max(n_acc, 1)
            curve.append([step + 1, float(m[1]), float(m[2]), float(m[3]), lr, time.time() - t0])
            bar.set_postfix(param=f"{m[1]:.3f}", vdc_px=f"{m[2]:.2f}", id_mm2=f"{m[3]:.2f}")
            if log is not None:
                log.write("\t".join(f"{v:.6g}" for v in curve[-1]) + "\n")
                log.flush()
            acc[:] = 0
            n_acc = 0
        if time_budget is not None and time.time() - t0 > time_budget and step + 1 < tc.steps:
            finished = False
            break
    steps_done = step + 1 if tc.steps > step0 else step0
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": steps_done,
             "curve": curve, "config": cfg_key, "n": n}  # fmt: skip
    save_torch_atomic(state_path, state)
    model.steps_done = steps_done
    if not finished:
        print(f"stopped at step {steps_done} of {tc.steps} (time budget); rerun to resume",
              file=sys.stderr)  # fmt: skip
    return model.eval().float(), mean, std, curve, finished


def predict_crops(model, crops: np.ndarray, device: str = "cpu", batch_size: int = 500):
    """Raw (whitened) outputs ``(N, P) float32`` of crops ``(N, 120, 120, 3) uint8``."""
    import torch

    from vox3d.regressor import normalize_crops

    model = model.float().to(memory_format=torch.contiguous_format)
    out = []
    with torch.inference_mode():
        for b in range(0, len(crops), batch_size):
            x = normalize_crops(torch.from_numpy(crops[b : b + batch_size]).to(device))
            out.append(model(x).float().cpu().numpy())
    return np.concatenate(out)


def evaluate_cache(
    model, gm: GenModel, heldout: str | os.PathLike, mean, std, device: str = "cpu"
) -> dict:
    """:func:`accuracy_tables` on the valid samples of a held-out render cache
    (:mod:`vox3d.regressor_data` with ``--heldout``); ``n_rendered`` counts all."""
    from vox3d.regressor_data import load_cache

    d = load_cache(heldout, keys=("crops", "params", "euler"))
    pred = predict_crops(model, d["crops"], device) * std + mean
    acc = accuracy_tables(gm, pred.astype(np.float64), d["params"].astype(np.float64),
                          d["euler"][:, 0].astype(np.float64))  # fmt: skip
    acc["n_rendered"] = int(len(load_cache(heldout, valid_only=False, keys=("valid",))["valid"]))
    return acc


# --------------------------------------------------------------------------------------
# checkpoint files


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for blk in iter(lambda: fh.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def save_checkpoint(
    model,
    out: str | os.PathLike,
    gen: GenConfig,
    tc: TrainConfig,
    mean: np.ndarray,
    std: np.ndarray,
    accuracy: dict | None = None,
    extra: dict | None = None,
    gm: GenModel | None = None,
) -> dict:
    """Write ``out`` (.pth, a plain state_dict, loadable with weights_only=True) and its
    ``.json`` sidecar (layout, generator and training config, mean/std, sha256)."""
    import torch

    from vox3d.io import save_torch_atomic, write_text_atomic

    out = Path(out)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_torch_atomic(out, state)
    lay = ict_layout(gen.n_id, gen.n_exp)
    meta = {
        "format": "vox3d ict regressor 1",
        "network": "MobileNet-V1 (vox3d.regressor.build_mobilenet)",
        "widen": tc.widen,
        "face_model": "ict",
        "n_id": gen.n_id,
        "n_exp": gen.n_exp,
        "layout": lay.as_attrs(),
        "num_params": lay.n,
        "input": "120x120 BGR uint8 crop, (x - 127.5) / 128, NCHW",
        "param_mean": [float(x) for x in mean],
        "param_std": [float(x) for x in std],
        "data_seed": gen.seed,
        "generator": gen.as_dict(),
        "training": asdict(tc),
        "steps": tc.steps,
        "steps_done": int(getattr(model, "steps_done", tc.steps)),
        "device": tc.device,
        "torch": torch.__version__,
        "sha256": sha256_file(out),
    }
    if accuracy is not None:
        meta["heldout_accuracy"] = accuracy
    if gm is not None:
        meta["gen_model_sha256"] = gm.digest()
    if extra:
        meta.update(extra)
    write_text_atomic(out.with_suffix(".json"), json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return meta


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    """The json sidecar of a checkpoint (``X.pth`` -> ``X.json``), with clear errors."""
    from vox3d.safeload import BadModelFileError

    jp = Path(path).with_suffix(".json")
    if not jp.is_file():
        raise BadModelFileError(
            f"{jp}: missing: the ICT regressor needs its json (layout, parameter mean/std); "
            "retrain with `snakemake train_regressor` or restore vox3d/data/ict_regressor.json"
        )
    try:
        return json.loads(jp.read_text())
    except json.JSONDecodeError as e:
        raise BadModelFileError(f"{jp}: not valid json ({e})") from e


def load_model(path: str | os.PathLike, device: str = "cpu"):
    """MobileNet with the checkpoint's weights (eval mode) and its (mean, std)."""
    from vox3d.regressor import load_mobilenet

    meta = read_checkpoint_meta(path)
    model = load_mobilenet(path, float(meta["widen"]), int(meta["num_params"])).to(device)
    mean = np.asarray(meta["param_mean"], np.float32)
    std = np.asarray(meta["param_std"], np.float32)
    return model.eval(), mean, std, meta


def make_regressor(
    path: str | os.PathLike,
    n_id: int,
    n_exp: int,
    device: str = "cpu",
    precision: str = "fp32",
):
    """A :class:`vox3d.regressor.Regressor` for the ICT checkpoint `path` (+ its json).

    Checks that the checkpoint predicts the configured ``ict_layout(n_id, n_exp)``; the
    whitening mean/std come from the json (handed to the Regressor as the plain
    ``{"mean", "std"}`` pickle it reads, in a temporary folder).
    """
    import pickle
    import tempfile

    from vox3d.regressor import Regressor
    from vox3d.safeload import BadModelFileError

    meta = read_checkpoint_meta(path)
    if (int(meta["n_id"]), int(meta["n_exp"])) != (int(n_id), int(n_exp)):
        raise BadModelFileError(
            f"{path}: this ICT regressor predicts n_id={meta['n_id']}, n_exp={meta['n_exp']} "
            f"but the config asks for n_id={n_id}, n_exp={n_exp}: set face_model.n_id/n_exp "
            "to match or train one with `snakemake train_regressor`"
        )
    mean = np.asarray(meta["param_mean"], np.float32)
    std = np.asarray(meta["param_std"], np.float32)
    with tempfile.TemporaryDirectory() as td:
        ms = Path(td) / "param_mean_std.pkl"
        with open(ms, "wb") as fh:
            pickle.dump({"mean": mean, "std": std}, fh, protocol=4)
        return Regressor(
            path,
            ms,
            widen=float(meta["widen"]),
            num_params=int(meta["num_params"]),
            device=device,
            precision=precision,
        )


# --------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vox3d.ict_regressor",
        description="train / evaluate the ICT-FaceKit MobileNet regressor on Sim3DR renders",
    )
    p.add_argument("--out", default=str(DEFAULT_CHECKPOINT), help="checkpoint .pth (+ .json)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--workers", type=int, default=0, help="DataLoader render workers")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="data seed (and torch seed)")
    p.add_argument("--n-id", type=int, default=40)
    p.add_argument("--n-exp", type=int, default=10)
    p.add_argument("--ict", default=None, help="ICT-FaceKit archive / FaceXModel folder")
    p.add_argument("--gen-model", default=None, help="npz from --export-gen-model (no ICT needed)")
    p.add_argument("--export-gen-model", default=None, help="write the generator arrays and exit")
    p.add_argument("--stats-samples", type=int, default=20000)
    p.add_argument("--eval-samples", type=int, default=600)
    p.add_argument("--eval-only", action="store_true", help="evaluate --out, do not train")
    p.add_argument("--log", default=None, help="training loss log (tsv)")
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop training early")
    args = p.parse_args(argv)

    if args.eval_only:  # the checkpoint says which face model sizes it predicts
        meta0 = read_checkpoint_meta(args.out)
        args.n_id, args.n_exp = int(meta0["n_id"]), int(meta0["n_exp"])
    gm = (
        GenModel.load(args.gen_model)
        if args.gen_model
        else build_gen_model(args.n_id, args.n_exp, args.ict)
    )
    if args.export_gen_model:
        gm.save(args.export_gen_model)
        print(f"wrote {args.export_gen_model}")
        return 0
    gen = GenConfig(n_id=gm.n_id, n_exp=gm.n_exp, seed=args.seed)
    if args.eval_only:
        model, mean, std, meta = load_model(args.out, args.device)
        gen = GenConfig.from_dict(meta["generator"])
        if meta.get("gen_model_sha256") not in (None, gm.digest()):
            print(
                "warning: the face model arrays differ from those the checkpoint was trained "
                "on (gen_model_sha256); accuracy may not be comparable",
                file=sys.stderr,
            )
    else:
        tc = TrainConfig(
            steps=args.steps, batch_size=args.batch_size, lr=args.lr, workers=args.workers,
            device=args.device, threads=args.threads, max_minutes=args.max_minutes,
        )  # fmt: skip
        mean, std = param_stats(gm, gen, args.stats_samples)
        log = open(args.log, "w") if args.log else None  # noqa: SIM115
        t0 = time.time()
        model = train(gm, gen, tc, mean, std, log=log)
        wall = time.time() - t0
        if log:
            log.close()
    acc = evaluate(model, gm, gen, mean, std, args.eval_samples, args.device)
    print(format_accuracy(acc))
    if not args.eval_only:
        meta = save_checkpoint(
            model, args.out, gen, tc, mean, std, acc, {"stats_samples": args.stats_samples}, gm=gm
        )
        print(f"training wall time {wall:.1f} s")
        print(f"wrote {args.out} sha256 {meta['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
