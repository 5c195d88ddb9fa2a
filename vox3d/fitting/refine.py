"""Multi-frame identity: one identity vector per person fitted jointly to all its frames.

Model (per person, frames ``f = 1..F``, observed 2D points ``p = 1..P`` in image pixels,
x right, y down; each point corresponds to one face-model vertex ``c_p``)::

    x_fp = s_f * Pi R_f (mean + B_id alpha + B_exp beta_f)[c_p] + t_f,   Pi = [[1,0,0],[0,-1,0]]

a weak-perspective camera per frame (rotation ``R_f``, scale ``s_f`` px per model unit,
translation ``t_f`` px; ``Pi`` flips the model's y-up axis to the image's y-down), one
identity ``alpha (K,)`` shared by all frames and an expression ``beta_f (J,)`` per frame.

Objective (MAP under Gaussian priors, robust data term)::

    sum_fp w_fp rho(|x_fp - y_fp| / (s0_f sigma_p)) + sum_k ((alpha_k - m_k) / d_k)^2
        + sum_f |beta_f / exp_std|^2

``rho`` is Huber's (squared inside ``huber_k`` noise units, linear outside) by iteratively
reweighted least squares: each outer round fixes the weights from the last residuals and
minimises the weighted squares with L-BFGS (float64).  Residuals are divided by the frame's
scale (``s0_f``, the starting pose's, held fixed), so ``sigma_p`` is in model units at the
face (cm for ICT): a point MediaPipe places loosely (``sigma_cm`` of the correspondence)
counts less.  A frame whose RMS residual exceeds ``frame_trim`` x the median frame's is
dropped (weight 0) in later rounds.
The identity prior is the model's (``m = 0``, ``d = id_std``) unless the caller gives one,
e.g. the regressor's calibrated per-person estimate and its posterior spread.

Observations: :func:`mediapipe_observations` (MediaPipe's 468-point face mesh through the
learned correspondence :data:`MP468_ICT_JSON`, ``bench/mp_correspondence.py``), or
:func:`regressor_observations` (the fit stage's own per-frame dense vertices, projected).

Cost: one L-BFGS problem of ``K + F (6 + J)`` unknowns per person; measured by
``bench/refine.py``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vox3d import paths
from vox3d.face.face_model import local_vertex_index
from vox3d.params import to_image, transform_vertices

#: MediaPipe face mesh points used (the 468 of the face-mesh model, no iris points).
N_MP_POINTS = 468
#: Learned MediaPipe-468 -> ICT vertex correspondence (``bench/mp_correspondence.py``).
MP468_ICT_JSON = paths.PACKAGE_DATA / "mediapipe468_ict.json"
CORRESPONDENCE_FORMAT = "vox3d mediapipe468-ict correspondence 1"


@dataclass(frozen=True)
class Correspondence:
    """Observed points -> face-model vertices.

    vertex: ``(P,) int64`` vertex index in the face model's *full* source topology.
    sigma: ``(P,) float64`` noise scale of each point, model units (cm for ICT).
    """

    vertex: np.ndarray
    sigma: np.ndarray


def load_mp_correspondence(path: str | os.PathLike = MP468_ICT_JSON) -> Correspondence:
    """Read and check a correspondence json; errors name the file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the MediaPipe correspondence: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != CORRESPONDENCE_FORMAT:
        raise ValueError(f"{path}: not a {CORRESPONDENCE_FORMAT!r} file")
    try:
        vertex = np.asarray(doc["ict_vertex"], dtype=np.int64)
        sigma = np.asarray(doc["sigma_cm"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: bad or missing field: {e}") from e
    if vertex.shape != (N_MP_POINTS,) or sigma.shape != (N_MP_POINTS,):
        raise ValueError(f"{path}: need {N_MP_POINTS} vertices and sigmas")
    if vertex.min() < 0 or not np.all(np.isfinite(sigma)) or sigma.min() <= 0:
        raise ValueError(f"{path}: negative vertex index or non-positive sigma")
    return Correspondence(vertex=vertex, sigma=sigma)


def local_vertices(model, full_index: np.ndarray) -> np.ndarray:
    """Indices into `model`'s vertices of full-topology vertex indices ``(P,)``
    (:func:`vox3d.face.face_model.local_vertex_index`); an error for any outside the subset."""
    local = local_vertex_index(model, full_index)
    missing = np.asarray(full_index).reshape(-1)[local < 0]
    if len(missing):
        raise ValueError(
            f"{len(missing)} corresponded vertices (e.g. {missing[:3].tolist()}) are not in the "
            f"{model.name} {model.subset_name!r} subset; load a larger subset"
        )
    return local


@dataclass(frozen=True)
class RefineConfig:
    """Settings of :func:`fit_identity` (see the module docstring)."""

    huber_k: float = 2.0
    exp_std: float = 0.5
    rounds: int = 3
    iters: int = 300
    frame_trim: float = 3.0
    #: multiplies every point's sigma (> 1 trusts the observations less)
    sigma_scale: float = 1.0


@dataclass(frozen=True)
class MultiFrameFit:
    """Result of :func:`fit_identity` for one person.

    id_coef: ``(K,)`` identity coefficients (model units, ICT: prior std 1).
    exp: ``(F, J)`` per-frame expression; rotation ``(F, 3, 3)``; scale ``(F,)`` px per
    model unit; translation ``(F, 2)`` px.
    rms: ``(F,)`` RMS residual per frame in model units at the face (cm for ICT).
    frame_weight: ``(F,)`` 1 for frames used in the last round, 0 for trimmed ones.
    """

    id_coef: np.ndarray
    exp: np.ndarray
    rotation: np.ndarray
    scale: np.ndarray
    translation: np.ndarray
    rms: np.ndarray
    frame_weight: np.ndarray


def init_pose(points3d: np.ndarray, obs: np.ndarray, valid: np.ndarray):
    """Weak-perspective pose from model points ``(P, 3)`` to image points ``(P, 2)``.

    Least-squares affine camera, then its 2x3 block's nearest scaled rotation rows
    (SVD).  Returns ``(s, R (3, 3), t (2,))`` in the convention of the module docstring.
    """
    X = np.c_[points3d[valid], np.ones(int(valid.sum()))]
    A, *_ = np.linalg.lstsq(X, obs[valid], rcond=None)  # (4, 2)
    M = A[:3].T * np.array([[1.0], [-1.0]])  # undo the y flip: rows of s R[:2]
    U, S, Vt = np.linalg.svd(M, full_matrices=False)
    r12 = U @ Vt
    R = np.vstack([r12, np.cross(r12[0], r12[1])])
    return float(S.mean()), R, A[3].copy()


def _rodrigues(w):
    """Rotation matrices ``(F, 3, 3)`` of axis-angle vectors ``w (F, 3)`` (torch)."""
    import torch

    theta = torch.sqrt((w * w).sum(-1, keepdim=True) + 1e-24)
    k = w / theta
    K = torch.zeros(w.shape[0], 3, 3, dtype=w.dtype, device=w.device)
    K[:, 0, 1], K[:, 0, 2] = -k[:, 2], k[:, 1]
    K[:, 1, 0], K[:, 1, 2] = k[:, 2], -k[:, 0]
    K[:, 2, 0], K[:, 2, 1] = -k[:, 1], k[:, 0]
    th = theta[..., None]
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(K)
    return eye + torch.sin(th) * K + (1 - torch.cos(th)) * (K @ K)


def fit_identity(
    model,
    vertex: np.ndarray,
    obs: np.ndarray,
    valid: np.ndarray,
    sigma: np.ndarray,
    cfg: RefineConfig = RefineConfig(),
    prior_mean: np.ndarray | None = None,
    prior_std: np.ndarray | None = None,
    device: str = "cpu",
) -> MultiFrameFit:
    """Fit one identity jointly to ``obs (F, P, 2)`` image points (module docstring).

    vertex: ``(P,)`` indices into `model`'s vertices (:func:`local_vertices`).
    valid: ``(F, P)`` bool, points observed.  sigma: ``(P,)`` noise, model units.
    prior_mean / prior_std: ``(K,)`` identity prior (default 0 / ``model.id_std``); the
    fit starts at the prior mean.  Deterministic for the same inputs, device and threads.
    """
    import torch

    obs = np.asarray(obs, np.float64)
    valid = np.asarray(valid, bool) & np.isfinite(obs).all(-1)
    F, P, _ = obs.shape
    if F == 0 or vertex.shape != (P,) or sigma.shape != (P,):
        raise ValueError(f"obs {obs.shape}, vertex {vertex.shape}, sigma {sigma.shape}")
    K, J = model.n_id, model.n_exp
    m0 = np.zeros(K) if prior_mean is None else np.asarray(prior_mean, np.float64)
    d0 = (
        np.asarray(model.id_std, np.float64)
        if prior_std is None
        else np.asarray(prior_std, np.float64)
    )
    dt = torch.float64
    dev = torch.device(device)
    mean = torch.as_tensor(model.mean[vertex], dtype=dt, device=dev)  # (P, 3)
    idb = torch.as_tensor(model.id_basis[:, vertex], dtype=dt, device=dev)  # (K, P, 3)
    exb = torch.as_tensor(model.exp_basis[:, vertex], dtype=dt, device=dev)  # (J, P, 3)
    # start: the prior-mean shape, neutral expression, per-frame affine pose
    start = model.mean[vertex].astype(np.float64) + np.tensordot(
        m0, model.id_basis[:, vertex].astype(np.float64), axes=1
    )
    s0, R0, t0 = [], [], []
    fw = np.ones(F)
    for f in range(F):
        if valid[f].sum() < 6:
            fw[f] = 0.0
            s0.append(1.0), R0.append(np.eye(3)), t0.append(np.zeros(2))
            continue
        s, R, t = init_pose(start, obs[f], valid[f])
        s0.append(s), R0.append(R), t0.append(t)
    if fw.sum() == 0:
        raise ValueError("no frame has 6 or more observed points")
    R0t = torch.as_tensor(np.asarray(R0), dtype=dt, device=dev)
    flip = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=dt, device=dev)
    y = torch.as_tensor(np.nan_to_num(obs), dtype=dt, device=dev)
    vmask = torch.as_tensor(valid, dtype=dt, device=dev)
    inv_sig = torch.as_tensor(1.0 / (sigma * cfg.sigma_scale), dtype=dt, device=dev)
    m0t = torch.as_tensor(m0, dtype=dt, device=dev)
    d0t = torch.as_tensor(d0, dtype=dt, device=dev)

    alpha = torch.zeros(K, dtype=dt, device=dev, requires_grad=True)  # offset from m0
    beta = torch.zeros(F, J, dtype=dt, device=dev, requires_grad=True)
    omega = torch.zeros(F, 3, dtype=dt, device=dev, requires_grad=True)
    logs = torch.as_tensor(np.log(s0), dtype=dt, device=dev).clone().requires_grad_(True)
    trans = torch.as_tensor(np.asarray(t0), dtype=dt, device=dev).clone().requires_grad_(True)
    params = [alpha, beta, omega, logs, trans]
    # residuals in model units at the face by the *starting* scale (a constant: dividing by
    # the fitted scale would reward a larger image scale with a smaller face)
    s_ref = torch.as_tensor(np.asarray(s0), dtype=dt, device=dev)

    def residuals():
        shape = mean + torch.tensordot(m0t + alpha, idb, dims=1)  # (P, 3)
        v = shape[None] + torch.tensordot(beta, exb, dims=1)  # (F, P, 3)
        R = _rodrigues(omega) @ R0t
        s = torch.exp(logs)
        x = s[:, None, None] * (v @ R.transpose(1, 2) @ flip.T) + trans[:, None]
        return (x - y) / s_ref[:, None, None], ((alpha / d0t) ** 2).sum(), (beta**2).sum()

    def distances():
        """Point distances ``(F, P)`` and per-frame RMS ``(F,)`` numpy, model units."""
        r, _, _ = residuals()
        cm = torch.sqrt((r * r).sum(-1))
        rms = torch.sqrt((vmask * cm**2).sum(1) / vmask.sum(1).clamp(min=1))
        return cm, rms.cpu().numpy()

    w = torch.as_tensor(fw[:, None], dtype=dt, device=dev) * vmask
    for _ in range(max(1, cfg.rounds)):
        opt = torch.optim.LBFGS(
            params, lr=1.0, max_iter=cfg.iters, line_search_fn="strong_wolfe", tolerance_grad=1e-9
        )

        def closure(opt=opt, w=w):
            opt.zero_grad()
            r, pa, pb = residuals()
            e2 = (r * r).sum(-1) * inv_sig**2
            loss = (w * e2).sum() + pa + pb / cfg.exp_std**2
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            cm, rms = distances()
            e = cm * inv_sig  # noise units
            hub = torch.where(e <= cfg.huber_k, torch.ones_like(e), cfg.huber_k / e)
            used = fw > 0
            med = float(np.median(rms[used]))
            fw = np.where(used & (rms <= cfg.frame_trim * med), 1.0, 0.0)
            if fw.sum() == 0:
                fw = used.astype(float)
            w = torch.as_tensor(fw[:, None], dtype=dt, device=dev) * vmask * hub
    with torch.no_grad():
        _, rms = distances()
        R = (_rodrigues(omega) @ R0t).cpu().numpy()
    return MultiFrameFit(
        id_coef=(m0 + alpha.detach().cpu().numpy()),
        exp=beta.detach().cpu().numpy(),
        rotation=R,
        scale=np.exp(logs.detach().cpu().numpy()),
        translation=trans.detach().cpu().numpy(),
        rms=rms,
        frame_weight=fw,
    )


# --------------------------------------------------------------------------------------
# observations


def mediapipe_observations(points: np.ndarray, corr: Correspondence, model):
    """MediaPipe meshes ``(F, 468, 2|3)`` px (NaN rows: no face) -> ``(vertex, obs, valid,
    sigma)`` for :func:`fit_identity` (vertex: local indices of `model`)."""
    pts = np.asarray(points, np.float64)
    if pts.ndim != 3 or pts.shape[1] != N_MP_POINTS:
        raise ValueError(f"MediaPipe points must be (F, {N_MP_POINTS}, 2|3), got {pts.shape}")
    obs = pts[..., :2]
    valid = np.isfinite(obs).all(-1)
    return local_vertices(model, corr.vertex), obs, valid, corr.sigma.copy()


def regressor_observations(
    model, params: np.ndarray, rois: np.ndarray, layout, vertex: np.ndarray, sigma: float
):
    """The fit stage's per-frame dense vertices as observations.

    params ``(F, 12 + K + J)`` (layout :class:`vox3d.params.ParamLayout`), rois ``(F, 4)``
    image px; vertex ``(P,)`` local indices.  Returns ``(vertex, obs (F, P, 2), valid,
    sigma (P,))`` with every point observed and the same `sigma` (model units).
    """
    obs = np.empty((len(params), len(vertex), 2))
    for f, (p, roi) in enumerate(zip(params, rois, strict=True)):
        p = np.asarray(p, np.float64)
        v = model.vertices(p[layout.shape], p[layout.exp])[vertex]
        obs[f] = to_image(transform_vertices(v, p[layout.pose].reshape(3, 4)), roi)[:, :2]
    return (
        np.asarray(vertex, np.int64),
        obs,
        np.ones(obs.shape[:2], bool),
        np.full(len(vertex), float(sigma)),
    )


def subsample_vertices(n_vertices: int, n: int) -> np.ndarray:
    """``n`` evenly spaced vertex indices of ``range(n_vertices)`` (deterministic)."""
    n = min(n, n_vertices)
    return np.unique(np.round(np.linspace(0, n_vertices - 1, n)).astype(np.int64))


__all__ = [
    "Correspondence",
    "MultiFrameFit",
    "RefineConfig",
    "fit_identity",
    "init_pose",
    "load_mp_correspondence",
    "local_vertices",
    "mediapipe_observations",
    "regressor_observations",
    "subsample_vertices",
]
