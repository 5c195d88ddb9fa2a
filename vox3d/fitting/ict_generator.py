"""The ICT regressor's own generator of training renders: Sim3DR renders of ICT faces.

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
  the 3DDFA-V2 policy (:func:`vox3d.face.crop.roi_box_from_bbox`); and the 120x120 crop rendered
  *straight at crop resolution* (the crop is a similarity of the frame, so this equals
  rendering the frame and cropping it, up to resampling), then degraded (blur, down/up
  sampling, noise) like a compressed video frame;
* the target: the parameters in :func:`vox3d.params.ict_layout` order, pose ``P = [s R | t]``
  mapping model vertices (cm) to crop coordinates in the 3DDFA-V2 convention, so that
  :func:`vox3d.params.to_image` with the ROI maps them to frame pixels.

:func:`vox3d.fitting.ict_train.train` trains on these renders (through
:class:`vox3d.fitting.ict_train.RenderDataset`), :func:`vox3d.fitting.ict_eval.evaluate` measures a
checkpoint on held-out ones, and tests render whole frames with :func:`render_frame`.  The
committed checkpoint was trained on the corpus renderer's frames instead
(:mod:`vox3d.fitting.regressor_data`).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from vox3d.config import setting
from vox3d.face.face_model import load_face_model
from vox3d.face.render import Light
from vox3d.face.render import render as render_sim3dr
from vox3d.params import CROP_SIZE, euler_to_rotation, pose_matrix

#: Vertex groups rendered (ICT vertex sets) and their base colours (RGB 0..1).
RENDER_SETS = ("skin", "mouth_socket", "gums_tongue", "teeth", "eyeball_left", "eyeball_right")


# --------------------------------------------------------------------------------------
# generator configuration


@dataclass(frozen=True)
class GenConfig:
    """Distribution of the training renders (all angles in degrees)."""

    n_id: int = setting("face_model.n_id")
    n_exp: int = setting("face_model.n_exp")
    seed: int = setting("fit.regressor.seed")
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
    """Random :class:`vox3d.face.render.Light`: ambient + one directional light (image axes:
    x right, y down, z to the viewer) + a Phong specular term."""
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
    (:func:`vox3d.face.render.render`, per-pixel Phong shading); returns (H, W, 3) uint8 RGB."""
    return render_sim3dr(v_px, tri, colors, image=bg, light=light)


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


def make_sample(
    gm: GenModel, cfg: GenConfig, index: int, seed: int | None = None, render: bool = True
) -> Sample:
    """Generate sample `index` (deterministic in (seed, index)); see the module doc."""
    from vox3d.face.crop import roi_box_from_bbox

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
        # half-pixel centres (cv2 INTER_LINEAR), see vox3d.face.crop
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
