# vox3d: build Voxceleb-3D and train the voice-to-3D-face model.
# Targets: manifest, extract, fit, features, train, evaluate, all (default).
# Input functions live in rules/common.smk; each stage in rules/<stage>.smk.

import sys

sys.path.insert(0, workflow.basedir)

from vox3d.config import validate_config


configfile: "config.yaml"


report: "report/workflow.rst"


validate_config(config, f"{workflow.basedir}/schemas/config.schema.yaml")


include: "rules/common.smk"


rule all:
    default_target: True
    input:
        all_targets,


# One line per stage; add a stage's include when its .smk lands.
include: "rules/synthesize.smk"
include: "rules/manifest.smk"
include: "rules/extract.smk"
include: "rules/fit.smk"
include: "rules/features.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/export.smk"
