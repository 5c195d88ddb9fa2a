"""Accuracy of an ICT regressor: the metrics, their table, held-out render caches.

:func:`evaluate_cache` runs a model on a held-out render cache of the corpus's renderer
(:mod:`vox3d.fitting.regressor_cache`) and reports :func:`accuracy_tables`, which
:func:`format_accuracy` prints.
"""

from __future__ import annotations

import os

import numpy as np

from vox3d.face.metrics import align
from vox3d.fitting.ict_generator import GenModel
from vox3d.fitting.regressor_cache import load_cache
from vox3d.params import pose_angles_deg_batch

YAW_BINS = ((0.0, 20.0), (20.0, 40.0), (40.0, 60.0), (60.0, 75.0), (75.0, 90.0))
#: Identity modes whose R^2 / slope :func:`accuracy_tables` reports (the leading ones).
R2_MODES = 10


def accuracy_tables(gm: GenModel, pred: np.ndarray, y: np.ndarray, yaw: np.ndarray) -> dict:
    """Metrics of predicted vs true parameters (B, P), true yaw (B,) degrees.

    Per yaw bin (|yaw| degrees) and overall: ``vertex_mm`` mean face-area (narrow face)
    vertex error of the shape + expression (model space, mm, no pose), ``id_vertex_mm``
    of the identity alone, ``mean_face_mm`` the same for the mean face (baseline),
    ``nme`` the 68-landmark 2-D error in the crop over sqrt(w*h) of the true landmark
    box, ``id_sim_mm`` the identity's narrow-face error after a similarity alignment
    (Umeyama with scale: absolute size and placement are invisible in an image),
    ``mean_face_sim_mm`` the same for the mean face, ``id_sim_ratio`` their ratio, and
    ``yaw_err_deg`` the mean |yaw error| (deg, yaw read from the predicted pose as the
    fit stage reads it); overall ``id_r2`` / ``id_slope`` / ``id_spread`` of the leading
    :data:`R2_MODES` identity coefficients (R^2 of predicted vs true over the samples,
    least-squares slope of predicted on true, std ratio) and their means.
    """
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


def predict_crops(model, crops: np.ndarray, device: str = "cpu", batch_size: int = 500):
    """Raw (whitened) outputs ``(N, P) float32`` of crops ``(N, 120, 120, 3) uint8``."""
    import torch

    from vox3d.face.regressor import normalize_crops

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
    (:mod:`vox3d.fitting.regressor_data` with ``--heldout``); ``n_rendered`` counts all."""
    d = load_cache(heldout, keys=("crops", "params", "euler"))
    pred = predict_crops(model, d["crops"], device) * std + mean
    acc = accuracy_tables(gm, pred.astype(np.float64), d["params"].astype(np.float64),
                          d["euler"][:, 0].astype(np.float64))  # fmt: skip
    acc["n_rendered"] = int(len(load_cache(heldout, valid_only=False, keys=("valid",))["valid"]))
    return acc
