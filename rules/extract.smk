# Extract: per shard, 16 kHz mono audio + frames at extract.frame_rate -> OUT/extract/<shard>.h5;
# `extract` aggregates every shard's rejects and counts.

TARGETS.extend([out("extract/rejects.tsv"), out("extract/stats.tsv")])


rule extract_shard:
    input:
        shard=shard_tsv,
    output:
        h5=out("extract/{shard}.h5"),
    log:
        out("logs/extract_shard/{shard}.log"),
    benchmark:
        out("benchmarks/extract_shard/{shard}.tsv")
    wildcard_constraints:
        shard=r"shard-\d+",
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        videos_dir=videos_dir(),
        frame_rate=config["extract"]["frame_rate"],
        min_duration=config["extract"]["min_duration"],
        decoder=config["extract"]["decoder"],
    script:
        "../scripts/extract.py"


rule extract:
    input:
        shards=lambda wildcards: shard_files("extract"),
    output:
        rejects=out("extract/rejects.tsv"),
        stats=out("extract/stats.tsv"),
    log:
        out("logs/extract/extract.log"),
    benchmark:
        out("benchmarks/extract/extract.tsv")
    conda:
        "../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    script:
        "../scripts/extract.py"
