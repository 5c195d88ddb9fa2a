# Fit: per shard, FaceBoxes + 3DDFA-V2 crop + MobileNet regressor -> OUT/fit/<shard>.h5
# (per-frame box, roi, 3DMM parameters, quality fields, keep/reason); per identity a robust
# shape -> OUT/fit/identities.h5; rejects and per-reason counts -> OUT/fit/{rejects,stats}.tsv.
# Logic: vox3d/fitting/fit.py, vox3d/fitting/quality.py, vox3d/fitting/identities.py,
# vox3d/fitting/ict_checkpoint.py.

TARGETS.extend([out("fit/identities.h5"), out("fit/rejects.tsv"), out("fit/stats.tsv")])
# Synthetic corpus only (ground truth known): identity accuracy of the fit (rule fit_accuracy).
FIT_ACCURACY = [out("fit/accuracy.tsv"), out("fit/accuracy.png")] if synthetic() else []
TARGETS.extend(FIT_ACCURACY)

if config["extract"]["keep_frames"]:

    rule fit_shard:
        input:
            h5=out("extract/{shard}.h5"),
            models=fit_models,
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
            # measured on CPU (bench/results/cpu_resources.txt: default run, 2 loaded cores):
            # max RSS 525 MiB; runtime: vox3d.workflow.jobsize.FIT_S_PER_S (measured s per s
            # of video there; a GPU is faster).  Frames are read in pieces
            # (vox3d.fitting.frame_source.READ_FRAMES) and a long video is fitted in chunks:
            # a 10-minute clip (3,001 frames)
            # peaked at 701 MB (3,849 MB when read whole).  GPU: host memory not measured here (the
            # CUDA libraries and pinned batches add GBs): 6000
            mem_mb=6000 if FIT_GPUS else 1500,
            disk_mb=1000,
            runtime=shard_minutes(jobsize.FIT_S_PER_S),
            gpu=FIT_GPUS,
        params:
            settings=fit_settings(),
        script:
            "../scripts/fit.py"


rule fit_identities:
    input:
        shards=lambda wildcards: shard_files("fit"),
        models=fit_models,  # the ICT json's identity calibration
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
        # the kept frames' identity coefficients are held: 1000 MB + KB a frame x frames, and
        # seconds a shard x3 (vox3d.workflow.jobsize.fit_identities_mem_mb, fit_identities_minutes).
        # Measured (bench/results/cpu_resources.txt): max RSS 123 MiB, 0.67 s a shard
        mem_mb=fit_identities_mem_mb,
        disk_mb=1000,
        runtime=fit_identities_minutes,
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
        # measured (bench/results/cpu_resources.txt): 0.55 s, max RSS 58 MiB (tables of rejects)
        mem_mb=500,
        disk_mb=1000,
        runtime=10,
    script:
        "../scripts/fit.py"


rule fit_accuracy:
    input:
        identities=out("fit/identities.h5"),
        ground_truth=out("synthetic/ground_truth.h5"),
        meta=lambda wc: [meta_csv()] if meta_csv() else [],
    output:
        tsv=out("fit/accuracy.tsv"),
        png=report(
            out("fit/accuracy.png"),
            caption="../report/fit_accuracy.rst",
            category="Fit",
        ),
    log:
        out("logs/fit_accuracy/fit_accuracy.log"),
    benchmark:
        out("benchmarks/fit_accuracy/fit_accuracy.tsv")
    conda:
        "../envs/render.yaml"
    threads: 1
    resources:
        # measured (bench/results/cpu_resources.txt: default corpus, 40 identities): max RSS
        # 120 MiB, 3.6 s (ICT model load, the identities, the figure); mem x8.3, runtime floor
        mem_mb=1000,
        disk_mb=1000,
        runtime=10,
    params:
        face_model=config["face_model"],
        assets=config["assets"],
        split=config["train"]["split"],
        val_fraction=config["train"]["val_fraction"],
    script:
        "../scripts/fit_accuracy.py"


rule fit:
    input:
        out("fit/identities.h5"),
        out("fit/rejects.tsv"),
        out("fit/stats.tsv"),
        FIT_ACCURACY,


# Not in the default DAG: `snakemake train_regressor` retrains the ICT regressor: renders
# its training frames with the corpus's renderer into OUT/regressor/cache (fresh identities,
# the fit stage's detector + crop; resumable shards) and held-out frames into
# OUT/regressor/heldout, trains on the cached crops, evaluates, writes the checkpoint, its
# json (accuracy, training curve) and OUT/regressor/training_curve.tsv
# (vox3d/fitting/regressor_data.py).
# With the settings in config fit.regressor (those in vox3d/data/ict_regressor.json) it made
# the committed vox3d/data/ict_regressor.pth on one H100; a second run there gave another
# checkpoint of the same accuracy (GPU renders not yet bit-reproducible: bench/results/
# h100_train_rule.txt).
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
        # the cache is held in memory (and on the GPU) while training: ~43 KB a sample,
        # max RSS 21.6 GB for 250,000; 475 s on one H100, 16 cores
        # (bench/results/h100_train_rule.txt)
        mem_mb=24000,
        disk_mb=16000,
        runtime=60,
        gpu=job_gpus("regressor", config["fit"]["regressor"]["device"]),
    params:
        regressor=config["fit"]["regressor"],
        face_model=config["face_model"],
        ict=config["assets"]["ict_facekit"],
    script:
        "../scripts/train_regressor.py"
