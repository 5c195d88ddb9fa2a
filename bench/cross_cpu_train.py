"""Same bytes on another CPU (issue 14): train the tiny workflow's voice model on CPU from
a finished run's inputs, twice, and print each model's sha256 and loss curve head.

``python bench/cross_cpu_train.py --inputs DIR [--repeat 2] [--threads 2]``: DIR holds a
tiny-workflow ``out_dir``'s ``features/*.h5``, ``fit/identities.h5`` and
``synthetic/vox1_meta.csv``.  Settings: config.yaml's ``train`` section with the tiny
workflow's overrides (``tests/tiny_workflow.py``), device cpu.  Run it here and on another
machine (the GPU machine's CPU) and compare the hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tiny_workflow import TINY  # noqa: E402

from vox3d.face.face_model import face_model_settings  # noqa: E402
from vox3d.voice.train import run_train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--inputs", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    settings = {**cfg["train"], **TINY["train"], "device": "cpu"}
    data = os.environ.get("VOX3D_DATA")  # a machine without ../shared: assets laid out there

    def asset(v):
        if not isinstance(v, str):
            return v
        if data and v.startswith("../shared/data/"):
            return str(Path(data) / v.removeprefix("../shared/data/"))
        return str((ROOT / v).resolve())

    assets = {k: asset(v) for k, v in cfg["assets"].items()}
    face = face_model_settings(cfg["face_model"], assets)
    feats = sorted(str(p) for p in (a.inputs / "features").glob("*.h5"))
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in open("/proc/cpuinfo")
            if ln.startswith("model name")
        ),
        "?",
    )
    print(
        f"cpu: {cpu}; torch {torch.__version__}; {a.threads} threads; {len(feats)} feature shards"
    )
    for r in range(a.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            run_train(
                settings=settings,
                feature_paths=feats,
                identities_h5=a.inputs / "fit" / "identities.h5",
                meta_csv=a.inputs / "synthetic" / "vox1_meta.csv",
                out_dir=Path(tmp),
                face_model=face,
                threads=a.threads,
            )
            digest = hashlib.sha256((Path(tmp) / "model.pt").read_bytes()).hexdigest()
            log = (Path(tmp) / "log.csv").read_text().splitlines()
            print(
                f"run {r}: model.pt sha256 {digest}; log.csv line 2: {log[1] if len(log) > 1 else ''}"
            )


if __name__ == "__main__":
    main()
