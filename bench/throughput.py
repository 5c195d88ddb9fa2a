"""Per-stage CPU throughput per core of vox3d's stage functions (issue 9, item 3).

Runs each stage once, on one thread, on the same corpus, through the functions the
workflow's scripts call, and prints a table:

* extract  (:func:`vox3d.media.extract.extract_shard`): seconds of video decoded per second;
* fit_read (:meth:`vox3d.media.extract_shard.ExtractShard.frames`): frames read back from the extract
  shard per second (the host side of a GPU fit);
* fit      (:func:`vox3d.fitting.fit.fit_shard`, device cpu, model loading timed apart): frames/s;
* features (:func:`vox3d.audio.features.features_shard`): seconds of audio per second;
* train    (``bench/train.py --device cpu --source host``, the paper preset: batch 64,
  crops 300-800 frames): iterations/s.

Corpus: the real VoxCeleb2 clips of the shared data (``$VOX3D_DATA/real/voxceleb``, 10
clips), repeated ``--repeat`` times (hard links under the temporary folder, new paths) so
that each stage runs long enough to time; ``--videos-dir`` takes any VoxCeleb-style folder
instead (e.g. ``results/synthetic/videos``).  Prints the 1-minute load average before and
after: numbers taken on a loaded machine are slower than the machine can do.

    .venv/bin/python bench/throughput.py [--repeat 3] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _link_corpus(src: Path, dst: Path, repeat: int) -> int:
    """Hard-link (or copy) every video of `src` into `dst` `repeat` times under distinct
    identities (``<id>r<k>``); returns the number of files."""
    import shutil

    n = 0
    for f in sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() == ".mp4"):
        rel = f.relative_to(src)
        for k in range(repeat):
            parts = list(rel.parts)
            parts[0] = f"{parts[0]}r{k}"
            out = dst.joinpath(*parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, out)
            except OSError:
                shutil.copy2(f, out)
            n += 1
    return n


def measure(videos_dir: Path, work: Path, train_iters: int) -> dict[str, dict]:
    """Run the four stages on `videos_dir` (one shard, one thread) under `work`; returns
    ``{stage: {"items": amount, "unit": ..., "seconds": wall, "per_s": items/seconds, ...}}``."""
    import torch

    torch.set_num_threads(1)
    from vox3d.audio.fbank import FeatureConfig
    from vox3d.audio.features import features_shard
    from vox3d.fitting.fit import FitConfig, Fitter, fit_shard
    from vox3d.media.extract import extract_shard
    from vox3d.media.extract_shard import ExtractShard
    from vox3d.media.manifest import build_manifest, write_manifest

    rows = build_manifest(videos_dir, progress=False)
    names = write_manifest(rows, work / "manifest.tsv", work / "shards", len(rows) or 1)
    shard = work / "shards" / f"{names[0]}.tsv"
    res: dict[str, dict] = {}

    ext = work / "extract.h5"
    t = time.perf_counter()
    st = extract_shard(shard, videos_dir, ext, frame_rate=5.0, threads=1, progress=False)
    dt = time.perf_counter() - t
    with ExtractShard(ext) as s:
        video_s = float(sum(float(v["duration_s"]) for v in s.videos))
        audio_s = float(sum(int(v["audio_length"]) for v in s.videos)) / s.sample_rate
        n_frames = int(sum(int(v["frame_count"]) for v in s.videos))
        size = {(int(v["height"]), int(v["width"])) for v in s.videos}
    res["extract"] = {"items": video_s, "unit": "s of video", "seconds": dt,
                      "per_s": video_s / dt, "videos": st["extracted"],
                      "frame_sizes": sorted(size)}  # fmt: skip

    t = time.perf_counter()
    with ExtractShard(ext) as s:
        for i in range(len(s.videos)):
            s.frames(i)
    dt = time.perf_counter() - t
    res["fit_read"] = {"items": n_frames, "unit": "frames read back (gzip)", "seconds": dt,
                       "per_s": n_frames / dt}  # fmt: skip

    cfg = FitConfig.from_config({"fit": {"device": "cpu", "batch_size": 32}}, threads=1)
    t = time.perf_counter()
    fitter = Fitter(cfg)
    load = time.perf_counter() - t
    t = time.perf_counter()
    fst = fit_shard(ext, work / "fit.h5", cfg, fitter=fitter, progress=False)
    dt = time.perf_counter() - t
    res["fit"] = {"items": fst["frames"], "unit": "frames", "seconds": dt,
                  "per_s": fst["frames"] / dt, "model_load_s": load,
                  "kept": fst["kept"]}  # fmt: skip
    assert fst["frames"] == n_frames

    fcfg = FeatureConfig.from_mapping({})
    t = time.perf_counter()
    features_shard(ext, work / "features.h5", fcfg, progress=False, workers=1)
    dt = time.perf_counter() - t
    res["features"] = {"items": audio_s, "unit": "s of audio", "seconds": dt,
                       "per_s": audio_s / dt}  # fmt: skip

    cmd = [sys.executable, str(REPO / "bench" / "train.py"), "--device", "cpu",
           "--source", "host", "--threads", "1", "--iters", str(train_iters),
           "--warmup", "2", "--identities", "50"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if " it/s " in ln)
    n_it, secs = int(line.split()[0]), float(line.split(" in ")[1].split(" s")[0])
    res["train"] = {"items": n_it, "unit": "iterations (paper preset)", "seconds": secs,
                    "per_s": n_it / secs}  # fmt: skip
    return res


def table(res: dict[str, dict]) -> str:
    """The measurements as a fixed-width text table."""
    lines = [f"{'stage':<9} {'amount':>10} {'unit':<26} {'wall s':>8} {'per s per core':>15}"]
    for k, r in res.items():
        lines.append(
            f"{k:<9} {r['items']:>10,.1f} {r['unit']:<26} {r['seconds']:>8.2f} {r['per_s']:>15,.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos-dir", default=None, help="default: $VOX3D_DATA/real/voxceleb")
    ap.add_argument("--repeat", type=int, default=3, help="copies of each clip")
    ap.add_argument("--train-iters", type=int, default=10)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument(
        "--update",
        default=None,
        help="update the CPU entries of this throughput file (vox3d/data/throughput.json)",
    )
    a = ap.parse_args(argv)
    from vox3d.paths import DATA_ROOT

    src = Path(a.videos_dir) if a.videos_dir else DATA_ROOT / "real" / "voxceleb"
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="vox3d-tp-") as tmp:
        vids = Path(tmp) / "videos"
        n = _link_corpus(src, vids, a.repeat)
        res = measure(vids, Path(tmp), a.train_iters)
    load1 = os.getloadavg()[0]
    import torch

    print(f"corpus: {src} ({n} files = {n // max(1, a.repeat)} clips x {a.repeat})")
    print(f"frame sizes: {res['extract']['frame_sizes']}; fit model load "
          f"{res['fit']['model_load_s']:.2f} s (not in the fit time)")  # fmt: skip
    print(f"one thread (torch.set_num_threads(1)); torch {torch.__version__}; "
          f"{os.cpu_count()} cores; load average (1 min) {load0:.2f} before, {load1:.2f} after")  # fmt: skip
    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(table(res))
    if a.json:
        Path(a.json).write_text(json.dumps({"load": [load0, load1], "stages": res}, indent=1))
    if a.update:
        update_throughput_file(Path(a.update), res, (load0, load1), n, a.repeat)
    return 0


#: throughput-file key, stage of :func:`measure`, unit in the file
CPU_KEYS = {
    "extract_cpu": ("extract", "s of video/s/core"),
    "features_cpu": ("features", "s of audio/s/core"),
    "fit_read_cpu": ("fit_read", "frames/s/core"),
    "fit_cpu": ("fit", "frames/s/core"),
    "train_cpu": ("train", "it/s/core"),
}


def update_throughput_file(
    path: Path, res: dict[str, dict], load: tuple[float, float], n_files: int, repeat: int
) -> None:
    """Write the CPU measurements of `res` into the throughput file at `path` (the GPU
    entries and everything else are kept), each with its source, date and load."""
    data = json.loads(path.read_text(encoding="utf-8"))
    for key, (stage, unit) in CPU_KEYS.items():
        data["measurements"][key] = {
            "value": round(float(res[stage]["per_s"]), 3),
            "unit": unit,
            "source": (
                f"bench/throughput.py (bench/results/cpu_throughput.txt): {stage}, one thread, "
                + (
                    "bench/train.py paper preset on random features (--source host)"
                    if stage == "train"
                    else f"{n_files} real VoxCeleb2 clips ({repeat} copies of 10)"
                )
            ),
            "date": time.strftime("%Y-%m-%d"),
            "device": f"{os.cpu_count()}-core development VM, load {load[0]:.2f}/{load[1]:.2f}",
        }
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
