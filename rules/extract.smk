# Extract: per shard, 16 kHz mono audio + frames at extract.frame_rate -> OUT/extract/<shard>.h5;
# `extract` aggregates every shard's rejects and counts.

TARGETS.extend([out("extract/rejects.tsv"), out("extract/stats.tsv")])


# extract.keep_frames: true keeps the frames in the extract shard for fit_shard to read; false
# (the default) leaves both shards to rule stream_shard (rules/stream.smk), one pass a video.
if config["extract"]["keep_frames"]:

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
            # measured (bench/results/cpu_resources.txt: default run, 2 loaded cores): max RSS
            # 105 MiB; runtime: vox3d.workflow.jobsize.EXTRACT_S_PER_S (measured s per s of video
            # there);
            # output 0.40 MB per s of video, so disk_mb 1000 holds 2,500 s of video
            # (shard_size x VIDEO_S).  Frames stream to the file as they decode (at most
            # 32 held, vox3d.media.video_frames.FRAME_CHUNK), so a video's length only adds its
            # audio: a
            # 10-minute clip peaked at 212 MB (2,255 MB when all its frames were held)
            mem_mb=1000,
            disk_mb=1000,
            runtime=shard_minutes(jobsize.EXTRACT_S_PER_S),
        params:
            videos_dir=videos_dir(),
            settings=ExtractSettings.shard_params(config),
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
        # measured (bench/results/cpu_resources.txt): 0.23 s, max RSS below the benchmark's first
        # sample (tables of rejects)
        mem_mb=500,
        disk_mb=1000,
        runtime=10,
    script:
        "../scripts/extract.py"
