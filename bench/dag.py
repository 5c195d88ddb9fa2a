"""Time building the DAG of `extract` for a 100,000-video manifest (issue: "in seconds").

A manifest of generated rows (a file list, no video files) is written straight into a
temporary out_dir together with its shards, so the `manifest` checkpoint is satisfied;
then `snakemake -n extract` is timed, which reads the shard list and plans one
`extract_shard` job per shard.

    .venv/bin/python bench/dag.py [--videos 100000] [--shard-size 64]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vox3d.media.manifest import MANIFEST_COLUMNS, write_manifest  # noqa: E402


def probe_row(
    ident: str, yt: str, utt: str, size_bytes: int, duration_s: float
) -> dict[str, object]:
    """One manifest row of a generated (not probed) VoxCeleb-format clip: 224x224 25 fps
    H.264 with 16 kHz mono AAC, as VoxCeleb2's mp4s are."""
    return {
        "path": f"{ident}/{yt}/{utt}.mp4",
        "identity": ident,
        "youtube_id": yt,
        "utterance": utt,
        "size_bytes": size_bytes,
        "duration_s": duration_s,
        "has_video": 1,
        "has_audio": 1,
        "fps": 25.0,
        "width": 224,
        "height": 224,
        "vcodec": "h264",
        "acodec": "aac",
        "sample_rate": 16000,
        "channels": 1,
    }


def fake_rows(n: int) -> list[dict[str, object]]:
    rows = []
    for i in range(n):
        ident, yt, utt = f"id{i // 100:05d}", f"yt{(i // 10) % 10:04d}", f"{i % 10:05d}"
        rows.append(probe_row(ident, yt, utt, 300000, 8.0))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=100_000)
    ap.add_argument("--shard-size", type=int, default=64)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vox3d-dag-") as tmp:
        videos, out = Path(tmp) / "videos", Path(tmp) / "out"
        videos.mkdir()
        t = time.perf_counter()
        rows = fake_rows(a.videos)
        names = write_manifest(rows, out / "manifest.tsv", out / "shards", a.shard_size)
        t_write = time.perf_counter() - t
        assert len(MANIFEST_COLUMNS) and names
        os.utime(videos, (time.time() - 3600,) * 2)  # inputs older than the checkpoint outputs
        cmd = [
            str(Path(sys.executable).with_name("snakemake")),
            "extract",
            "-n",
            "--nolock",
            "--quiet",
            "rules",
            "--cores",
            "2",
            "--config",
            f"videos_dir={videos}",
            f"out_dir={out}",
            f"shard_size={a.shard_size}",
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        t_dag = time.perf_counter() - t
        if r.returncode != 0:
            print(r.stdout[-2000:], r.stderr[-2000:], file=sys.stderr)
            return 1
        text = r.stdout + r.stderr
        m = re.search(r"extract_shard\s+(\d+)", text)
        n_jobs = int(m.group(1)) if m else -1
        if re.search(r"^manifest\s+\d+", text, re.M):
            print("warning: the dry run would rerun the manifest checkpoint", file=sys.stderr)
    print(f"videos                 {a.videos}")
    print(f"shards                 {len(names)} (shard_size {a.shard_size})")
    print(f"extract_shard jobs     {n_jobs}")
    print(f"write manifest+shards  {t_write:.2f} s")
    print(f"snakemake -n extract   {t_dag:.2f} s (DAG build incl. startup)")
    return 0 if n_jobs == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
