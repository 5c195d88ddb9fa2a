"""Identity accuracy of the fit on the synthetic corpus (vox3d.fitting.fit_accuracy), printed.

    python bench/fit_accuracy.py --out-dir results
    (reads OUT/fit/identities.h5, OUT/fit/shard-*.h5, OUT/synthetic/ground_truth.h5 and
    OUT/synthetic/vox1_meta.csv for the held-out split: names A-E)

Two estimates per identity: the robust aggregate of identities.h5 (one shape), and single
frames (the identity coefficients of every kept frame of the fit shards; an identity's
error is the median over its frames, the mode statistics pool all frames).  For each,
held-out, training and all identities: face-area (ICT narrow face) errors in mm, raw,
after a similarity alignment and scale-normalised (% of the RMS size), the mean face's
(coefficients 0) and the ratio; ARE; mean over modes 0-9 of slope, R^2 and squared
correlation of fitted vs true coefficients; vertex R^2 raw and similarity-aligned.  Then
per mode, and per held-out identity (aggregate).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vox3d.fitting import fit_accuracy as fa  # noqa: E402

SUMMARY = (
    ("n_identities", "ids", "{:>4d}", 4),
    ("n_predictions", "preds", "{:>6d}", 6),
    ("err_raw_mm", "raw mm", "{:>7.3f}", 7),
    ("mf_err_raw_mm", "mf raw", "{:>7.3f}", 7),
    ("err_sim_mm", "sim mm", "{:>7.3f}", 7),
    ("mf_err_sim_mm", "mf sim", "{:>7.3f}", 7),
    ("ratio_sim", "ratio", "{:>6.3f}", 6),
    ("err_norm_pct", "norm %", "{:>7.3f}", 7),
    ("mf_err_norm_pct", "mf norm", "{:>8.3f}", 8),
    ("are_mean", "ARE", "{:>7.4f}", 7),
    ("mf_are_mean", "mf ARE", "{:>7.4f}", 7),
    ("slope_mean", "slope", "{:>6.3f}", 6),
    ("r2_mean", "R2", "{:>7.3f}", 7),
    ("corr2_mean", "corr2", "{:>6.3f}", 6),
    ("r2_vertex", "R2 v", "{:>7.3f}", 7),
    ("r2_vertex_sim", "R2 vsim", "{:>8.3f}", 8),
)


def _fmt(fmt: str, v) -> str:
    if isinstance(v, float) and not np.isfinite(v):
        return fmt.replace("d}", "}").format(float("nan"))
    return fmt.format(int(v) if "d}" in fmt else float(v))


def print_summary(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'group':<10}" + "".join(f"{h:>{w}}" for _, h, _, w in SUMMARY))
    for r in rows:
        if r["set"] == "summary":
            print(f"{r['identity']:<10}" + "".join(_fmt(f, r[c]) for c, _, f, _ in SUMMARY))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default="results")
    ap.add_argument(
        "--meta", default=None, help="metadata csv (default OUT/synthetic/vox1_meta.csv)"
    )
    ap.add_argument("--face-model", default=None, help="ICT archive (default: vox3d.paths)")
    args = ap.parse_args(argv)
    fit_dir = os.path.join(args.out_dir, "fit")
    gt_path = os.path.join(args.out_dir, "synthetic", "ground_truth.h5")
    meta = args.meta or os.path.join(args.out_dir, "synthetic", "vox1_meta.csv")
    if not os.path.isfile(gt_path):
        print(
            f"no ground truth at {gt_path}: the measures need the synthetic corpus", file=sys.stderr
        )
        return 1
    t0 = time.perf_counter()
    truth = fa.read_true_identities(gt_path)
    agg = fa.read_fitted_identities(os.path.join(fit_dir, "identities.h5"))
    frames = fa.read_frame_coefficients(sorted(glob.glob(os.path.join(fit_dir, "shard-*.h5"))))
    k = max(len(next(iter(agg.values()))), len(next(iter(truth.values()))))
    cfg = {"name": "ict", **({"path": args.face_model} if args.face_model else {})}
    area = fa.face_area_for(cfg, k)
    held = fa.held_out_identities(
        sorted(set(agg) & set(truth)), meta if os.path.isfile(meta) else None
    )
    print(f"out dir: {args.out_dir}")
    print(
        f"identities: {len(truth)} true, {len(agg)} fitted ({len(held)} held out: "
        f"{', '.join(held)}); kept frames: {sum(len(v) for v in frames.values())}"
    )
    print(
        f"face area: {area.mean.shape[0]} vertices (ICT narrow face); true coefficients: "
        f"{len(next(iter(truth.values())))} modes, fitted: {len(next(iter(agg.values())))}"
    )
    print(
        "columns: errors = mean per-vertex distance vs the truth (median over an identity's "
        "predictions, mean over identities); mf = mean face (coefficients 0); ratio = sim / mf "
        "sim; norm % = scale-normalised, % of RMS size; slope / R2 / corr2 = mean over modes "
        "0-9 of fitted vs true coefficient; R2 v = face-area vertex R^2 (vsim: similarity-aligned)"
    )
    rows_agg = fa.accuracy_table(area, agg, truth, held)
    rows_frm = fa.accuracy_table(area, frames, truth, held)
    print_summary("robust aggregate (fit/identities.h5, one shape per identity)", rows_agg)
    print_summary("single frame (every kept frame; median per identity)", rows_frm)
    for title, rows in (("robust aggregate", rows_agg), ("single frame", rows_frm)):
        print(f"\nper mode, {title} (held out | training | all)")
        print(f"{'mode':<6}" + "".join(f"{'slope':>8}{'R2':>8}{'corr2':>8}  " for _ in range(3)))
        by = {r["identity"]: r for r in rows if r["set"] == "summary"}
        for m in range(fa.N_MODES):
            line = f"{m:<6}"
            for g in fa.GROUPS:
                r = by[g]
                line += f"{r[f'slope_m{m}']:>8.3f}{r[f'r2_m{m}']:>8.3f}{r[f'corr2_m{m}']:>8.3f}  "
            print(line)
    print(
        "\nheld-out identities, robust aggregate (mm; ratio = fitted / mean face, similarity-aligned)"
    )
    print(
        f"{'identity':<10}{'raw':>7}{'mf raw':>8}{'sim':>7}{'mf sim':>8}{'ratio':>7}{'ARE':>8}{'mf ARE':>8}"
    )
    for r in rows_agg:
        if r["set"] == "held_out":
            print(
                f"{r['identity']:<10}{r['err_raw_mm']:>7.3f}{r['mf_err_raw_mm']:>8.3f}"
                f"{r['err_sim_mm']:>7.3f}{r['mf_err_sim_mm']:>8.3f}{r['ratio_sim']:>7.3f}"
                f"{r['are_mean']:>8.4f}{r['mf_are_mean']:>8.4f}"
            )
    print(f"\n({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
