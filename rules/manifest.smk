# Manifest: probe every video once -> OUT/manifest.tsv + OUT/shards/shard-NNNNN.tsv.


def manifest_inputs(wildcards):
    if synthetic():
        return {
            "ground_truth": out("synthetic/ground_truth.h5"),
            "videos": out("synthetic/videos"),
            "meta": out("synthetic/vox1_meta.csv"),
        }
    inputs = {"videos": config["videos_dir"]}
    if config.get("meta_csv"):
        inputs["meta"] = config["meta_csv"]
    return inputs


checkpoint manifest:
    input:
        unpack(manifest_inputs),
    output:
        manifest=out("manifest.tsv"),
        shards=directory(out("shards")),
    log:
        out("logs/manifest/manifest.log"),
    benchmark:
        out("benchmarks/manifest/manifest.tsv")
    conda:
        "../envs/core.yaml"
    threads: 2
    resources:
        # measured (bench/results/cpu_resources.txt): 2.75 ms a local file on 2 threads (160 files;
        # an earlier run: 4.6 ms); the rows are held (~1 KB each): VoxCeleb2's 1.13M files
        # ~1.1 GB and ~90 min at 4.6 ms: mem x3.6, runtime x2.7 (a shared file system probes
        # slower)
        mem_mb=4000,
        disk_mb=1000,
        runtime=240,
    params:
        videos_dir=videos_dir(),
        meta_csv=meta_csv() or "",
        shard_size=config["shard_size"],
        prober="pyav",
    script:
        "../scripts/manifest.py"
