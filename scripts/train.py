"""Snakemake entry point of rule `train` (thin: parse snakemake.*, call vox3d.voice.train)."""

from pathlib import Path

import _repo  # noqa: F401  (puts the repository on sys.path)
import torch

from vox3d.face.face_model import face_model_settings
from vox3d.joblog import job_log
from vox3d.voice.train import TrainSettings, run_train

smk = snakemake  # noqa: F821  (injected by Snakemake)

with job_log(smk.log[0]):
    torch.set_num_threads(max(1, smk.threads))
    run_train(
        settings=TrainSettings.from_section(smk.params.settings),
        feature_paths=list(smk.input.features),
        identities_h5=smk.input.identities,
        meta_csv=smk.input.meta[0] if smk.input.meta else None,
        out_dir=Path(smk.output.model).parent,
        face_model=face_model_settings(smk.params.face_model, smk.params.assets),
        threads=smk.threads,
    )
