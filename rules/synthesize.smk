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
    threads: workflow.cores  # worker processes; the corpus does not depend on their number
    resources:
        # measured (bench/results/cpu_resources.txt: the default corpus, 2 loaded cores): max RSS
        # 1,244 MiB, 102 s; mem x1.6, runtime x17.6
        mem_mb=2000,
        disk_mb=1000,
        runtime=30,
    params:
        synthetic=config["synthetic"],
        face_model=config["face_model"],
        ict_facekit=config["assets"]["ict_facekit"],
    script:
        "../scripts/synthesize.py"
