"""Snakemake script of `fit_shard` (one extract shard -> fit HDF5) and `fit_rejects`
(aggregate rejects and per-reason counts).  Thin: all logic is in vox3d.fitting.fit (one process)
and vox3d.fitting.multigpu (one process per GPU when the job has resources gpu > 1)."""

import json

import _repo  # noqa: F401  (puts the repository on sys.path)

from vox3d.fitting.fit import FitConfig, fit_shard
from vox3d.fitting.fit_tables import write_fit_tables
from vox3d.fitting.multigpu import describe_parts, devices_for, fit_shard_multi, pin_one_gpu
from vox3d.joblog import job_log

smk = snakemake  # noqa: F821  (injected by Snakemake)

with job_log(smk.log[0]) as log:
    if smk.rule == "fit_shard":
        cfg = FitConfig.from_config(dict(smk.params.settings), threads=smk.threads)
        n_gpu = int(smk.resources.get("gpu", 0) or 0)
        devices = devices_for(n_gpu)
        if len(devices) > 1:
            print(describe_parts(smk.input.h5, cfg, devices), file=log)
            stats = fit_shard_multi(smk.input.h5, smk.output.h5, cfg, devices)
        else:
            held = pin_one_gpu() if n_gpu == 1 else None
            if held is not None:  # a card of its own on a multi-GPU node
                print(f"GPU: card {held[0]} (CUDA_VISIBLE_DEVICES)", file=log)
            stats = fit_shard(smk.input.h5, smk.output.h5, cfg)
        print(json.dumps(stats, sort_keys=True), file=log)
    else:
        write_fit_tables(
            list(smk.input.shards), smk.input.identities, smk.output.rejects, smk.output.stats
        )
