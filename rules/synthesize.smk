# Synthesize: the embedded default corpus under OUT/synthetic/ (used when config videos_dir
# is null): VoxCeleb2-format clips, VoxCeleb1-style metadata, ground truth, corpus card.


rule synthesize:
    output:
        videos=directory(out("synthetic/videos")),
        ground_truth=out("synthetic/ground_truth.h5"),
        meta=out("synthetic/vox1_meta.csv"),
        card=out("synthetic/README.md"),
    log:
        out("logs/synthesize/synthesize.log"),
    benchmark:
        out("benchmarks/synthesize/synthesize.tsv")
    conda:
        "../envs/render.yaml"
    threads: 2
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        synthetic=config["synthetic"],
        face_model=config["face_model"],
        ict_facekit=config["assets"]["ict_facekit"],
    script:
        "../scripts/synthesize.py"
