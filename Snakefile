# vox3d: build Voxceleb-3D and train the voice-to-3D-face model.
# Targets: manifest, extract, fit, features, train, evaluate, all (default).
# Input functions live in rules/common.smk; each stage in rules/<stage>.smk.

import sys

sys.path.insert(0, workflow.basedir)

from vox3d.config import validate_config
from vox3d.outlock import lock_out_dir, release_out_dir


configfile: "config.yaml"


report: "report/workflow.rst"


validate_config(config, f"{workflow.basedir}/schemas/config.schema.yaml")


include: "rules/common.smk"


# One run at a time per out_dir, whatever the working directory (vox3d/outlock.py): taken by
# real runs of the main process only (hooks do not run for -n, --lint, --unlock, --report,
# nor in job processes, which get --no-hooks); the kernel drops it when the process ends.
onstart:
    if workflow.is_main_process:
        lock_out_dir(OUT)


onsuccess:
    release_out_dir(OUT)


onerror:
    release_out_dir(OUT)


rule all:
    default_target: True
    input:
        all_targets,


# One line per stage; add a stage's include when its .smk lands.
include: "rules/synthesize.smk"
include: "rules/manifest.smk"
include: "rules/extract.smk"
include: "rules/stream.smk"
include: "rules/fit.smk"
include: "rules/features.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/export.smk"
