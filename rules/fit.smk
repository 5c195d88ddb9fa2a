# Fit: per shard, FaceBoxes + 3DDFA-V2 crop + MobileNet regressor -> OUT/fit/<shard>.h5
# (per-frame box, roi, 3DMM parameters, quality fields, keep/reason); per identity a robust
# shape -> OUT/fit/identities.h5; rejects and per-reason counts -> OUT/fit/{rejects,stats}.tsv.
# Logic: vox3d/fit.py, vox3d/quality.py, vox3d/identities.py, vox3d/ict_regressor.py.

import shutil

TARGETS.extend([out("fit/identities.h5"), out("fit/rejects.tsv"), out("fit/stats.tsv")])


rule fit_shard:
    input:
        h5=out("extract/{shard}.h5"),
    output:
        h5=out("fit/{shard}.h5"),
    log:
        out("logs/fit_shard/{shard}.log"),
    benchmark:
        out("benchmarks/fit_shard/{shard}.tsv")
    wildcard_constraints:
        shard=r"shard-\d+",
    conda:
        "../envs/fit.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=60,
        # a GPU when fit.device is cuda, or auto on a machine with one (nvidia-smi present)
        gpu=(
            1
            if config["fit"]["device"] == "cuda"
            or (config["fit"]["device"] == "auto" and shutil.which("nvidia-smi"))
            else 0
        ),
    params:
        settings={k: config[k] for k in ("face_model", "fit", "assets")},
    script:
        "../scripts/fit.py"


rule fit_identities:
    input:
        shards=lambda wildcards: shard_files("fit"),
    output:
        h5=out("fit/identities.h5"),
    log:
        out("logs/fit_identities/fit_identities.log"),
    benchmark:
        out("benchmarks/fit_identities/fit_identities.tsv")
    conda:
        "../envs/fit.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        mahal_quantile=config["fit"]["identity_mahal_quantile"],
        huber_k=config["fit"]["identity_huber_k"],
        min_frames=config["fit"]["identity_min_frames"],
    script:
        "../scripts/fit_identities.py"


rule fit_rejects:
    input:
        shards=lambda wildcards: shard_files("fit"),
        identities=out("fit/identities.h5"),
    output:
        rejects=out("fit/rejects.tsv"),
        stats=out("fit/stats.tsv"),
    log:
        out("logs/fit_rejects/fit_rejects.log"),
    benchmark:
        out("benchmarks/fit_rejects/fit_rejects.tsv")
    conda:
        "../envs/fit.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    script:
        "../scripts/fit.py"


rule fit:
    input:
        out("fit/identities.h5"),
        out("fit/rejects.tsv"),
        out("fit/stats.tsv"),


# Not in the default DAG: `snakemake train_regressor` retrains the ICT regressor; with the
# settings in config fit.regressor (those in vox3d/data/ict_regressor.json) on the same
# device type it reproduces the committed vox3d/data/ict_regressor.pth.
rule train_regressor:
    output:
        pth=out("regressor/ict_regressor.pth"),
        json=out("regressor/ict_regressor.json"),
    log:
        out("logs/train_regressor/train_regressor.log"),
    benchmark:
        out("benchmarks/train_regressor/train_regressor.tsv")
    conda:
        "../envs/fit.yaml"
    # the main process + one per render worker (the data do not depend on the count)
    threads: config["fit"]["regressor"]["workers"] + 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1 if config["fit"]["regressor"]["device"] == "cuda" else 0,
    params:
        regressor=config["fit"]["regressor"],
        face_model=config["face_model"],
        ict=config["assets"]["ict_facekit"],
    script:
        "../scripts/train_regressor.py"
