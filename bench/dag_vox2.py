"""Time building the WHOLE workflow's DAG for a VoxCeleb2-sized manifest (issue 9, item 3).

VoxCeleb2 (dev + test): 1,128,246 utterances (one mp4 each, one manifest row each) from
150,480 YouTube videos of 6,112 identities, about 2,442 hours.  A manifest of generated rows
(a file list, no video files; identities and YouTube ids spread as evenly as those counts
allow, every utterance 7.79 s = 2,442 h / 1,128,246) is written straight into a temporary
out_dir with its shards, so the `manifest` checkpoint is satisfied (its input folder is
made older than its outputs); then `snakemake -n` of the default target (`all`: extract,
fit, features, train, evaluate and every other registered target, export included once its
rules land) is timed, startup included.

    .venv/bin/python bench/dag_vox2.py [--shard-size N] [--profile profiles/slurm]
    .venv/bin/python bench/dag_vox2.py --utterances 20000   # a smaller run of the same shape
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.dag import probe_row  # noqa: E402
from vox3d.media.manifest import list_shards, write_manifest  # noqa: E402

VOX2_UTTERANCES = 1_128_246
VOX2_VIDEOS = 150_480
VOX2_IDENTITIES = 6_112
VOX2_HOURS = 2_442.0


def vox2_rows(
    n_utt: int = VOX2_UTTERANCES, n_vid: int = VOX2_VIDEOS, n_id: int = VOX2_IDENTITIES
) -> list[dict[str, object]]:
    """Manifest rows of a VoxCeleb2-shaped corpus: ``n_utt`` utterances spread over
    ``n_vid`` YouTube videos spread over ``n_id`` identities, sorted by path as the
    manifest is; utterance duration ``VOX2_HOURS * 3600 / VOX2_UTTERANCES`` seconds."""
    dur = round(VOX2_HOURS * 3600 / VOX2_UTTERANCES, 2)
    rows = []
    for v in range(n_vid):
        ident = f"id{(v * n_id) // n_vid:05d}"
        yt = f"yt{v:06d}"
        first, last = (v * n_utt) // n_vid, ((v + 1) * n_utt) // n_vid
        for u in range(last - first):
            utt = f"{u + 1:05d}"
            rows.append(probe_row(ident, yt, utt, 250_000, dur))
    rows.sort(key=lambda r: r["path"])
    return rows


def job_counts(text: str) -> dict[str, int]:
    """Rule -> job count from the summary table of ``snakemake -n --quiet rules``."""
    counts = {}
    for m in re.finditer(r"^([A-Za-z_]\w*)\s+(\d+)\s*$", text, re.M):
        if m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=VOX2_UTTERANCES)
    ap.add_argument("--videos", type=int, default=None, help="default: scaled like VoxCeleb2")
    ap.add_argument("--identities", type=int, default=None)
    ap.add_argument(
        "--shard-size", type=int, default=None, help="default: config.yaml's shard_size"
    )
    ap.add_argument("--profile", default=None, help="also pass --profile (e.g. profiles/slurm)")
    ap.add_argument("--target", default=None, help="default: the default target (all)")
    ap.add_argument(
        "--keep", default=None, help="folder to write the manifest into once and reuse after"
    )
    a = ap.parse_args()
    if a.shard_size is None:
        from vox3d.config import load_config

        a.shard_size = int(load_config()["shard_size"])
    scale = a.utterances / VOX2_UTTERANCES
    n_vid = a.videos or max(1, round(VOX2_VIDEOS * scale))
    n_id = a.identities or max(2, round(VOX2_IDENTITIES * scale))
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="vox3d-dag2-") as tmp:
        root = Path(a.keep) if a.keep else Path(tmp)
        tag = f"{a.utterances}-{n_vid}-{n_id}-{a.shard_size}"
        videos, out = root / "videos", root / f"out-{tag}"
        videos.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        rows = vox2_rows(a.utterances, n_vid, n_id)
        if (out / "manifest.tsv").is_file():  # --keep: written by an earlier run
            names = list_shards(out / "shards")
        else:
            names = write_manifest(rows, out / "manifest.tsv", out / "shards", a.shard_size)
        t_write = time.perf_counter() - t
        os.utime(videos, (946684800,) * 2)  # inputs (2000-01-01) older than the checkpoint outputs
        cmd = [str(Path(sys.executable).with_name("snakemake"))]
        cmd += [a.target] if a.target else []
        cmd += ["-n", "--nolock", "--quiet", "rules", "--cores", "2"]
        cmd += ["--profile", a.profile] if a.profile else []
        cmd += ["--config", f"videos_dir={videos}", f"out_dir={out}", f"shard_size={a.shard_size}"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        t = time.perf_counter()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t_dag = time.perf_counter() - t
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        if r.returncode != 0:
            print(r.stdout[-3000:], r.stderr[-3000:], file=sys.stderr)
            return 1
        counts = job_counts(r.stdout + r.stderr)
    n_ident = len({r["identity"] for r in rows})
    n_yt = len({r["youtube_id"] for r in rows})
    print(f"load average (1 min) at start  {load:.2f} on {os.cpu_count()} cores")
    print(f"utterances (manifest rows)     {len(rows):,}")
    print(f"YouTube videos / identities    {n_yt:,} / {n_ident:,}")
    print(f"shards                         {len(names):,} (shard_size {a.shard_size})")
    for rule in sorted(counts):
        print(f"  {rule:<28} {counts[rule]:>7,} jobs")
    print(f"jobs in the DAG                {sum(counts.values()):,}")
    print(f"write manifest+shards          {t_write:.1f} s")
    what = a.target or "all (default target)"
    print(f"snakemake -n {what}: {t_dag:.1f} s (DAG build incl. startup)")
    print(
        f"  of which CPU time (user+sys) {cpu:.1f} s; load average (1 min) after "
        f"{os.getloadavg()[0]:.2f}"
    )
    ok = all(counts.get(r) == len(names) for r in ("extract_shard", "fit_shard", "features_shard"))
    if "manifest" in counts:
        print("warning: the dry run would rerun the manifest checkpoint", file=sys.stderr)
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
