"""Snakemake entry point of rule `figures` (thin: parse snakemake.*, call vox3d.figures)."""

import _repo  # noqa: F401  (puts the repository on sys.path)

import contextlib
from pathlib import Path

from vox3d import figures
from vox3d.split import read_meta
from vox3d.train import face_model_from_config

snakemake = globals()["snakemake"]  # injected by Snakemake's script: directive
inp, out, params = snakemake.input, snakemake.output, snakemake.params

with open(snakemake.log[0], "w") as log, contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
    figures.plot_are_bars(inp.metrics, out.are)
    figures.plot_training_curves(inp.log_csv, out.curves)
    od = Path(params.out_dir)
    meta = read_meta(inp.meta[0]) if inp.meta else {}
    figures.plot_dataset_stats(
        out.stats,
        manifest_tsv=od / "manifest.tsv",
        fit_stats_tsv=od / "fit" / "stats.tsv",
        rejects_tsvs=[od / s / "rejects.tsv" for s in ("extract", "fit", "features")],
        split_tsv=inp.split,
        genders={k: m.gender for k, m in meta.items()},
    )
    import h5py

    with h5py.File(inp.predictions, "r") as f:
        n_id = int(f.attrs["n_id"])
    fm = face_model_from_config(dict(params.face_model), n_id=n_id)
    figures.plot_identity_panels(
        inp.predictions,
        fm,
        out.identities,
        n=int(params.settings.get("n_figures", 4)),
        fit_shards=list(inp.fit_shards),
        extract_shards=list(inp.extract_shards),
    )
