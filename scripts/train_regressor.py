"""Snakemake script of `train_regressor` (and a plain command line: it forwards to
``python -m vox3d.fitting.regressor_data`` when run outside Snakemake).  Thin: logic in
vox3d.fitting.regressor_data and what it drives: vox3d.fitting.regressor_render / regressor_cache (the
render cache), vox3d.fitting.ict_train (training) and vox3d.fitting.ict_eval (evaluation)."""

import sys
from pathlib import Path

import _repo  # noqa: F401  (puts the repository on sys.path)

from vox3d.fitting.regressor_data import REGRESSOR_FLAGS, main
from vox3d.joblog import job_log

if "snakemake" in globals():
    smk = globals()["snakemake"]
    reg, fm = smk.params.regressor, smk.params.face_model
    work = Path(smk.output.pth).parent
    argv = [
        "all",
        "--out", smk.output.pth,
        "--cache", str(work / "cache"),
        "--heldout", str(work / "heldout"),
        "--log", str(work / "training_curve.tsv"),
        "--device", str(reg["device"]),
        "--steps", str(reg["steps"]),
        "--batch-size", str(reg["batch_size"]),
        "--lr", str(reg["lr"]),
        "--seed", str(reg["seed"]),
        "--workers", str(max(1, min(int(reg["workers"]), smk.threads - 1))),
        "--n-id", str(fm["n_id"]),
        "--n-exp", str(fm["n_exp"]),
        "--ict", str(smk.params.ict),
    ]  # fmt: skip
    for key, flag in REGRESSOR_FLAGS.items():
        argv += [flag, str(reg[key])]
    with job_log(smk.log[0]):
        rc = main(argv)
    if rc != 0:
        raise SystemExit(rc)
else:
    sys.exit(main(sys.argv[1:]))
