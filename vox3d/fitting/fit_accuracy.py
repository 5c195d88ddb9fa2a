"""Identity accuracy of the fit against a known truth (the synthetic corpus).

How much identity do the fitted shapes (``OUT/fit/identities.h5``, or single frames of the
fit shards) carry?  Each measure below is built so that a shape-blind answer (the mean face
for everyone, or somebody else's face) scores badly, and the truth scores perfectly.

Meshes are built on the face area (ICT-FaceKit: the narrow face area, vertices 0-6705, set
``narrow_face``) from identity coefficients, neutral expression, no pose, in model units
(ICT: cm); distances are reported in mm.  Per identity (with N predictions: one for the
robust aggregate, one per kept frame for single frames; each column the median over the N):

* ``err_raw_mm``: mean per-vertex distance between the fitted and the true mesh, as they
  are (both in the model's frame, so no alignment is needed to compare them);
* ``err_sim_mm``: the same after a similarity alignment (rotation + translation + uniform
  scale, :func:`vox3d.face.metrics.align`) of the fitted mesh onto the true one: what is left
  is shape, not size or placement;
* ``err_norm_pct``: scale-normalised: both meshes centred and scaled to unit RMS size
  (root mean square distance of the vertices from their centroid), the fitted one rigidly
  aligned onto the true one, the mean per-vertex distance in percent of the RMS size;
* ``mf_*``: the same three errors of the population mean face (all coefficients 0), and
  ``ratio_*`` = fitted / mean face: 1.0 means the fit knows no more than the mean face;
* ``are_er``, ``are_fr``, ``are_mr``, ``are_cr``, ``are_mean``: ARE of the fitted against
  the true mesh (:func:`vox3d.face.metrics.face_ratios` with the face model's ``are_pairs``),
  ``mf_are_mean`` the mean face's and ``ratio_are`` their ratio;
* ``true_c<m>``, ``fit_c<m>``: the coefficients of modes 0-9 (fitted: median over the N).

Per group of identities (summary rows ``held_out``, ``train``, ``all``): the per-identity
errors averaged over identities (``ratio_*`` as the ratio of those means), and measures
across identities, pooled over every prediction of the group (x = true, y = fitted
coefficient of mode m; N predictions of an identity count N times):

* ``slope_m<m>``: least-squares slope of y on x, ``cov(x, y) / var(x)`` (1 = full identity
  signal, 0 = none, < 1 = shrunk towards the mean);
* ``r2_m<m>``: ``1 - sum (y - x)^2 / sum (x - mean(x))^2`` (the fitted value taken as a
  prediction of the true one, not a fitted line: the mean face scores <= 0, a shuffle ~ -1);
* ``corr2_m<m>``: the squared Pearson correlation of x and y (0 when either is constant);
* ``*_mean``: the mean of those over the modes;
* ``r2_vertex``: ``1 - sum_i |p_i - t_i|^2 / sum_i |t_i - tbar|^2`` over the face-area
  vertices (``tbar`` the mean true mesh of the group); ``r2_vertex_sim`` the same with each
  ``p_i`` similarity-aligned onto ``t_i`` and the denominator the residual of ``tbar``
  aligned the same way (so the group's mean shape scores exactly 0 after alignment too).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vox3d.config import default
from vox3d.face.face_model import face_model_from_config, face_model_section, restrict
from vox3d.face.metrics import RATIOS, align, face_ratios
from vox3d.fitting.fit_shard import FitShard
from vox3d.fitting.identities import IdentitiesFile
from vox3d.io import write_tsv
from vox3d.media.split import read_meta, split_identities
from vox3d.synthetic.ground_truth import GroundTruth

#: Vertex set of the face model on which shapes are compared (ICT: vertices 0-6705).
FACE_SET = "narrow_face"
#: Identity modes reported one by one (modes 0 .. N_MODES - 1).
N_MODES = 10
#: Millimetres per model unit.
MM_PER_UNIT: dict[str, float] = {"m": 1000.0, "cm": 10.0, "mm": 1.0, "um": 1e-3}
#: Summary row names (column ``identity``; column ``set`` is ``summary``).
GROUPS: tuple[str, ...] = ("held_out", "train", "all")

#: Predictions turned into meshes at a time (memory: 256 x V x 3 float64, 41 MB for ICT).
_CHUNK = 256

_ERR = ("err_raw_mm", "err_sim_mm", "err_norm_pct")
_ARE = tuple(f"are_{r}" for r in RATIOS) + ("are_mean",)


def columns(n_modes: int = N_MODES) -> tuple[str, ...]:
    """Columns of ``accuracy.tsv`` (identity rows and summary rows share them)."""
    modes = range(n_modes)
    return (
        ("identity", "set", "n_identities", "n_predictions")
        + _ERR
        + tuple(f"mf_{c}" for c in _ERR)
        + ("ratio_raw", "ratio_sim", "ratio_norm")
        + _ARE
        + ("mf_are_mean", "ratio_are")
        + tuple(f"{s}_m{m}" for s in ("slope", "r2", "corr2") for m in modes)
        + ("slope_mean", "r2_mean", "corr2_mean", "r2_vertex", "r2_vertex_sim")
        + tuple(f"true_c{m}" for m in modes)
        + tuple(f"fit_c{m}" for m in modes)
    )


@dataclass(frozen=True)
class FaceArea:
    """A linear face model on the vertices where shapes are compared.

    mean: ``(V, 3)`` float64, model units; basis: ``(K, V, 3)`` float64 identity modes;
    triangles: ``(F, 3)`` int32 (indices into the area); are_pairs: the model's ARE pairs
    re-indexed into the area; mm_per_unit: millimetres per model unit.
    """

    mean: np.ndarray
    basis: np.ndarray
    triangles: np.ndarray
    are_pairs: Mapping[str, tuple[int, int]]
    mm_per_unit: float

    @property
    def n_modes(self) -> int:
        return int(self.basis.shape[0])

    def meshes(self, coef: np.ndarray) -> np.ndarray:
        """Identity coefficients ``(..., K')`` (``K' <= K``: the leading modes) ->
        vertices ``(..., V, 3)`` float64."""
        c = np.asarray(coef, dtype=np.float64)
        k = c.shape[-1]
        if k > self.n_modes:
            raise ValueError(f"{k} identity coefficients, the face area has {self.n_modes} modes")
        v = self.mean.shape[0]
        flat = c.reshape(-1, k) @ self.basis[:k].reshape(k, v * 3)
        return flat.reshape(*c.shape[:-1], v, 3) + self.mean


def face_area(model, vertex_set: str = FACE_SET) -> FaceArea:
    """The :class:`FaceArea` of a :class:`vox3d.face.face_model.FaceModel` on ``vertex_set``
    (ICT: ``narrow_face``; a model without that set, such as BFM, uses all its vertices)."""
    idx = model.vertex_sets.get(vertex_set)
    if idx is not None and len(idx) < model.n_vertices:
        model = restrict(model, np.sort(np.asarray(idx, dtype=np.int64)), vertex_set)
    unit = str(model.units)
    if unit not in MM_PER_UNIT:
        raise ValueError(f"face model units {unit!r} unknown (one of {sorted(MM_PER_UNIT)})")
    return FaceArea(
        mean=np.asarray(model.mean, dtype=np.float64),
        basis=np.asarray(model.id_basis, dtype=np.float64),
        triangles=np.asarray(model.triangles, dtype=np.int32),
        are_pairs=dict(model.are_pairs),
        mm_per_unit=MM_PER_UNIT[unit],
    )


# --------------------------------------------------------------------------------------
# shape errors of one mesh


def normalise(vertices: np.ndarray) -> np.ndarray:
    """``(V, 3)`` -> the mesh centred on its centroid and scaled to unit RMS size
    (``sqrt(mean |v - centroid|^2) = 1``), float64."""
    v = np.asarray(vertices, dtype=np.float64)
    v0 = v - v.mean(axis=0)
    rms = float(np.sqrt((v0**2).sum(axis=1).mean()))
    if rms <= 0:
        raise ValueError("degenerate mesh: all vertices coincide")
    return v0 / rms


def _mean_dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b, axis=1).mean())


def shape_errors(pred: np.ndarray, true: np.ndarray, mm_per_unit: float = 10.0) -> dict:
    """Errors of one predicted mesh ``(V, 3)`` against the true one ``(V, 3)`` (model units).

    Returns ``err_raw_mm`` (as they are), ``err_sim_mm`` (after a similarity alignment of
    ``pred`` onto ``true``) in mm, and ``err_norm_pct`` (both normalised by
    :func:`normalise`, ``pred`` rigidly aligned) in percent of the RMS size.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    tn = normalise(t)
    return {
        "err_raw_mm": _mean_dist(p, t) * mm_per_unit,
        "err_sim_mm": _mean_dist(align(p, t, scale=True), t) * mm_per_unit,
        "err_norm_pct": _mean_dist(align(normalise(p), tn, scale=False), tn) * 100.0,
    }


def are_of(pred: np.ndarray, true: np.ndarray, pairs: Mapping[str, object]) -> dict:
    """ARE of one predicted mesh against the true one: ``are_er .. are_cr`` = |ratio
    difference|, ``are_mean`` their mean (scale free).  A ratio the face model has no pair
    for is NaN and left out of the mean (:func:`vox3d.face.metrics.face_ratios`)."""
    e = np.abs(face_ratios(pred, pairs) - face_ratios(true, pairs))
    out = {f"are_{r}": float(x) for r, x in zip(RATIOS, e, strict=True)}
    out["are_mean"] = float(np.nanmean(e)) if np.isfinite(e).any() else float("nan")
    return out


# --------------------------------------------------------------------------------------
# measures across identities


def mode_stats(fitted: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """Per column (mode) of ``fitted`` and ``true`` ``(N, M)``: ``slope`` (least squares of
    fitted on true), ``r2`` (``1 - SS_res / SS_tot`` of fitted taken as the true value) and
    ``corr2`` (squared Pearson correlation; 0 when either column is constant), each
    ``(M,)``.  A column whose true values are all equal has NaN slope and R^2."""
    y = np.asarray(fitted, dtype=np.float64)
    x = np.asarray(true, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"need two (N, M) arrays, got {y.shape} and {x.shape}")
    xc, yc = x - x.mean(0), y - y.mean(0)
    sxx, syy, sxy = (xc**2).sum(0), (yc**2).sum(0), (xc * yc).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(sxx > 0, sxy / sxx, np.nan)
        r2 = np.where(sxx > 0, 1.0 - ((y - x) ** 2).sum(0) / sxx, np.nan)
        corr2 = np.where((sxx > 0) & (syy > 0), sxy**2 / (sxx * syy), 0.0)
    return {"slope": slope, "r2": r2, "corr2": corr2}


def vertex_r2(pred: np.ndarray, true: np.ndarray, similarity: bool = False) -> float:
    """Face-area vertex R^2 of ``pred`` against ``true`` meshes ``(N, V, 3)`` (see the module
    doc): ``1 - sum_i |p_i - t_i|^2 / sum_i |tbar - t_i|^2``; with ``similarity`` each
    ``p_i`` and ``tbar`` are similarity-aligned onto ``t_i`` first.  NaN when the true
    meshes do not vary."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 3:
        raise ValueError(f"need two (N, V, 3) arrays, got {p.shape} and {t.shape}")
    res, tot = _vertex_ss(p, t, t.mean(axis=0), similarity)
    return 1.0 - res / tot if tot > 0 else float("nan")


def _vertex_ss(
    p: np.ndarray, t: np.ndarray, tbar: np.ndarray, similarity: bool
) -> tuple[float, float]:
    """``(sum_i |p_i - t_i|^2, sum_i |tbar - t_i|^2)`` of meshes ``(N, V, 3)`` and the mean
    true mesh ``tbar (V, 3)``, each term after a similarity alignment onto ``t_i`` when
    ``similarity``."""
    if similarity:
        res = sum(
            float(((align(a, b, scale=True) - b) ** 2).sum()) for a, b in zip(p, t, strict=True)
        )
        tot = sum(float(((align(tbar, b, scale=True) - b) ** 2).sum()) for b in t)
        return res, tot
    return float(((p - t) ** 2).sum()), float(((t - tbar) ** 2).sum())


# --------------------------------------------------------------------------------------
# the table


def identity_row(
    area: FaceArea, fitted: np.ndarray, true: np.ndarray, n_modes: int = N_MODES
) -> dict:
    """The per-identity fields (module doc) of one identity.

    fitted: ``(N, K)`` (or ``(K,)``) identity coefficients, one row per prediction;
    true: ``(K_t,)`` its true coefficients.  Error columns are medians over the N.
    """
    f = np.atleast_2d(np.asarray(fitted, dtype=np.float64))
    t = np.asarray(true, dtype=np.float64)
    tv = area.meshes(t)
    mf = area.mean
    per = []
    for pv in area.meshes(f):
        per.append({**shape_errors(pv, tv, area.mm_per_unit), **are_of(pv, tv, area.are_pairs)})
    row: dict = {"n_predictions": len(f)}
    for c in _ERR + _ARE:
        row[c] = float(np.median([p[c] for p in per]))
    for c, v in shape_errors(mf, tv, area.mm_per_unit).items():
        row[f"mf_{c}"] = v
    row["mf_are_mean"] = are_of(mf, tv, area.are_pairs)["are_mean"]
    _ratios(row)
    m = min(n_modes, f.shape[1], t.shape[0])
    fm = np.median(f, axis=0)
    for j in range(m):
        row[f"true_c{j}"] = float(t[j])
        row[f"fit_c{j}"] = float(fm[j])
    return row


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


def _ratios(row: dict) -> None:
    row["ratio_raw"] = _ratio(row["err_raw_mm"], row["mf_err_raw_mm"])
    row["ratio_sim"] = _ratio(row["err_sim_mm"], row["mf_err_sim_mm"])
    row["ratio_norm"] = _ratio(row["err_norm_pct"], row["mf_err_norm_pct"])
    row["ratio_are"] = _ratio(row["are_mean"], row["mf_are_mean"])


def summary_row(
    area: FaceArea,
    rows: Sequence[Mapping],
    fitted: Sequence[np.ndarray],
    true: Sequence[np.ndarray],
    n_modes: int = N_MODES,
) -> dict:
    """The summary fields of a group of identities: ``rows`` their :func:`identity_row`
    dicts, ``fitted`` their ``(N_i, K)`` and ``true`` their ``(K_t,)`` coefficients (same
    order).  Errors are means over identities; mode and vertex measures pool predictions."""
    if not rows:
        raise ValueError("no identities in the group")
    out: dict = {
        "n_identities": len(rows),
        "n_predictions": int(sum(len(np.atleast_2d(f)) for f in fitted)),
    }
    for c in _ERR + _ARE + tuple(f"mf_{c}" for c in _ERR) + ("mf_are_mean",):
        out[c] = float(np.mean([r[c] for r in rows]))
    _ratios(out)
    fs = [np.atleast_2d(np.asarray(f, dtype=np.float64)) for f in fitted]
    ts = [
        np.repeat(np.asarray(t, dtype=np.float64)[None], len(f), axis=0)
        for f, t in zip(fs, true, strict=True)
    ]
    F, T = np.concatenate(fs), np.concatenate(ts)
    m = min(n_modes, F.shape[1], T.shape[1])
    st = mode_stats(F[:, :m], T[:, :m])
    for name, vals in st.items():
        for j in range(m):
            out[f"{name}_m{j}"] = float(vals[j])
        out[f"{name}_mean"] = float(np.mean(vals)) if m else float("nan")
    tbar = area.meshes(T.mean(axis=0))  # meshes are linear in the coefficients
    for key, sim in (("r2_vertex", False), ("r2_vertex_sim", True)):
        res = tot = 0.0
        for a in range(0, len(F), _CHUNK):  # bounded memory with thousands of frames
            r, t = _vertex_ss(
                area.meshes(F[a : a + _CHUNK]), area.meshes(T[a : a + _CHUNK]), tbar, sim
            )
            res, tot = res + r, tot + t
        out[key] = 1.0 - res / tot if tot > 0 else float("nan")
    return out


def accuracy_table(
    area: FaceArea,
    fitted: Mapping[str, np.ndarray],
    truth: Mapping[str, np.ndarray],
    held_out: Iterable[str],
    n_modes: int = N_MODES,
) -> list[dict]:
    """Rows of ``accuracy.tsv``: one per identity present in both ``fitted`` (``(K,)`` or
    ``(N, K)`` per identity) and ``truth`` (``(K_t,)``), sorted, with ``set`` =
    ``held_out`` | ``train``; then the summary rows ``held_out``, ``train``, ``all`` (set
    ``summary``; a group without identities is left out)."""
    held = set(held_out)
    ids = sorted(set(fitted) & set(truth))
    if not ids:
        raise ValueError("no identity has both a fitted shape and a true one")
    rows = []
    for i in ids:
        r = identity_row(area, fitted[i], truth[i], n_modes)
        rows.append({"identity": i, "set": "held_out" if i in held else "train", **r})
    summaries = []
    for g in GROUPS:
        sel = [k for k, r in enumerate(rows) if g == "all" or r["set"] == g]
        if not sel:
            continue
        s = summary_row(
            area,
            [rows[k] for k in sel],
            [fitted[ids[k]] for k in sel],
            [truth[ids[k]] for k in sel],
            n_modes,
        )
        summaries.append({"identity": g, "set": "summary", **s})
    return rows + summaries


# --------------------------------------------------------------------------------------
# I/O: identities.h5 / fit shards + ground_truth.h5 -> accuracy.tsv


def read_fitted_identities(path) -> dict[str, np.ndarray]:
    """``fit/identities.h5`` -> ``{identity: (K,) float64}`` robust aggregate shapes
    (:class:`vox3d.fitting.identities.IdentitiesFile`)."""
    return IdentitiesFile.read(path).shapes()


def read_true_identities(path) -> dict[str, np.ndarray]:
    """The synthetic corpus's true ICT identity coefficients ``{identity: (K_t,) float64}``
    (:class:`vox3d.synthetic.ground_truth.GroundTruth`; a ground truth of another face model is a
    ValueError)."""
    gt = GroundTruth.read(path)
    if gt.face_model != "ict":
        raise ValueError(f"{path}: ground truth of face model {gt.face_model!r}")
    return gt.coefficients()


def read_frame_coefficients(shard_paths: Iterable) -> dict[str, np.ndarray]:
    """Identity coefficients of every kept frame of the fit shards (``OUT/fit/<shard>.h5``)
    -> ``{identity: (N_frames, K) float64}`` (frames in shard, then file order)."""
    per: dict[str, list[np.ndarray]] = {}
    for sp in sorted(str(p) for p in shard_paths):
        s = FitShard.read(sp, fields=("video", "keep", "params"))
        vid_ident = s.video_identities
        keep = s.frames["keep"].astype(bool)
        video = s.frames["video"][keep]
        params = s.frames["params"][keep][:, s.layout.shape].astype(np.float64)
        for v in np.unique(video):
            per.setdefault(vid_ident[int(v)], []).append(params[video == v])
    return {i: np.concatenate(c) for i, c in sorted(per.items())}


def held_out_identities(
    identities: Iterable[str],
    meta_csv=None,
    method: str = "auto",
    val_fraction: float = default("train.val_fraction"),
) -> list[str]:
    """The held-out (validation) identities of the training split (:mod:`vox3d.media.split`: names
    A-E when every identity has a name in ``meta_csv``, else the hash split)."""
    _, val, _ = split_identities(identities, read_meta(meta_csv), method, val_fraction)
    return val


def face_area_for(face_cfg: Mapping, n_id: int, vertex_set: str = FACE_SET) -> FaceArea:
    """Load the configured face model (config ``face_model`` + asset paths, see
    :func:`vox3d.face.face_model.face_model_settings`) with ``n_id`` modes, restricted to
    ``vertex_set``."""
    cfg = face_model_section(face_cfg)
    if cfg["name"] == "ict":
        cfg["subset"] = "face"  # contains narrow_face; the configured subset may be smaller
    cfg["n_exp"] = 0
    return face_area(face_model_from_config(cfg, n_id=n_id), vertex_set)


def run_fit_accuracy(
    identities_h5,
    ground_truth_h5,
    out_tsv,
    face_cfg: Mapping,
    meta_csv=None,
    split: str = default("train.split"),
    val_fraction: float = default("train.val_fraction"),
) -> list[dict]:
    """The ``fit_accuracy`` rule: fitted identity shapes of ``identities_h5`` against the
    synthetic corpus's ``ground_truth_h5`` -> ``out_tsv`` (:func:`columns`); returns the
    rows (the rule's figure: :func:`vox3d.report.identity_figures.plot_fit_accuracy` of them).  BLAS runs on one thread: the alignments' sums over vertices are
    then summed in one order, so the table has the same bytes however the job is run."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the rule's threads: 1 sets OMP_NUM_THREADS=1 too
        from contextlib import nullcontext as threadpool_limits

    fitted = read_fitted_identities(identities_h5)
    truth = read_true_identities(ground_truth_h5)
    k = max(len(next(iter(fitted.values()))), len(next(iter(truth.values()))))
    area = face_area_for(face_cfg, k)
    held = held_out_identities(sorted(set(fitted) & set(truth)), meta_csv, split, val_fraction)
    with threadpool_limits(1):
        rows = accuracy_table(area, fitted, truth, held)
    write_tsv(out_tsv, rows, columns())
    return rows
