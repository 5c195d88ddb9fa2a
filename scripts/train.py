"""Snakemake entry point of rule `train` (thin: parse snakemake.*, call vox3d.train)."""

import _repo  # noqa: F401  (puts the repository on sys.path)

import contextlib
from pathlib import Path

import torch

from vox3d.train import run_train

snakemake = globals()["snakemake"]  # injected by Snakemake's script: directive

with open(snakemake.log[0], "w") as log, contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
    torch.set_num_threads(max(1, snakemake.threads))
    run_train(
        settings=dict(snakemake.params.settings),
        feature_paths=list(snakemake.input.features),
        identities_h5=snakemake.input.identities,
        meta_csv=snakemake.input.meta[0] if snakemake.input.meta else None,
        out_dir=Path(snakemake.output.model).parent,
        face_model=dict(snakemake.params.face_model),
        threads=snakemake.threads,
    )
