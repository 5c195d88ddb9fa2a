"""The tiny synthetic workflow shared by the end-to-end tests (tests/test_workflow.py and
tests/reliability/): 10 identities, 20 clips of 2 s, 3 shards, a 40-step supervised
training run and a 6-step unsupervised one (train.mode: both)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

TINY = {
    "shard_size": 8,
    "synthetic": {
        "identities": 10,
        "videos_per_identity": 1,
        "utterances_per_video": 2,
        "seconds": 2.0,
        "seed": 3,
    },
    "train": {
        "split": "hash",
        "val_fraction": 0.3,
        "steps": 40,
        "checkpoint_every": 20,
        "batch_size": 8,
        "crop_min": 50,
        "crop_max": 100,
        # both voice models, side by side (the unsupervised variant: a few steps)
        "mode": "both",
        "voice_encoder": {"steps": 20, "batch_size": 8},
        "unsupervised": {"steps": 6, "batch_size": 4, "checkpoint_every": 3},
    },
    "evaluate": {"bootstrap": 50, "n_figures": 2},
}


def run_snakemake(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Snakemake on this repository's workflow (``--directory`` the checkout), from ``cwd``,
    with a fixed hash seed; output captured."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    return subprocess.run(
        [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(ROOT), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
