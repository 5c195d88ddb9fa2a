"""The methods the voice -> shape model is scored against (:mod:`vox3d.voice.evaluate`), and the
paired comparisons with them.

Per held-out identity and per target, besides ``model`` (the trained network, one prediction
per utterance) and ``unsupervised`` (:mod:`vox3d.voice.distill`):

* ``population_mean``: all identity coefficients zero, the face model's mean face;
* ``train_mean``: the mean over the *training* identities of the same target the row is
  scored against (fitted training shapes for ``fitted`` rows, true training shapes for
  ``ground_truth`` rows);
* ``gender_mean``: the same per gender (overall training mean when the gender is unknown
  or has no training identity);
* ``shuffled_voice``: the model's predictions of another held-out identity (a random
  derangement of the held-out identities, fixed seed): a voice, but the wrong one
  (``unsupervised_shuffled`` the same for the unsupervised variant).

Comparisons (``comparisons.tsv``, :func:`compare_methods`): the model against every
baseline per target and metric, paired over identities (:func:`vox3d.face.metrics.paired_bootstrap`):
the difference model - baseline, its 95% interval and a two-sided bootstrap p-value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from vox3d.config import default
from vox3d.face import metrics

#: The voice model and the baselines it is compared with, in table order.
BASELINES = ("population_mean", "train_mean", "gender_mean", "shuffled_voice")
METHODS = ("model", "unsupervised") + BASELINES + ("unsupervised_shuffled",)
#: What the unsupervised variant is compared with: the baselines with its own shuffled
#: control, and the supervised model.
UNSUPERVISED_BASELINES = (
    "population_mean", "train_mean", "gender_mean", "unsupervised_shuffled", "model",
)  # fmt: skip
#: ``comparisons.tsv``: model vs each baseline, per target and metric (README, evaluate).
COMPARISON_COLUMNS = (
    "target", "method", "baseline", "metric", "better", "n_identities", "value",
    "baseline_value", "delta", "delta_lo", "delta_hi", "p", "n_boot",
)  # fmt: skip
#: Compared metrics by target space: name -> (better, per-identity columns, pooled R^2?).
COMPARED_METRICS = {
    "mesh": {
        "are_mean": ("lower", ("are_mean",), False),
        "rmse": ("lower", ("rmse",), False),
        "r2_vertex": ("higher", ("sq_err", "sq_dev"), True),
        "r2_vertex_sim": ("higher", ("sq_err_sim", "sq_dev_sim"), True),
        "rmse_z": ("lower", ("rmse_z",), False),
        "r2_param": ("higher", ("sq_err_z", "sq_dev_z"), True),
    },
    "params": {
        "rmse_z": ("lower", ("rmse_z",), False),
        "r2_param": ("higher", ("sq_err_z", "sq_dev_z"), True),
    },
}


def baseline_predictions(
    train_coef: Mapping[str, np.ndarray],
    genders: Mapping[str, str],
    eval_ids: Sequence[str],
) -> dict[str, dict[str, np.ndarray]]:
    """``population_mean`` (zeros), ``train_mean`` and ``gender_mean`` predictions
    ``{method: {identity: (1, K)}}`` from the training identities' coefficients of *one*
    target (``train_coef``: ``{identity: (K,)}``; call once per target)."""
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
        "population_mean": {i: np.zeros_like(mean)[None] for i in eval_ids},
        "train_mean": {i: mean[None] for i in eval_ids},
        "gender_mean": {i: by_g.get(genders.get(i, ""), mean)[None] for i in eval_ids},
    }


def shuffled_predictions(
    predictions: Mapping[str, np.ndarray], seed: int = default("evaluate.seed")
) -> dict[str, np.ndarray]:
    """Each identity gets the predictions of another one: a derangement of the sorted
    identities (a random order, each taking its successor's predictions, cyclically; seeded
    by `seed`).  Empty with fewer than two identities (no other voice to give)."""
    ids = sorted(predictions)
    if len(ids) < 2:
        return {}
    order = np.random.default_rng([seed, 15]).permutation(len(ids))
    donor = {ids[order[j]]: ids[order[(j + 1) % len(ids)]] for j in range(len(ids))}
    return {i: np.asarray(predictions[donor[i]]) for i in ids}


def compare_methods(
    per_identity: Sequence[Mapping[str, object]],
    space: str = "mesh",
    method: str = "model",
    baselines: Sequence[str] = BASELINES,
    n_boot: int = 1000,
    seed: int = default("evaluate.seed"),
) -> list[dict]:
    """`method` against each baseline, per target and metric, paired over identities.

    per_identity: rows with ``method``, ``target``, ``identity`` and the per-identity
    columns of :data:`COMPARED_METRICS` (``space``).  For each (target, baseline, metric)
    with both methods on at least one common identity: ``value`` and ``baseline_value``
    (means over identities, or pooled R^2), ``delta`` = value - baseline_value, its 95%
    paired-bootstrap interval ``delta_lo`` / ``delta_hi`` and two-sided ``p``
    (:func:`vox3d.face.metrics.paired_bootstrap`, `n_boot` resamples, `seed`).  ``better``
    says which sign favours the method (``lower``: delta < 0; ``higher``: delta > 0).
    """
    table = {(r["target"], r["method"], r["identity"]): r for r in per_identity}
    out = []
    for target in sorted({r["target"] for r in per_identity}):
        mine = {i for (t, m, i) in table if t == target and m == method}
        for base in baselines:
            ids = sorted(mine & {i for (t, m, i) in table if t == target and m == base})
            if not ids:
                continue
            for metric, (better, cols, pooled) in COMPARED_METRICS[space].items():
                rows_m = [table[(target, method, i)] for i in ids]
                rows_b = [table[(target, base, i)] for i in ids]
                if any(c not in rows_m[0] for c in cols):
                    continue
                a = np.array([[float(r[c]) for c in cols] for r in rows_m])
                b = np.array([[float(r[c]) for c in cols] for r in rows_b])
                stat = metrics.pooled_r2_stat if pooled else None
                res = metrics.paired_bootstrap(a, b, n_boot=n_boot, seed=seed, stat=stat)
                if pooled:
                    va, vb = float(metrics.pooled_r2_stat(a)), float(metrics.pooled_r2_stat(b))
                else:
                    va, vb = float(a[:, 0].mean()), float(b[:, 0].mean())
                out.append(
                    {
                        "target": target, "method": method, "baseline": base,
                        "metric": metric, "better": better, "n_identities": len(ids),
                        "value": va, "baseline_value": vb, "delta": res["delta"],
                        "delta_lo": res["lo"], "delta_hi": res["hi"], "p": res["p"],
                        "n_boot": int(n_boot),
                    }
                )  # fmt: skip
    return out
