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
        # measured: default run (160 synthetic 4 s clips, shard_size 64: 3 shards), 2 shared cores, 2026-11-25
        # max RSS 108 MB, 8.8 s per 64 clips; frames stream to the file as they decode (at
        # most 32 held, vox3d.video.FRAME_CHUNK), so a video's length only adds its audio:
        # a 10-minute clip peaked at 212 MB (2,255 MB when all its frames were held)
        # = 0.034 s per s of video; mem x9, runtime x10 (shard_minutes); output 0.4 MB per s
        # of video (102 MB per shard): disk x5 at VIDEO_S
        mem_mb=1000,
        disk_mb=1000,
        runtime=shard_minutes(0.034),
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
        # measured: 0.25 s, max RSS below the benchmark's first sample (tables of rejects)
        mem_mb=500,
        disk_mb=1000,
        runtime=10,
    script:
        "../scripts/extract.py"
