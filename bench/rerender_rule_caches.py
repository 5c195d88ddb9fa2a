"""Render rule train_regressor's training and held-out caches again, as an earlier run did.

    python bench/rerender_rule_caches.py RUN_A OUT_B

RUN_A: the work folder of a run of ``bench/h200_train_rule.sh`` (its ``argv_final.json``
holds the rule's argv).  The same ``render`` settings (samples, seed, codec, workers,
device, model sizes, shard size) write ``OUT_B/regressor/cache`` and ``.../heldout``; then
``bench/compare_render_caches.py --caches-only`` compares them with RUN_A's, shard by
shard.  With training bit-identical on one cache, equal caches mean the rule reproduces
its checkpoint up to the calibration renders.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.compare_render_caches import compare  # noqa: E402
from vox3d.fitting import regressor_data  # noqa: E402


def opt(argv: list[str], flag: str) -> str | None:
    return argv[len(argv) - 1 - argv[::-1].index(flag) + 1] if flag in argv else None


def main() -> int:
    run_a, out_b = Path(sys.argv[1]), Path(sys.argv[2])
    argv = json.loads((run_a / "argv_final.json").read_text())
    common = []
    for flag in ("--workers", "--codec", "--shard-size", "--n-id", "--n-exp", "--ict", "--device", "--seed"):  # fmt: skip
        v = opt(argv, flag)
        if v is not None:
            common += [flag, v]
    a_cache, a_held = Path(opt(argv, "--cache")), Path(opt(argv, "--heldout"))
    ok = True
    n_held = opt(argv, "--n-heldout") or str(regressor_data.N_HELDOUT)  # the rule leaves it out
    for n, a_dir, held in ((opt(argv, "--n"), a_cache, False), (n_held, a_held, True)):  # fmt: skip
        b_dir = out_b / "regressor" / a_dir.name
        t0 = time.time()
        rc = regressor_data.main(
            [
                "render",
                "--n",
                str(n),
                "--out",
                str(b_dir),
                *(["--heldout"] if held else []),
                *common,
            ]
        )
        print(f"rendered {b_dir} ({n} samples) in {time.time() - t0:.0f} s, exit {rc}", flush=True)
        ok &= rc == 0 and compare(a_dir, b_dir, caches_only=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
