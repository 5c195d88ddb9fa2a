"""Figures that show how much identity the fitted shapes carry.

* :func:`plot_fit_accuracy`: ``OUT/fit/accuracy.png``, fitted against true coefficient of
  identity modes 0-9, one point per identity (held-out and training identities told
  apart), with the identity line (a perfect fit) and the least-squares line of the fit
  (its slope: 1 = full identity signal, 0 = the mean face for everyone);
* :func:`plot_identities`: the ``figures`` rule's entry point for
  ``OUT/evaluate/identities.png``: :func:`plot_identity_panels` when the evaluation has
  meshes, else :func:`vox3d.report.figures.plot_parameter_panels`;
* :func:`plot_identity_panels`: ``OUT/evaluate/identities.png``, one row per held-out
  identity: its reference frame, the fitted mesh overlaid on it, the true mesh (synthetic
  corpus), the fitted mesh, the mesh predicted from voice, the mean face; then, on the mean
  face, how the true and the fitted shapes differ from the mean face (signed displacement
  along the mean face's normals, one colour scale for both: a fit that carries identity
  shows the truth's pattern at the truth's strength) and the error maps of the fitted
  shape against the truth and of the voice prediction against the fitted shape, both after
  a similarity alignment (rotation, translation, uniform scale).

Meshes are rendered with :mod:`vox3d.face.render` through :func:`vox3d.report.figures.render_mesh`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from vox3d.face.face_model import face_model_from_config, face_model_section, load_face_model
from vox3d.face.metrics import align
from vox3d.face.render import vertex_normals
from vox3d.fitting.fit_accuracy import FACE_SET
from vox3d.params import split as split_params
from vox3d.params import to_image, transform_vertices
from vox3d.report import figures as _fig
from vox3d.report.figures import plt  # the Agg backend is selected there
from vox3d.synthetic.voice_mapping import LINKED_FEATURES
from vox3d.voice.evaluate import mesh_vertices
from vox3d.voice.predictions import Predictions

_SET_STYLE = {
    "train": {"color": "#1f77b4", "marker": "o", "label": "training identities"},
    "held_out": {"color": "#d62728", "marker": "s", "label": "held-out identities (A-E)"},
}


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def plot_fit_accuracy(
    rows: Sequence[Mapping], out_png: str | os.PathLike, n_modes: int | None = None
) -> None:
    """Scatter of fitted against true coefficient, one panel per identity mode.

    rows: the rows of :func:`vox3d.fitting.fit_accuracy.accuracy_table` (identity rows with
    ``true_c<m>``/``fit_c<m>``; the ``all`` summary row gives the slope and R^2 printed).
    """
    ids = [r for r in rows if r.get("set") in _SET_STYLE]
    summary = {r["identity"]: r for r in rows if r.get("set") == "summary"}
    allrow = summary.get("all", {})
    if n_modes is None:
        n_modes = sum(1 for m in range(100) if f"true_c{m}" in (ids[0] if ids else {}))
    n_modes = max(1, n_modes)
    ncol = min(5, n_modes)
    nrow = int(np.ceil(n_modes / ncol))
    # one scale for every mode (coefficients are in prior standard deviations)
    vals = [_num(r.get(f"{p}_c{m}")) for r in ids for m in range(n_modes) for p in ("true", "fit")]
    lim = float(np.nanmax(np.abs(np.asarray(vals + [1.0])))) * 1.1
    height = 2.8 * nrow + 1.0
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(2.8 * ncol, height), squeeze=False, sharex=True, sharey=True
    )
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.55 / height, bottom=0.85 / height,
                        wspace=0.08, hspace=0.22)  # fmt: skip
    for m in range(nrow * ncol):
        a = axes.ravel()[m]
        if m >= n_modes:
            a.axis("off")
            continue
        x_all = np.array([_num(r.get(f"true_c{m}")) for r in ids])
        y_all = np.array([_num(r.get(f"fit_c{m}")) for r in ids])
        a.plot([-lim, lim], [-lim, lim], color="#777777", lw=1, ls="--", label="identity (y = x)")
        a.axhline(0, color="#bbbbbb", lw=0.6)
        for s, st in _SET_STYLE.items():
            sel = np.array([r["set"] == s for r in ids], dtype=bool)
            if sel.any():
                a.scatter(x_all[sel], y_all[sel], s=16, color=st["color"], marker=st["marker"],
                          label=st["label"], alpha=0.85, lw=0)  # fmt: skip
        slope = _num(allrow.get(f"slope_m{m}"))
        if np.isfinite(slope) and np.isfinite(x_all).any():
            xm, ym = np.nanmean(x_all), np.nanmean(y_all)
            xs = np.array([-lim, lim])
            a.plot(xs, ym + slope * (xs - xm), color="k", lw=1.2, label="least-squares fit")
        a.set_xlim(-lim, lim)
        a.set_ylim(-lim, lim)
        a.set_title(
            f"mode {m}: slope {slope:.2f}, R$^2$ {_num(allrow.get(f'r2_m{m}')):.2f}", fontsize=8
        )
        a.tick_params(labelsize=7)
        if m % ncol == 0:
            a.set_ylabel("fitted coefficient", fontsize=8)
        if m // ncol == nrow - 1:
            a.set_xlabel("true coefficient", fontsize=8)
    h, lab = axes[0, 0].get_legend_handles_labels()
    fig.legend(h, lab, loc="lower center", ncol=4, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))  # fmt: skip
    ho, tr = summary.get("held_out", {}), summary.get("train", {})
    fig.suptitle(
        "Fitted vs true identity coefficients (robust aggregate per identity). Mean over "
        f"modes 0-{n_modes - 1}: slope {_num(allrow.get('slope_mean')):.2f}, "
        f"R$^2$ {_num(allrow.get('r2_mean')):.2f} (held-out {_num(ho.get('r2_mean')):.2f}, "
        f"training {_num(tr.get('r2_mean')):.2f}); error / mean-face error "
        f"{_num(allrow.get('ratio_sim')):.2f} (similarity-aligned)",
        fontsize=9,
    )
    _fig._save(fig, out_png)


# --------------------------------------------------------------------------------------
# identities.png


def signed_displacement(vertices: np.ndarray, mean: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """``(V,)`` displacement of ``vertices`` from ``mean`` (both ``(V, 3)``) along the unit
    ``normals (V, 3)`` of the mean face: > 0 outwards (bulging), < 0 inwards; model units."""
    d = np.asarray(vertices, np.float64) - np.asarray(mean, np.float64)
    return (d * np.asarray(normals, np.float64)).sum(axis=1)


def diverging_colors(values: np.ndarray, vmax: float) -> np.ndarray:
    """``(V,)`` signed values -> ``(V, 3)`` float32 RGB (``RdBu_r``: blue < 0 < red,
    white at 0, saturated at +-vmax)."""
    import matplotlib

    cmap = matplotlib.colormaps["RdBu_r"]
    t = 0.5 + 0.5 * np.clip(np.asarray(values) / max(vmax, 1e-12), -1, 1)
    return cmap(t)[:, :3].astype(np.float32)


def plot_identity_panels(
    predictions_h5: str | os.PathLike,
    face_model,
    out_png: str | os.PathLike,
    n: int = 4,
    fit_shards: Sequence[str | os.PathLike] = (),
    extract_shards: Sequence[str | os.PathLike] = (),
    size: int = 256,
    videos_dir: str | os.PathLike | None = None,
) -> None:
    """One row per held-out identity (the first ``n`` in sorted order), see the module doc.

    The ground-truth columns (true mesh, true - mean face, fitted vs truth error) appear
    when ``predictions_h5`` holds ``target_ground_truth`` (the synthetic corpus).  Error
    and displacement maps are drawn on the mean-face mesh; colour scales are shared by all
    rows (displacements: symmetric, 95th percentile of |true - mean| (else |fitted -
    mean|); errors: 99th percentile).  Units: mm when the model is in cm, else its units.
    """
    fm = face_model
    pr = Predictions.read(predictions_h5)
    ids = list(pr.identities[:n])
    pred = {i: v for i, v in pr.method(pr.voice_method).items() if i in ids}
    tgt = {i: v for i, v in pr.targets["fitted"].items() if i in ids}
    gt = {i: v for i, v in pr.targets.get("ground_truth", {}).items() if i in ids}
    ids = [i for i in ids if i in pred and i in tgt]
    has_gt = bool(ids) and all(i in gt for i in ids)
    scale, unit = (10.0, "mm") if fm.units == "cm" else (1.0, fm.units)
    mean = np.asarray(fm.mean, np.float64)
    normals = vertex_normals(np.ascontiguousarray(fm.mean, np.float32), fm.triangles)
    area = np.asarray(fm.vertex_sets.get(FACE_SET, np.arange(fm.n_vertices)), dtype=np.int64)
    mean_a, normals_a = mean[area], normals[area]

    def paint(values: np.ndarray, colorize) -> np.ndarray:
        """Colours of the face area's vertices, light grey elsewhere: ``(V, 3)``."""
        rgb = np.full((fm.n_vertices, 3), 0.85, dtype=np.float32)
        rgb[area] = colorize(values)
        return rgb

    def err(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.linalg.norm(align(a[area], b[area], scale=True) - b[area], axis=1) * scale

    cols = ["reference frame", "fitted overlay"]
    cols += ["ground truth"] if has_gt else []
    cols += ["fitted", "from voice", "mean face (coef. 0)"]
    cols += ["true - mean face"] if has_gt else []
    cols += ["fitted - mean face"]
    cols += ["|fitted - true|"] if has_gt else []
    cols += ["|voice - fitted|"]
    data = {}
    for i in ids:
        fv = mesh_vertices(fm.mean, fm.id_basis, tgt[i]).astype(np.float64)
        pv = mesh_vertices(fm.mean, fm.id_basis, np.asarray(pred[i]).mean(0)).astype(np.float64)
        d = {"fitted": fv, "voice": pv}
        d["disp_fit"] = signed_displacement(fv[area], mean_a, normals_a) * scale
        d["err_voice"] = err(pv, fv)
        if has_gt:
            tv = mesh_vertices(fm.mean, fm.id_basis, np.asarray(gt[i])[: fm.n_id])
            tv = tv.astype(np.float64)
            d["true"] = tv
            d["disp_true"] = signed_displacement(tv[area], mean_a, normals_a) * scale
            d["err_fit"] = err(fv, tv)
        data[i] = d

    def pct(key: str, q: float, absval: bool = False) -> float:
        vals = [np.abs(d[key]) if absval else d[key] for d in data.values() if key in d]
        return float(np.percentile(np.concatenate(vals), q)) if vals else 1.0

    # the 95th percentile: the chin's large displacements saturate, the rest stays readable
    dmax = pct("disp_true" if has_gt else "disp_fit", 95, absval=True)
    emax = max(pct("err_fit", 99) if has_gt else 0.0, pct("err_voice", 99))
    ncols = len(cols)
    fig, axes = plt.subplots(
        max(1, len(ids)), ncols, figsize=(2.0 * ncols, 2.2 * max(1, len(ids)) + 0.8),
        squeeze=False,
    )  # fmt: skip
    ext = float((fm.mean.max(0) - fm.mean.min(0))[:2].max()) * 1.15
    tri = fm.triangles

    def show(ax, v, colors=None):
        img = _fig.render_mesh(_fig.frontal_image_coords(v, size, ext), tri, colors, size=size)
        ax.imshow(img)

    for r, i in enumerate(ids):
        d = data[i]
        c = 0
        ref = (
            _fig.reference_frame(i, fit_shards, extract_shards, videos_dir) if fit_shards else None
        )
        if ref is not None:
            rgb, params, roi, layout = ref
            axes[r, 0].imshow(rgb)
            P, a_id, a_exp = split_params(params, layout)
            k_exp = min(len(a_exp), fm.n_exp)
            ov = fm.vertices(a_id[: fm.n_id], a_exp[:k_exp] if k_exp else None)
            img_v = to_image(transform_vertices(ov, P), roi)
            axes[r, 1].imshow(_fig.render_mesh(img_v, tri, image=np.ascontiguousarray(rgb)))
        else:
            for cc in (0, 1):
                axes[r, cc].text(0.5, 0.5, "no frame", ha="center", transform=axes[r, cc].transAxes)
        c = 2
        panels = [("true", None)] if has_gt else []
        panels += [("fitted", None), ("voice", None), ("mean", None)]
        for key, _ in panels:
            show(axes[r, c], mean if key == "mean" else d[key])
            c += 1
        if has_gt:
            show(axes[r, c], mean, paint(d["disp_true"], lambda x: diverging_colors(x, dmax)))
            axes[r, c].set_xlabel(f"RMS {np.sqrt(np.mean(d['disp_true'] ** 2)):.2f} {unit}",
                                  fontsize=7)  # fmt: skip
            c += 1
        show(axes[r, c], mean, paint(d["disp_fit"], lambda x: diverging_colors(x, dmax)))
        axes[r, c].set_xlabel(f"RMS {np.sqrt(np.mean(d['disp_fit'] ** 2)):.2f} {unit}", fontsize=7)
        c += 1
        if has_gt:
            show(axes[r, c], mean, paint(d["err_fit"], lambda x: _fig.error_colors(x, emax)))
            axes[r, c].set_xlabel(f"mean {d['err_fit'].mean():.2f} {unit}", fontsize=7)
            c += 1
        show(axes[r, c], mean, paint(d["err_voice"], lambda x: _fig.error_colors(x, emax)))
        axes[r, c].set_xlabel(f"mean {d['err_voice'].mean():.2f} {unit}", fontsize=7)
        axes[r, 0].set_ylabel(i, fontsize=8)
    for c, t in enumerate(cols):
        axes[0, c].set_title(t, fontsize=8)
    for a in axes.ravel():
        a.set_xticks([])
        a.set_yticks([])
    rows_in = 2.2 * max(1, len(ids)) + 0.8
    fig.subplots_adjust(left=0.02, right=0.99, top=1 - 0.35 / rows_in, bottom=0.8 / rows_in,
                        wspace=0.04, hspace=0.12)  # fmt: skip
    disp_cols = [c for c, t in enumerate(cols) if t.endswith("- mean face")]
    err_cols = [c for c, t in enumerate(cols) if t.startswith("|")]
    for cs, cmap, lo, hi, label in (
        (disp_cols, "RdBu_r", -dmax, dmax, f"along the mean face's normal ({unit})"),
        (err_cols, "viridis", 0.0, emax, f"after similarity alignment ({unit})"),
    ):
        x0 = axes[-1, cs[0]].get_position().x0
        x1 = axes[-1, cs[-1]].get_position().x1
        cax = fig.add_axes((x0 + 0.01, 0.45 / rows_in, x1 - x0 - 0.02, 0.08 / rows_in))
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
        cb = fig.colorbar(sm, cax=cax, orientation="horizontal")
        cb.set_label(label, fontsize=7)
        cb.ax.tick_params(labelsize=6)
    _fig._save(fig, out_png)


def plot_identities(
    predictions_h5: str | os.PathLike,
    face_settings: Mapping,
    out_png: str | os.PathLike,
    n: int = 4,
    fit_shards: Sequence[str | os.PathLike] = (),
    extract_shards: Sequence[str | os.PathLike] = (),
    videos_dir: str | os.PathLike | None = None,
) -> None:
    """The per-identity figure of the ``figures`` rule: :func:`plot_identity_panels` when the
    evaluation was in mesh space (the face model of ``face_settings``, config
    ``face_model`` + asset paths, is loaded), else
    :func:`vox3d.report.figures.plot_parameter_panels`, which needs no face model."""
    pr = Predictions.read(predictions_h5)
    n_id, space = pr.n_id, pr.target_space
    if space == "params":
        _fig.plot_parameter_panels(
            predictions_h5, out_png, n, fit_shards, extract_shards, videos_dir
        )
        return
    fm = face_model_from_config(face_settings, n_id=n_id)
    plot_identity_panels(  # + truth
        predictions_h5, fm, out_png, n, fit_shards, extract_shards, videos_dir=videos_dir
    )


# --------------------------------------------------------------------------------------
# voice_directions.png


def voice_directions(face_settings: Mapping, n_id: int) -> tuple[np.ndarray, list[str]]:
    """The synthetic corpus's face -> voice directions ``(8, n_id)`` in the coefficients'
    prior units and their voice features' names (:func:`vox3d.synthetic.synth_rig.mapping_directions`
    on the ICT head model), for ICT runs; ``ValueError`` for another face model."""
    from vox3d.synthetic import synth_rig

    if face_model_section(face_settings)["name"] != "ict":
        raise ValueError("the synthetic voice directions are defined on the ICT face model")
    kw = {"path": face_settings["path"]} if face_settings.get("path") else {}
    model = load_face_model("ict", subset="head", n_id=n_id, n_exp=0, **kw)
    d, _ = synth_rig.mapping_directions(model)
    return d / np.asarray(model.id_std[:n_id], np.float64)[None, :], list(LINKED_FEATURES)


def voice_direction_points(
    predictions_h5: str | os.PathLike, face_settings: Mapping | None = None
) -> dict:
    """The data of :func:`plot_voice_directions`: ``names`` (P,), ``true``, ``pred`` and
    ``fitted`` (N, P) projections (``fitted`` None without a ground truth), ``base`` (P,)
    the training mean's projection, ``ids``, ``has_gt``, ``directions`` (P, K) or None and
    ``unit`` (the axes' unit, in words)."""
    pr = Predictions.read(predictions_h5)
    has_gt = pr.has_ground_truth
    tkey = "ground_truth" if has_gt else "fitted"
    space, k = pr.target_space, pr.n_id
    grp, truth = pr.method(pr.voice_method, tkey), pr.targets[tkey]
    ids = [i for i in pr.identities if i in grp and i in truth]
    pred = np.stack([np.asarray(grp[i], np.float64).mean(0) for i in ids])
    true = np.stack([np.asarray(truth[i], np.float64) for i in ids])
    fitted = None
    if has_gt and all(i in pr.targets["fitted"] for i in ids):
        fitted = np.stack([np.asarray(pr.targets["fitted"][i], np.float64) for i in ids])
    mu, sd = (np.asarray(a, np.float64) for a in pr.train_stats[tkey])
    dirs = None
    if has_gt and space == "mesh" and face_settings is not None:
        try:
            dirs, names = voice_directions(face_settings, k)
        except ValueError:
            dirs = None
    if dirs is not None:
        unit = "projection on the direction (prior std units)"

        def project(c):
            return c @ dirs.T
    else:
        n = min(8, k)
        names = [f"identity coefficient {m}" for m in range(n)]
        unit = "standardised coefficient (training identities)"

        def project(c):
            return ((c - mu) / np.where(sd > 0, sd, 1.0))[..., :n]

    return {
        "ids": ids,
        "names": names,
        "true": project(true),
        "pred": project(pred),
        "fitted": None if fitted is None else project(fitted),
        "base": project(mu),
        "has_gt": has_gt,
        "directions": dirs,
        "unit": unit,
    }


def plot_voice_directions(
    predictions_h5: str | os.PathLike,
    out_png: str | os.PathLike,
    face_settings: Mapping | None = None,
) -> None:
    """Predicted from voice against true, one panel per voice-linked direction.

    Per held-out identity, the voice model's prediction (mean over its utterances) and the
    fitted target, projected on each direction, against the truth's projection.  With a
    ground truth (synthetic corpus, ICT): the 8 directions the generator ties voice to
    (:func:`voice_directions`; their unit is one prior standard deviation of the face
    along the direction).  Without one (real data): the target is the fitted shape and the
    panels are the first 8 identity coefficients, standardised by the training identities.
    A model that hears the link puts its points along the diagonal; the mean face is the
    horizontal line at the training mean (:func:`voice_direction_points`)."""
    d = voice_direction_points(predictions_h5, face_settings)
    tp, pp, fp, base, names = d["true"], d["pred"], d["fitted"], d["base"], d["names"]
    n = tp.shape[1]
    cols = 4
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.2 * rows), squeeze=False)
    for j in range(rows * cols):
        ax = axes[j // cols, j % cols]
        if j >= n:
            ax.axis("off")
            continue
        x, y = tp[:, j], pp[:, j]
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        pad = 0.08 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", lw=0.8)
        ax.axhline(base[j], color="0.75", lw=0.8, ls="--")
        r = float(np.corrcoef(x, y)[0, 1]) if len(x) > 2 and y.std() > 0 else float("nan")
        ax.scatter(x, y, s=16, color="#d62728", label=f"from voice (r {r:.2f})", zorder=3)
        if fp is not None:
            rf = float(np.corrcoef(x, fp[:, j])[0, 1]) if len(x) > 2 else float("nan")
            ax.scatter(x, fp[:, j], s=16, marker="x", color="#1f77b4", lw=0.8,
                       label=f"fitted target (r {rf:.2f})", zorder=2)  # fmt: skip
        ax.set_title(names[j], fontsize=9)
        ax.legend(fontsize=6.5, loc="upper left", frameon=False)
        ax.tick_params(labelsize=7)
        if j % cols == 0:
            ax.set_ylabel("predicted", fontsize=8)
        if j // cols == rows - 1:
            ax.set_xlabel("true" if d["has_gt"] else "fitted (the target)", fontsize=8)
    src = "ground truth" if d["has_gt"] else "fitted shape"
    fig.suptitle(
        f"{len(d['ids'])} held-out identities: {d['unit']}; x = {src}; dashed = the training "
        "mean (mean face), diagonal = perfect",
        fontsize=9,
    )
    fig.tight_layout()
    _fig._save(fig, out_png)
