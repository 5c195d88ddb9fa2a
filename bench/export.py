"""The export of a finished run (docs/export.md): audio sizes and exactness, export wall times.

    .venv/bin/python bench/export.py [--out-dir results] [--repeat 3] [--work DIR]

Reads the finished workflow outputs under ``--out-dir`` (the default corpus of ``make run``:
``results``) and never writes there; everything is written under ``--work`` (a temporary
folder by default, removed at the end).  Prints:

1. the corpus: exported utterances, identities, seconds of audio (``vox3d.report.export.collect``);
2. ``vox3d export --format hf --format lhotse OUT --dest W/wav`` (float32 WAV, the default)
   and ``vox3d export --format hf --audio flac OUT --dest W/flac`` (24-bit FLAC), each run
   ``--repeat`` times into an empty folder, timed as a subprocess (imports included): wall
   time, bytes of audio and of manifests; the files read back (soundfile) against the
   extract stage's audio (``ExtractShard.audio``): max abs difference, and for FLAC the
   largest below full scale (``|x| < 1``); the WAV export compared with ``OUT/voxceleb3d``;
3. two alternatives the export does not offer, measured the same way: 16-bit FLAC
   (soundfile ``PCM_16``, in memory), and lhotse reading the source mp4 itself
   (``lhotse.Recording.from_file(mp4).load_audio()``): extra samples per clip, max abs
   difference over the extracted samples, and whether the samples are 16-bit quantised;
4. the four export jobs of the workflow (``snakemake export`` on a copy of the run's
   outputs without its ``voxceleb3d/``, ``--cores 2``, the profile of ``make run``), run
   ``--repeat`` times: each job's seconds from its Snakemake benchmark file
   (``benchmarks/export/<rule>.tsv``), their sum, and the folder's size;
5. the projection to a corpus of VoxCeleb2's size (2,442 h) from the measured bytes per
   second of audio of each storage.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import header  # noqa: E402
from vox3d.io import read_tsv  # noqa: E402
from vox3d.media.extract_shard import ExtractShard  # noqa: E402
from vox3d.report.export import StageInputs, collect  # noqa: E402
from vox3d.report.export_layout import HF_FILES, LHOTSE_FILES, audio_relpath  # noqa: E402

BIN = Path(sys.executable).parent
#: VoxCeleb2's hours of audio (Chung, Nagrani, Zisserman, Interspeech 2018).
VOX2_HOURS = 2442
EXPORT_RULES = ("export_audio", "export_lhotse", "export_hf", "export_card")


def tree_bytes(root: Path) -> tuple[int, int]:
    """(files, bytes) of the plain files under `root`."""
    n = b = 0
    for p in root.rglob("*"):
        if p.is_file():
            n += 1
            b += p.stat().st_size
    return n, b


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(
            f"{' '.join(cmd)} failed (rc {r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-4000:]}"
        )
    return dt


def span(xs: list[float], fmt: str = "{:.2f}") -> str:
    lo, hi = min(xs), max(xs)
    return (
        fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"
    )


def read_back(
    root: Path, rows: list[dict], ref: dict[str, np.ndarray], fmt: str
) -> dict[str, float]:
    """The exported audio files (format `fmt`) read back against the extracted audio."""
    import soundfile as sf

    worst = below = 0.0
    n_full = 0
    for r in rows:
        path = root / audio_relpath(r["source_video"], fmt)
        a, sr = sf.read(path, dtype="float32", always_2d=False)
        x = ref[r["utterance_id"]]
        if sr != r["sample_rate"] or a.shape != x.shape:
            sys.exit(f"{path}: {a.shape} at {sr} Hz, extracted {x.shape}")
        d = np.abs(a.astype(np.float64) - x.astype(np.float64))
        worst = max(worst, float(d.max()))
        inside = np.abs(x) < 1.0
        n_full += int((~inside).sum())
        if inside.any():
            below = max(below, float(d[inside].max()))
    return {"max": worst, "below_full_scale": below, "full_scale_samples": n_full}


def cli_exports(out: Path, work: Path, repeat: int, rows, ref) -> dict[str, dict]:
    vox3d = str(BIN / "vox3d")
    runs = {
        "wav": [vox3d, "export", "--format", "hf", "--format", "lhotse", str(out)],
        "flac": [vox3d, "export", "--format", "hf", "--audio", "flac", str(out)],
    }
    res: dict[str, dict] = {}
    for name, cmd in runs.items():
        dest = work / name
        times = []
        for _ in range(repeat):
            shutil.rmtree(dest, ignore_errors=True)
            times.append(timed([*cmd, "--dest", str(dest)], ROOT))
        n, audio = tree_bytes(dest / "audio")
        manifests = {
            f: (dest / f).stat().st_size for f in (*LHOTSE_FILES, *HF_FILES) if (dest / f).is_file()
        }
        res[name] = {
            "cmd": " ".join(["vox3d", *cmd[1:-1], "OUT", "--dest", "DIR"]),
            "times": times,
            "files": n,
            "audio": audio,
            "manifests": manifests,
            "diff": read_back(dest, rows, ref, name),
            "dest": dest,
        }
    # the default export of the run itself: same bytes?
    same = None
    ref_dir = out / "voxceleb3d"
    if ref_dir.is_dir():
        same = True
        for r in rows:
            a, b = ref_dir / r["audio_path"], res["wav"]["dest"] / r["audio_path"]
            same &= a.is_file() and a.read_bytes() == b.read_bytes()
        for f in (*LHOTSE_FILES, *HF_FILES):
            a, b = ref_dir / f, res["wav"]["dest"] / f
            same &= a.is_file() and a.read_bytes() == b.read_bytes()
    res["wav"]["same_as_run"] = same
    return res


def flac16(rows, ref) -> dict[str, float]:
    import soundfile as sf

    size = 0
    worst = 0.0
    for r in rows:
        x = ref[r["utterance_id"]]
        buf = io.BytesIO()
        sf.write(buf, x, r["sample_rate"], format="FLAC", subtype="PCM_16")
        size += len(buf.getvalue())
        buf.seek(0)
        a, _ = sf.read(buf, dtype="float32")
        worst = max(worst, float(np.abs(a.astype(np.float64) - x).max()))
    return {"bytes": size, "max": worst}


def lhotse_from_mp4(videos: Path, rows, ref) -> dict:
    from lhotse import Recording

    extra: list[int] = []
    worst = quant = 0.0
    t0 = time.perf_counter()
    for r in rows:
        rec = Recording.from_file(videos / r["source_video"])
        a = rec.load_audio()[0].astype(np.float64)
        x = ref[r["utterance_id"]].astype(np.float64)
        extra.append(rec.num_samples - x.size)
        n = min(a.size, x.size)
        worst = max(worst, float(np.abs(a[:n] - x[:n]).max()))
        q = a * 32768.0
        quant = max(quant, float(np.abs(q - np.round(q)).max()))
        if rec.sampling_rate != r["sample_rate"] or rec.num_channels != 1:
            sys.exit(f"{r['source_video']}: {rec.sampling_rate} Hz, {rec.num_channels} channels")
    return {
        "extra": extra,
        "max": worst,
        "quant": quant,
        "seconds": time.perf_counter() - t0,
    }


def workflow_jobs(out: Path, work: Path, repeat: int) -> list[dict]:
    """The four export jobs of the workflow on a copy of `out` (without its export)."""
    copy = work / "out"
    skip = {"voxceleb3d", "benchmarks", "logs", ".snakemake"}
    copy.mkdir(parents=True)
    for p in sorted(out.iterdir()):
        if p.name in skip:
            continue
        if p.is_dir():
            shutil.copytree(p, copy / p.name, symlinks=True)  # copy2: mtimes kept
        else:
            shutil.copy2(p, copy / p.name)
    cmd = [
        str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(ROOT),
        "--profile", "profiles/default", "--cores", "2", "--config", f"out_dir={copy}",
        "--allowed-rules", *EXPORT_RULES, "export", "--", "export",
    ]  # fmt: skip
    runs = []
    for _ in range(repeat):
        shutil.rmtree(copy / "voxceleb3d", ignore_errors=True)
        shutil.rmtree(copy / "benchmarks" / "export", ignore_errors=True)
        wall = timed(cmd, ROOT)
        jobs = {}
        for rule in EXPORT_RULES:
            jobs[rule] = float(read_tsv(copy / "benchmarks" / "export" / f"{rule}.tsv")[0]["s"])
        runs.append(
            {
                "wall": wall,
                "jobs": jobs,
                "size": tree_bytes(copy / "voxceleb3d"),
                "load": os.getloadavg()[0],
            }
        )
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default="results", help="a finished run's out_dir (read only)")
    ap.add_argument("--videos-dir", default=None, help="its videos (default OUT/synthetic/videos)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each timed export")
    ap.add_argument("--work", default=None, help="work folder (default: temporary, removed)")
    a = ap.parse_args(argv)
    out = Path(a.out_dir).resolve()
    videos = Path(a.videos_dir).resolve() if a.videos_dir else out / "synthetic" / "videos"
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="vox3d-bench-export-"))
    work.mkdir(parents=True, exist_ok=True)
    print(header(), flush=True)
    try:
        run(out, videos, work, a.repeat)
        print(f"load at the end: {os.getloadavg()[0]:.2f}")
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def run(out: Path, videos: Path, work: Path, repeat: int) -> None:
    col = collect(StageInputs.from_out_dir(out))
    rows = col.utterances
    ref: dict[str, np.ndarray] = {}
    for r in rows:
        with ExtractShard(r["_shard"]) as sh:
            ref[r["utterance_id"]] = np.asarray(sh.video_audio(r["_index"], videos), np.float32)
    seconds = sum(r["num_samples"] for r in rows) / col.sample_rate
    print(f"out_dir {out} (read only); work folder {work}")
    print(
        f"corpus: {len(rows)} utterances exported of {len(col.identities)} identities, "
        f"{len(col.rejects)} not exported; {seconds:.1f} s of audio at {col.sample_rate} Hz "
        f"({len(col.identities)} identities, {len(rows)} clips, {seconds:.0f} s)"
    )

    print(f"\n== vox3d export (subprocess wall time, imports included; {repeat} runs each)")
    cli = cli_exports(out, work, repeat, rows, ref)
    for name, r in cli.items():
        mb = r["audio"] / 1e6
        man = sum(r["manifests"].values())
        d = r["diff"]
        print(f"{name}: {r['cmd']}")
        print(
            f"  wall time: {span(r['times'], '{:.1f}')} s (runs: {', '.join(f'{t:.2f}' for t in r['times'])})"
        )
        print(
            f"  audio: {r['files']} files, {r['audio']:,} bytes = {mb:.2f} MB "
            f"({r['audio'] / seconds:,.0f} bytes per second of audio; "
            f"{100 * r['audio'] / cli['wav']['audio']:.1f}% of wav)"
        )
        print(
            f"  manifests: {man:,} bytes = {man / 1e3:.1f} kB ({', '.join(f'{k} {v:,}' for k, v in r['manifests'].items())})"
        )
        print(
            f"  read back vs the extracted audio: max abs difference {d['max']:.3g}; below full "
            f"scale (|x| < 1) {d['below_full_scale']:.3g} ({d['below_full_scale'] / 2**-24:.3f} x 2^-24); "
            f"samples at full scale: {d['full_scale_samples']}"
        )
        if name == "wav":
            print(f"  {'identical' if d['max'] == 0 else 'NOT identical'} to the extracted samples")
            if r["same_as_run"] is not None:
                print(
                    f"  bytes of audio and manifests identical to OUT/voxceleb3d: {'yes' if r['same_as_run'] else 'NO'}"
                )

    print("\n== not offered")
    f16 = flac16(rows, ref)
    mb = f16["bytes"] / 1e6
    print(
        f"16-bit FLAC (soundfile PCM_16): {f16['bytes']:,} bytes = {mb:.2f} MB "
        f"({100 * f16['bytes'] / cli['wav']['audio']:.1f}% of wav); "
        f"max abs difference {f16['max']:.3g} ({f16['max'] / 2**-16:.3f} x 2^-16)"
    )
    lh = lhotse_from_mp4(videos, rows, ref)
    ex = sorted(set(lh["extra"]))
    print(
        f"lhotse on the source mp4 (Recording.from_file, load_audio; {len(rows)} clips, "
        f"{lh['seconds']:.1f} s): extra samples per clip {ex}; max abs difference over the "
        f"extracted samples {lh['max']:.3g} ({lh['max'] / 2**-16:.3f} x 2^-16); max distance "
        f"of sample x 32768 from an integer {lh['quant']:.3g} "
        f"({'16-bit quantised' if lh['quant'] < 1e-3 else 'not 16-bit quantised'})"
    )

    print(f"\n== the workflow's export jobs (snakemake export on a copy, --cores 2; {repeat} runs)")
    runs = workflow_jobs(out, work, repeat)
    print(
        f"{'run':>4} {'wall s':>7} "
        + " ".join(f"{r:>14}" for r in EXPORT_RULES)
        + f" {'jobs sum':>9} {'load after':>10}"
    )
    for i, r in enumerate(runs, 1):
        print(
            f"{i:>4} {r['wall']:>7.2f} " + " ".join(f"{r['jobs'][k]:>14.2f}" for k in EXPORT_RULES)
            + f" {sum(r['jobs'].values()):>9.2f} {r['load']:>10.2f}"
        )  # fmt: skip
    for k in EXPORT_RULES:
        xs = [r["jobs"][k] for r in runs]
        print(f"{k}: {span(xs)} s")
    tot = [sum(r["jobs"].values()) for r in runs]
    print(
        f"four jobs in all: {span(tot, '{:.1f}')} s; snakemake wall: {span([r['wall'] for r in runs], '{:.1f}')} s"
    )
    own = out / "benchmarks" / "export"
    if all((own / f"{k}.tsv").is_file() for k in EXPORT_RULES):
        xs = {}
        for k in EXPORT_RULES:
            xs[k] = float(read_tsv(own / f"{k}.tsv")[0]["s"])
        print(
            "for comparison, the run's own export jobs (OUT/benchmarks/export/, load unknown): "
            + ", ".join(f"{k} {v:.2f}" for k, v in xs.items())
            + f"; {sum(xs.values()):.2f} s in all"
        )
    n, b = runs[-1]["size"]
    print(f"export folder: {n} files, {b:,} bytes = {b / 1e6:.1f} MB")

    print(
        f"\n== projection to VoxCeleb2's size ({VOX2_HOURS:,} h = {VOX2_HOURS * 3600:,} s of audio)"
    )
    for name, nbytes in (
        ("wav", cli["wav"]["audio"]),
        ("flac", cli["flac"]["audio"]),
        ("flac16", f16["bytes"]),
    ):
        bps = nbytes / seconds
        print(f"{name}: {bps:,.0f} bytes/s -> {bps * VOX2_HOURS * 3600 / 1e9:.0f} GB")


if __name__ == "__main__":
    raise SystemExit(main())
