#!/usr/bin/env python3
"""Job status for the cluster-generic executor: ``status.py JOBID`` prints running, success
or failed from PBS's ``qstat -fx -F json`` (job_state; exit status when finished)."""

from __future__ import annotations

import json
import subprocess
import sys


def status_of(info: dict) -> str:
    """running | success | failed from one job's ``qstat -fx -F json`` entry."""
    state = info.get("job_state", "")
    if state in ("Q", "R", "H", "W", "T", "E", "B", "S", "U"):
        return "running"
    if state in ("F", "X"):
        return "success" if int(info.get("Exit_status", 1)) == 0 else "failed"
    return "failed"


def main(argv: list[str]) -> int:
    jobid = argv[0]
    r = subprocess.run(["qstat", "-fx", "-F", "json", jobid], capture_output=True, text=True)
    if r.returncode != 0:
        print("failed")
        return 0
    jobs = json.loads(r.stdout).get("Jobs", {})
    print(status_of(next(iter(jobs.values()))) if jobs else "failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
