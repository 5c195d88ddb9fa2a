# Voice -> identity shape model (Cross-Modal Perceptionist, supervised).  Logic: vox3d/train.py

TARGETS.append(out("train/model.pt"))


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
        # runtime from the steps: train_minutes (common.smk, vox3d.jobsize)
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
