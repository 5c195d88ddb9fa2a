"""Snakemake script of `pretrain_voice` (the speaker-classifier voice encoder) and
`train_unsupervised` (the unsupervised variant).  Thin: logic in vox3d.voice.speaker and
vox3d.voice.distill."""

from pathlib import Path

import _repo  # noqa: F401  (puts the repository on sys.path)

from vox3d.joblog import job_log

smk = snakemake  # noqa: F821  (injected by Snakemake)

with job_log(smk.log[0]):
    meta = smk.input.meta[0] if smk.input.meta else None
    if smk.rule == "pretrain_voice":
        from vox3d.voice.speaker import run_pretrain_voice

        run_pretrain_voice(
            dict(smk.params.settings), list(smk.input.features), meta, smk.output.model,
            smk.output.log_csv, threads=smk.threads,
        )  # fmt: skip
    else:
        from vox3d.fitting.fit import FitConfig
        from vox3d.voice.distill_train import run_train_unsupervised

        run_train_unsupervised(
            dict(smk.params.settings), list(smk.input.features), list(smk.input.fit_shards),
            meta, smk.input.encoder, FitConfig.from_config(dict(smk.params.fit)),
            smk.output.model, smk.output.log_csv, smk.output.split, threads=smk.threads,
        )  # fmt: skip
        print(f"wrote {Path(smk.output.model).name}")
