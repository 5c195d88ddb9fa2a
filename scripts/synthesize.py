"""Snakemake script of `synthesize`: the embedded synthetic corpus (vox3d.synthetic.synth)."""

import logging
from pathlib import Path

import _repo  # noqa: F401  (puts the repository on sys.path)

from vox3d.joblog import job_log
from vox3d.synthetic.synth import build_corpus
from vox3d.synthetic.synth_config import SynthConfig

smk = snakemake  # noqa: F821  (injected by Snakemake)

with job_log(smk.log[0]):
    root = Path(smk.output.ground_truth).parent
    if Path(smk.output.videos) != root / "videos":
        raise ValueError(f"videos output {smk.output.videos} must be {root / 'videos'}")
    syn, fm = smk.params.synthetic, smk.params.face_model
    cfg = SynthConfig.from_settings(
        syn,
        n_id=fm["n_id"],
        n_exp=fm["n_exp"],
        metric_subset=fm["subset"],
        face_model_path=smk.params.ict_facekit,
    )
    summary = build_corpus(cfg, root, threads=smk.threads)
    logging.info("synthesize: %s", summary)
