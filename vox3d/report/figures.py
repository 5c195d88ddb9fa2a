"""Figures of the report (matplotlib, Agg backend; meshes rendered with :mod:`vox3d.face.render`).

* :func:`plot_are_bars`: ARE ratios and mean per method (95% bootstrap intervals), and RMSE;
* :func:`plot_comparisons`: the model minus each baseline per metric, with the paired
  bootstrap 95% interval and p-value (``comparisons.tsv``);
* :func:`plot_training_curves`: training / validation loss from ``train/log.csv``;
* :func:`plot_dataset_stats`: identities, videos, frames kept and rejected by reason, gender;
* :func:`plot_parameter_panels`: the per-identity figure when the evaluation has no
  meshes (target space ``params``, e.g. BFM without its basis file): the reference frame
  and the standardised coefficients, never a mesh (the rule's entry point,
  :func:`vox3d.report.identity_figures.plot_identities`, picks it or the mesh panels).

Without a mesh (``metrics.tsv`` without ARE columns) :func:`plot_are_bars` plots the
parameter-space metrics instead and prints the table's note on the figure.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vox3d.face.render import Light, render  # noqa: E402
from vox3d.fitting.fit_shard import FitShard  # noqa: E402
from vox3d.io import atomic_path  # noqa: E402
from vox3d.media.extract_shard import ExtractShard  # noqa: E402
from vox3d.voice.predictions import Predictions  # noqa: E402

_METHOD_COLORS = {
    "model": "#1f77b4",
    "population_mean": "#555555",
    "train_mean": "#999999",
    "gender_mean": "#ff7f0e",
    "shuffled_voice": "#9467bd",
    "unsupervised": "#2ca02c",
    "unsupervised_shuffled": "#8c564b",
}
_TARGET_COLORS = {"fitted": "#1f77b4", "ground_truth": "#d62728"}


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)


def _read_table(path, delimiter="\t") -> list[dict[str, str]]:
    if not path or not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter=delimiter))


def _f(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


# --------------------------------------------------------------------------------------
# metrics and training curves
# --------------------------------------------------------------------------------------


def plot_are_bars(metrics_tsv: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """Grouped bars of ER, FR, MR, CR, mean ARE (left) and RMSE (right) per method, one panel
    row per target, with 95% bootstrap intervals as error bars."""
    rows = _read_table(metrics_tsv)
    if rows and "are_mean" not in rows[0]:
        plot_parameter_metrics(rows, out_png)
        return
    targets = sorted({r["target"] for r in rows}) or ["-"]
    cols = ["are_er", "are_fr", "are_mr", "are_cr", "are_mean"]
    fig, axes = plt.subplots(
        len(targets),
        2,
        figsize=(11, 3.6 * len(targets)),
        squeeze=False,
        gridspec_kw={"width_ratios": [4, 1.3]},
    )
    for ti, t in enumerate(targets):
        sub = [r for r in rows if r["target"] == t]
        ax, ax2 = axes[ti]
        w = 0.8 / max(1, len(sub))
        for mi, r in enumerate(sub):
            x = np.arange(len(cols)) + (mi - (len(sub) - 1) / 2) * w
            y = np.array([_f(r[c]) for c in cols])
            lo = np.array([_f(r[f"{c}_lo"]) for c in cols])
            hi = np.array([_f(r[f"{c}_hi"]) for c in cols])
            err = np.nan_to_num(np.stack([y - lo, hi - y]), nan=0.0)
            color = _METHOD_COLORS.get(r["method"], None)
            ax.bar(x, y, w, yerr=err, capsize=3, label=r["method"], color=color)
            ry, rlo, rhi = _f(r["rmse"]), _f(r["rmse_lo"]), _f(r["rmse_hi"])
            ax2.bar(
                mi,
                ry,
                0.7,
                color=color,
                yerr=np.nan_to_num([[ry - rlo], [rhi - ry]], nan=0.0),
                capsize=3,
            )
        ax.set_xticks(np.arange(len(cols)), ["ER", "FR", "MR", "CR", "mean"])
        ax.set_ylabel("absolute ratio error")
        ax.set_title(f"ARE on held-out identities (target: {t})")
        ax.legend(fontsize=8)
        ax2.set_xticks(range(len(sub)), [r["method"] for r in sub], rotation=30, fontsize=8)
        ax2.set_ylabel("RMSE after alignment (model units)")
        ax2.set_title("RMSE")
    fig.tight_layout()
    _save(fig, out_png)


def plot_parameter_metrics(rows: Sequence[Mapping[str, str]], out_png: str | os.PathLike) -> None:
    """Parameter-space metrics of ``metrics.tsv`` rows (no ARE columns): per target, RMSE
    of the standardised coefficients (left) and pooled R^2 (right) per method, with 95%
    bootstrap intervals; the rows' ``note`` (why there is no ARE) printed under the plots."""
    import textwrap

    targets = sorted({r["target"] for r in rows}) or ["-"]
    fig, axes = plt.subplots(len(targets), 2, figsize=(10, 3.4 * len(targets) + 0.9), squeeze=False)
    for ti, t in enumerate(targets):
        sub = [r for r in rows if r["target"] == t]
        for ax, col, label in (
            (axes[ti, 0], "rmse_z", "RMSE of standardised coefficients"),
            (axes[ti, 1], "r2_param", "R^2 of coefficients vs training mean"),
        ):
            y = np.array([_f(r.get(col)) for r in sub])
            lo = np.array([_f(r.get(f"{col}_lo")) for r in sub])
            hi = np.array([_f(r.get(f"{col}_hi")) for r in sub])
            err = np.nan_to_num(np.stack([y - lo, hi - y]), nan=0.0)
            ax.bar(
                range(len(sub)), np.nan_to_num(y), 0.7, yerr=np.abs(err), capsize=3,
                color=[_METHOD_COLORS.get(r["method"]) for r in sub],
            )  # fmt: skip
            ax.set_xticks(range(len(sub)), [r["method"] for r in sub], fontsize=8)
            ax.axhline(0, color="k", lw=0.5)
            ax.set_ylabel(label, fontsize=8)
            ax.set_title(f"{col} on held-out identities (target: {t})", fontsize=9)
    note = next((r.get("note", "") for r in rows if r.get("note")), "")
    if note:
        fig.text(0.01, 0.01, "\n".join(textwrap.wrap(note, 140)), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.07 if note else 0, 1, 1))
    _save(fig, out_png)


def plot_comparisons(comparisons_tsv: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """The model minus each baseline (``comparisons.tsv``): one panel per metric, one line
    per (baseline, target) with the paired-bootstrap 95% interval of the difference and its
    p-value; the side of 0 where the model is better is shaded."""
    rows = _read_table(comparisons_tsv)
    metric_names = list(dict.fromkeys(r["metric"] for r in rows)) or ["-"]
    ncol = 2
    nrow = (len(metric_names) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(11, 2.9 * nrow), squeeze=False)
    for ax in axes.flat[len(metric_names) :]:
        ax.axis("off")
    for ax, metric in zip(axes.flat, metric_names, strict=False):
        sub = [r for r in rows if r["metric"] == metric]
        labels = []
        for y, r in enumerate(sub):
            d, lo, hi = _f(r["delta"]), _f(r["delta_lo"]), _f(r["delta_hi"])
            err = np.nan_to_num([[d - lo], [hi - d]], nan=0.0)
            ax.errorbar(
                d, y, xerr=np.abs(err), fmt="o", capsize=3, ms=4,
                color=_TARGET_COLORS.get(r["target"], "k"),
            )  # fmt: skip
            ax.annotate(f"p={_f(r['p']):.3g}", (d, y), xytext=(4, 4), textcoords="offset points",
                        fontsize=7)  # fmt: skip
            who = f"{r['method']}: " if len({x["method"] for x in rows}) > 1 else ""
            labels.append(f"{who}{r['baseline']} ({r['target']})")
        ax.axvline(0, color="k", lw=0.7)
        if sub:
            lim = ax.get_xlim()
            better_low = sub[0]["better"] == "lower"
            ax.axvspan(lim[0] if better_low else 0, 0 if better_low else lim[1], color="#2ca02c",
                       alpha=0.08, lw=0)  # fmt: skip
            ax.set_xlim(lim)
        ax.set_yticks(range(len(sub)), labels, fontsize=7)
        ax.set_ylim(-0.7, len(sub) - 0.3)
        what = "lower" if sub and sub[0]["better"] == "lower" else "higher"
        ax.set_title(f"{metric}: model - baseline (model better: {what}, shaded)", fontsize=9)
    fig.tight_layout()
    _save(fig, out_png)


def plot_training_curves(log_csv: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """Training loss terms and validation loss against the step."""
    rows = _read_table(log_csv, delimiter=",")
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    step = np.array([_f(r["step"]) for r in rows])
    for key, style in (("loss", "-"), ("loss_param", "--"), ("loss_vertex", ":")):
        y = np.array([_f(r.get(key)) for r in rows])
        if np.isfinite(y).any():
            ax[0].plot(step, y, style, label=f"train {key}")
    for key, style in (("val_loss", "-"), ("val_loss_param", "--"), ("val_loss_vertex", ":")):
        y = np.array([_f(r.get(key)) for r in rows])
        ok = np.isfinite(y)
        if ok.any():
            ax[1].plot(step[ok], y[ok], style + "o", ms=3, label=key)
            if key == "val_loss":  # train.select: best keeps this step's weights
                best = step[ok][int(np.argmin(y[ok]))]
                ax[1].axvline(best, color="0.6", lw=0.8, ls="--", label=f"lowest: step {best:g}")
    for a, t in zip(ax, ("training", "selection identities (picks model.pt)"), strict=True):
        a.set_xlabel("step")
        a.set_ylabel("loss")
        a.set_title(t)
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out_png)


# --------------------------------------------------------------------------------------
# dataset statistics
# --------------------------------------------------------------------------------------


def plot_dataset_stats(
    out_png: str | os.PathLike,
    manifest_tsv: str | os.PathLike | None = None,
    fit_stats_tsv: str | os.PathLike | None = None,
    rejects_tsvs: Sequence[str | os.PathLike] = (),
    split_tsv: str | os.PathLike | None = None,
    genders: Mapping[str, str] | None = None,
) -> None:
    """Four panels: counts (identities, videos, frames, kept), frames by fit outcome,
    rejected files by stage and reason, identities by gender and split."""
    man = _read_table(manifest_tsv)
    fit = _read_table(fit_stats_tsv)
    total = next((r for r in fit if r.get("shard") == "total"), None)
    split = _read_table(split_tsv)
    genders = dict(genders or {})
    for r in split:
        genders.setdefault(r["identity"], r.get("gender", ""))
    fig, ax = plt.subplots(2, 2, figsize=(11, 7.5))
    ids = {r.get("identity", "") for r in man} or {r["identity"] for r in split}
    counts = {"identities": len(ids), "videos": len(man)}
    if total:
        counts["frames"] = int(_f(total.get("frames")))
        counts["frames kept"] = int(_f(total.get("kept")))
    a = ax[0, 0]
    a.bar(range(len(counts)), list(counts.values()), color="#4c72b0")
    for i, v in enumerate(counts.values()):
        a.text(i, v, str(v), ha="center", va="bottom", fontsize=8)
    a.set_xticks(range(len(counts)), list(counts))
    a.set_title("dataset size")
    a = ax[0, 1]
    if total:
        skip = {"shard", "videos", "videos_rejected", "frames"}
        keys = [k for k in total if k not in skip]
        vals = [_f(total[k]) for k in keys]
        a.barh(
            range(len(keys)), vals, color=["#55a868" if k == "kept" else "#c44e52" for k in keys]
        )
        a.set_yticks(range(len(keys)), keys, fontsize=8)
        for i, v in enumerate(vals):
            a.text(max(v, 1), i, f" {int(v)}", va="center", fontsize=7)
        a.set_xscale("log")
        a.set_xlim(0.8, max(vals + [1]) * 3)
    else:
        a.text(0.5, 0.5, "no fit statistics", ha="center", transform=a.transAxes)
    a.set_title("frames: kept and rejected by reason (fit)")
    a = ax[1, 0]
    rej: dict[str, int] = {}
    for p in rejects_tsvs:
        for r in _read_table(p):
            # group by the general part of the reason ("no usable frame: 20 frames ..." ->
            # "no usable frame") so that repeated causes make one bar
            reason = r.get("reason", "").split(":")[0].split("(")[0].strip()[:40]
            key = f"{r.get('stage', '?')}: {reason}"
            rej[key] = rej.get(key, 0) + 1
    if rej:
        keys = sorted(rej, key=lambda k: (-rej[k], k))[:15]
        a.barh(range(len(keys)), [rej[k] for k in keys], color="#c44e52")
        a.set_yticks(range(len(keys)), keys, fontsize=7)
        a.invert_yaxis()
    else:
        a.text(0.5, 0.5, "no rejected files", ha="center", transform=a.transAxes)
        a.set_axis_off()
    a.set_title("rejected files by stage and reason")
    a = ax[1, 1]
    sides = {r["identity"]: r["set"] for r in split}
    labels = ["m", "f", ""]
    for si, side in enumerate(("train", "val")):
        n = [
            sum(1 for i, s in sides.items() if s == side and genders.get(i, "") == g)
            for g in labels
        ]
        a.bar(np.arange(3) + (si - 0.5) * 0.4, n, 0.4, label=side)
    a.set_xticks(range(3), ["male", "female", "unknown"])
    a.set_title("identities by gender and split")
    a.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out_png)


# --------------------------------------------------------------------------------------
# meshes
# --------------------------------------------------------------------------------------


def frontal_image_coords(
    vertices: np.ndarray, size: int, extent: float | None = None
) -> np.ndarray:
    """Model coordinates ``(V, 3)`` (x left-of-subject = image right, y up, z to the camera)
    -> image coordinates ``(V, 3)`` float32 of a ``size`` x ``size`` frontal view (x right,
    y down, z larger = nearer), the mesh centred and ``extent`` model units wide."""
    v = np.asarray(vertices, dtype=np.float64)
    c = (v.max(0) + v.min(0)) / 2
    ext = extent or float((v.max(0) - v.min(0))[:2].max()) * 1.1
    s = size / ext
    out = np.empty_like(v)
    out[:, 0] = (v[:, 0] - c[0]) * s + size / 2
    out[:, 1] = size / 2 - (v[:, 1] - c[1]) * s
    out[:, 2] = (v[:, 2] - v[:, 2].min()) * s
    return out.astype(np.float32)


def render_mesh(
    img_vertices: np.ndarray,
    triangles: np.ndarray,
    colors: np.ndarray | None = None,
    image: np.ndarray | None = None,
    size: int = 256,
) -> np.ndarray:
    """Render a mesh in image coordinates with :func:`vox3d.face.render.render` (lit), onto
    ``image`` (``(H, W, 3)`` uint8) or a white canvas; returns ``(H, W, 3)`` uint8."""
    v = np.ascontiguousarray(img_vertices, dtype=np.float32)
    if colors is None:
        colors = np.full((len(v), 3), 0.8, dtype=np.float32)
    if image is None:
        image = np.full((size, size, 3), 255, dtype=np.uint8)
    out = render(
        v,
        np.ascontiguousarray(triangles, dtype=np.int32),
        np.ascontiguousarray(colors, dtype=np.float32),
        image=np.ascontiguousarray(image, dtype=np.uint8),
        light=Light(),
    )
    return np.asarray(out)


def error_colors(err: np.ndarray, vmax: float) -> np.ndarray:
    """Per-vertex error ``(V,)`` -> ``(V, 3)`` float32 RGB in [0, 1] (viridis, 0..vmax)."""
    cmap = matplotlib.colormaps["viridis"]
    return cmap(np.clip(np.asarray(err) / max(vmax, 1e-12), 0, 1))[:, :3].astype(np.float32)


def reference_frame(
    identity: str,
    fit_shards: Sequence[str | os.PathLike],
    extract_shards: Sequence[str | os.PathLike],
    videos_dir: str | os.PathLike | None = None,
):
    """The identity's kept frame with the highest detector score: ``(rgb (H, W, 3) uint8,
    params (n,), roi (4,), layout)`` or None when no shard has one.  `videos_dir`: where
    the manifest's videos are, to decode the frame when the extract shard stores none."""
    best = None
    for fp in sorted(str(p) for p in fit_shards):
        s = FitShard.read(fp, fields=("video", "keep", "score", "frame", "params", "roi"))
        mine = [i for i, x in enumerate(s.video_identities) if x == identity]
        if not mine:
            continue
        video = s.frames["video"]
        keep = s.frames["keep"].astype(bool) & np.isin(video, mine)
        if not keep.any():
            continue
        score = np.where(keep, s.frames["score"], -np.inf)
        j = int(np.argmax(score))
        if best is None or score[j] > best[0]:
            best = (
                float(score[j]),
                fp,
                s.video_paths[int(video[j])],
                int(s.frames["frame"][j]),
                s.frames["params"][j],
                s.frames["roi"][j],
                s.layout,
            )
    if best is None:
        return None
    _, fp, vpath, frame, params, roi, layout = best

    stem = Path(fp).stem
    for ep in sorted(str(p) for p in extract_shards):
        if Path(ep).stem != stem:
            continue
        with ExtractShard(ep) as es:
            for i, v in enumerate(es.videos):
                if v["video"] == vpath:
                    rgb = es.frame(i, frame, videos_dir)
                    return rgb, np.asarray(params), np.asarray(roi), layout
    return None


def plot_parameter_panels(
    predictions_h5: str | os.PathLike,
    out_png: str | os.PathLike,
    n: int = 4,
    fit_shards: Sequence[str | os.PathLike] = (),
    extract_shards: Sequence[str | os.PathLike] = (),
    videos_dir: str | os.PathLike | None = None,
) -> None:
    """One row per held-out identity (the first ``n``): its reference frame and its identity
    coefficients standardised by the training statistics, ``(c - mean) / std`` (K values):
    fitted target, predicted from voice (mean over utterances, with the min-max range over
    utterances), and the gender-mean baseline (the mean shape is 0 by construction).  No
    mesh is drawn: the figure states that meshes need the face model's basis."""
    import textwrap

    pr = Predictions.read(predictions_h5)
    ids = list(pr.identities[:n])
    mu, sd = (a.astype(np.float64) for a in pr.train_stats["fitted"])
    pred = {i: v for i, v in pr.method(pr.voice_method).items() if i in ids}
    gmean = {i: v for i, v in pr.method("gender_mean").items() if i in ids}
    tgt = {i: v for i, v in pr.targets["fitted"].items() if i in ids}
    note, fm_name = pr.note, pr.face_model
    ids = [i for i in ids if i in pred and i in tgt]
    fig, axes = plt.subplots(
        max(1, len(ids)), 2, figsize=(12, 2.6 * max(1, len(ids)) + 0.8), squeeze=False,
        gridspec_kw={"width_ratios": [1, 4.5]},
    )  # fmt: skip
    k = np.arange(len(mu))
    for r, i in enumerate(ids):
        ref = reference_frame(i, fit_shards, extract_shards, videos_dir) if fit_shards else None
        if ref is not None:
            axes[r, 0].imshow(ref[0])
        else:
            axes[r, 0].text(0.5, 0.5, "no frame", ha="center", transform=axes[r, 0].transAxes)
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        axes[r, 0].set_ylabel(i, fontsize=8)
        z = (np.atleast_2d(pred[i]) - mu) / sd
        a = axes[r, 1]
        a.axhline(0, color=_METHOD_COLORS["train_mean"], lw=1, label="training mean (0)")
        a.plot(k, (tgt[i] - mu) / sd, "ks-", ms=3, lw=1, label="fitted (target)")
        a.fill_between(k, z.min(0), z.max(0), color=_METHOD_COLORS["model"], alpha=0.2)
        a.plot(k, z.mean(0), "o-", color=_METHOD_COLORS["model"], ms=3, lw=1, label="from voice")
        if i in gmean:
            g = (np.atleast_2d(gmean[i])[0] - mu) / sd
            a.plot(k, g, "--", color=_METHOD_COLORS["gender_mean"], lw=1, label="gender mean")
        a.set_xlim(-0.5, len(mu) - 0.5)
        a.set_ylabel("(c - mean) / std", fontsize=8)
        a.grid(alpha=0.3)
        if r == 0:
            a.legend(fontsize=7, ncol=4, loc="upper right")
            a.set_title(
                f"{fm_name.upper() or 'identity'} shape coefficients, standardised", fontsize=9
            )
    axes[-1, 1].set_xlabel("identity (shape) coefficient")
    axes[0, 0].set_title("reference frame", fontsize=9)
    text = "No meshes drawn: the evaluation is in parameter space. " + note
    fig.text(0.01, 0.01, "\n".join(textwrap.wrap(text, 150)), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.8 / (2.6 * max(1, len(ids)) + 0.8), 1, 1))
    _save(fig, out_png)
