# Voice -> identity shape model (Cross-Modal Perceptionist, supervised).  Logic: vox3d/train.py


def train_meta_csv(wildcards):
    """VoxCeleb1-style metadata as an input list (empty when there is none)."""
    m = meta_csv()
    return [m] if m else []


def face_model_params():
    """Face model settings + asset paths for vox3d.train.face_model_from_config."""
    fm = dict(config["face_model"])
    assets = config["assets"]
    fm["path"] = assets["ict_facekit"] if fm["name"] == "ict" else assets["bfm"]
    fm["tri_path"] = assets["bfm_tri"]
    return fm


TARGETS.append(out("train/model.pt"))


rule train:
    input:
        features=lambda wc: shard_files("features"),
        identities=f"{OUT}/fit/identities.h5",
        meta=train_meta_csv,
    output:
        model=f"{OUT}/train/model.pt",
        split=f"{OUT}/train/split.tsv",
        log_csv=f"{OUT}/train/log.csv",
    log:
        f"{OUT}/logs/train/train.log",
    benchmark:
        f"{OUT}/benchmarks/train/train.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1 if config["train"]["device"] == "cuda" else 0,
    params:
        settings=config["train"],
        face_model=face_model_params(),
    script:
        "../scripts/train.py"
