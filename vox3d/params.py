"""The 3DMM parameter layouts, defined once, and the 3DDFA-V2 pose / projection conventions.

A parameter vector is ``[pose (12) | shape (K_id) | expression (K_exp)]``:

* ``pose``: a 3x4 matrix stored row major, ``P = [s R | t]`` (scaled rotation, translation).
  Model vertices ``v`` (model units) map to *crop coordinates* by ``P @ [v; 1]``.
* ``shape``: identity coefficients ``alpha_shp`` (K_id,).
* ``expression``: expression coefficients ``alpha_exp`` (K_exp,).

:data:`TDDFA_LAYOUT` is 3DDFA-V2's 62-vector (12 + 40 BFM shape + 10 BFM expression);
:func:`ict_layout` gives the same convention for ICT-FaceKit with configurable sizes.

Crop coordinates (3DDFA-V2): the regressor works on a ``size`` x ``size`` (120) crop; the
model's y axis points up, so :func:`to_image` flips y inside the crop (``y' = size - y``),
shifts x and z by -1 (the original's "for Python compatibility"), scales by the ROI box and
shifts z so that its minimum is 0.  The result is in image pixels, x right, y down, z larger
= nearer the camera (the BFM / ICT models face +z).

Euler angles follow 3DDFA-V2's ``utils/pose.py``: from the unit rotation ``R``,
``yaw = asin(R[2,0])``, ``pitch = atan2(R[2,1], R[2,2])``, ``roll = atan2(R[1,0], R[0,0])``
(radians), i.e. ``R = Rz(roll) @ Ry(-yaw) @ Rx(pitch)``; near gimbal lock
(``|R[2,0]| > 0.998``) roll is 0 as in the original.  :func:`pose_angles_deg` and
:func:`pose_angles_deg_batch` read these angles (degrees) from parameter vectors;
:func:`pose_matrix` builds ``P`` for a face placed in a frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: 3DDFA-V2 crop side (pixels).
CROP_SIZE = 120


@dataclass(frozen=True)
class ParamLayout:
    """Sizes of one parameter layout: 12 pose values, `n_id` shape, `n_exp` expression."""

    n_id: int
    n_exp: int
    n_pose: int = 12

    @property
    def n(self) -> int:
        """Total length of a parameter vector."""
        return self.n_pose + self.n_id + self.n_exp

    @property
    def pose(self) -> slice:
        return slice(0, self.n_pose)

    @property
    def shape(self) -> slice:
        return slice(self.n_pose, self.n_pose + self.n_id)

    @property
    def exp(self) -> slice:
        return slice(self.n_pose + self.n_id, self.n)

    def as_attrs(self) -> dict[str, int]:
        """The layout as HDF5 attributes (``param_n_pose``, ``param_n_id``, ``param_n_exp``)."""
        return {"param_n_pose": self.n_pose, "param_n_id": self.n_id, "param_n_exp": self.n_exp}

    @classmethod
    def from_attrs(cls, attrs) -> ParamLayout:
        """Inverse of :meth:`as_attrs` (any mapping, e.g. ``h5py`` attrs)."""
        return cls(
            n_id=int(attrs["param_n_id"]),
            n_exp=int(attrs["param_n_exp"]),
            n_pose=int(attrs.get("param_n_pose", 12)),
        )


#: 3DDFA-V2's 62 parameters: 12 pose (3x4 row major), 40 BFM shape, 10 BFM expression.
TDDFA_LAYOUT = ParamLayout(n_id=40, n_exp=10)


def ict_layout(n_id: int, n_exp: int) -> ParamLayout:
    """Layout for ICT-FaceKit: 12 pose + `n_id` identity + `n_exp` expression values."""
    if n_id < 0 or n_exp < 0:
        raise ValueError(f"n_id and n_exp must be >= 0, got {n_id}, {n_exp}")
    return ParamLayout(n_id=int(n_id), n_exp=int(n_exp))


def split(params: np.ndarray, layout: ParamLayout = TDDFA_LAYOUT):
    """Split parameters ``(B, n)`` (or ``(n,)``) into ``P (B, 3, 4)``, ``alpha_shp (B, K_id)``,
    ``alpha_exp (B, K_exp)`` (without the batch axis for 1-D input).  Works for numpy arrays
    and torch tensors."""
    if params.shape[-1] != layout.n:
        raise ValueError(f"parameters have {params.shape[-1]} values, layout expects {layout.n}")
    lead = params.shape[:-1]
    P = params[..., layout.pose].reshape(*lead, 3, 4)
    return P, params[..., layout.shape], params[..., layout.exp]


def compose(P, alpha_shp, alpha_exp):
    """Inverse of :func:`split`: ``(B,3,4), (B,K_id), (B,K_exp) -> (B, 12+K_id+K_exp)``."""
    lead = P.shape[:-2]
    if _is_torch(P):
        import torch

        return torch.cat([P.reshape(*lead, 12), alpha_shp, alpha_exp], dim=-1)
    P = np.asarray(P)
    dtype = np.result_type(P, alpha_shp, alpha_exp)
    return np.concatenate(
        [P.reshape(*lead, 12), np.asarray(alpha_shp), np.asarray(alpha_exp)], axis=-1
    ).astype(dtype, copy=False)


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def pose_to_srt(P: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """3DDFA-V2's ``P2sRt``: ``P (3, 4) -> (s, R (3, 3), t (3,))``.

    ``s`` is the mean norm of the first two rows of the 3x3 block; ``R``'s rows are those rows
    normalised and their cross product (so ``R`` is a rotation when the rows are orthogonal).
    """
    P = np.asarray(P, dtype=np.float64)
    r1, r2 = P[0, :3], P[1, :3]
    n1, n2 = np.linalg.norm(r1), np.linalg.norm(r2)
    s = (n1 + n2) / 2.0
    r1, r2 = r1 / n1, r2 / n2
    R = np.stack([r1, r2, np.cross(r1, r2)])
    return float(s), R, P[:, 3].copy()


def srt_to_pose(s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``(s, R (3,3), t (3,)) -> P (3, 4) = [s R | t]`` (float64)."""
    P = np.empty((3, 4))
    P[:, :3] = s * np.asarray(R, dtype=np.float64)
    P[:, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return P


def rotation_to_euler(R: np.ndarray) -> tuple[float, float, float]:
    """``R (3, 3) -> (yaw, pitch, roll)`` in radians, 3DDFA-V2's ``matrix2angle``."""
    R = np.asarray(R, dtype=np.float64)
    if R[2, 0] > 0.998:
        roll = 0.0
        yaw = math.pi / 2
        pitch = roll + math.atan2(-R[0, 1], -R[0, 2])
    elif R[2, 0] < -0.998:
        roll = 0.0
        yaw = -math.pi / 2
        pitch = -roll + math.atan2(R[0, 1], R[0, 2])
    else:
        yaw = math.asin(R[2, 0])
        c = math.cos(yaw)
        pitch = math.atan2(R[2, 1] / c, R[2, 2] / c)
        roll = math.atan2(R[1, 0] / c, R[0, 0] / c)
    return yaw, pitch, roll


def euler_to_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Inverse of :func:`rotation_to_euler`: ``R = Rz(roll) @ Ry(-yaw) @ Rx(pitch)`` (radians)."""
    cx, sx = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(-yaw), math.sin(-yaw)
    cz, sz = math.cos(roll), math.sin(roll)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


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


def pose_angles_deg_batch(params: np.ndarray) -> np.ndarray:
    """Vectorised :func:`pose_angles_deg`: ``(N, P)`` -> ``(N, 3)`` yaw, pitch, roll (deg).

    Same formulas (3DDFA-V2's ``P2sRt`` + ``matrix2angle``, gimbal branches at
    |R[2, 0]| > 0.998); NaN rows where the pose is not finite or its first row is zero.
    """
    P = np.asarray(params, np.float64)[:, :12].reshape(-1, 3, 4)
    out = np.full((P.shape[0], 3), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        r1, r2 = P[:, 0, :3], P[:, 1, :3]
        n1 = np.sqrt((r1 * r1).sum(1))
        n2 = np.sqrt((r2 * r2).sum(1))
        ok = np.isfinite(P).all((1, 2)) & (n1 != 0)
        r1, r2 = r1 / n1[:, None], r2 / n2[:, None]
        r3 = np.cross(r1, r2)
        r20, r21, r22 = r3[:, 0], r3[:, 1], r3[:, 2]
        hi, lo = r20 > 0.998, r20 < -0.998
        yaw = np.where(hi, np.pi / 2, np.where(lo, -np.pi / 2, np.arcsin(r20)))
        c = np.cos(yaw)
        pitch = np.where(
            hi,
            np.arctan2(-r1[:, 1], -r1[:, 2]),
            np.where(lo, np.arctan2(r1[:, 1], r1[:, 2]), np.arctan2(r21 / c, r22 / c)),
        )
        roll = np.where(hi | lo, 0.0, np.arctan2(r2[:, 0] / c, r1[:, 0] / c))
    out[ok] = np.degrees(np.stack([yaw, pitch, roll], 1))[ok]
    return out


def pose_angles_deg(params: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of one parameter vector (3DDFA-V2 convention)."""
    P = np.asarray(params[:12], np.float64).reshape(3, 4)
    if not np.all(np.isfinite(P)) or np.linalg.norm(P[0, :3]) == 0:
        return (np.nan, np.nan, np.nan)
    _, R, _ = pose_to_srt(P)
    return tuple(float(np.degrees(a)) for a in rotation_to_euler(R))


def transform_vertices(vertices: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Model coordinates ``(V, 3)`` (or ``(B, V, 3)`` with ``P (B, 3, 4)``) to crop coordinates
    ``P @ [v; 1]``.  numpy or torch."""
    if _is_torch(vertices):
        return vertices @ P[..., :3].transpose(-1, -2) + P[..., None, :, 3]
    vertices = np.asarray(vertices)
    P = np.asarray(P)
    out = vertices @ np.swapaxes(P[..., :3], -1, -2) + P[..., None, :, 3]
    return out.astype(np.result_type(vertices.dtype, np.float32), copy=False)


def to_image(pts: np.ndarray, roi_box, size: int = CROP_SIZE) -> np.ndarray:
    """Crop coordinates ``(V, 3)`` -> image coordinates ``(V, 3) float32`` (3DDFA-V2's
    ``similar_transform``).

    ``x' = (x - 1) * sx + x1``, ``y' = (size - y) * sy + y1``,
    ``z' = (z - 1) * (sx + sy) / 2`` then shifted so ``min z' = 0``, with
    ``roi_box = (x1, y1, x2, y2)``, ``sx = (x2 - x1) / size``, ``sy = (y2 - y1) / size``.
    """
    pts = np.array(pts, dtype=np.float64)
    x1, y1, x2, y2 = (float(v) for v in np.asarray(roi_box).reshape(-1)[:4])
    sx, sy = (x2 - x1) / size, (y2 - y1) / size
    out = np.empty_like(pts)
    out[:, 0] = (pts[:, 0] - 1) * sx + x1
    out[:, 1] = (size - pts[:, 1]) * sy + y1
    z = (pts[:, 2] - 1) * ((sx + sy) / 2)
    out[:, 2] = z - (z.min() if len(z) else 0.0)
    return out.astype(np.float32)


def from_image(pts: np.ndarray, roi_box, size: int = CROP_SIZE) -> np.ndarray:
    """Inverse of :func:`to_image` for x and y (z is returned in crop scale, up to the lost
    shift): image ``(V, 2|3)`` -> crop coordinates ``(V, 2|3)`` float64."""
    pts = np.array(pts, dtype=np.float64)
    x1, y1, x2, y2 = (float(v) for v in np.asarray(roi_box).reshape(-1)[:4])
    sx, sy = (x2 - x1) / size, (y2 - y1) / size
    out = np.empty_like(pts)
    out[:, 0] = (pts[:, 0] - x1) / sx + 1
    out[:, 1] = size - (pts[:, 1] - y1) / sy
    if pts.shape[1] > 2:
        out[:, 2] = pts[:, 2] / ((sx + sy) / 2) + 1
    return out
