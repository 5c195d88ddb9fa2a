"""Snakemake script of `checkpoint manifest`: probe every video into manifest.tsv + shards/."""

import logging

import _repo  # noqa: F401  (puts the repository on sys.path)

from vox3d.joblog import job_log
from vox3d.media.manifest import build_manifest, write_manifest

smk = snakemake  # noqa: F821  (injected by Snakemake)

with job_log(smk.log[0]):
    rows = build_manifest(
        smk.params.videos_dir,
        smk.params.meta_csv or None,
        prober=smk.params.prober,
        threads=smk.threads,
    )
    names = write_manifest(rows, smk.output.manifest, smk.output.shards, smk.params.shard_size)
    n_err = sum(1 for r in rows if r["probe_error"])
    logging.info("%d videos (%d with probe errors) in %d shards", len(rows), n_err, len(names))
