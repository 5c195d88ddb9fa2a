# Shared input functions and the target registry.  No rules here: included first by the
# Snakefile, so every rules/<stage>.smk can use these.

import os

from vox3d.manifest import list_shards

OUT = os.path.normpath(config["out_dir"])

# Final outputs of each stage; a stage's .smk appends its own (rule `all` asks for all).
TARGETS = []


def out(path):
    """`path` under the configured out_dir (OUT/path)."""
    return os.path.join(OUT, path)


def synthetic():
    """True when no videos_dir is configured: the embedded synthetic corpus is used."""
    return config.get("videos_dir") in (None, "")


def videos_dir():
    """Root of the <id>/<youtube-id>/<utt>.<ext> videos (config, or the synthetic corpus)."""
    return out("synthetic/videos") if synthetic() else config["videos_dir"]


def meta_csv():
    """VoxCeleb1-style metadata: config meta_csv, else the synthetic one, else None."""
    if config.get("meta_csv"):
        return config["meta_csv"]
    return out("synthetic/vox1_meta.csv") if synthetic() else None


def shards(wildcards=None):
    """Shard names (shard-00000, ...) from the manifest checkpoint's shards/ folder."""
    return list_shards(checkpoints.manifest.get().output.shards)


def shard_tsv(wildcards):
    """The manifest rows of shard `wildcards.shard` (available once the checkpoint ran)."""
    checkpoints.manifest.get()
    return out(f"shards/{wildcards.shard}.tsv")


def shard_files(stage, wildcards=None):
    """OUT/<stage>/<shard>.h5 for every shard; use as `input: lambda wc: shard_files("fit")`."""
    return [out(f"{stage}/{s}.h5") for s in shards()]


def feature_shards(wildcards=None):
    """OUT/features/<shard>.h5 of every shard (input of train, evaluate, features_rejects)."""
    return shard_files("features")


def all_targets(wildcards):
    return TARGETS
