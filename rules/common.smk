# Shared input functions and the target registry.  No rules here: included first by the
# Snakefile, so every rules/<stage>.smk can use these.

import os

from vox3d.workflow import jobsize
from vox3d.report.export_layout import EXPORT_DIR
from vox3d.media.extract import ExtractSettings
from vox3d.config import train_variants as vox3d_train_variants
from vox3d.fitting.fit import FitConfig, crops_needed

# VIDEO_S is a workflow global: bench/resources.py reads it
from vox3d.workflow.jobsize import VIDEO_S
from vox3d.media.manifest import list_shards
from vox3d.torch_setup import job_gpus

OUT = os.path.normpath(config["out_dir"])
# GPUs of a fit_shard or stream_shard job (vox3d.torch_setup.job_gpus: cuda, or auto on a
# machine with nvidia-smi).  `--set-resources fit_shard:gpu=N` runs N processes, one per GPU
# (scripts/fit.py, vox3d/fitting/multigpu.py); give it N x mem_mb too
# (fit_shard:mem_mb=...).  A
# stream_shard job takes at most one GPU: spread shards over GPUs as separate jobs.
FIT_GPUS = job_gpus("fit", config["fit"]["device"])

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


def export_out(rel):
    """OUT/voxceleb3d/<rel>, the export folder (rel: one of the file names of
    vox3d.report.export_layout)."""
    return out(f"{EXPORT_DIR}/{rel}")


_SHARDS_CACHE = {}


def shards(wildcards=None):
    """Shard names (shard-00000, ...) from the manifest checkpoint's shards/ folder.

    Listed once per state of the folder (cached on its path, inode and mtime: the
    checkpoint replaces the folder as a whole), not once per input-function call: every
    aggregate rule asks for the list, of thousands of shards for VoxCeleb2 (8,815 at
    shard_size 128: bench/results/cpu_dag_vox2.txt).
    """
    folder = checkpoints.manifest.get().output.shards
    st = os.stat(folder)
    key = (os.path.abspath(folder), st.st_ino, st.st_mtime_ns)
    if key not in _SHARDS_CACHE:
        _SHARDS_CACHE.clear()
        _SHARDS_CACHE[key] = list_shards(folder)
    return _SHARDS_CACHE[key]


def shard_tsv(wildcards):
    """The manifest rows of shard `wildcards.shard` (available once the checkpoint ran)."""
    checkpoints.manifest.get()
    return out(f"shards/{wildcards.shard}.tsv")


def fit_models(wildcards=None):
    """Files the fit's detector and regressor are read from (FitConfig.model_files):
    inputs of the fit jobs, so that a new checkpoint refits."""
    return FitConfig.from_config(config).model_files()


def shard_files(stage, wildcards=None):
    """OUT/<stage>/<shard>.h5 for every shard; use as `input: lambda wc: shard_files("fit")`."""
    return [out(f"{stage}/{s}.h5") for s in shards()]


def feature_shards(wildcards=None):
    """OUT/features/<shard>.h5 of every shard (input of train, evaluate, features_rejects)."""
    return shard_files("features")


# Job sizes (resources:) are set from measurements; docs/cluster.md has the table.  The
# measured rates and the arithmetic live in vox3d/workflow/jobsize.py (VIDEO_S: seconds per video).


def shard_minutes(s_per_video_s, margin=10.0, floor=5):
    """Runtime request in minutes of a per-shard job that took `s_per_video_s` seconds of
    wall time per second of video, for config shard_size videos (vox3d.workflow.jobsize).
    """
    return jobsize.shard_minutes(s_per_video_s, config["shard_size"], margin, floor)


def fit_identities_mem_mb(wildcards, input):
    """Memory request in MB of `fit_identities`: it holds every kept frame's identity
    coefficients (vox3d.workflow.jobsize.fit_identities_mem_mb)."""
    return jobsize.fit_identities_mem_mb(
        len(input.shards), config["shard_size"], config["extract"]["frame_rate"]
    )


def fit_identities_minutes(wildcards, input):
    """Runtime request in minutes of `fit_identities` (vox3d.workflow.jobsize)."""
    return jobsize.fit_identities_minutes(len(input.shards))


def train_minutes(threads, margin=3.0, floor=10):
    """Runtime request in minutes of `train` on `threads` threads: its steps (train.steps,
    else the preset's) at the measured speed, times `margin` (vox3d.workflow.jobsize).
    """
    return jobsize.train_minutes(config["train"], threads, margin, floor)


def unsupervised_minutes(wildcards):
    """Runtime request of train_unsupervised (vox3d.workflow.jobsize.unsupervised_minutes)."""
    return jobsize.unsupervised_minutes(config["train"])


def train_variants():
    """The voice models train.mode asks for (vox3d.config.train_variants): supervised
    (rule train), unsupervised (rules pretrain_voice, train_unsupervised) or both."""
    return vox3d_train_variants(config)


def fit_settings():
    """The fit jobs' settings: face_model, fit (keep_crops resolved to true / false) and
    assets sections.  crops_per_video (which crops the fit shards store) is in them only
    when the crops are kept, so that changing it refits then and only then."""
    keep = crops_needed(config)
    fit = dict(config["fit"], keep_crops=keep)
    if not keep:
        fit.pop("crops_per_video", None)
    return {"face_model": config["face_model"], "fit": fit, "assets": config["assets"]}


def evaluate_models(wildcards):
    """The evaluate job's models and split: the supervised model's split.tsv when it is
    trained, else the unsupervised variant's."""
    v = train_variants()
    d = {}
    if "supervised" in v:
        d["model"] = out("train/model.pt")
        d["split"] = out("train/split.tsv")
    if "unsupervised" in v:
        d["unsupervised"] = out("train/unsupervised.pt")
        d.setdefault("split", out("train/unsupervised_split.tsv"))
    return d


def all_targets(wildcards):
    return TARGETS
