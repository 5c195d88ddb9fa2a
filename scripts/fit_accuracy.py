"""Snakemake script of `fit_accuracy`: OUT/fit/identities.h5 against the synthetic corpus's
ground truth -> OUT/fit/accuracy.tsv and accuracy.png.  Thin: all logic is in
vox3d.fitting.fit_accuracy (and vox3d.report.identity_figures for the figure)."""

import _repo  # noqa: F401  (puts the repository on sys.path)

from vox3d.face.face_model import face_model_settings
from vox3d.fitting.fit_accuracy import run_fit_accuracy
from vox3d.joblog import job_log
from vox3d.report.identity_figures import plot_fit_accuracy

smk = snakemake  # noqa: F821  (injected by Snakemake)
inp, p = smk.input, smk.params

with job_log(smk.log[0]) as log:
    rows = run_fit_accuracy(
        inp.identities,
        inp.ground_truth,
        smk.output.tsv,
        face_model_settings(p.face_model, p.assets),
        meta_csv=inp.meta[0] if inp.meta else None,
        split=p.split,
        val_fraction=p.val_fraction,
    )
    plot_fit_accuracy(rows, smk.output.png)
    for r in rows:
        if r["set"] == "summary":
            print(
                f"{r['identity']}: {r['n_identities']} identities, error "
                f"{r['err_sim_mm']:.3f} mm (mean face {r['mf_err_sim_mm']:.3f}), "
                f"mode R^2 {r['r2_mean']:.3f}, slope {r['slope_mean']:.3f}",
                file=log,
            )
