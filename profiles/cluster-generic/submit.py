#!/usr/bin/env python3
"""Submit one Snakemake job script to PBS (cluster-generic executor's submit command).

Called as ``submit.py JOBSCRIPT``; reads the job's properties from the script (Snakemake
writes them into it), runs ``qsub`` and prints the job id on stdout.  Mapping:

* queue: ``$VOX3D_PBS_GPU_QUEUE`` (default ``gpu``) when the job's resources have gpu > 0,
  else ``$VOX3D_PBS_CPU_QUEUE`` (default ``cpu``);
* ``-l select=1:ncpus=<threads>:mem=<mem_mb>mb[:ngpus=<gpu>]``;
* ``-l walltime=<runtime minutes as HH:MM:00>``;
* ``-N <rule or group name>``, output and error joined into ``logs/cluster/``.

``VOX3D_SUBMIT_PRINT=1`` prints the qsub command instead of running it (a dry check).
"""

from __future__ import annotations

import os
import subprocess
import sys


def qsub_command(props: dict, jobscript: str, env: dict[str, str] | None = None) -> list[str]:
    """The qsub argument list for a job with Snakemake job properties ``props`` (keys
    ``type`` single|group, ``rule`` or ``groupid``, ``threads``, ``resources``)."""
    env = os.environ if env is None else env
    res = props.get("resources", {}) or {}
    gpu = int(res.get("gpu", 0) or 0)
    threads = max(1, int(props.get("threads", 1) or 1))
    mem_mb = int(res.get("mem_mb", 2000) or 2000)
    runtime = int(res.get("runtime", 60) or 60)  # minutes
    queue = env.get("VOX3D_PBS_GPU_QUEUE", "gpu") if gpu else env.get("VOX3D_PBS_CPU_QUEUE", "cpu")
    select = f"select=1:ncpus={threads}:mem={mem_mb}mb" + (f":ngpus={gpu}" if gpu else "")
    name = str(props.get("rule") or props.get("groupid") or "vox3d")
    os.makedirs("logs/cluster", exist_ok=True)
    return [
        "qsub", "-q", queue, "-l", select,
        "-l", f"walltime={runtime // 60:02d}:{runtime % 60:02d}:00",
        "-N", f"vox3d.{name}"[:230], "-j", "oe", "-o", "logs/cluster/",
        jobscript,
    ]  # fmt: skip


def main(argv: list[str]) -> int:
    from snakemake.utils import read_job_properties

    jobscript = argv[-1]
    cmd = qsub_command(read_job_properties(jobscript), jobscript)
    if os.environ.get("VOX3D_SUBMIT_PRINT"):
        print(" ".join(cmd))
        return 0
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    print(out)  # the PBS job id, which status.py gets back
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
