"""Evaluation of the voice -> shape model on held-out identities, against baselines.

Per held-out (validation) identity and per target (``fitted``: the identity shape of
``fit/identities.h5``; ``ground_truth``: the synthetic corpus's true coefficients, when
present), each method predicts identity coefficients, which become meshes through the
face model (neutral expression):

* ``model``: the trained network, one prediction per utterance (whole utterance);
* ``mean_face``: the mean of the *training* identities' target coefficients (one mesh);
* ``gender_mean``: the mean of the training targets of the identity's gender (overall mean
  when the gender is unknown).

Metrics (:mod:`vox3d.metrics`): the four ARE ratios and their mean (errors averaged over an
identity's predictions, then over identities), RMSE after rigid alignment on the
evaluation vertex set (face-model units; ICT: cm), and ``r2_vertex``: the fraction of the
targets' vertex variance (around the training mean face, on the same vertices) explained,
``1 - sum |v_pred - v_t|^2 / sum |v_mean - v_t|^2``; each with a 95% bootstrap interval
over identities.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from vox3d import metrics

METHODS = ("model", "mean_face", "gender_mean")
SUMMARY_COLUMNS = (
    ("method", "target", "n_identities")
    + tuple(c for m in metrics.METRIC_COLUMNS + ("r2_vertex",) for c in (m, f"{m}_lo", f"{m}_hi"))
    + ("ceiling_r2_vertex",)
)
PER_IDENTITY_COLUMNS = (
    ("method", "target", "identity", "n_predictions")
    + metrics.METRIC_COLUMNS
    + ("sq_err", "sq_dev")
)


def mesh_vertices(mean: np.ndarray, basis: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Linear model meshes: mean ``(V, 3)``, basis ``(K, V, 3)``, coef ``(..., K)`` ->
    ``(..., V, 3)`` float64."""
    c = np.asarray(coef, dtype=np.float64)
    k = c.shape[-1]
    flat = c.reshape(-1, k) @ np.asarray(basis[:k], np.float64).reshape(k, -1)
    return flat.reshape(c.shape[:-1] + mean.shape) + np.asarray(mean, np.float64)


def baseline_predictions(
    train_coef: Mapping[str, np.ndarray],
    genders: Mapping[str, str],
    eval_ids: Sequence[str],
) -> dict[str, dict[str, np.ndarray]]:
    """``mean_face`` and ``gender_mean`` predictions ``{method: {identity: (1, K)}}``."""
    ids = sorted(train_coef)
    if not ids:
        raise ValueError("no training identities with targets: baselines need them")
    allc = np.stack([train_coef[i] for i in ids]).astype(np.float64)
    mean = allc.mean(0)
    by_g = {}
    for g in ("m", "f"):
        sel = [train_coef[i] for i in ids if genders.get(i, "") == g]
        by_g[g] = np.mean(sel, axis=0) if sel else mean
    return {
        "mean_face": {i: mean[None] for i in eval_ids},
        "gender_mean": {i: by_g.get(genders.get(i, ""), mean)[None] for i in eval_ids},
    }


def evaluate_predictions(
    predictions: Mapping[str, Mapping[str, np.ndarray]],
    targets: Mapping[str, Mapping[str, np.ndarray]],
    mean: np.ndarray,
    basis: np.ndarray,
    pairs: Mapping[str, object],
    metric_idx: np.ndarray | None,
    train_mean_coef: np.ndarray,
    scale: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[list[dict], list[dict]]:
    """Score every method against every target.

    predictions: ``{method: {identity: (N, K) coefficients}}``; targets: ``{target_name:
    {identity: (K,)}}``; the linear face model ``mean (V, 3)``, ``basis (K, V, 3)``;
    ``metric_idx`` vertices for RMSE / R^2; ``train_mean_coef (K,)`` the training mean
    (the R^2 reference).  Returns ``(summary rows, per-identity rows)``; only identities
    present in both a method's predictions and the target count.
    """
    idx = slice(None) if metric_idx is None else np.asarray(metric_idx)
    ref = mesh_vertices(mean, basis, np.asarray(train_mean_coef))[idx]
    summary, per_id = [], []
    for tname in sorted(targets):
        tgt = targets[tname]
        for method in [m for m in METHODS if m in predictions] + sorted(
            set(predictions) - set(METHODS)
        ):
            pred = predictions[method]
            rows = []
            for ident in sorted(set(pred) & set(tgt)):
                tv = mesh_vertices(mean, basis, tgt[ident])
                pv = mesh_vertices(mean, basis, np.atleast_2d(pred[ident]))
                row = metrics.identity_errors(pv, tv, pairs, metric_idx=metric_idx, scale=scale)
                t_sub = tv[idx]
                row["sq_err"] = float(np.mean([((p[idx] - t_sub) ** 2).sum(1).mean() for p in pv]))
                row["sq_dev"] = float(((ref - t_sub) ** 2).sum(1).mean())
                row.update(method=method, target=tname, identity=ident, n_predictions=len(pv))
                rows.append(row)
            if not rows:
                continue
            per_id += rows
            s = metrics.summarise(rows, n_boot=n_boot, seed=seed)
            s.update(_r2_with_ci(rows, n_boot, seed))
            s.update(method=method, target=tname)
            summary.append(s)
    return summary, per_id


def _r2_with_ci(rows: list[dict], n_boot: int, seed: int) -> dict[str, float]:
    e = np.array([r["sq_err"] for r in rows])
    d = np.array([r["sq_dev"] for r in rows])
    r2 = 1.0 - e.sum() / max(d.sum(), 1e-300)
    out = {"r2_vertex": float(r2), "r2_vertex_lo": float("nan"), "r2_vertex_hi": float("nan")}
    if n_boot > 0 and len(rows) > 1:
        rng = np.random.default_rng(seed + 1)
        ix = rng.integers(0, len(rows), size=(n_boot, len(rows)))
        boots = 1.0 - e[ix].sum(1) / np.maximum(d[ix].sum(1), 1e-300)
        out["r2_vertex_lo"] = float(np.quantile(boots, 0.025))
        out["r2_vertex_hi"] = float(np.quantile(boots, 0.975))
    return out


def predict_utterances(
    model, feats: Sequence[np.ndarray], device: str = "cpu", max_frames: int = 0
):
    """Identity coefficients ``(N, K)`` for utterances ``(T_i, bands)`` (each whole, or its
    first ``max_frames`` frames when > 0), one forward pass each, eval mode."""
    import torch

    model.eval().to(device)
    out = []
    with torch.no_grad():
        for f in feats:
            x = np.asarray(f, np.float32)
            if max_frames > 0:
                x = x[:max_frames]
            out.append(model.coefficients(torch.from_numpy(x)[None].to(device))[0].cpu().numpy())
    return np.stack(out).astype(np.float64) if out else np.zeros((0, model.cfg.n_out))


def face_model_settings(face_model: Mapping, assets: Mapping) -> dict:
    """The config's ``face_model`` section plus its asset paths (``path``, ``tri_path``)."""
    fm = dict(face_model)
    fm["path"] = assets.get("ict_facekit") if fm.get("name", "ict") == "ict" else assets.get("bfm")
    fm["tri_path"] = assets.get("bfm_tri")
    return fm


def face_model_from_config(face_cfg: Mapping, n_id: int | None = None):
    """Load the face model named by the config's ``face_model`` (+ asset paths) section.

    face_cfg keys: ``name``, ``subset``, ``n_id``, ``n_exp``, ``path`` (ICT archive or BFM
    pickle), ``tri_path``; ``n_id`` overrides (the targets' coefficient count).
    """
    from vox3d.face_model import load_face_model

    name = face_cfg.get("name", "ict")
    kw = {
        "subset": face_cfg.get("subset", "face"),
        "n_id": int(n_id if n_id is not None else face_cfg.get("n_id", 40)),
        "n_exp": int(face_cfg.get("n_exp", 0)),
    }
    if face_cfg.get("path"):
        kw["path"] = face_cfg["path"]
    if face_cfg.get("tri_path"):
        kw["tri_path"] = face_cfg["tri_path"]
    return load_face_model(name, **kw)


# --------------------------------------------------------------------------------------
# I/O edge: the `evaluate` rule
# --------------------------------------------------------------------------------------


def _voice_ceiling(path) -> float | None:
    """The corpus card's ceiling: vertex-space R^2 predictable from the voice (attribute
    ``voice_ceiling`` of the synthetic ``ground_truth.h5``), or None."""
    import json

    import h5py

    with h5py.File(path, "r") as f:
        raw = f.attrs.get("voice_ceiling")
    try:
        return float(json.loads(raw)["r2_vertex"]) if raw is not None else None
    except (ValueError, KeyError, TypeError):
        return None


def run_evaluate(
    model_path: str | os.PathLike,
    split_path: str | os.PathLike,
    identities_h5: str | os.PathLike,
    feature_paths: Sequence[str | os.PathLike],
    out_metrics: str | os.PathLike,
    out_per_identity: str | os.PathLike,
    out_predictions: str | os.PathLike,
    ground_truth_h5: str | os.PathLike | None = None,
    face_model: Mapping | None = None,
    settings: Mapping | None = None,
    device: str = "auto",
) -> list[dict]:
    """Evaluate a trained model file on the validation identities of ``split_path``;
    write ``metrics.tsv``, ``per_identity.tsv`` and ``predictions.h5``."""
    import h5py

    from vox3d import train as vdata
    from vox3d.io import atomic_path, write_tsv
    from vox3d.split import read_split
    from vox3d.train import resolve_device
    from vox3d.voice_model import load_model

    settings = dict(settings or {})
    n_boot = int(settings.get("bootstrap", 1000))
    seed = int(settings.get("seed", 0))
    scale = settings.get("alignment", "rigid") == "similarity"
    max_frames = int(settings.get("max_frames", 0))
    dev = str(resolve_device(device))

    model, meta = load_model(model_path)
    train_ids, val_ids, genders = read_split(split_path)
    ids, coef, attrs = vdata.read_identity_targets(identities_h5)
    fitted = {i: c.astype(np.float64) for i, c in zip(ids, coef, strict=True)}
    k = coef.shape[1]
    targets = {"fitted": {i: fitted[i] for i in val_ids if i in fitted}}
    ceiling = None
    if ground_truth_h5 and Path(ground_truth_h5).is_file():
        gt = vdata.read_ground_truth(ground_truth_h5)
        targets["ground_truth"] = {i: gt[i][:k] for i in val_ids if i in gt}
        ceiling = _voice_ceiling(ground_truth_h5)

    utts = vdata.load_utterances(feature_paths, val_ids)
    preds: dict[str, dict[str, np.ndarray]] = {"model": {}}
    for ident in sorted(utts):
        preds["model"][ident] = predict_utterances(model, utts[ident], dev, max_frames)
    train_coef = {i: fitted[i] for i in train_ids if i in fitted}
    preds.update(baseline_predictions(train_coef, genders, sorted(utts)))

    fm = face_model_from_config(face_model or {}, n_id=k)
    vset = settings.get("vertex_set", "face")
    midx = fm.vertex_sets.get(vset) if vset else None
    train_mean = np.mean(np.stack(list(train_coef.values())), axis=0)
    summary, per_id = evaluate_predictions(
        preds, targets, fm.mean, fm.id_basis, fm.are_pairs, midx, train_mean, scale, n_boot, seed
    )
    for row in summary:
        row["ceiling_r2_vertex"] = ceiling if ceiling is not None else ""
    write_tsv(out_metrics, summary, SUMMARY_COLUMNS)
    write_tsv(out_per_identity, per_id, PER_IDENTITY_COLUMNS)
    str_dt = h5py.string_dtype("utf-8")
    with atomic_path(out_predictions) as tmp, h5py.File(tmp, "w", libver="latest") as f:
        for method in sorted(preds):
            g = f.create_group(method)
            for ident in sorted(preds[method]):
                g.create_dataset(ident, data=np.asarray(preds[method][ident], np.float32))
        for tname in sorted(targets):
            g = f.create_group(f"target_{tname}")
            for ident in sorted(targets[tname]):
                g.create_dataset(ident, data=np.asarray(targets[tname][ident], np.float32))
        f.create_dataset("val_identities", data=np.array(sorted(utts), dtype=object), dtype=str_dt)
        f.attrs["face_model"] = str(attrs.get("face_model", ""))
        f.attrs["n_id"] = k
        f.attrs["alignment"] = "similarity" if scale else "rigid"
        f.attrs["vertex_set"] = str(vset or "all")
    return summary
