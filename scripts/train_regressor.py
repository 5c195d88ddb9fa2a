"""Snakemake script of `train_regressor` (and a plain command line: it forwards to
``python -m vox3d.ict_regressor`` when run outside Snakemake).  Thin: logic in
vox3d.ict_regressor."""

import contextlib
import sys

import _repo  # noqa: F401  (puts the repository on sys.path)

from vox3d.ict_regressor import main

if "snakemake" in globals():
    smk = globals()["snakemake"]
    reg, fm = smk.params.regressor, smk.params.face_model
    argv = [
        "--out", smk.output.pth,
        "--device", str(reg["device"]),
        "--steps", str(reg["steps"]),
        "--batch-size", str(reg["batch_size"]),
        "--lr", str(reg["lr"]),
        "--seed", str(reg["seed"]),
        "--workers", str(max(0, min(int(reg["workers"]), smk.threads - 1))),
        "--threads", "1",
        "--n-id", str(fm["n_id"]),
        "--n-exp", str(fm["n_exp"]),
        "--ict", str(smk.params.ict),
    ]  # fmt: skip
    with (
        open(smk.log[0], "w", encoding="utf-8") as log,
        contextlib.redirect_stderr(log),
        contextlib.redirect_stdout(log),
    ):
        main(argv)
else:
    sys.exit(main(sys.argv[1:]))
