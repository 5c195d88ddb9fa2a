# Voice -> identity shape models (Cross-Modal Perceptionist): supervised (rule train) and
# unsupervised (rules pretrain_voice, train_unsupervised), as train.mode asks.
# Logic: vox3d/voice/train.py, vox3d/voice/speaker.py, vox3d/voice/distill.py

if "supervised" in train_variants():
    TARGETS.append(out("train/model.pt"))
if "unsupervised" in train_variants():
    TARGETS.append(out("train/unsupervised.pt"))


rule train:
    input:
        features=lambda wc: shard_files("features"),
        identities=out("fit/identities.h5"),
        meta=lambda wc: [meta_csv()] if meta_csv() else [],
    output:
        model=out("train/model.pt"),
        split=out("train/split.tsv"),
        log_csv=out("train/log.csv"),
    log:
        out("logs/train/train.log"),
    benchmark:
        out("benchmarks/train/train.tsv")
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        # measured (bench/results/cpu_resources.txt): demo preset on CPU (2 threads, loaded cores)
        # max RSS 1,081 MiB, 600 steps in 92 s; mem x3.7; output (model, checkpoints) 62 MB;
        # runtime from the steps: train_minutes (common.smk, vox3d.workflow.jobsize)
        mem_mb=4000,
        disk_mb=1000,
        runtime=lambda wc, threads: train_minutes(threads),
        gpu=job_gpus("train", config["train"]["device"]),
    params:
        settings=config["train"],
        face_model=config["face_model"],
        assets=config["assets"],
    script:
        "../scripts/train.py"


rule pretrain_voice:
    input:
        features=lambda wc: shard_files("features"),
        meta=lambda wc: [meta_csv()] if meta_csv() else [],
    output:
        model=out("train/voice_encoder.pt"),
        log_csv=out("train/voice_encoder_log.csv"),
    log:
        out("logs/train/pretrain_voice.log"),
    benchmark:
        out("benchmarks/train/pretrain_voice.tsv")
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        # measured (bench/results/cpu_unsupervised.txt): 400 steps of batch 32 in 67.6 s on
        # 2 loaded cores; max RSS 1,000 MiB in a default run_both run
        mem_mb=3000,
        disk_mb=100,
        runtime=30,
    params:
        settings=config["train"],
    script:
        "../scripts/train_unsupervised.py"


rule train_unsupervised:
    input:
        features=lambda wc: shard_files("features"),
        fit_shards=lambda wc: shard_files("fit"),
        meta=lambda wc: [meta_csv()] if meta_csv() else [],
        encoder=out("train/voice_encoder.pt"),
        models=fit_models,  # the teacher: the fit's own regressor
    output:
        model=out("train/unsupervised.pt"),
        log_csv=out("train/unsupervised_log.csv"),
        split=out("train/unsupervised_split.tsv"),
    log:
        out("logs/train/train_unsupervised.log"),
    benchmark:
        out("benchmarks/train/train_unsupervised.tsv")
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        # measured (bench/results/cpu_unsupervised.txt): demo preset 0.60 s a step of batch
        # 16 on 2 loaded cores; max RSS 1,168 MiB in a default run_both run; runtime from the
        # steps and batch (vox3d.workflow.jobsize.unsupervised_minutes)
        mem_mb=4000,
        disk_mb=1000,
        runtime=unsupervised_minutes,
        gpu=job_gpus("train", config["train"]["device"]),
    params:
        settings=config["train"],
        fit=fit_settings(),
    script:
        "../scripts/train_unsupervised.py"
