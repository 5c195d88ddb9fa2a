"""Where each job of a dry run would go on a cluster: partition, GPUs, submit line, groups.

``snakemake -n`` does not load an executor plugin (submission is replaced by the dry-run
executor), so neither ``sbatch`` nor ``sinfo`` is needed and nothing says where a job would
land.  :func:`dry_run_placement` runs the Snakemake command line in this process with the
dry-run executor's ``printjob`` replaced by a recorder, and for every job the scheduler
would submit (a single job, or a group job with its member jobs) asks the SLURM executor
plugin's own functions what it would do:

* ``partitions.get_best_partition`` with the profile's partition file (the plugin's
  ``--slurm-partition-config``): the partition;
* ``utils.set_gres_string``: the GPU request (``--gpus=N`` from resources ``gpu`` /
  ``gpu_model``, ``--gres=...`` from ``gres``);
* ``submit_string.get_submit_command``: the ``sbatch`` line (account, log and job name are
  placeholders).

    .venv/bin/python -m vox3d.workflow.placement --profile profiles/slurm [--config key=value ...]

prints one JSON object per job of the dry run (``kind`` single|group, or local for a job
without a body (rule all) that is never submitted; ``name``, ``rules``,
``shards``, ``threads``, ``resources``, ``partition``, ``gres``, ``sbatch``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
from pathlib import Path

import yaml


def _plain(value):
    """A resource value as JSON can hold it (TBD strings and other objects as text)."""
    return value if isinstance(value, int | float | str | bool) or value is None else str(value)


def _resources(job) -> dict:
    return {k: _plain(v) for k, v in job.resources.items() if not k.startswith("_")}


def profile_partition_file(profile: str | Path) -> Path | None:
    """The ``slurm-partition-config`` file named in ``profile``/config.yaml (resolved in the
    profile folder, as Snakemake resolves it), or None."""
    cfg = yaml.safe_load((Path(profile) / "config.yaml").read_text(encoding="utf-8")) or {}
    name = cfg.get("slurm-partition-config")
    if not name:
        return None
    p = Path(profile) / name
    return p if p.exists() else Path(name)


def dry_run_placement(argv: list[str], partition_file: str | Path | None) -> list[dict]:
    """Run ``snakemake -n <argv>`` in this process and return one record per job that would
    be submitted (see the module docstring).  ``partition_file``: the plugin's partition
    YAML (None: no partition selection, ``partition`` is None)."""
    import snakemake.executors.dryrun as dryrun
    from snakemake.cli import main

    from_plugin = partition_file is not None
    if from_plugin:
        from snakemake_executor_plugin_slurm.partitions import (
            get_best_partition,
            read_partition_file,
        )
        from snakemake_executor_plugin_slurm.submit_string import get_submit_command
        from snakemake_executor_plugin_slurm.utils import set_gres_string

        partitions = read_partition_file(Path(partition_file))
    log = logging.getLogger("vox3d.workflow.placement")
    records: list[dict] = []

    def record(self, job) -> None:
        local = not job.is_group() and job.is_norun
        rec = {
            "kind": "group" if job.is_group() else "local" if local else "single",
            "name": str(job.groupid) if job.is_group() else job.rule.name,
            "rules": sorted(j.rule.name for j in job.jobs) if job.is_group() else [job.rule.name],
            "shards": sorted(
                str(j.wildcards.get("shard"))
                for j in (job.jobs if job.is_group() else [job])
                if j.wildcards.get("shard")
            ),
            "threads": int(job.threads),
            "resources": _resources(job),
            "partition": None,
            "gres": "",
            "sbatch": "",
        }
        if from_plugin and not local:  # a local job (rule all) is never submitted
            part = get_best_partition(partitions, job, log)
            rec["partition"] = part
            rec["gres"] = set_gres_string(job).strip()
            params = {
                "run_uuid": "<run-uuid>",
                "slurm_logfile": "<log>",
                "comment_str": rec["name"],
                "account": "",
                "partition": f"-p {part}" if part else "",
                "workdir": "",
            }
            rec["sbatch"] = " ".join(
                (get_submit_command(job, params) + set_gres_string(job)).split()
            )
        records.append(rec)

    orig = dryrun.Executor.printjob
    dryrun.Executor.printjob = record
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                main(["-n", "--quiet", "rules", *argv])
            except SystemExit as e:
                if e.code not in (0, None):
                    raise RuntimeError(f"snakemake -n failed:\n{out.getvalue()[-4000:]}") from e
    finally:
        dryrun.Executor.printjob = orig
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", required=True)
    ap.add_argument("--partitions", default=None, help="default: the profile's file")
    a, rest = ap.parse_known_args(argv)
    pf = a.partitions or profile_partition_file(a.profile)
    for rec in dry_run_placement(["--profile", a.profile, *rest], pf):
        print(json.dumps(rec, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
