# Stream (extract.keep_frames: false, the default): per shard one job decodes each video once,
# writes its index to OUT/extract/<shard>.h5 (no frames; audio only with extract.keep_audio),
# fits its frames as they decode into OUT/fit/<shard>.h5 and computes the voice features of
# its audio into OUT/features/<shard>.h5.  Logic: vox3d/fitting/stream.py (decode workers ahead of
# the fit),
# vox3d/fitting/frame_source.py, vox3d/fitting/fit.py.  The two-stage path (extract_shard +
# fit_shard) runs
# with extract.keep_frames: true instead.

if not config["extract"]["keep_frames"]:

    rule stream_shard:
        input:
            shard=shard_tsv,
            models=fit_models,
        output:
            extract=out("extract/{shard}.h5"),
            fit=out("fit/{shard}.h5"),
            features=out("features/{shard}.h5"),
        log:
            out("logs/stream_shard/{shard}.log"),
        benchmark:
            out("benchmarks/stream_shard/{shard}.tsv")
        wildcard_constraints:
            shard=r"shard-\d+",
        conda:
            "../envs/fit.yaml"
        # decode workers (vox3d.fitting.stream.StreamSource; processes from 2 with
        # extract.decode_workers auto); the fit's torch threads
        # follow the fit settings
        threads: 1
        resources:
            # the two stages' measured figures (rules/extract.smk, rules/fit.smk) bound it:
            # no frame is compressed or written, and nothing waits for frames to inflate.
            # Memory: the fit's plus decode queues of at most workers x 4 x 32 frames;
            # disk: the fit's fields and the features, no frames
            mem_mb=6000 if FIT_GPUS else 1500,
            disk_mb=1000,
            runtime=shard_minutes(jobsize.STREAM_S_PER_S + jobsize.FEATURES_S_PER_S),
            gpu=min(FIT_GPUS, 1),
        params:
            videos_dir=videos_dir(),
            extract=config["extract"],
            settings=fit_settings(),
            features=config["features"],
        script:
            "../scripts/stream.py"
