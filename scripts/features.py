"""Snakemake script of `features_shard` (one extract shard -> feature HDF5) and
`features_rejects` (every shard's rejects -> one table)."""

import logging

import _repo  # noqa: F401  (puts the repository on sys.path)

from vox3d.audio.fbank import FeatureConfig
from vox3d.audio.features import collect_rejects, features_shard
from vox3d.joblog import job_log

smk = snakemake  # noqa: F821  (injected by Snakemake)

with job_log(smk.log[0]):
    if smk.rule == "features_shard":
        cfg = FeatureConfig.from_mapping(dict(smk.params.settings))
        res = features_shard(smk.input.h5, smk.output.h5, cfg, workers=smk.threads)
    else:
        res = {"rejected": collect_rejects(smk.input.shards, smk.output.rejects)}
    logging.info("%s: %s", smk.rule, res)
