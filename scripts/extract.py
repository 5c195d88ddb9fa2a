"""Snakemake script of `extract_shard` (one shard -> HDF5) and `extract` (aggregate tables)."""

import logging

import _repo  # noqa: F401  (puts the repository on sys.path)

from vox3d.joblog import job_log
from vox3d.media.extract import ExtractSettings, aggregate, extract_shard

smk = snakemake  # noqa: F821  (injected by Snakemake)

with job_log(smk.log[0]):
    if smk.rule == "extract_shard":
        st = ExtractSettings.from_section(smk.params.settings)
        res = extract_shard(
            smk.input.shard,
            smk.params.videos_dir,
            smk.output.h5,
            frame_rate=st.frame_rate,
            min_duration=st.min_duration,
            decoder=st.decoder,
            threads=smk.threads,
        )
    else:
        res = aggregate(smk.input.shards, smk.output.rejects, smk.output.stats)
    logging.info("%s: %s", smk.rule, res)
