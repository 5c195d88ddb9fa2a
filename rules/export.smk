# Export: the finished Voxceleb-3D under OUT/voxceleb3d/ -- the audio of every exported
# utterance (audio/), lhotse manifests (lhotse/*.jsonl.gz), Hugging Face parquet tables
# (hf/*.parquet), the utterances not exported (rejects.tsv) and the dataset card (README.md).
# Logic: vox3d/report/export.py (the rows), vox3d/report/export_formats.py (audio, manifests,
# tables),
# vox3d/report/card.py (the card).  File names are the library's (vox3d.report.export_layout:
# EXPORT_DIR,
# AUDIO_DIR, LHOTSE_FILES, HF_FILES, ...).

from vox3d.report import export_layout as vx

# Named outputs: recordings, supervisions, cuts; utterances, identities
# (vox3d.report.export_layout.file_key).
LHOTSE_OUTPUTS = {vx.file_key(f): export_out(f) for f in vx.LHOTSE_FILES}
HF_OUTPUTS = {vx.file_key(f): export_out(f) for f in vx.HF_FILES}

TARGETS.extend(
    [
        export_out(vx.AUDIO_DIR),
        *LHOTSE_OUTPUTS.values(),
        *HF_OUTPUTS.values(),
        export_out(vx.CARD_FILE),
    ]
)


# What the export reads: the manifest, every stage's shards, the identity shapes.
EXPORT_INPUTS = {
    "manifest": out("manifest.tsv"),
    "extract": lambda wc: shard_files("extract"),
    "fit": lambda wc: shard_files("fit"),
    "features": lambda wc: shard_files("features"),
    "identities": out("fit/identities.h5"),
    "features_rejects": out("features/rejects.tsv"),
}
EXPORT_PARAMS = {
    "audio": config["export"]["audio"],
    "split": config["train"]["split"],
    "val_fraction": config["train"]["val_fraction"],
    "videos_dir": videos_dir(),  # audio the extract shards do not keep is decoded again
}


rule export_audio:
    input:
        **EXPORT_INPUTS,
    output:
        audio=directory(export_out(vx.AUDIO_DIR)),
        rejects=export_out(vx.REJECTS_FILE),
    log:
        out("logs/export/export_audio.log"),
    benchmark:
        out("benchmarks/export/export_audio.tsv")
    conda:
        "../envs/export.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
        gpu=0,
        # set (not derived from the inputs' sizes, which Snakemake would stat for every
        # shard file: 13 s of a VoxCeleb2-sized DAG); audio export needs ~4 bytes/sample
        disk_mb=1000,
    params:
        **EXPORT_PARAMS,
    script:
        "../scripts/export.py"


rule export_lhotse:
    input:
        **EXPORT_INPUTS,
    output:
        **LHOTSE_OUTPUTS,
    log:
        out("logs/export/export_lhotse.log"),
    benchmark:
        out("benchmarks/export/export_lhotse.tsv")
    conda:
        "../envs/export.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=0,
        disk_mb=1000,
    params:
        **EXPORT_PARAMS,
    script:
        "../scripts/export.py"


rule export_hf:
    input:
        **EXPORT_INPUTS,
    output:
        **HF_OUTPUTS,
    log:
        out("logs/export/export_hf.log"),
    benchmark:
        out("benchmarks/export/export_hf.tsv")
    conda:
        "../envs/export.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=0,
        disk_mb=1000,
    params:
        **EXPORT_PARAMS,
    script:
        "../scripts/export.py"


rule export_card:
    input:
        **EXPORT_INPUTS,
        extract_stats=out("extract/stats.tsv"),
        extract_rejects=out("extract/rejects.tsv"),
        fit_stats=out("fit/stats.tsv"),
        fit_rejects=out("fit/rejects.tsv"),
        ground_truth=lambda wc: (
            [out("synthetic/ground_truth.h5")] if synthetic() else []
        ),
        audio=export_out(vx.AUDIO_DIR),
        rejects=export_out(vx.REJECTS_FILE),
        lhotse=rules.export_lhotse.output,
        hf=rules.export_hf.output,
    output:
        card=export_out(vx.CARD_FILE),
    log:
        out("logs/export/export_card.log"),
    benchmark:
        out("benchmarks/export/export_card.tsv")
    conda:
        "../envs/export.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
        gpu=0,
        disk_mb=1000,
    params:
        **EXPORT_PARAMS,
        config=config,
        bootstrap=config["evaluate"]["bootstrap"],
    script:
        "../scripts/export.py"


rule export:
    input:
        rules.export_card.output,
