"""Face-shape metrics: ARE face ratios, RMSE after alignment, bootstrap intervals.

ARE (absolute ratio error, the Cross-Modal Perceptionist's metric, facts from its
evaluation script): for a mesh, four distances between vertex pairs -- ear (ER), forehead
(FR), mid-face (MR), cheek (CR) -- each divided by the outer inter-ocular distance (OICD) of
the same mesh.  The error of a ratio is ``|predicted - target|``, averaged over an
identity's predictions (one per utterance), then over identities; the headline is the mean
of the four.  Ratios are scale free, so meshes in any unit compare.

RMSE: point-to-point root mean square distance over the given vertices (the face area)
after aligning the prediction onto the target by a rigid transform (rotation +
translation, Kabsch/Umeyama without scale; ``scale=True`` gives a similarity transform).
Units are the meshes' units (ICT-FaceKit: cm).

A ratio whose pair the mesh does not have (``None`` in the pairs, e.g. the ear on
``bfm_noneck_v3``, see :func:`vox3d.face.are_selection.select_are_pairs`) is NaN, and the headline
is then the mean of the available ratios.

Intervals: percentile bootstrap over identities (resample identities with replacement,
recompute the mean), 95% by default, seeded.  Comparisons of two methods on the same
identities: :func:`paired_bootstrap` (the difference's mean, 95% interval, two-sided p).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from vox3d.config import default

#: Ratio names in column order, and the face model ``are_pairs`` key each one uses.
RATIOS: tuple[str, ...] = ("er", "fr", "mr", "cr")
RATIO_PAIR_KEY: dict[str, str] = {"er": "ear", "fr": "forehead", "mr": "mid", "cr": "cheek"}
OICD_KEY = "oicd"


def _pair(pairs: Mapping[str, object], key: str) -> tuple[int, int] | None:
    if key not in pairs:
        raise KeyError(f"face model are_pairs has no {key!r} pair (keys: {sorted(pairs)})")
    if pairs[key] is None:
        return None  # not available on this mesh
    p = np.asarray(pairs[key]).reshape(-1)
    if p.size != 2:
        raise ValueError(f"are_pairs[{key!r}] must be two vertex indices, got {p.tolist()}")
    if (p < 0).any():
        raise ValueError(f"are_pairs[{key!r}] = {p.tolist()}: the face model does not define it")
    return int(p[0]), int(p[1])


def _dist(v: np.ndarray, ij: tuple[int, int]) -> np.ndarray:
    return np.linalg.norm(v[..., ij[0], :] - v[..., ij[1], :], axis=-1)


def face_ratios(vertices: np.ndarray, pairs: Mapping[str, object]) -> np.ndarray:
    """Face ratios of meshes.

    vertices: ``(..., V, 3)`` any unit; pairs: face model ``are_pairs`` (keys ``oicd``,
    ``ear``, ``forehead``, ``mid``, ``cheek``; each two vertex indices).
    Returns ``(..., 4)`` float64: ER, FR, MR, CR (distance / OICD); NaN for a ratio whose
    pair is None (unavailable on this mesh).  The OICD pair is required.
    """
    v = np.asarray(vertices, dtype=np.float64)
    oicd_pair = _pair(pairs, OICD_KEY)
    if oicd_pair is None:
        raise ValueError("are_pairs['oicd'] is required: every ratio is divided by it")
    oicd = _dist(v, oicd_pair)
    if np.any(oicd <= 0):
        raise ValueError("outer inter-ocular distance is zero: degenerate mesh")
    cols = []
    for r in RATIOS:
        ij = _pair(pairs, RATIO_PAIR_KEY[r])
        cols.append(np.full(oicd.shape, np.nan) if ij is None else _dist(v, ij) / oicd)
    return np.stack(cols, axis=-1)


def are_errors(pred_ratios: np.ndarray, target_ratios: np.ndarray) -> np.ndarray:
    """``|pred - target|`` per ratio; pred ``(N, 4)`` (an identity's predictions), target
    ``(4,)``.  Returns ``(4,)``: the mean over the N predictions."""
    pred = np.atleast_2d(np.asarray(pred_ratios, dtype=np.float64))
    return np.abs(pred - np.asarray(target_ratios, dtype=np.float64)[None]).mean(axis=0)


def align(src: np.ndarray, dst: np.ndarray, scale: bool = False) -> np.ndarray:
    """Align ``src (V, 3)`` onto ``dst (V, 3)`` by least squares (Umeyama 1991).

    Rigid (rotation + translation, no reflection) by default; ``scale=True`` adds a
    uniform scale (similarity).  Returns the transformed ``src`` ``(V, 3)`` float64.
    """
    return similarity_transform(src, dst, scale=scale)(src)


def similarity_transform(src: np.ndarray, dst: np.ndarray, scale: bool = True):
    """The least-squares transform of ``src (V, 3)`` onto ``dst (V, 3)`` (Umeyama 1991) as a
    function of points ``(..., 3)`` -> ``(..., 3)`` float64: rotation + translation, plus a
    uniform scale when `scale` (the default here; :func:`align` applies it rigidly)."""
    a = np.asarray(src, dtype=np.float64)
    b = np.asarray(dst, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"align needs two (V, 3) arrays, got {a.shape} and {b.shape}")
    ma, mb = a.mean(0), b.mean(0)
    a0, b0 = a - ma, b - mb
    cov = b0.T @ a0 / len(a)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    rot = u @ np.diag(d) @ vt
    c = 1.0
    if scale:
        var_a = (a0**2).sum() / len(a)
        c = float((s * d).sum() / var_a) if var_a > 0 else 1.0

    def apply(points: np.ndarray) -> np.ndarray:
        return c * (np.asarray(points, dtype=np.float64) - ma) @ rot.T + mb

    return apply


def aligned_rmse(pred: np.ndarray, target: np.ndarray, scale: bool = False) -> float:
    """Point-to-point RMSE between ``pred`` and ``target`` ``(V, 3)`` after :func:`align`."""
    t = np.asarray(target, dtype=np.float64)
    p = align(pred, t, scale=scale)
    return float(np.sqrt(((p - t) ** 2).sum(axis=1).mean()))


def identity_errors(
    pred_vertices: np.ndarray,
    target_vertices: np.ndarray,
    pairs: Mapping[str, object],
    metric_idx: np.ndarray | None = None,
    scale: bool = False,
) -> dict[str, float]:
    """Errors of one identity.

    pred_vertices: ``(N, V, 3)`` one mesh per prediction (utterance); target_vertices
    ``(V, 3)``; ``metric_idx`` the vertex indices (face area) used for RMSE (all if None).
    Returns ``are_er, are_fr, are_mr, are_cr, are_mean, rmse`` (each averaged over the N;
    ``are_mean`` over the available ratios).
    """
    pv = np.asarray(pred_vertices, dtype=np.float64)
    if pv.ndim == 2:
        pv = pv[None]
    tv = np.asarray(target_vertices, dtype=np.float64)
    err = are_errors(face_ratios(pv, pairs), face_ratios(tv, pairs))
    idx = slice(None) if metric_idx is None else np.asarray(metric_idx)
    rmse = float(np.mean([aligned_rmse(p[idx], tv[idx], scale=scale) for p in pv]))
    out = {f"are_{r}": float(e) for r, e in zip(RATIOS, err, strict=True)}
    out["are_mean"] = float(np.nanmean(err)) if np.isfinite(err).any() else float("nan")
    out["rmse"] = rmse
    return out


METRIC_COLUMNS: tuple[str, ...] = tuple(f"are_{r}" for r in RATIOS) + ("are_mean", "rmse")


def bootstrap_ci(
    values: np.ndarray,
    n_boot: int = 1000,
    seed: int = default("evaluate.seed"),
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over rows (identities).

    values: ``(n, k)`` one row per identity.  Returns ``(lo (k,), hi (k,))``.  With
    ``n_boot == 0`` or a single identity both bounds are NaN (no interval).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    n = len(v)
    if n_boot <= 0 or n < 2:
        nan = np.full(v.shape[1], np.nan)
        return nan, nan.copy()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    means = v[idx].mean(axis=1)  # (n_boot, k)
    a = (1.0 - level) / 2.0
    return np.quantile(means, a, axis=0), np.quantile(means, 1.0 - a, axis=0)


def summarise(
    per_identity: Sequence[Mapping[str, float]],
    n_boot: int = 1000,
    seed: int = default("evaluate.seed"),
) -> dict[str, float]:
    """Mean over identities of each metric column, with ``*_lo`` / ``*_hi`` bounds and
    ``n_identities``."""
    if not per_identity:
        raise ValueError("no identities to summarise")
    vals = np.array([[row[c] for c in METRIC_COLUMNS] for row in per_identity], dtype=np.float64)
    lo, hi = bootstrap_ci(vals, n_boot=n_boot, seed=seed)
    out: dict[str, float] = {}
    for j, c in enumerate(METRIC_COLUMNS):
        out[c] = float(vals[:, j].mean())
        out[f"{c}_lo"] = float(lo[j])
        out[f"{c}_hi"] = float(hi[j])
    out["n_identities"] = len(per_identity)
    return out


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    n_boot: int = 1000,
    seed: int = default("evaluate.seed"),
    level: float = 0.95,
    stat=None,
) -> dict[str, float]:
    """Paired bootstrap over identities of ``stat(a) - stat(b)``.

    a, b: ``(n,)`` or ``(n, m)`` per-identity values of two methods on the same identities
    (same row = same identity).  ``stat`` maps ``(..., n, m)`` -> ``(...)``; default the mean
    over identities of column 0.  The same resampled identities (``n_boot`` draws with
    replacement, ``numpy.random.default_rng(seed)``) enter both methods.

    Returns ``delta`` (on the data), ``lo`` / ``hi`` (percentile interval of the resampled
    deltas at `level`) and ``p``, two-sided: ``2 * min((1 + #(delta* <= 0)) / (B + 1),
    (1 + #(delta* >= 0)) / (B + 1))`` capped at 1.  Identical inputs give delta 0 and p 1; a
    difference of one sign on every identity gives p = 2 / (B + 1).  Without resampling
    (``n_boot == 0``) or with fewer than two identities, lo, hi and p are NaN.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired values need the same shape, got {x.shape} and {y.shape}")
    if x.ndim == 1:
        x, y = x[:, None], y[:, None]
    if stat is None:

        def stat(v):
            return v[..., 0].mean(axis=-1)

    delta = float(stat(x) - stat(y))
    out = {"delta": delta, "lo": float("nan"), "hi": float("nan"), "p": float("nan")}
    n = len(x)
    if n_boot <= 0 or n < 2 or not np.isfinite(delta):
        return out
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boots = stat(x[idx]) - stat(y[idx])  # (n_boot,)
    tail = (1.0 - level) / 2.0
    out["lo"], out["hi"] = (float(q) for q in np.quantile(boots, [tail, 1.0 - tail]))
    below = (1 + np.count_nonzero(boots <= 0)) / (n_boot + 1)
    above = (1 + np.count_nonzero(boots >= 0)) / (n_boot + 1)
    out["p"] = float(min(1.0, 2.0 * min(below, above)))
    return out


def pooled_r2_stat(v: np.ndarray) -> np.ndarray:
    """``1 - sum(col 0) / sum(col 1)`` over identities of ``(..., n, 2)`` rows (squared error,
    squared deviation of the reference): the pooled R^2, for :func:`paired_bootstrap`."""
    return 1.0 - v[..., 0].sum(axis=-1) / np.maximum(v[..., 1].sum(axis=-1), 1e-300)
