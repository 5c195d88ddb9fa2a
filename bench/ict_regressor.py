"""Accuracy of the committed ICT regressor on held-out synthetic renders, by yaw bin.

    python bench/ict_regressor.py [--checkpoint vox3d/data/ict_regressor.pth] [--n 600]
        [--device cpu|cuda]

Prints, per |yaw| bin (0-20, 20-40, 40-60 degrees) and overall, for renders drawn with the
generator settings stored in the checkpoint's json and the held-out data seed
(seed + vox3d.fitting.ict_eval.EVAL_SEED_OFFSET): the mean narrow-face vertex error of shape +
expression and of the identity alone (model space, mm), the mean-face baseline (mm), and the
68-landmark NME in the crop (over sqrt(w*h) of the true landmark box).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vox3d.fitting.ict_checkpoint import DEFAULT_CHECKPOINT  # noqa: E402
from vox3d.fitting.ict_regressor import main  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gen-model", default=None, help="npz of the generator arrays (optional)")
    a = ap.parse_args()
    argv = ["--eval-only", "--out", a.checkpoint, "--eval-samples", str(a.n), "--device", a.device]
    if a.gen_model:
        argv += ["--gen-model", a.gen_model]
    sys.exit(main(argv))
