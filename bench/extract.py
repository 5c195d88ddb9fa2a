"""Real-time factor per core of the extract stage, each decoder side by side.

Runs :func:`vox3d.media.extract.extract_shard` (decode + 16 kHz resample + frame selection at
5 fps + HDF5 write) on a shard of the shared real clips (``real/voxceleb`` and
``real/other``: H.264/AAC, VP9/Opus, MPEG-1/MP2, MJPEG/PCM), one decoder thread, for each
decoder, and prints

    RTF per core = seconds of media extracted / CPU seconds used (this process + children)

so that the ``ffmpeg`` decoder's subprocesses are charged too, and the wall-clock RTF.
Best of ``--repeats`` runs.

    .venv/bin/python bench/extract.py [--repeats 3] [--frame-rate 5]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vox3d.media.extract import extract_shard  # noqa: E402
from vox3d.media.extract_shard import ExtractShard  # noqa: E402
from vox3d.media.manifest import build_manifest, write_manifest  # noqa: E402
from vox3d.media.video import DECODERS  # noqa: E402
from vox3d.paths import DATA_ROOT  # noqa: E402


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frame-rate", type=float, default=5.0)
    a = ap.parse_args()
    real = DATA_ROOT / "real"
    clips = sorted(real.glob("voxceleb/*/*/*.mp4")) + sorted(
        p for p in real.glob("other/*/*/*") if p.is_file()
    )
    if not clips:
        print(f"no clips under {real}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="vox3d-bench-") as tmp:
        root = Path(tmp) / "videos"
        for p in clips:
            dst = root / p.relative_to(p.parents[2])
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dst)
        rows = build_manifest(root, progress=False)
        write_manifest(rows, Path(tmp) / "manifest.tsv", Path(tmp) / "shards", len(rows))
        shard = Path(tmp) / "shards" / "shard-00000.tsv"
        media_s = sum(float(r["duration_s"]) for r in rows)
        print(f"{len(rows)} clips, {media_s:.1f} s of media, frame_rate {a.frame_rate} fps")
        print(f"{'decoder':<8} {'cpu s':>7} {'wall s':>7} {'RTF/core':>9} {'RTF wall':>9}  frames")
        results = {}
        for dec in DECODERS:
            best = None
            for r in range(a.repeats):
                out = Path(tmp) / f"{dec}-{r}.h5"
                c0, w0 = _cpu(), time.perf_counter()
                extract_shard(shard, root, out, a.frame_rate, 1.0, dec, threads=1, progress=False)
                cpu, wall = _cpu() - c0, time.perf_counter() - w0
                if best is None or cpu < best[0]:
                    best = (cpu, wall)
            with ExtractShard(out) as s:
                n_frames = sum(v["frame_count"] for v in s.videos)
                assert len(s) == len(rows), "every clip should be extracted"
            results[dec] = best
            print(
                f"{dec:<8} {best[0]:7.2f} {best[1]:7.2f} {media_s / best[0]:9.1f} "
                f"{media_s / best[1]:9.1f}  {n_frames}"
            )
        fast = min(results, key=lambda d: results[d][0])
        other = [d for d in results if d != fast]
        if other:
            ratio = results[other[0]][0] / results[fast][0]
            print(f"fastest per core: {fast} ({ratio:.1f}x less CPU than {other[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
