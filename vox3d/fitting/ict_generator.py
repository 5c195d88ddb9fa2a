"""The ICT regressor's face model arrays (:class:`GenModel`) and its checkpoint's
generator record (:class:`GenConfig`).

:func:`build_gen_model` cuts the ICT-FaceKit head (:func:`vox3d.face.face_model.load_face_model`)
to the vertex groups of :data:`RENDER_SETS`; the arrays serve the training loss
(:func:`vox3d.fitting.ict_train.train_from_cache`), the accuracy tables
(:func:`vox3d.fitting.ict_eval.accuracy_tables`) and the identity calibration's prior
(:func:`vox3d.fitting.regressor_data.calibrate_checkpoint`); :meth:`GenModel.digest` is the
checkpoint json's ``gen_model_sha256``.  The training frames themselves come from the
corpus's renderer (:mod:`vox3d.fitting.regressor_render`), the one synthetic-face kit.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from vox3d.config import default, setting
from vox3d.face.face_model import load_face_model

#: Vertex groups of the model arrays (ICT vertex sets).
RENDER_SETS = ("skin", "mouth_socket", "gums_tongue", "teeth", "eyeball_left", "eyeball_right")


# --------------------------------------------------------------------------------------
# the checkpoint's generator record


@dataclass(frozen=True)
class GenConfig:
    """What :func:`vox3d.fitting.ict_train.save_checkpoint` records of the training data:
    ``n_id``, ``n_exp`` (the layout), ``seed`` (json ``data_seed``) and, unless the caller
    passes its own ``generator`` (the rule path records the
    :class:`vox3d.fitting.regressor_render.RenderConfig` there), :meth:`as_dict` as json
    ``generator``.  The other fields are the field names of the first checkpoints' record:
    the distribution of the on-the-fly generator they were trained on (angles in degrees);
    nothing draws from them any more."""

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


# --------------------------------------------------------------------------------------
# the face model arrays


@dataclass
class GenModel:
    """ICT arrays for losses and metrics (the :data:`RENDER_SETS` subset of the full topology).

    mean: (V, 3) float32 cm; id_basis: (n_id, V, 3); exp_basis: (n_exp, V, 3);
    triangles: (F, 3) int32; landmarks68: (68,) indices into V; face_idx: (M,) indices of
    the narrow face area (losses and metrics); albedo_class: (V,) uint8 region code
    (0 skin, 1 lips, 2 brows, 3 mouth interior, 4 teeth, 5 sclera, 6 iris: the colours of
    the first checkpoints' renders; part of :meth:`digest`); id_std: (n_id,) float32.
    """

    mean: np.ndarray
    id_basis: np.ndarray
    exp_basis: np.ndarray
    triangles: np.ndarray
    landmarks68: np.ndarray
    face_idx: np.ndarray
    albedo_class: np.ndarray
    id_std: np.ndarray

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


def build_gen_model(
    n_id: int = default("face_model.n_id"),
    n_exp: int = default("face_model.n_exp"),
    ict_path: str | None = None,
) -> GenModel:
    """The :class:`GenModel` of the ICT-FaceKit model (:func:`load_face_model`)."""
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
