# Features: per shard, voice activity detection + CMP's 64-band log-mel (or MFCC) of every
# utterance -> OUT/features/<shard>.h5; `features_rejects` gathers every shard's rejects.
# Logic: vox3d/audio/fbank.py (settings; VAD in vox3d/audio/vad.py, decoding in vox3d/audio/pcm.py),
# vox3d/audio/features.py (stage), vox3d/audio/featurestore.py (reader).

TARGETS.append(out("features/rejects.tsv"))


# With extract.keep_frames: false the features ride the stream job (rules/stream.smk).
if config["extract"]["keep_frames"]:

    rule features_shard:
        input:
            h5=out("extract/{shard}.h5"),
        output:
            h5=out("features/{shard}.h5"),
        log:
            out("logs/features_shard/{shard}.log"),
        benchmark:
            out("benchmarks/features_shard/{shard}.tsv")
        wildcard_constraints:
            shard=r"shard-\d+",
        conda:
            "../envs/features.yaml"
        threads: 1
        resources:
            # measured (bench/results/cpu_resources.txt: default run, 2 loaded cores): max RSS
            # 129 MiB; runtime: vox3d.workflow.jobsize.FEATURES_S_PER_S (measured s per s of audio
            # there)
            mem_mb=500,
            disk_mb=1000,
            runtime=shard_minutes(jobsize.FEATURES_S_PER_S),
        params:
            settings=config["features"],
        script:
            "../scripts/features.py"


rule features_rejects:
    input:
        shards=feature_shards,
    output:
        rejects=out("features/rejects.tsv"),
    log:
        out("logs/features_rejects/features_rejects.log"),
    benchmark:
        out("benchmarks/features_rejects/features_rejects.tsv")
    conda:
        "../envs/features.yaml"
    threads: 1
    resources:
        # measured (bench/results/cpu_resources.txt): 0.23 s, max RSS below the benchmark's first
        # sample (tables of rejects)
        mem_mb=500,
        disk_mb=1000,
        runtime=10,
    script:
        "../scripts/features.py"


rule features:
    input:
        feature_shards,
        out("features/rejects.tsv"),
