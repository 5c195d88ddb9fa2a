# Held-out evaluation against baselines, and the report's figures.  Logic:
# vox3d/voice/evaluate.py, vox3d/report/figures.py

TARGETS.extend(
    [
        out("evaluate/metrics.tsv"),
        out("evaluate/are_bars.png"),
        out("evaluate/comparisons.png"),
        out("evaluate/training_curves.png"),
        out("evaluate/dataset_stats.png"),
        out("evaluate/identities.png"),
        out("evaluate/voice_directions.png"),
    ]
)


rule evaluate:
    input:
        unpack(evaluate_models),
        identities=out("fit/identities.h5"),
        features=lambda wc: shard_files("features"),
        ground_truth=lambda wc: (
            [out("synthetic/ground_truth.h5")] if synthetic() else []
        ),
    output:
        metrics=report(
            out("evaluate/metrics.tsv"),
            caption="../report/metrics.rst",
            category="Evaluation",
        ),
        comparisons=report(
            out("evaluate/comparisons.tsv"),
            caption="../report/comparisons.rst",
            category="Evaluation",
        ),
        per_identity=out("evaluate/per_identity.tsv"),
        per_coefficient=out("evaluate/per_coefficient.tsv"),
        predictions=out("evaluate/predictions.h5"),
    log:
        out("logs/evaluate/evaluate.log"),
    benchmark:
        out("benchmarks/evaluate/evaluate.tsv")
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        # measured on CPU (bench/results/cpu_resources.txt: default corpus, 160 clips):
        # max RSS 330 MiB, 3.7 s; mem x4.5, runtime kept at 30 (predictions over every
        # held-out utterance grow with the corpus)
        mem_mb=1500,
        disk_mb=1000,
        runtime=30,
        gpu=job_gpus("evaluate", config["evaluate"]["device"]),
    params:
        settings=config["evaluate"],
        face_model=config["face_model"],
        assets=config["assets"],
    script:
        "../scripts/evaluate.py"


rule figures:
    input:
        metrics=out("evaluate/metrics.tsv"),
        comparisons=out("evaluate/comparisons.tsv"),
        predictions=out("evaluate/predictions.h5"),
        split=lambda wc: evaluate_models(wc)["split"],
        log_csv=lambda wc: (
            out("train/log.csv")
            if "supervised" in train_variants()
            else out("train/unsupervised_log.csv")
        ),
        fit_shards=lambda wc: shard_files("fit"),
        extract_shards=lambda wc: shard_files("extract"),
        meta=lambda wc: [meta_csv()] if meta_csv() else [],
        manifest=out("manifest.tsv"),
        fit_stats=out("fit/stats.tsv"),
        rejects=[
            out(f"{stage}/rejects.tsv") for stage in ("extract", "fit", "features")
        ],
    output:
        are=report(
            out("evaluate/are_bars.png"),
            caption="../report/are_bars.rst",
            category="Evaluation",
        ),
        comparisons=report(
            out("evaluate/comparisons.png"),
            caption="../report/comparisons_plot.rst",
            category="Evaluation",
        ),
        curves=report(
            out("evaluate/training_curves.png"),
            caption="../report/training_curves.rst",
            category="Training",
        ),
        stats=report(
            out("evaluate/dataset_stats.png"),
            caption="../report/dataset_stats.rst",
            category="Dataset",
        ),
        identities=report(
            out("evaluate/identities.png"),
            caption="../report/identities.rst",
            category="Evaluation",
        ),
        voice_directions=report(
            out("evaluate/voice_directions.png"),
            caption="../report/voice_directions.rst",
            category="Evaluation",
        ),
    log:
        out("logs/evaluate/figures.log"),
    benchmark:
        out("benchmarks/evaluate/figures.tsv")
    conda:
        "../envs/render.yaml"
    threads: 1
    resources:
        # measured (bench/results/cpu_resources.txt: default corpus): max RSS 171 MiB, 4.5 s;
        # mem x5.8; runtime 30: it reads every fit and extract shard's index (VoxCeleb2:
        # 1.13M utterances / shard_size shards of each)
        mem_mb=1000,
        disk_mb=1000,
        runtime=30,
    params:
        settings=config["evaluate"],
        face_model=config["face_model"],
        assets=config["assets"],
        videos_dir=videos_dir(),  # reference frames when extract shards store none
    script:
        "../scripts/figures.py"


if "unsupervised" in train_variants():

    TARGETS.extend(
        [out("evaluate/unsupervised_faces.png"), out("evaluate/gan_curves.png")]
    )

    rule unsupervised_figures:
        input:
            model=out("train/unsupervised.pt"),
            log_csv=out("train/unsupervised_log.csv"),
            predictions=out("evaluate/predictions.h5"),
            features=lambda wc: shard_files("features"),
        output:
            faces=report(
                out("evaluate/unsupervised_faces.png"),
                caption="../report/unsupervised_faces.rst",
                category="Evaluation",
            ),
            gan_curves=report(
                out("evaluate/gan_curves.png"),
                caption="../report/gan_curves.rst",
                category="Training",
            ),
        log:
            out("logs/evaluate/unsupervised_figures.log"),
        benchmark:
            out("benchmarks/evaluate/unsupervised_figures.tsv")
        conda:
            "../envs/render.yaml"
        threads: 1
        resources:
            # four held-out identities' faces and meshes: seconds, RSS < 1 GB
            mem_mb=1500,
            disk_mb=100,
            runtime=15,
        params:
            settings=config["evaluate"],
            face_model=config["face_model"],
            assets=config["assets"],
        script:
            "../scripts/figures.py"
