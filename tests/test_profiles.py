"""Cluster profiles (profiles/slurm, profiles/cluster-generic): they parse, a dry run on a
small manifest builds the whole DAG, and the jobs land where the profiles say: GPU rules on
the GPU partition with a GPU request, CPU rules on the CPU partition without one, small
per-shard jobs grouped.  Placement comes from the SLURM executor plugin's own functions
(vox3d.workflow.placement); no sbatch, sinfo or qsub is needed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from dag_vox2 import vox2_rows  # noqa: E402

from vox3d.media.manifest import write_manifest  # noqa: E402

pytest.importorskip("snakemake_executor_plugin_slurm")
pytest.importorskip("snakemake_executor_plugin_cluster_generic")

N_SHARDS = 20  # 80 utterances, shard_size 4


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> tuple[Path, Path]:
    """A manifest of generated rows (no video files) with its shards, checkpoint satisfied."""
    root = tmp_path_factory.mktemp("profiles")
    videos, out = root / "videos", root / "out"
    videos.mkdir()
    write_manifest(vox2_rows(80, 12, 5), out / "manifest.tsv", out / "shards", 4)
    os.utime(videos, (946684800,) * 2)
    return videos, out


def placement(profile: str, videos: Path, out: Path, *config: str) -> list[dict]:
    cmd = [sys.executable, "-m", "vox3d.workflow.placement", "--profile", profile, "--nolock",
           "--config", f"videos_dir={videos}", f"out_dir={out}", "shard_size=4", *config]  # fmt: skip
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    recs = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert recs, r.stdout[-2000:]
    return recs


@pytest.mark.parametrize("profile", ["slurm", "cluster-generic"])
def test_profiles_parse(profile):
    cfg = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())
    assert cfg["executor"] == profile
    assert cfg["groups"] == ["extract_shard=cpu_shard", "features_shard=cpu_shard"]
    assert "group-components" not in cfg  # wrong groups with the checkpoint: see the profile
    overlay = yaml.safe_load((REPO / "profiles" / "slurm" / "gpu.yaml").read_text())
    assert overlay["fit"]["device"] == overlay["train"]["device"] == "cuda"


TWO_STAGE = "extract={keep_frames: true}"  # extract_shard, fit_shard, features_shard
GPU_RULES = {"stream_shard", "fit_shard", "train", "evaluate"}


@pytest.fixture(scope="module")
def slurm_jobs(small_run) -> list[dict]:
    """Placement of the two-stage path (frames stored): the CPU groups and fit jobs."""
    return placement("profiles/slurm", *small_run, TWO_STAGE)


@pytest.fixture(scope="module")
def slurm_stream_jobs(small_run) -> list[dict]:
    """Placement of the default path (keep_frames false): one stream job per shard."""
    return placement("profiles/slurm", *small_run)


def test_slurm_dry_run_builds_the_whole_dag(slurm_jobs):
    rules = [r for rec in slurm_jobs for r in rec["rules"]]
    for rule in ("extract_shard", "fit_shard", "features_shard"):
        assert rules.count(rule) == N_SHARDS, rule
    assert "stream_shard" not in rules
    for rule in ("train", "evaluate", "fit_identities", "figures", "features_rejects"):
        assert rules.count(rule) == 1, rule


def test_slurm_default_runs_one_gpu_stream_job_per_shard(slurm_stream_jobs):
    """keep_frames false: each shard is one stream_shard job (decode + fit + features) on
    the GPU partition asking for one GPU; the two-stage rules and the CPU groups are gone."""
    rules = [r for rec in slurm_stream_jobs for r in rec["rules"]]
    for rule in ("extract_shard", "fit_shard", "features_shard"):
        assert rule not in rules, rule
    for rule in ("train", "evaluate", "fit_identities", "figures", "features_rejects"):
        assert rules.count(rule) == 1, rule
    stream = [r for r in slurm_stream_jobs if r["rules"] == ["stream_shard"]]
    assert len(stream) == N_SHARDS
    assert not [r for r in slurm_stream_jobs if r["kind"] == "group"]
    for rec in stream:
        assert rec["kind"] == "single" and rec["partition"] == "gpu", rec
        assert rec["resources"]["gpu"] == 1 and "--gpus=1" in rec["sbatch"], rec


def test_slurm_gpu_jobs_on_gpu_partition(slurm_jobs, slurm_stream_jobs):
    gpu_rules = GPU_RULES
    for rec in slurm_jobs + slurm_stream_jobs:
        if rec["kind"] == "local":
            continue
        uses_gpu = bool(set(rec["rules"]) & gpu_rules)
        if uses_gpu:
            assert rec["partition"] == "gpu", rec
            assert rec["resources"]["gpu"] == 1, rec  # a group asks for 1, not 1 per member
            assert "--gpus=1" in rec["sbatch"] and " -p gpu " in rec["sbatch"], rec["sbatch"]
        else:
            assert rec["partition"] == "cpu", rec
            assert "--gpus" not in rec["sbatch"] and "gres" not in rec["sbatch"], rec["sbatch"]
            assert " -p cpu " in rec["sbatch"], rec["sbatch"]
            assert not rec["resources"].get("gpu"), rec


def test_slurm_groups_as_stated(slurm_jobs):
    groups = [r for r in slurm_jobs if r["kind"] == "group"]
    # one SLURM job per shard runs that shard's extract_shard then features_shard
    assert groups and all(g["name"] == "cpu_shard" for g in groups)
    assert sorted(s for g in groups for s in set(g["shards"])) == [
        f"shard-{i:05d}" for i in range(N_SHARDS)
    ]
    for g in groups:
        assert sorted(g["rules"]) == ["extract_shard", "features_shard"], g
        assert len(set(g["shards"])) == 1, g
        # sized by Snakemake from the members (extract 1000 MB / 5 min, features 500 MB /
        # 5 min at shard_size 4): runtimes add up; memory covers the larger member
        assert g["resources"]["runtime"] == 10 and g["resources"]["mem_mb"] >= 1000
        assert " -t 10 " in g["sbatch"] and f"--cpus-per-task={g['threads']}" in g["sbatch"]
    # fit_shard: one GPU job per shard, never inside a CPU group
    fit = [r for r in slurm_jobs if r["rules"] == ["fit_shard"]]
    assert len(fit) == N_SHARDS and all(r["kind"] == "single" for r in fit)


def test_slurm_cpu_only_config_puts_fit_on_cpu(small_run):
    jobs = placement(
        "profiles/slurm", *small_run,
        "fit={device: cpu}", "train={device: cpu}", "evaluate={device: cpu}",
    )  # fmt: skip
    assert jobs and all(j["partition"] == "cpu" for j in jobs if j["kind"] != "local")
    assert not any("--gpus" in j["sbatch"] for j in jobs)


def _submit_module():
    spec = importlib.util.spec_from_file_location(
        "pbs_submit", REPO / "profiles" / "cluster-generic" / "submit.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cluster_generic_dry_run_and_qsub_lines(small_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # submit.py creates logs/cluster/ here
    jobs = placement("profiles/cluster-generic", *small_run, TWO_STAGE)
    jobs += placement("profiles/cluster-generic", *small_run)
    sub = _submit_module()
    gpu_rules = GPU_RULES
    seen = set()
    for rec in jobs:
        if rec["kind"] == "local":
            continue
        props = {"type": rec["kind"], "rule": rec["name"], "threads": rec["threads"],
                 "resources": rec["resources"]}  # fmt: skip
        cmd = sub.qsub_command(props, "job.sh", env={})
        line = " ".join(cmd)
        if set(rec["rules"]) & gpu_rules:
            assert "-q gpu" in line and ":ngpus=1" in line, line
        else:
            assert "-q cpu" in line and "ngpus" not in line, line
        assert f"mem={rec['resources']['mem_mb']}mb" in line
        seen.update(rec["rules"])
    assert {"extract_shard", "fit_shard", "features_shard", "stream_shard", "train"} <= seen
    assert sub.qsub_command({"resources": {"runtime": 125}}, "j.sh", env={})[6] == (
        "walltime=02:05:00"
    )


def test_pbs_submit_script_reads_a_jobscript(tmp_path):
    """submit.py as the executor calls it: job properties read from the job script."""
    props = {"type": "group", "groupid": "cpu_shard", "threads": 2,
             "resources": {"mem_mb": 1500, "runtime": 10, "gpu": 0}}  # fmt: skip
    js = tmp_path / "snakejob.sh"
    js.write_text(f"#!/bin/sh\n# properties = {json.dumps(props)}\necho run\n")
    env = {**os.environ, "VOX3D_SUBMIT_PRINT": "1", "VOX3D_PBS_CPU_QUEUE": "short"}
    r = subprocess.run(
        [sys.executable, str(REPO / "profiles" / "cluster-generic" / "submit.py"), str(js)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [
        "qsub", "-q", "short", "-l", "select=1:ncpus=2:mem=1500mb", "-l", "walltime=00:10:00",
        "-N", "vox3d.cpu_shard", "-j", "oe", "-o", "logs/cluster/", str(js),
    ]  # fmt: skip


def test_pbs_status_mapping():
    spec = importlib.util.spec_from_file_location(
        "pbs_status", REPO / "profiles" / "cluster-generic" / "status.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.status_of({"job_state": "R"}) == "running"
    assert mod.status_of({"job_state": "Q"}) == "running"
    assert mod.status_of({"job_state": "F", "Exit_status": 0}) == "success"
    assert mod.status_of({"job_state": "F", "Exit_status": 271}) == "failed"
    assert mod.status_of({}) == "failed"


def test_job_gpus_policy(tmp_path, monkeypatch):
    """One GPU policy for every rule (vox3d.torch_setup.job_gpus): cuda asks for one GPU, cpu
    for none, auto for one only in the fit and only where nvidia-smi is on PATH."""
    from vox3d.torch_setup import job_gpus

    monkeypatch.setenv("PATH", str(tmp_path))
    stages = ("fit", "train", "evaluate", "regressor")
    assert [job_gpus(s, "cuda") for s in stages] == [1, 1, 1, 1]
    assert [job_gpus(s, "cpu") for s in stages] == [0, 0, 0, 0]
    assert [job_gpus(s, "auto") for s in stages] == [0, 0, 0, 0]
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n")
    smi.chmod(0o755)
    assert [job_gpus(s, "auto") for s in stages] == [1, 0, 0, 0]
