"""Measured resources of a finished run against what its rules request (docs/cluster.md).

Reads the Snakemake benchmark file of every job of a finished run (``OUT/benchmarks/...``,
columns ``s``, ``max_rss``, ``cpu_time``, ...) and the requests of the same jobs (threads,
``mem_mb``, ``runtime``, ``gpu``) as the workflow computes them for that run's DAG: two
dry runs in this process (``snakemake -n``, no job runs, nothing is written under OUT), the
first with ``--forceall`` for the manifest checkpoint and the jobs it depends on, the second
forcing every other rule, so that the per-shard jobs of the run's shards are listed with
their resources.  Prints:

* per rule: jobs, max RSS (MiB, the largest of its jobs), max and summed wall time, summed
  CPU time, the request and the margins: ``mem_mb`` / max RSS and ``runtime`` / max wall;
* per shard job: videos, seconds of video, frames, wall, RSS, output size, and wall seconds
  per second of video (what ``shard_minutes`` in rules/common.smk takes);
* per per-shard rule: the largest wall seconds per second of video, the time it implies for
  a full shard of ``shard_size`` videos of ``VIDEO_S`` seconds, and the runtime margin there;
* a few rule-specific rates: manifest ms a file, fit_identities s a shard, train steps a
  second over the job's wall time (start-up included).

Snakemake samples a job's memory every 0.5 s for its first 30 samples, then every 30 s, so a
peak between two samples of a long job is missed; a job that ends before its first sample
shows the RSS of its shell only (flagged).  ``max_rss`` is in MiB (2^20 bytes), as SLURM's
``--mem`` (which the SLURM executor sets from ``mem_mb``) is.

    .venv/bin/python bench/resources.py --out-dir results [--configfile F ...] [--config key=value ...]

``--configfile`` and ``--config`` are passed to both dry runs: give the settings the run was
made with (default config: ``make run``; a run made with overlays such as
``bench/voice300.yaml`` needs the same overlays, else its DAG is not the run's).  Run from
anywhere; the workflow is this repository's.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vox3d.io import read_tsv  # noqa: E402

#: Below this max RSS (MiB) a job is taken to have ended before the benchmark's first
#: sample of the job's script (what was measured is the shell that started it).
SHELL_RSS_MIB = 16.0


def dry_run_jobs(argv: list[str]) -> list:
    """The jobs ``snakemake -n <argv>`` (in this process, from the repository root) would
    run; a group job contributes its member jobs."""
    import snakemake.executors.dryrun as dryrun
    from snakemake.cli import main

    jobs: list = []

    def record(self, job) -> None:
        jobs.extend(job.jobs if job.is_group() else [job])

    orig = dryrun.Executor.printjob
    dryrun.Executor.printjob = record
    buf = io.StringIO()
    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                main(["-n", "--quiet", "rules", "--nolock", *argv])
            except SystemExit as e:
                if e.code not in (0, None):
                    raise RuntimeError(f"snakemake -n failed:\n{buf.getvalue()[-4000:]}") from e
    finally:
        dryrun.Executor.printjob = orig
        os.chdir(cwd)
    return jobs


def run_jobs(
    out_dir: Path, config: list[str], configfiles: list[str] | None = None
) -> tuple[list, dict]:
    """Every job of the run's DAG with its resources (see the module doc), and the workflow's
    globals (``VIDEO_S``, ``config``).  `configfiles`: the run's config overlays."""
    files = [str(Path(f).resolve()) for f in configfiles or []]
    cfg = [*(["--configfile", *files] if files else []), "--config", f"out_dir={out_dir}", *config]
    first = dry_run_jobs([*cfg, "--forceall"])
    if not first:
        raise RuntimeError("the dry run lists no jobs")
    dag = first[0].dag
    upstream: set = set()
    todo = [j for j in first if j.is_checkpoint]
    while todo:  # the checkpoints and every job they depend on
        j = todo.pop()
        if j not in upstream:
            upstream.add(j)
            todo.extend(dag.dependencies[j])
    up_rules = {j.rule.name for j in upstream}
    workflow = dag.workflow
    rest = sorted(r.name for r in workflow.rules if r.name not in up_rules)
    second = dry_run_jobs([*cfg, "--forcerun", *rest]) if rest else []
    jobs = [j for j in first if j.rule.name in up_rules]
    jobs += [j for j in second if j.rule.name not in up_rules]
    return jobs, workflow.globals


def read_benchmark(path: Path) -> dict[str, float] | None:
    """The last row of a Snakemake benchmark TSV as numbers (NA: None), or None if absent."""
    if not path.is_file():
        return None
    rows = read_tsv(path)
    if not rows:
        return None

    def num(v: str) -> float | None:
        try:
            return float(v)
        except (TypeError, ValueError):
            return None

    return {k: num(v) for k, v in rows[-1].items()}


def size_mb(path: Path) -> float:
    """Size in MB (10^6 bytes) of a file, or of every file under a folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
    return path.stat().st_size / 1e6 if path.exists() else 0.0


def shard_info(out_dir: Path, shard: str) -> dict[str, float]:
    """Videos and seconds of video of a shard (its manifest rows), frames (extract stats)."""
    info = {"videos": 0, "video_s": 0.0, "frames": float("nan")}
    for row in read_tsv(out_dir / "shards" / f"{shard}.tsv"):
        info["videos"] += 1
        info["video_s"] += float(row["duration_s"] or 0)
    stats = out_dir / "extract" / "stats.tsv"
    if stats.is_file():
        for row in read_tsv(stats):
            if row["shard"] == shard:
                info["frames"] = float(row["frames"])
    return info


def fmt(v, spec: str) -> str:
    return "-" if v is None or v != v else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", required=True, type=Path, help="the run's out_dir")
    ap.add_argument("--config", nargs="*", default=[], help="key=value settings of the run")
    ap.add_argument("--configfile", nargs="*", default=[], help="config overlays of the run")
    a = ap.parse_args(argv)
    out_dir = a.out_dir.resolve()
    jobs, glob = run_jobs(out_dir, a.config, a.configfile)
    config = glob["config"]
    video_s = float(glob["VIDEO_S"])
    shard_size = int(config["shard_size"])

    order = {r.name: i for i, r in enumerate(glob["workflow"].rules)}
    jobs = sorted(jobs, key=lambda j: order.get(j.rule.name, len(order)))
    by_rule: dict[str, list] = {}
    for j in jobs:
        if j.benchmark:
            by_rule.setdefault(j.rule.name, []).append(j)
    bench_files = [Path(str(j.benchmark)) for js in by_rule.values() for j in js]
    bench_files = [p if p.is_absolute() else REPO / p for p in bench_files]
    stamps = [p.stat().st_mtime for p in bench_files if p.is_file()]
    print(f"run: {out_dir}; shard_size {shard_size}; VIDEO_S {video_s:g} s")
    if stamps:
        span = (max(stamps) - min(stamps)) / 60
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(max(stamps)))
        print(f"benchmark files written {span:.1f} min apart, the last at {when}")
    print("max RSS: MiB; wall, cpu: s; mem_mb: MB as requested (SLURM --mem reads MiB);")
    print("runtime: min; margins: mem_mb / max RSS, runtime x 60 / max wall")
    print()

    head = (
        f"{'rule':<17} {'jobs':>4} {'max RSS':>8} {'max wall':>8} {'sum wall':>8} "
        f"{'sum cpu':>8} {'threads':>7} {'gpu':>3} {'mem_mb':>6} {'runtime':>7} "
        f"{'mem x':>6} {'time x':>6}"
    )
    print(head)
    print("-" * len(head))
    rows: dict[str, dict] = {}
    notes = []
    for rule, js in by_rule.items():
        recs = []
        for j in js:
            p = Path(str(j.benchmark))
            rec = read_benchmark(p if p.is_absolute() else REPO / p)
            if rec is not None:
                recs.append((j, rec))
        if not recs:
            notes.append(f"{rule}: no benchmark file (not run)")
            continue
        rss = max(r["max_rss"] or 0.0 for _, r in recs)
        wall = max(r["s"] for _, r in recs)
        res = js[0].resources
        mem, runtime = res.get("mem_mb"), res.get("runtime")
        req = {(j.resources.get("mem_mb"), j.resources.get("runtime")) for j in js}
        if len(req) > 1:
            notes.append(f"{rule}: requests differ between jobs: {sorted(req)}")
        shell_only = rss < SHELL_RSS_MIB
        mem_x = mem / rss if isinstance(mem, int | float) and not shell_only else None
        time_x = runtime * 60 / wall if isinstance(runtime, int | float) and wall else None
        rows[rule] = {"recs": recs, "rss": rss, "wall": wall, "runtime": runtime}
        print(
            f"{rule:<17} {len(recs):>4} {rss:>8.1f} {wall:>8.2f} "
            f"{sum(r['s'] for _, r in recs):>8.2f} "
            f"{fmt(sum((r['cpu_time'] or 0) for _, r in recs), '.2f'):>8} "
            f"{int(js[0].threads):>7} {res.get('gpu', 0):>3} {fmt(mem, 'd'):>6} "
            f"{fmt(runtime, 'd'):>7} {fmt(mem_x, '.1f'):>6} {fmt(time_x, '.1f'):>6}"
        )
        if shell_only:
            notes.append(
                f"{rule}: max RSS {rss:.1f} MiB: ended before the first memory sample "
                "of its script (what was sampled is not the script; no mem margin)"
            )
    for n in notes:
        print("note:", n)

    shard_rules = [r for r, v in rows.items() if v["recs"][0][0].wildcards.get("shard")]
    if shard_rules:
        print()
        print("per shard job (s/s: wall seconds per second of video; output: MB of its files)")
        head = (
            f"{'rule':<15} {'shard':<12} {'videos':>6} {'video s':>8} {'frames':>7} "
            f"{'wall':>7} {'max RSS':>8} {'output':>8} {'s/s':>7}"
        )
        print(head)
        print("-" * len(head))
        worst = {}
        for rule in shard_rules:
            for j, r in sorted(rows[rule]["recs"], key=lambda jr: jr[0].wildcards["shard"]):
                shard = j.wildcards["shard"]
                info = shard_info(out_dir, shard)
                out_mb = sum(size_mb(Path(str(f))) for f in j.output)
                rate = r["s"] / info["video_s"] if info["video_s"] else float("nan")
                worst[rule] = max(worst.get(rule, 0.0), rate)
                print(
                    f"{rule:<15} {shard:<12} {info['videos']:>6} {info['video_s']:>8.1f} "
                    f"{fmt(info['frames'], ',.0f'):>7} {r['s']:>7.2f} {r['max_rss'] or 0:>8.1f} "
                    f"{out_mb:>8.1f} {rate:>7.4f}"
                )
                if rule == "extract_shard" and info["video_s"]:
                    print(f"{'':<15} output {out_mb / info['video_s']:.3f} MB per s of video")
        print()
        full = shard_size * video_s
        print(
            f"a full shard: shard_size {shard_size} x VIDEO_S {video_s:g} s = {full:,.0f} s "
            "of video; need = largest s/s x that"
        )
        head = f"{'rule':<15} {'s/s':>7} {'need s':>7} {'runtime s':>9} {'time x':>6}"
        print(head)
        print("-" * len(head))
        for rule in shard_rules:
            need = worst[rule] * full
            req_s = rows[rule]["runtime"] * 60
            print(f"{rule:<15} {worst[rule]:>7.4f} {need:>7.1f} {req_s:>9.0f} {req_s / need:>6.1f}")

    print()
    if "manifest" in rows:
        n = sum(1 for _ in open(out_dir / "manifest.tsv")) - 1
        w = rows["manifest"]["wall"]
        print(f"manifest: {n} files in {w:.2f} s = {1000 * w / n:.2f} ms a file")
    if "fit_identities" in rows:
        j, r = rows["fit_identities"]["recs"][0]
        n = len(j.input.shards) if hasattr(j.input, "shards") else len(j.input)
        print(
            f"fit_identities: {n} shards in {r['s']:.2f} s = {r['s'] / n:.2f} s a shard; "
            f"request {j.resources['mem_mb']} MB"
        )
    if "train" in rows:
        log_csv = out_dir / "train" / "log.csv"
        r = rows["train"]["recs"][0][1]
        if log_csv.is_file():
            with open(log_csv, newline="") as f:
                steps = max(int(row["step"]) for row in csv.DictReader(f))
            t = config["train"]
            print(
                f"train: preset {t['preset']}, device {t['device']}, {steps} steps in "
                f"{r['s']:.2f} s = {steps / r['s']:.2f} steps a second (start-up included)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
