"""Per-identity robust shape: pool the identity coefficients of every kept frame of every
video of an identity into one shape vector.

Estimator (all per identity, coefficients in the face model's units, shape ``(K,)``):

1. **Frame outliers** (Mahalanobis): the frames' robust centre is the coordinate-wise
   median, their robust scale the per-coefficient MAD x 1.4826 (floored, see
   :func:`robust_scale`); a frame whose squared distance ``sum(((x - med) / scale)**2)``
   exceeds the chi-square quantile ``chi2.ppf(mahal_quantile, K)`` is dropped.  A diagonal
   robust covariance is used because an identity often has fewer frames than
   coefficients, where a full covariance is singular.
2. **Per-video medians** of the remaining frames: each video counts once, however long.
3. **Huber mean over videos** (per coefficient, iteratively reweighted, tuning constant
   ``huber_k`` in robust-scale units): a video whose median is far out (a badly fitted
   video) is down-weighted, not allowed to drag the estimate.

``spread`` is the per-coefficient robust standard deviation (MAD x 1.4826) of the kept
frames around their own video's median plus the spread of the video medians, i.e. how
much the frames of this identity disagree; ``n_frames`` / ``n_videos`` count what was used.

**Calibrated estimate** (ICT regressor only, :func:`calibrated_identity`): the per-frame
coefficients are regression outputs, shrunk toward the prior mean, and averaging frames
keeps that shrinkage.  Per mode k a Gaussian model, fitted on fresh renders of the
regressor's own generator (:func:`calibrate_identity`, stored as ``identity_calibration``
in the regressor's json by ``python -m vox3d.fitting.regressor_data calibrate``)::

    p_f = b_k + s_k theta + e_f,   theta ~ N(0, sigma_k^2),
    var(e_f) = v_k,   corr(e_f, e_g) = rho_k for two frames of one person,

gives the posterior mean of theta given the mean m of N frames::

    theta_hat = (m - b_k) s_k sigma_k^2 / (s_k^2 sigma_k^2 + v_k (rho_k + (1 - rho_k) / N)).

:func:`aggregate_identities` applies it to the robust pooled shape (N = the frames used)
when it is given a calibration; otherwise it writes the robust shape as before.

I/O: :func:`aggregate_identities` reads ``OUT/fit/<shard>.h5`` files (written by
:mod:`vox3d.fitting.fit`) and writes ``OUT/fit/identities.h5``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vox3d import __version__
from vox3d.fitting.fit_shard import FitShard
from vox3d.io import atomic_path, h5_attrs, h5_group, h5_new, h5_read, h5_str, h5_strings

MAD_TO_STD = 1.482602218505602  # 1 / Phi^-1(3/4): MAD of a normal -> its std
#: Format tag of an identity calibration (:func:`calibrate_identity`).
CALIBRATION_FORMAT = "vox3d identity calibration 1"
#: Arrays (K,) of a calibration dict.
CALIBRATION_KEYS = ("s", "bias", "v", "rho", "sigma")


@dataclass(frozen=True)
class IdentityEstimate:
    """Robust shape of one identity.

    shape: (K,) float64, the pooled identity coefficients.
    spread: (K,) float64, robust std of the frames' coefficients (see module doc).
    n_frames: frames used (after the Mahalanobis rejection).
    n_videos: videos used.
    n_outliers: frames rejected as Mahalanobis outliers.
    """

    shape: np.ndarray
    spread: np.ndarray
    n_frames: int
    n_videos: int
    n_outliers: int


def robust_scale(x: np.ndarray, center: np.ndarray, floor: np.ndarray | float) -> np.ndarray:
    """Per-column MAD x 1.4826 of `x` (N, K) around `center` (K,), at least `floor`."""
    mad = np.median(np.abs(x - center), axis=0) * MAD_TO_STD
    return np.maximum(mad, floor)


def mahalanobis_inliers(
    x: np.ndarray, quantile: float = 0.999, floor: np.ndarray | float = 1e-6
) -> np.ndarray:
    """Boolean (N,) mask of the rows of `x` (N, K) that are not far out.

    Squared robust Mahalanobis distance with a diagonal covariance (median centre, MAD
    scale) compared with the chi-square `quantile` with K degrees of freedom.  With fewer
    than 3 rows nothing is rejected (no robust scale can be told from 1-2 samples).
    """
    from scipy.stats import chi2

    n, k = x.shape
    if n < 3:
        return np.ones(n, dtype=bool)
    med = np.median(x, axis=0)
    scale = robust_scale(x, med, floor)
    d2 = np.sum(((x - med) / scale) ** 2, axis=1)
    keep = d2 <= chi2.ppf(quantile, k)
    if not keep.any():  # degenerate: keep the closest half rather than nothing
        keep = d2 <= np.median(d2)
    return keep


def huber_mean(
    x: np.ndarray,
    k: float = 1.345,
    floor: np.ndarray | float = 1e-6,
    iters: int = 50,
    tol: float = 1e-10,
) -> np.ndarray:
    """Per-column Huber M-estimate of location of `x` (N, K) -> (K,).

    Iteratively reweighted least squares from the median, scale fixed at the MAD x 1.4826
    of the data around the median (floored); residuals beyond ``k`` scales get weight
    ``k * scale / |r|``.  With one or two rows this is the plain mean.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] <= 2:
        return x.mean(axis=0)
    mu = np.median(x, axis=0)
    scale = robust_scale(x, mu, floor)
    for _ in range(iters):
        r = np.abs(x - mu) / scale
        w = np.where(r <= k, 1.0, k / np.maximum(r, 1e-300))
        new = np.sum(w * x, axis=0) / np.sum(w, axis=0)
        if np.max(np.abs(new - mu)) < tol:
            mu = new
            break
        mu = new
    return mu


def robust_identity_shape(
    coeffs: np.ndarray,
    video: np.ndarray,
    mahal_quantile: float = 0.999,
    huber_k: float = 1.345,
    scale_floor: np.ndarray | float = 1e-6,
) -> IdentityEstimate:
    """Pool the identity coefficients of one identity's frames.

    coeffs: (N, K) identity coefficients of the kept frames (N >= 1).
    video: (N,) any hashable-as-numpy labels telling which video each frame is from.
    scale_floor: scalar or (K,) lower bound of the robust scales (e.g. 1e-3 x the prior
        std), so that identical frames do not give a zero scale.
    """
    coeffs = np.asarray(coeffs, dtype=np.float64)
    video = np.asarray(video)
    if coeffs.ndim != 2 or coeffs.shape[0] == 0:
        raise ValueError(f"need (N>=1, K) coefficients, got shape {coeffs.shape}")
    if video.shape != (coeffs.shape[0],):
        raise ValueError(f"video labels {video.shape} do not match coefficients {coeffs.shape}")
    finite = np.isfinite(coeffs).all(axis=1)
    coeffs, video = coeffs[finite], video[finite]
    if coeffs.shape[0] == 0:
        raise ValueError("no finite coefficients")
    inl = mahalanobis_inliers(coeffs, mahal_quantile, scale_floor)
    x, v = coeffs[inl], video[inl]
    labels = np.unique(v)
    medians = np.stack([np.median(x[v == lab], axis=0) for lab in labels])
    shape = huber_mean(medians, huber_k, scale_floor)
    resid = np.concatenate([x[v == lab] - med for lab, med in zip(labels, medians, strict=True)])
    within = np.median(np.abs(resid), axis=0) * MAD_TO_STD
    between = (
        np.median(np.abs(medians - shape), axis=0) * MAD_TO_STD
        if len(labels) > 1
        else np.zeros_like(shape)
    )
    spread = np.sqrt(within**2 + between**2)
    return IdentityEstimate(
        shape=shape,
        spread=spread,
        n_frames=int(x.shape[0]),
        n_videos=int(len(labels)),
        n_outliers=int((~inl).sum()),
    )


# --------------------------------------------------------------------------------------
# calibrated multi-frame estimate


def clipped_normal_std(clip: float) -> float:
    """Standard deviation of ``clip(Z, -clip, clip)`` for ``Z ~ N(0, 1)`` (dimensionless).

    The generators draw standardised identities as ``N(0, 1)`` clipped to +-3
    (:func:`vox3d.synthetic.synth_rig.draw_face`), so the prior std of mode k is ``id_std_k x
    clipped_normal_std(3)`` (0.9975 id_std_k).
    """
    c = float(clip)
    phi = math.exp(-0.5 * c * c) / math.sqrt(2 * math.pi)
    tail = 0.5 * math.erfc(c / math.sqrt(2))  # P(Z > c)
    inside = (1 - 2 * tail) - 2 * c * phi  # E[Z^2; |Z| < c]
    return math.sqrt(inside + 2 * c * c * tail)


def calibrate_identity(
    pred: np.ndarray,
    true: np.ndarray,
    group: np.ndarray,
    sigma: np.ndarray | float | None = None,
) -> dict:
    """Fit the per-mode Gaussian frame model of the module docstring.

    pred: (M, K) per-frame estimates p (e.g. regressor outputs, coefficient units).
    true: (M, K) true coefficients theta (equal within a group).
    group: (M,) labels; frames of one label share a person (and their systematic error).
    sigma: (K,) or scalar prior std of theta; None = the std of the groups' true values.

    Per mode k: ``s`` and ``bias`` by least squares of p on theta (slope, intercept);
    the residual ``e = p - bias - s theta`` split by a one-way random-effects ANOVA over
    the groups (unbalanced groups: Searle's n0) into a between-group variance ``v rho``
    (shared within a person) and a within-group variance ``v (1 - rho)``; ``rho``
    clipped to [0, 1].  Needs at least 2 groups and one group with 2+ frames.

    Returns ``{"format", "s", "bias", "v", "rho", "sigma"}`` (each array a (K,) list of
    float, JSON-ready) plus ``n_samples``, ``n_groups``, ``r2`` (K,) (R^2 of p on theta).
    """
    pred = np.asarray(pred, np.float64)
    true = np.asarray(true, np.float64)
    if pred.ndim != 2 or pred.shape != true.shape:
        raise ValueError(f"pred {pred.shape} and true {true.shape} must be equal (M, K)")
    _, inv, counts = np.unique(np.asarray(group), return_inverse=True, return_counts=True)
    m, k = pred.shape
    g = len(counts)
    if g < 2 or m - g < 1:
        raise ValueError(f"need >= 2 groups and a group with 2+ frames ({m} frames, {g} groups)")
    tc = true - true.mean(0)
    s = np.sum(tc * (pred - pred.mean(0)), 0) / np.maximum(np.sum(tc**2, 0), 1e-300)
    bias = pred.mean(0) - s * true.mean(0)
    e = pred - bias - s * true  # (M, K)
    gsum = np.zeros((g, k))
    np.add.at(gsum, inv, e)
    gmean = gsum / counts[:, None]
    ss_within = np.sum((e - gmean[inv]) ** 2, 0)
    ss_between = np.sum(counts[:, None] * (gmean - e.mean(0)) ** 2, 0)
    ms_within = ss_within / (m - g)
    ms_between = ss_between / (g - 1)
    n0 = (m - np.sum(counts.astype(np.float64) ** 2) / m) / (g - 1)
    var_between = np.maximum((ms_between - ms_within) / n0, 0.0)
    v = var_between + ms_within
    rho = np.clip(var_between / np.maximum(v, 1e-300), 0.0, 1.0)
    if sigma is None:
        tg = np.zeros((g, k))
        np.add.at(tg, inv, true)
        sig = np.std(tg / counts[:, None], axis=0, ddof=1)
    else:
        sig = np.broadcast_to(np.asarray(sigma, np.float64), (k,))
    r2 = 1 - np.sum(e**2, 0) / np.maximum(np.sum((pred - pred.mean(0)) ** 2, 0), 1e-300)
    as_list = lambda a: [float(x) for x in a]  # noqa: E731
    return {
        "format": CALIBRATION_FORMAT,
        "s": as_list(s),
        "bias": as_list(bias),
        "v": as_list(v),
        "rho": as_list(rho),
        "sigma": as_list(sig),
        "r2": as_list(r2),
        "n_samples": int(m),
        "n_groups": int(g),
    }


def _calibration_arrays(calib: Mapping) -> dict[str, np.ndarray]:
    """The (K,) float64 arrays of a calibration dict (checked: equal lengths, finite)."""
    arr = {key: np.asarray(calib[key], np.float64) for key in CALIBRATION_KEYS}
    k = arr["s"].shape
    for key, a in arr.items():
        if a.ndim != 1 or a.shape != k or not np.isfinite(a).all():
            raise ValueError(f"identity calibration: {key} must be finite, shape {k}")
    return arr


def _mean_noise(c: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """Variance (K,) ``v (rho + (1 - rho) / n)`` of the noise of a mean of `n` >= 1 frames."""
    if n < 1:
        raise ValueError(f"need n >= 1 frames, got {n}")
    return c["v"] * (c["rho"] + (1 - c["rho"]) / n)


def calibrated_gain(calib: Mapping, n: int) -> np.ndarray:
    """Per-mode factor (K,) ``s sigma^2 / (s^2 sigma^2 + v (rho + (1 - rho) / n))`` that
    turns the bias-corrected mean of `n` >= 1 frames into the posterior mean of theta."""
    c = _calibration_arrays(calib)
    s, s2 = c["s"], c["sigma"] ** 2
    return s * s2 / (s * s * s2 + _mean_noise(c, n))


def calibrated_posterior_std(calib: Mapping, n: int) -> np.ndarray:
    """Posterior std (K,) of theta given the mean of `n` >= 1 frames (the model of
    :func:`calibrated_gain`): ``sqrt(sigma^2 noise / (s^2 sigma^2 + noise))``."""
    c = _calibration_arrays(calib)
    s, s2 = c["s"], c["sigma"] ** 2
    noise = _mean_noise(c, n)
    return np.sqrt(s2 * noise / (s * s * s2 + noise))


def calibrated_identity(mean: np.ndarray, n: int, calib: Mapping) -> np.ndarray:
    """Posterior mean (K,) of the identity given the pooled estimate ``mean (K,)`` of
    `n` frames (coefficient units; e.g. the robust shape of :func:`robust_identity_shape`
    with n = its ``n_frames``) under the calibration `calib` (:func:`calibrate_identity`)."""
    c = _calibration_arrays(calib)
    mean = np.asarray(mean, np.float64)
    if mean.shape != c["s"].shape:
        raise ValueError(f"estimate {mean.shape} and calibration {c['s'].shape} differ")
    return (mean - c["bias"]) * calibrated_gain(calib, n)


def calibrated_frames(frames: np.ndarray, calib: Mapping) -> np.ndarray:
    """Posterior mean (K,) from the plain mean of ``frames (N, K)`` (N = rows)."""
    frames = np.asarray(frames, np.float64)
    if frames.ndim != 2 or frames.shape[0] == 0:
        raise ValueError(f"need (N>=1, K) frames, got {frames.shape}")
    return calibrated_identity(frames.mean(0), frames.shape[0], calib)


def load_identity_calibration(regressor_json: str | os.PathLike) -> dict | None:
    """``identity_calibration`` of a regressor json (``X.json`` or its ``X.pth``), with
    ``face_model`` and ``n_id`` of the regressor added; None when it has none."""
    from pathlib import Path

    p = Path(regressor_json)
    if p.suffix != ".json":
        p = p.with_suffix(".json")
    meta = json.loads(p.read_text())
    cal = meta.get("identity_calibration")
    if not cal:
        return None
    _calibration_arrays(cal)
    return {**cal, "face_model": meta.get("face_model", "ict"), "n_id": int(meta["n_id"])}


def regressor_calibration(fit_config) -> tuple[dict | None, str | None]:
    """(identity calibration or None, the regressor file it came from) of a
    :class:`vox3d.fitting.fit.FitConfig`: the ICT regressor's json may carry one; BFM has none."""
    if fit_config.face_model != "ict":
        return None, None
    path = fit_config.regressor_file
    return load_identity_calibration(path), path


# --------------------------------------------------------------------------------------
# I/O: fit shards -> identities.h5


def gather_identity_frames(shard_paths) -> tuple[dict, str | None, int | None]:
    """The kept frames of every identity in fit shards (read in sorted path order):
    ``({identity: {"coeffs": [(n, K) float64], "video": [(n,) video path], "paths":
    [video path]}}, face_model, n_id)``; shards of different face models fail, naming the
    shard."""
    per_id: dict[str, dict[str, list]] = {}
    face_model, n_id = None, None
    for sp in sorted(str(p) for p in shard_paths):
        s = FitShard.read(sp, fields=("video", "keep", "params"))
        fm, k = str(s.attrs["face_model"]), int(s.attrs["n_id"])
        if face_model is None:
            face_model, n_id = fm, k
        elif (fm, k) != (face_model, n_id):
            raise ValueError(
                f"{sp}: face model {fm}/{k} differs from "
                f"the other shards ({face_model}/{n_id}); refit all shards with one config"
            )
        sl = s.layout.shape
        video, keep, params = s.frames["video"], s.frames["keep"].astype(bool), s.frames["params"]
        for vi, (vpath, ident) in enumerate(zip(s.video_paths, s.video_identities, strict=True)):
            entry = per_id.setdefault(ident, {"coeffs": [], "video": [], "paths": []})
            entry["paths"].append(vpath)
            sel = (video == vi) & keep
            if sel.any():
                entry["coeffs"].append(params[sel][:, sl].astype(np.float64))
                entry["video"].append(np.full(int(sel.sum()), vpath, dtype=object))
    return per_id, face_model, n_id


def aggregate_identities(
    shard_paths: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    mahal_quantile: float = 0.999,
    huber_k: float = 1.345,
    min_frames: int = 1,
    scale_floor: float = 1e-6,
    calibration: Mapping | None = None,
) -> dict:
    """Read fit shards, pool per identity, write ``identities.h5``; return a summary.

    Output datasets: ``identity`` (N_id,) utf-8, ``shape`` (N_id, K) float32, ``spread``
    (N_id, K) float32, ``n_frames``/``n_videos``/``n_outliers`` (N_id,) int64, and
    ``rejects/path``, ``rejects/reason`` (utf-8) for identities with fewer than
    `min_frames` usable frames.  Attributes: ``face_model``, ``n_id``, ``estimator``
    (json of the settings), ``version``.

    calibration: None (``shape`` = the robust pooled shape, the file exactly as before
    calibrations existed), or an identity calibration (:func:`load_identity_calibration`
    of the regressor that made the shards): ``shape`` = :func:`calibrated_identity` of the
    robust shape with N = ``n_frames``, the robust shape kept as ``shape_robust`` (N_id, K)
    float32, and ``estimator`` gains ``"estimate": "calibrated posterior mean"`` and the
    calibration's arrays.  Its ``face_model`` / ``n_id`` (when present) must match the
    shards'.
    """
    per_id, face_model, n_id = gather_identity_frames(shard_paths)
    if calibration is not None:
        cal_k = len(_calibration_arrays(calibration)["s"])
        want = (calibration.get("face_model", face_model), int(calibration.get("n_id", cal_k)))
        if face_model is not None and (want != (face_model, n_id) or cal_k != n_id):
            raise ValueError(
                f"identity calibration for {want[0]}/{want[1]} ({cal_k} modes) does not fit "
                f"shards of {face_model}/{n_id}: calibrate the regressor that made them"
            )
    names, shapes, spreads, nf, nv, no = [], [], [], [], [], []
    robust_shapes = []
    rejects: list[tuple[str, str]] = []
    for ident in sorted(per_id):
        e = per_id[ident]
        n_frames = sum(len(c) for c in e["coeffs"])
        if n_frames < max(1, min_frames):
            rejects.append(
                (
                    ident,
                    f"identity {ident}: no usable frame in {len(e['paths'])} video(s) "
                    f"({n_frames} kept, {min_frames} needed); see fit rejects for why",
                )
            )
            continue
        coeffs = np.concatenate(e["coeffs"])
        vids = np.concatenate(e["video"]).astype(str)
        est = robust_identity_shape(coeffs, vids, mahal_quantile, huber_k, scale_floor)
        names.append(ident)
        robust_shapes.append(est.shape)
        shapes.append(
            est.shape
            if calibration is None
            else calibrated_identity(est.shape, est.n_frames, calibration)
        )
        spreads.append(est.spread)
        nf.append(est.n_frames)
        nv.append(est.n_videos)
        no.append(est.n_outliers)
    k = n_id if n_id is not None else 0
    with atomic_path(out_path) as tmp, h5_new(tmp) as f:
        h5_strings(f, "identity", names)
        for name, data, dt in (
            ("shape", np.asarray(shapes).reshape(len(names), k), np.float32),
            ("spread", np.asarray(spreads).reshape(len(names), k), np.float32),
            ("n_frames", nf, np.int64),
            ("n_videos", nv, np.int64),
            ("n_outliers", no, np.int64),
        ):
            f.create_dataset(name, data=np.asarray(data, dt), track_times=False)
        if calibration is not None:
            f.create_dataset(
                "shape_robust",
                data=np.asarray(robust_shapes, np.float32).reshape(len(names), k),
                track_times=False,
            )
        g = h5_group(f, "rejects")
        h5_strings(g, "path", [r[0] for r in rejects])
        h5_strings(g, "reason", [r[1] for r in rejects])
        f.attrs["face_model"] = face_model or ""
        f.attrs["n_id"] = k
        estimator = {
            "frames": "diagonal robust Mahalanobis rejection (median, MAD)",
            "mahal_quantile": mahal_quantile,
            "videos": "per-video median",
            "pool": "Huber mean over videos",
            "huber_k": huber_k,
            "min_frames": min_frames,
        }
        if calibration is not None:
            estimator["estimate"] = (
                "calibrated posterior mean (vox3d.fitting.identities.calibrated_identity of the "
                "pooled shape, N = n_frames); shape_robust = the pooled shape"
            )
            estimator["calibration"] = {
                key: calibration[key]
                for key in (*CALIBRATION_KEYS, "format", "n_samples", "n_groups", "data_seed")
                if key in calibration
            }
        f.attrs["estimator"] = json.dumps(estimator, sort_keys=True)
        f.attrs["version"] = __version__
    summary = {"identities": len(names), "rejected": len(rejects), "rejects": rejects}
    if calibration is not None:
        summary["estimate"] = "calibrated"
    return summary


#: Per-identity counts of identities.h5.
_COUNTS = ("n_frames", "n_videos", "n_outliers")


class IdentitiesFileError(ValueError):
    """A file that is not a readable ``identities.h5`` (the message names it)."""


@dataclass(frozen=True)
class IdentitiesFile:
    """``fit/identities.h5`` as :func:`aggregate_identities` writes it; its one reader.

    ids: identity names; shape, spread: ``(N, K)`` float32 (the per-identity shape
    coefficients, calibrated when the fit had a calibration, and their robust spread);
    n_frames, n_videos, n_outliers: ``(N,)`` int64; shape_robust: ``(N, K)`` float32 (the
    pooled shape before calibration) or None; face_model, n_id: the attributes; rejects:
    ``(path, reason)`` of the rejected identities' inputs; attrs: every attribute (str
    decoded); missing: the per-identity datasets the file lacks (spread and the counts are
    then zero: files written by hand, as tests do; the writer always writes them)."""

    path: str
    ids: tuple[str, ...]
    shape: np.ndarray
    spread: np.ndarray
    n_frames: np.ndarray
    n_videos: np.ndarray
    n_outliers: np.ndarray
    shape_robust: np.ndarray | None
    face_model: str
    n_id: int
    rejects: tuple[tuple[str, str], ...]
    attrs: dict
    missing: tuple[str, ...] = ()

    @classmethod
    def read(cls, path: str | os.PathLike) -> IdentitiesFile:
        with h5_read(path, IdentitiesFileError) as f:
            try:
                ids = tuple(h5_str(x) for x in f["identity"][()])
                n = len(ids)
                shape = np.asarray(f["shape"][()], np.float32).reshape(n, -1)
                k = shape.shape[1]
                missing = tuple(c for c in ("spread", *_COUNTS) if c not in f)
                spread = (
                    np.zeros((n, k), np.float32)
                    if "spread" in missing
                    else np.asarray(f["spread"][()], np.float32).reshape(n, k)
                )
                counts = {
                    c: np.zeros(n, np.int64) if c in missing else np.asarray(f[c][()], np.int64)
                    for c in _COUNTS
                }
                robust = (
                    np.asarray(f["shape_robust"][()], np.float32).reshape(n, k)
                    if "shape_robust" in f
                    else None
                )
                rejects = tuple(
                    (h5_str(p), h5_str(r))
                    for p, r in zip(
                        f["rejects/path"][()] if "rejects/path" in f else [],
                        f["rejects/reason"][()] if "rejects/reason" in f else [],
                        strict=True,
                    )
                )
                attrs = h5_attrs(f)
            except (KeyError, ValueError) as e:
                raise IdentitiesFileError(f"{path}: not a vox3d identities file ({e})") from e
        return cls(
            str(path), ids, shape, spread, counts["n_frames"], counts["n_videos"],
            counts["n_outliers"], robust, str(attrs.get("face_model", "")),
            int(attrs.get("n_id", k)), rejects, attrs, missing,
        )  # fmt: skip

    def shapes(self) -> dict[str, np.ndarray]:
        """``{identity: (K,) float64}`` the per-identity shapes."""
        return {i: s.astype(np.float64) for i, s in zip(self.ids, self.shape, strict=True)}


def read_identity_rejects(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rejects rows (path, stage, reason) stored in an ``identities.h5``."""
    return [{"path": p, "stage": "fit", "reason": r} for p, r in IdentitiesFile.read(path).rejects]
