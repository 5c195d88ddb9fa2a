"""Snakemake entry point of rule `evaluate` (thin: parse snakemake.*, call vox3d.voice.evaluate)."""

import _repo  # noqa: F401  (puts the repository on sys.path)
import torch

from vox3d.face.face_model import face_model_settings
from vox3d.joblog import job_log
from vox3d.voice.evaluate import EvaluateSettings, run_evaluate

smk = snakemake  # noqa: F821  (injected by Snakemake)

with job_log(smk.log[0]):
    torch.set_num_threads(max(1, smk.threads))
    summary = run_evaluate(
        model_path=smk.input.get("model"),
        split_path=smk.input.split,
        identities_h5=smk.input.identities,
        feature_paths=list(smk.input.features),
        out_metrics=smk.output.metrics,
        out_per_identity=smk.output.per_identity,
        out_predictions=smk.output.predictions,
        ground_truth_h5=smk.input.ground_truth[0] if smk.input.ground_truth else None,
        face_model=face_model_settings(smk.params.face_model, smk.params.assets),
        settings=EvaluateSettings.from_section(smk.params.settings),
        out_per_coefficient=smk.output.per_coefficient,
        out_comparisons=smk.output.comparisons,
        unsupervised_path=smk.input.get("unsupervised"),
    )
    for row in summary:
        keys = ("are_mean", "rmse", "rmse_z", "r2_param")
        print(row["method"], row["target"], *(f"{k} {row[k]}" for k in keys if k in row))
    if summary and summary[0].get("note"):
        print("note:", summary[0]["note"])
