"""Evaluation of the voice -> shape model on held-out identities, against baselines.

Per held-out (validation) identity and per target (``fitted``: the identity shape of
``fit/identities.h5``; ``ground_truth``: the synthetic corpus's true coefficients, when
present), each method predicts identity coefficients, which become meshes through the
face model (neutral expression): ``model``, the trained network, one prediction per
utterance (whole utterance), and the baselines and controls of :mod:`vox3d.voice.baselines`
(``population_mean``, ``train_mean``, ``gender_mean``, ``shuffled_voice``), with which the
model is compared, paired over identities (``comparisons.tsv``,
:func:`vox3d.voice.baselines.compare_methods`).

Metrics (:mod:`vox3d.face.metrics`): the four ARE ratios and their mean (errors averaged over an
identity's predictions, then over identities; pairs from
:func:`vox3d.face.are_selection.select_are_pairs`, config ``evaluate.are_pairs``), RMSE after rigid
alignment on the evaluation vertex set (face-model units; ICT: cm), and vertex R^2: the
fraction of the targets' vertex variance around the training mean of the same target
explained, ``r2_vertex = 1 - sum |v_pred - v_t|^2 / sum |v_mean - v_t|^2`` (raw, no
alignment) and ``r2_vertex_sim``, the same after a similarity alignment (rotation,
translation, uniform scale; :func:`vox3d.face.metrics.align`) of the prediction *and* of the
training mean onto the target (so ``train_mean`` scores 0 on both); each with a 95%
bootstrap interval over identities.

Parameter-space metrics (every run; the only ones when the target space is ``params``,
i.e. without the face model's basis, such as BFM without ``bfm_noneck_v3.pkl``), with
``mu``, ``sigma`` the training identities' coefficient mean and std of the same target
(:func:`vox3d.voice.targets.target_stats`):

* ``rmse_param``: ``sqrt(mean_k (c_pred - c_t)_k^2)`` in coefficient units, averaged over
  an identity's predictions, then over identities;
* ``rmse_z``: the same on standardised coefficients ``(c - mu) / sigma`` (unit free);
* ``r2_param``: ``1 - sum_i |z_pred - z_t|^2 / sum_i |z_mu - z_t|^2`` pooled over
  identities and coefficients (``train_mean`` scores exactly 0);
* per coefficient (``per_coefficient.tsv``): ``r2 = 1 - sum_i (c_pred - c_t)^2 / sum_i
  (mu - c_t)^2`` and its RMSE.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vox3d.audio.fbank import CMP_INPUT_NORM
from vox3d.config import Settings, default, setting
from vox3d.face import metrics
from vox3d.face.are_selection import select_are_pairs
from vox3d.face.face_model import face_model_from_config
from vox3d.io import write_tsv
from vox3d.media.split import check_split, read_split, small_data_note
from vox3d.synthetic.ground_truth import GroundTruth
from vox3d.torch_setup import resolve_device
from vox3d.voice.baselines import (
    COMPARISON_COLUMNS,
    METHODS,
    UNSUPERVISED_BASELINES,
    baseline_predictions,
    compare_methods,
    shuffled_predictions,
)
from vox3d.voice.predictions import write_predictions
from vox3d.voice.targets import (
    NO_MESH_NOTE,
    read_identity_targets,
    resolve_target_space,
    target_stats,
)

#: Vertex R^2 columns: raw and after similarity alignment.
R2_VERTEX = ("r2_vertex", "r2_vertex_sim")
SUMMARY_COLUMNS = (
    ("method", "target", "n_identities")
    + tuple(c for m in metrics.METRIC_COLUMNS + R2_VERTEX for c in (m, f"{m}_lo", f"{m}_hi"))
    + ("ceiling_r2_vertex", "are_pairs")
)
PER_IDENTITY_COLUMNS = (
    ("method", "target", "identity", "n_predictions")
    + metrics.METRIC_COLUMNS
    + ("sq_err", "sq_dev", "sq_err_sim", "sq_dev_sim")
)
#: Parameter-space metric columns (each with ``_lo`` / ``_hi`` 95% bootstrap bounds).
PARAM_METRICS = ("rmse_param", "rmse_z", "r2_param")
PARAM_COLUMNS = tuple(c for m in PARAM_METRICS for c in (m, f"{m}_lo", f"{m}_hi"))
#: ``metrics.tsv`` columns by target space (``mesh``: the mesh metrics, then parameters).
SPACE_SUMMARY_COLUMNS = {
    "mesh": SUMMARY_COLUMNS + PARAM_COLUMNS + ("target_space", "note"),
    "params": ("method", "target", "n_identities") + PARAM_COLUMNS + ("target_space", "note"),
}
PARAM_PER_IDENTITY = ("rmse_param", "rmse_z", "sq_err_z", "sq_dev_z")
SPACE_PER_IDENTITY_COLUMNS = {
    "mesh": PER_IDENTITY_COLUMNS + PARAM_PER_IDENTITY,
    "params": ("method", "target", "identity", "n_predictions") + PARAM_PER_IDENTITY,
}
PER_COEFFICIENT_COLUMNS = (
    "method", "target", "coefficient", "n_identities", "r2", "rmse", "train_mean", "train_std",
)  # fmt: skip


def mesh_vertices(mean: np.ndarray, basis: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Linear model meshes: mean ``(V, 3)``, basis ``(K, V, 3)``, coef ``(..., K)`` ->
    ``(..., V, 3)`` float64."""
    c = np.asarray(coef, dtype=np.float64)
    k = c.shape[-1]
    flat = c.reshape(-1, k) @ np.asarray(basis[:k], np.float64).reshape(k, -1)
    return flat.reshape(c.shape[:-1] + mean.shape) + np.asarray(mean, np.float64)


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
    seed: int = default("evaluate.seed"),
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
                row["sq_err_sim"] = float(np.mean([_sq_sim(p[idx], t_sub) for p in pv]))
                row["sq_dev_sim"] = _sq_sim(ref, t_sub)
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


def _sq_sim(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean squared vertex distance ``(V, 3)`` after similarity-aligning `pred` onto `target`."""
    return float(((metrics.align(pred, target, scale=True) - target) ** 2).sum(1).mean())


def _r2_with_ci(rows: list[dict], n_boot: int, seed: int) -> dict[str, float]:
    out = {}
    for name, suffix in (("r2_vertex", ""), ("r2_vertex_sim", "_sim")):
        e, d = [r[f"sq_err{suffix}"] for r in rows], [r[f"sq_dev{suffix}"] for r in rows]
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = pooled_r2(e, d, n_boot, seed)
    return out


def evaluate_parameters(
    predictions: Mapping[str, Mapping[str, np.ndarray]],
    targets: Mapping[str, Mapping[str, np.ndarray]],
    train_mean: np.ndarray,
    train_std: np.ndarray,
    n_boot: int = 1000,
    seed: int = default("evaluate.seed"),
) -> tuple[list[dict], list[dict], list[dict]]:
    """Score every method against every target in coefficient space (module docstring).

    predictions: ``{method: {identity: (N, K)}}``; targets ``{target: {identity: (K,)}}``;
    ``train_mean``, ``train_std`` ``(K,)`` the training targets' statistics.  Returns
    ``(summary rows, per-identity rows, per-coefficient rows)``, in the order of
    :func:`evaluate_predictions`; only identities present in both count.
    """
    mu = np.asarray(train_mean, np.float64)
    sd = np.asarray(train_std, np.float64)
    if mu.shape != sd.shape or mu.ndim != 1:
        raise ValueError(f"train_mean {mu.shape} and train_std {sd.shape} must be (K,)")
    if np.any(sd <= 0):
        raise ValueError("train_std must be positive")
    summary, per_id, per_coef = [], [], []
    for tname in sorted(targets):
        tgt = targets[tname]
        for method in [m for m in METHODS if m in predictions] + sorted(
            set(predictions) - set(METHODS)
        ):
            pred = predictions[method]
            idents = sorted(set(pred) & set(tgt))
            if not idents:
                continue
            rows, e_k, d_k = [], [], []
            for ident in idents:
                t = np.asarray(tgt[ident], np.float64)
                p = np.atleast_2d(np.asarray(pred[ident], np.float64))
                if p.shape[1] != len(mu) or t.shape != mu.shape:
                    raise ValueError(
                        f"{method}/{tname}/{ident}: {p.shape[1]} predicted and {t.shape} target "
                        f"coefficients, training statistics have {len(mu)}"
                    )
                d = p - t  # (N, K)
                dz = d / sd
                e_k.append((d**2).mean(0))
                d_k.append((mu - t) ** 2)
                rows.append(
                    {
                        "method": method,
                        "target": tname,
                        "identity": ident,
                        "n_predictions": len(p),
                        "rmse_param": float(np.sqrt((d**2).mean(1)).mean()),
                        "rmse_z": float(np.sqrt((dz**2).mean(1)).mean()),
                        "sq_err_z": float((dz**2).sum(1).mean()),
                        "sq_dev_z": float((((mu - t) / sd) ** 2).sum()),
                    }
                )
            per_id += rows
            vals = np.array([[r["rmse_param"], r["rmse_z"]] for r in rows])
            lo, hi = metrics.bootstrap_ci(vals, n_boot=n_boot, seed=seed)
            s = {"method": method, "target": tname, "n_identities": len(rows)}
            for j, c in enumerate(("rmse_param", "rmse_z")):
                s[c], s[f"{c}_lo"], s[f"{c}_hi"] = (
                    float(vals[:, j].mean()),
                    float(lo[j]),
                    float(hi[j]),
                )
            r2 = pooled_r2(
                [r["sq_err_z"] for r in rows], [r["sq_dev_z"] for r in rows], n_boot, seed
            )
            s["r2_param"], s["r2_param_lo"], s["r2_param_hi"] = r2
            summary.append(s)
            e, dv = np.sum(e_k, axis=0), np.sum(d_k, axis=0)
            for k in range(len(mu)):
                per_coef.append(
                    {
                        "method": method,
                        "target": tname,
                        "coefficient": k,
                        "n_identities": len(rows),
                        "r2": float(1.0 - e[k] / dv[k]) if dv[k] > 0 else float("nan"),
                        "rmse": float(np.sqrt(e[k] / len(rows))),
                        "train_mean": float(mu[k]),
                        "train_std": float(sd[k]),
                    }
                )
    return summary, per_id, per_coef


def pooled_r2(
    sq_err: Sequence[float],
    sq_dev: Sequence[float],
    n_boot: int = 1000,
    seed: int = default("evaluate.seed"),
) -> tuple[float, float, float]:
    """``1 - sum(sq_err) / sum(sq_dev)`` over identities with a 95% percentile bootstrap
    interval over identities: ``(r2, lo, hi)`` (NaN bounds without resampling or with one
    identity)."""
    e = np.asarray(sq_err, np.float64)
    d = np.asarray(sq_dev, np.float64)
    r2 = 1.0 - e.sum() / max(d.sum(), 1e-300)
    lo = hi = float("nan")
    if n_boot > 0 and len(e) > 1:
        rng = np.random.default_rng(seed + 1)
        ix = rng.integers(0, len(e), size=(n_boot, len(e)))
        boots = 1.0 - e[ix].sum(1) / np.maximum(d[ix].sum(1), 1e-300)
        lo, hi = float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))
    return float(r2), lo, hi


def predict_utterances(
    model,
    feats: Sequence[np.ndarray],
    device: str = "cpu",
    max_frames: int = default("evaluate.max_frames"),
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


# --------------------------------------------------------------------------------------
# I/O edge: the `evaluate` rule
# --------------------------------------------------------------------------------------


def _voice_ceiling(truth: GroundTruth) -> float | None:
    """The corpus card's ceiling: vertex-space R^2 predictable from the voice (attribute
    ``voice_ceiling`` of the synthetic ``ground_truth.h5``), or None."""
    c = truth.ceiling()
    try:
        return float(c["r2_vertex"]) if c is not None else None
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class EvaluateSettings(Settings):
    """The config's ``evaluate`` section (defaults: config.yaml's)."""

    SECTION = "evaluate"

    bootstrap: int = setting("evaluate.bootstrap")  # resamples over identities (0 = none)
    n_figures: int = setting("evaluate.n_figures")
    alignment: str = setting("evaluate.alignment")  # rigid | similarity
    vertex_set: str = setting("evaluate.vertex_set")
    are_pairs: str = setting("evaluate.are_pairs")  # cmp | landmark_rule
    max_frames: int = setting("evaluate.max_frames")  # 0 = whole utterances
    device: str = setting("evaluate.device")
    seed: int = setting("evaluate.seed")


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
    settings: EvaluateSettings | Mapping | None = None,
    device: str | None = None,
    out_per_coefficient: str | os.PathLike | None = None,
    out_comparisons: str | os.PathLike | None = None,
    unsupervised_path: str | os.PathLike | None = None,
) -> list[dict]:
    """Evaluate a trained model file on the validation identities of ``split_path``;
    write ``metrics.tsv``, ``per_identity.tsv``, ``predictions.h5`` and, when given,
    ``per_coefficient.tsv`` and ``comparisons.tsv`` (:func:`vox3d.voice.baselines.compare_methods`).

    The target space is the model's (``target_space`` in the model file, written by
    :func:`vox3d.voice.train.run_train`; older files: ``mesh``): ``mesh`` scores ARE, vertex
    RMSE and R^2 through the face model and the parameter metrics; ``params`` only the
    parameter metrics, without loading a face model, with :data:`NO_MESH_NOTE` (or the
    training's reason) in the ``note`` column.

    unsupervised_path: ``train/unsupervised.pt`` (:mod:`vox3d.voice.distill`), scored as method
    ``unsupervised`` with its control ``unsupervised_shuffled`` and compared with
    :data:`vox3d.voice.baselines.UNSUPERVISED_BASELINES`; ``model_path`` None: only that variant is scored.
    """
    import torch

    from vox3d.audio.featurestore import load_utterances  # torch
    from vox3d.voice.voice_model import load_model  # torch

    st = (
        settings
        if isinstance(settings, EvaluateSettings)
        else EvaluateSettings.from_section(settings)
    )
    n_boot, seed, max_frames = int(st.bootstrap), int(st.seed), int(st.max_frames)
    scale = st.alignment == "similarity"
    dev = str(torch.device(resolve_device(device or st.device, "evaluate.device")))

    if model_path is not None:
        model, meta = load_model(model_path)
    elif unsupervised_path is not None:  # train.mode: unsupervised
        space0, note0 = resolve_target_space("auto", dict(face_model or {}))
        model, meta = None, {"target_space": space0, "notes": [note0]}
    else:
        raise ValueError("nothing to evaluate: no supervised and no unsupervised model")
    space = str(meta.get("target_space", "mesh"))
    if space not in ("mesh", "params"):
        raise ValueError(f"{model_path}: unknown target_space {space!r} (mesh | params)")
    train_ids, val_ids, genders = read_split(split_path)
    check_split(train_ids, val_ids, f"{split_path}")
    ids, coef, attrs = read_identity_targets(identities_h5)
    fitted = {i: c.astype(np.float64) for i, c in zip(ids, coef, strict=True)}
    k = coef.shape[1]
    targets = {"fitted": {i: fitted[i] for i in val_ids if i in fitted}}
    ceiling = None
    if ground_truth_h5 and Path(ground_truth_h5).is_file():
        truth = GroundTruth.read(ground_truth_h5)
        gt = truth.coefficients()
        targets["ground_truth"] = {i: gt[i][:k] for i in val_ids if i in gt}
        ceiling = _voice_ceiling(truth)

    # each model reads the input it was trained on (vox3d.audio.fbank.model_input; the
    # unsupervised variant's encoder reads CMP's normalised frames), each input read once
    norms = {"model": model.cfg.input_norm} if model is not None else {}
    if unsupervised_path is not None:
        norms["unsupervised"] = CMP_INPUT_NORM
    inputs = {n: load_utterances(feature_paths, val_ids, n) for n in sorted(set(norms.values()))}
    utts = next(iter(inputs.values()))  # every input has the same identities
    if not utts:
        raise ValueError(
            f"none of the {len(val_ids)} validation identities of {split_path} has features "
            f"in {len(feature_paths)} feature shard(s): nothing to evaluate"
        )
    voice_models = {("model", "shuffled_voice"): model} if model is not None else {}
    if unsupervised_path is not None:
        from vox3d.voice.distill import load_for_evaluation

        um = load_for_evaluation(unsupervised_path, val_ids, k)
        voice_models[("unsupervised", "unsupervised_shuffled")] = um
    voice_preds = {}
    for (name, control), m in voice_models.items():
        x = inputs[norms[name]]
        voice_preds[name] = {i: predict_utterances(m, x[i], dev, max_frames) for i in sorted(x)}
        voice_preds[control] = shuffled_predictions(voice_preds[name], seed)
    # per target: its baselines and its training statistics (the R^2 reference)
    train_truth = {"fitted": fitted}
    if "ground_truth" in targets:
        train_truth["ground_truth"] = {i: gt[i][:k].astype(np.float64) for i in gt}
    preds, stats = {}, {}
    for tname in sorted(targets):
        tc = {i: train_truth[tname][i] for i in train_ids if i in train_truth[tname]}
        preds[tname] = dict(voice_preds)
        preds[tname].update(baseline_predictions(tc, genders, sorted(utts)))
        stack = np.stack([tc[i] for i in sorted(tc)])
        stats[tname] = (stack.mean(0), target_stats(stack)[1].astype(np.float64))
    n_train_fitted = sum(1 for i in train_ids if i in fitted)

    p_summary, p_per_id, per_coef = [], [], []
    for tname in sorted(targets):
        out = evaluate_parameters(
            preds[tname], {tname: targets[tname]}, *stats[tname], n_boot=n_boot, seed=seed
        )
        p_summary += out[0]
        p_per_id += out[1]
        per_coef += out[2]
    vset = st.vertex_set
    are_note = ""
    if space == "mesh":
        fm = face_model_from_config(face_model or {}, n_id=k)
        sel = select_are_pairs(fm, str(st.are_pairs))
        are_note = sel.note
        midx = fm.vertex_sets.get(vset) if vset else None
        summary, per_id = [], []
        for tname in sorted(targets):
            s_t, p_t = evaluate_predictions(
                preds[tname], {tname: targets[tname]}, fm.mean, fm.id_basis, sel.pairs, midx,
                stats[tname][0], scale, n_boot, seed,
            )  # fmt: skip
            summary += s_t
            per_id += p_t
        for row in summary:
            row["ceiling_r2_vertex"] = ceiling if ceiling is not None else ""
            row["are_pairs"] = sel.name
        _merge(summary, p_summary, ("method", "target"))
        _merge(per_id, p_per_id, ("method", "target", "identity"))
    else:
        summary, per_id = p_summary, p_per_id
    comparisons = []
    if model is not None:
        comparisons += compare_methods(per_id, space, n_boot=n_boot, seed=seed)
    if unsupervised_path is not None:
        comparisons += compare_methods(
            per_id, space, "unsupervised", UNSUPERVISED_BASELINES, n_boot=n_boot, seed=seed
        )
    notes = [str(n) for n in meta.get("notes", []) if n]
    if space == "params" and not notes:
        notes.append(NO_MESH_NOTE)
    small = small_data_note(n_train_fitted, len(targets["fitted"]))
    if small and small not in notes:
        notes.append(small)
    if are_note:
        notes.append(are_note)
    note = "; ".join(notes)
    for row in summary:
        row["target_space"] = space
        row["note"] = note
    write_tsv(out_metrics, summary, SPACE_SUMMARY_COLUMNS[space])
    write_tsv(out_per_identity, per_id, SPACE_PER_IDENTITY_COLUMNS[space])
    if out_per_coefficient is not None:
        write_tsv(out_per_coefficient, per_coef, PER_COEFFICIENT_COLUMNS)
    if out_comparisons is not None:
        write_tsv(out_comparisons, comparisons, COMPARISON_COLUMNS)
    write_predictions(
        out_predictions,
        preds,
        targets,
        stats,
        utts,
        {
            "face_model": str(attrs.get("face_model", "")),
            "n_id": k,
            "alignment": "similarity" if scale else "rigid",
            "vertex_set": str(vset or "all"),
            "target_space": space,
            "note": note,
        },
    )
    return summary


def _merge(rows: list[dict], extra: list[dict], keys: tuple[str, ...]) -> None:
    """Add the fields of the `extra` row with the same `keys` values to each row of `rows`."""
    by = {tuple(r[k] for k in keys): r for r in extra}
    for r in rows:
        for c, v in by.get(tuple(r[k] for k in keys), {}).items():
            r.setdefault(c, v)
