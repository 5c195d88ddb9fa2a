# Held-out evaluation against baselines, figures for the report.  Logic: vox3d/evaluate.py,
# vox3d/figures.py


def evaluate_ground_truth(wildcards):
    """The synthetic corpus's true identity coefficients (only when it is the input)."""
    return [out("synthetic/ground_truth.h5")] if synthetic() else []


TARGETS.extend(
    [
        out("evaluate/metrics.tsv"),
        out("evaluate/are_bars.png"),
        out("evaluate/training_curves.png"),
        out("evaluate/dataset_stats.png"),
        out("evaluate/identities.png"),
    ]
)


rule evaluate:
    input:
        model=f"{OUT}/train/model.pt",
        split=f"{OUT}/train/split.tsv",
        identities=f"{OUT}/fit/identities.h5",
        features=lambda wc: shard_files("features"),
        ground_truth=evaluate_ground_truth,
    output:
        metrics=f"{OUT}/evaluate/metrics.tsv",
        per_identity=f"{OUT}/evaluate/per_identity.tsv",
        predictions=f"{OUT}/evaluate/predictions.h5",
    log:
        f"{OUT}/logs/evaluate/evaluate.log",
    benchmark:
        f"{OUT}/benchmarks/evaluate/evaluate.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=config["evaluate"],
        face_model=face_model_params(),
    script:
        "../scripts/evaluate.py"


rule figures:
    input:
        metrics=f"{OUT}/evaluate/metrics.tsv",
        predictions=f"{OUT}/evaluate/predictions.h5",
        split=f"{OUT}/train/split.tsv",
        log_csv=f"{OUT}/train/log.csv",
        fit_shards=lambda wc: shard_files("fit"),
        extract_shards=lambda wc: shard_files("extract"),
        meta=train_meta_csv,
        manifest=f"{OUT}/manifest.tsv",
        fit_stats=f"{OUT}/fit/stats.tsv",
        rejects=[f"{OUT}/{stage}/rejects.tsv" for stage in ("extract", "fit", "features")],
    output:
        are=report(
            f"{OUT}/evaluate/are_bars.png",
            caption="../report/are_bars.rst",
            category="Evaluation",
        ),
        curves=report(
            f"{OUT}/evaluate/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
        ),
        stats=report(
            f"{OUT}/evaluate/dataset_stats.png",
            caption="../report/dataset_stats.rst",
            category="Dataset",
        ),
        identities=report(
            f"{OUT}/evaluate/identities.png",
            caption="../report/identities.rst",
            category="Evaluation",
        ),
    log:
        f"{OUT}/logs/evaluate/figures.log",
    benchmark:
        f"{OUT}/benchmarks/evaluate/figures.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        settings=config["evaluate"],
        face_model=face_model_params(),
        out_dir=OUT,
    script:
        "../scripts/figures.py"
