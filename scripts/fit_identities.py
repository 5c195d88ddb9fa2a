"""Snakemake script of `fit_identities`: every fit shard -> OUT/fit/identities.h5 (robust
per-identity shape).  Thin: all logic is in vox3d.fitting.identities.

With face_model.name ict the shards come from the ICT regressor (config fit.ict_regressor,
default vox3d/data/ict_regressor.pth); when its json carries ``identity_calibration``
(``python -m vox3d.fitting.regressor_data calibrate``) the calibrated posterior-mean estimate is
written (vox3d.fitting.identities.calibrated_identity); otherwise (bfm, or an uncalibrated
regressor) the robust shape exactly as before."""

import json

import _repo  # noqa: F401  (puts the repository on sys.path)

from vox3d.fitting.fit import FitConfig
from vox3d.fitting.identities import aggregate_identities, regressor_calibration
from vox3d.joblog import job_log

smk = snakemake  # noqa: F821  (injected by Snakemake)


with job_log(smk.log[0]) as log:
    calibration, source = regressor_calibration(FitConfig.from_config(smk.config))
    summary = aggregate_identities(
        list(smk.input.shards),
        smk.output.h5,
        mahal_quantile=smk.params.mahal_quantile,
        huber_k=smk.params.huber_k,
        min_frames=smk.params.min_frames,
        calibration=calibration,
    )
    summary["calibration_source"] = source if calibration is not None else None
    print(json.dumps(summary, sort_keys=True), file=log)
