"""The oneMKL first-call race (issue 14) with and without vox3d's warm-up.

Forks waves of fresh torch processes, each making its first threaded call of every
VML-routed op (``vox3d.torch_setup.VML_OPS``), and counts first calls whose result
differs from the same call repeated (see ``vox3d.torch_setup``).  Prints one line per
setting.  ``python bench/torch_race.py [--processes 400 --wave 16 --threads 2,8]``.

``--fresh`` starts every child as a new interpreter (``python -c``: import torch, set the
threads, optionally warm up, first calls), the reporter's minimal script, instead of a
fork of this process; ``--load N`` keeps N busy-loop processes running meanwhile (the
race was seen under CPU load).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
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


#: A fresh child: argv = threads, warm (0/1), ops (comma list); exit status = wrong first calls.
FRESH_CHILD = """
import sys, torch
threads, warm, ops = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3].split(",")
torch.set_num_threads(threads)
if warm:
    from vox3d.torch_setup import warm_up
    warm_up(torch)
bad = 0
for dtype in (torch.float32, torch.float64):
    x = torch.linspace(0.05, 0.95, 49152, dtype=dtype)
    for name in ops:
        f = getattr(torch, name)
        bad += int(not torch.equal(f(x), f(x)))
sys.exit(min(bad, 100))
"""


def fresh_storm(processes: int, wave: int, threads: int, warm: bool) -> tuple[int, int, int]:
    """:func:`vox3d.torch_setup.race_storm` with every child a new interpreter."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    env["VOX3D_NO_TORCH_WARMUP"] = "0" if warm else "1"
    args = [
        sys.executable,
        "-c",
        FRESH_CHILD,
        str(threads),
        "1" if warm else "0",
        ",".join(VML_OPS),
    ]
    bad_children = bad_calls = 0
    for start in range(0, processes, wave):
        procs = [subprocess.Popen(args, env=env) for _ in range(min(wave, processes - start))]
        for p in procs:
            code = p.wait()
            if code > 100 or code < 0:
                raise RuntimeError(f"fresh child failed (exit {code})")
            bad_calls += code
            bad_children += code > 0
    return bad_children, bad_calls, processes * len(VML_OPS) * 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--processes", type=int, default=400)
    ap.add_argument("--wave", type=int, default=16)
    ap.add_argument("--threads", default="2,8")
    ap.add_argument("--fresh", action="store_true", help="children are new interpreters")
    ap.add_argument("--load", type=int, default=0, help="busy-loop processes beside the storm")
    a = ap.parse_args()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.load)]
    try:
        run(a)
    finally:
        for p in busy:
            p.kill()
            p.wait()


def run(a: argparse.Namespace) -> None:
    import torch

    print(f"cpu: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}")
    kind = "new interpreters" if a.fresh else "forks"
    print(
        f"{len(VML_OPS)} ops x float32/float64 per process, waves of {a.wave} processes "
        f"({kind}), {a.load} busy-loop processes beside"
    )
    storm = fresh_storm if a.fresh else race_storm
    for threads in [int(t) for t in a.threads.split(",")]:
        for warm in (False, True):
            t0 = time.perf_counter()
            bad_children, bad_calls, calls = storm(a.processes, a.wave, threads, warm)
            print(
                f"threads {threads} warm-up {'on ' if warm else 'off'}: "
                f"{bad_children}/{a.processes} processes with a wrong first call, "
                f"{bad_calls}/{calls} first calls wrong ({time.perf_counter() - t0:.1f} s)"
            )


if __name__ == "__main__":
    main()
