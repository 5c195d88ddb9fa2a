"""The oneMKL first-call race (issue 14) with and without vox3d's warm-up.

Forks waves of fresh torch processes, each making its first threaded call of every
VML-routed op (``vox3d.torch_setup.VML_OPS``), and counts first calls whose result
differs from the same call repeated (see ``vox3d.torch_setup``).  Prints one line per
setting.  ``python bench/torch_race.py [--processes 400 --wave 16 --threads 2,8]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ["VOX3D_NO_TORCH_WARMUP"] = "1"  # the parent must stay unresolved; children choose

from vox3d.torch_setup import VML_OPS, race_storm  # noqa: E402


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--processes", type=int, default=400)
    ap.add_argument("--wave", type=int, default=16)
    ap.add_argument("--threads", default="2,8")
    a = ap.parse_args()
    import torch

    print(f"cpu: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}")
    print(f"{len(VML_OPS)} ops x float32/float64 per process, waves of {a.wave} processes")
    for threads in [int(t) for t in a.threads.split(",")]:
        for warm in (False, True):
            t0 = time.perf_counter()
            bad_children, bad_calls, calls = race_storm(a.processes, a.wave, threads, warm)
            print(
                f"threads {threads} warm-up {'on ' if warm else 'off'}: "
                f"{bad_children}/{a.processes} processes with a wrong first call, "
                f"{bad_calls}/{calls} first calls wrong ({time.perf_counter() - t0:.1f} s)"
            )


if __name__ == "__main__":
    main()
