"""Snakemake entry point of rule `evaluate` (thin: parse snakemake.*, call vox3d.evaluate)."""

import _repo  # noqa: F401  (puts the repository on sys.path)

import contextlib

import torch

from vox3d.evaluate import run_evaluate

snakemake = globals()["snakemake"]  # injected by Snakemake's script: directive

with open(snakemake.log[0], "w") as log, contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
    torch.set_num_threads(max(1, snakemake.threads))
    summary = run_evaluate(
        model_path=snakemake.input.model,
        split_path=snakemake.input.split,
        identities_h5=snakemake.input.identities,
        feature_paths=list(snakemake.input.features),
        out_metrics=snakemake.output.metrics,
        out_per_identity=snakemake.output.per_identity,
        out_predictions=snakemake.output.predictions,
        ground_truth_h5=snakemake.input.ground_truth[0] if snakemake.input.ground_truth else None,
        face_model=dict(snakemake.params.face_model),
        settings=dict(snakemake.params.settings),
        device=snakemake.params.settings.get("device", "auto"),
    )
    for row in summary:
        print(row["method"], row["target"], "are_mean", row["are_mean"], "rmse", row["rmse"])
