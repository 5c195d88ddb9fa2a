"""Snakemake script of `fit_identities`: every fit shard -> OUT/fit/identities.h5 (robust
per-identity shape).  Thin: all logic is in vox3d.identities."""

import json

import _repo  # noqa: F401  (puts the repository on sys.path)

from vox3d.identities import aggregate_identities
from vox3d.joblog import job_log

smk = snakemake  # noqa: F821  (injected by Snakemake)

with job_log(smk.log[0]) as log:
    summary = aggregate_identities(
        list(smk.input.shards),
        smk.output.h5,
        mahal_quantile=smk.params.mahal_quantile,
        huber_k=smk.params.huber_k,
        min_frames=smk.params.min_frames,
    )
    print(json.dumps(summary, sort_keys=True), file=log)
