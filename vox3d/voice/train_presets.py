"""The named training schedules (``train.preset``): read by :mod:`vox3d.voice.train` to build a
run's settings and by :mod:`vox3d.workflow.jobsize` to size the ``train`` job from its steps.  Light
(no torch): the Snakefile imports it while building the DAG."""

from __future__ import annotations

#: Named schedules.  ``paper``: the CMP schedule (Adam 2e-4, betas 0.5/0.999, batch 64,
#: crops 300-800 frames, 48k iterations).  ``demo``: a few minutes on 2 CPU cores.  Both
#: decay the rate on a cosine to 5% (CMP keeps it constant) and keep the weights of the
#: evaluation with the lowest loss on the selection identities (``train.select_fraction``
#: of the training side; CMP keeps the last): the demo run overfitted without them.
PRESETS: dict[str, dict] = {
    "paper": {
        "steps": 48000,
        "batch_size": 64,
        "lr": 2e-4,
        "betas": [0.5, 0.999],
        "crop_min": 300,
        "crop_max": 800,
        "checkpoint_every": 2000,
        "eval_every": 2000,
        "log_every": 100,
        "lr_schedule": "cosine",
        "select": "best",
    },
    "demo": {
        "steps": 600,
        "batch_size": 32,
        "lr": 1e-3,
        "betas": [0.5, 0.999],
        "crop_min": 100,
        "crop_max": 300,
        "checkpoint_every": 100,
        "eval_every": 50,
        "log_every": 10,
        "lr_schedule": "cosine",
        "select": "best",
    },
}
