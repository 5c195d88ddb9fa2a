"""End to end on one node: mp4 files -> manifest -> extract (CPU processes) -> fit (GPU),
and (``--stream``) the stream stage: mp4 -> decode once -> fit + features, no frames on disk.

    python bench/node.py --device cuda --copies 200 --workers 15     # the H100 node
    python bench/node.py --copies 2 --workers 2                      # here (CPU)

Builds a VoxCeleb-layout folder of ``--copies`` x the clips of ``--clips`` (default the
10 real VoxCeleb2 clips; copied, each copy its own identity), then runs the
library's stage functions the way the workflow's jobs run them:

1. ``manifest``: probe every video (:func:`vox3d.media.manifest.build_manifest`, threads),
   write the shards (``--shard-size`` videos each);
2. ``extract`` in ``--workers`` processes (:func:`vox3d.media.extract.extract_shard`: decode,
   resample to 16 kHz, sample frames at 5 fps, write HDF5), and, *while it runs*, ``fit``
   of every finished shard on ``--device`` in this process (:func:`vox3d.fitting.fit.fit_shard`,
   one :class:`~vox3d.fitting.fit.Fitter`, ``--fit-threads`` threads inflating frames), as
   Snakemake overlaps CPU and GPU jobs on a node: the end-to-end figure;
3. ``fit`` again over all shards with the CPUs free: the fit stage's own rate and where
   its time goes (:class:`vox3d.fitting.fit.StageClock`: read wait, detect, crop, regress, blur,
   host, write).

4. ``--stream``: :func:`vox3d.fitting.stream.stream_shard` on every shard as rule
   ``stream_shard`` runs it (``--stream-jobs`` at once, ``--stream-threads`` decode threads
   each, ``--hwaccel cuda`` for NVDEC; the features computed in the job, no audio kept):
   the end-to-end rate from mp4 to fit shards and features, the intermediates' bytes
   against the input video's, VoxCeleb2's hours on 1, 4 and 64 nodes, and whether its fit
   shards are byte-identical to the two-stage path's.

Prints seconds of video per second of wall time for each stage and for the whole, frames
per second, and the hours the measured rate gives for VoxCeleb2 (2,442 hours of video).
Needs PyAV, h5py, torch, numpy, tqdm; assets from ``VOX3D_DATA`` / ``--data``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VOX2_HOURS = 2442.0  # hours of video in VoxCeleb2 (dev + test)


def _args(argv):
    from vox3d.config import default

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", help="VoxCeleb-layout folder (default: the shared real clips)")
    ap.add_argument("--copies", type=int, default=2, help="copies of each clip")
    ap.add_argument("--workers", type=int, default=2, help="extract processes")
    ap.add_argument("--fit-threads", type=int, default=4, help="frame-inflating threads of fit")
    ap.add_argument("--shard-size", type=int, default=64, help="videos per shard")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--precision", default="", help="fit precision (default: bf16 GPU, fp32 CPU)")
    ap.add_argument("--batch", type=int, default=0, help="fit batch (0: 1024 GPU, 32 CPU)")
    ap.add_argument("--work", help="work folder (default: a temporary one, removed)")
    ap.add_argument("--data", help="folder laid out like ../shared/data (sets VOX3D_DATA)")
    ap.add_argument(
        "--multi-gpu", type=int, default=0,
        help="also fit the first --multi-shards shards with vox3d.fitting.multigpu on this many GPUs "
        "and compare the files byte for byte with the one-GPU ones",
    )  # fmt: skip
    ap.add_argument("--multi-shards", type=int, default=2)
    ap.add_argument(
        "--stream", action="store_true",
        help="also run the stream stage (vox3d.fitting.stream: decode once, fit as it decodes, no "
        "frames on disk) with features, and compare its fit shards with the two-stage ones",
    )  # fmt: skip
    ap.add_argument("--stream-jobs", type=int, default=1, help="stream jobs run at once")
    ap.add_argument("--stream-threads", type=int, default=15, help="decode threads a job")
    ap.add_argument("--hwaccel", default="", help="stream decode on this FFmpeg device (cuda)")
    ap.add_argument(
        "--stream-processes", action="store_true",
        help="decode in processes, not threads (extract.decode_workers: processes)",
    )  # fmt: skip
    ap.add_argument(
        "--pickle-frames", action="store_true",
        help="decode processes pickle their frames to the job (vox3d.fitting.stream.SPILL_FRAMES off)",
    )  # fmt: skip
    ap.add_argument("--skip-two-stage", action="store_true", help="stream stage only")
    ap.add_argument(
        "--keep-crops", action="store_true",
        help="the fit keeps each kept frame's 120x120 crop (JPEG) in its shard (fit.keep_crops: "
        "true, as train.mode unsupervised / both does); the crops' bytes are printed apart",
    )  # fmt: skip
    ap.add_argument(
        "--crops-per-video", type=_cap, default=default("fit.crops_per_video"),
        help="with --keep-crops: at most this many crops a video (fit.crops_per_video; null: "
        "every kept frame's; default: config.yaml's)",
    )  # fmt: skip
    return ap.parse_args(argv)


def _cap(text: str) -> int | None:
    """``--crops-per-video``: an integer >= 1, or null / none (every kept frame's crop)."""
    if text.strip().lower() in ("null", "none"):
        return None
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"--crops-per-video must be >= 1 or null, got {text}")
    return n


def make_corpus(clips: Path, dest: Path, copies: int) -> list[str]:
    """``copies`` copies of every ``<id>/<yt>/<utt>.mp4`` under ``clips``, each its own
    file (the manifest skips links and hard links to one file as the same video)."""
    import shutil

    src = sorted(p.relative_to(clips) for p in clips.glob("*/*/*.mp4"))
    if not src:
        raise SystemExit(f"{clips}: no <id>/<youtube-id>/<utt>.mp4 videos")
    out = []
    for k in range(copies):
        for rel in src:
            ident, yt, utt = rel.parts
            d = dest / f"{ident}x{k:04d}" / yt
            d.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(clips / rel, d / utt)
            out.append(str(Path(f"{ident}x{k:04d}") / yt / utt))
    return out


def compare_fit_files(a: Path, b: Path) -> str:
    """Which datasets of two fit shard files differ, and by how much (float ones)."""
    import h5py
    import numpy as np

    diffs = []
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names: list[str] = []
        fa.visit(lambda k: names.append(k) if isinstance(fa[k], h5py.Dataset) else None)
        for k in sorted(names):
            x, y = fa[k][()], fb[k][()]
            if np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                continue
            if x.dtype.kind == "f" and x.shape == y.shape:
                diffs.append(f"{k} max abs {np.nanmax(np.abs(x - y)):.2e}")
            else:
                diffs.append(f"{k} differs")
    return "all datasets equal" if not diffs else "; ".join(diffs)


def _extract_job(shard_tsv: str, videos: str, out_h5: str) -> tuple[str, float, dict]:
    from vox3d.media.extract import extract_shard

    t0 = time.perf_counter()
    res = extract_shard(shard_tsv, videos, out_h5, frame_rate=5.0, progress=False)
    return out_h5, time.perf_counter() - t0, res


_FITTER = None  # one Fitter per stream-job process


def _stream_job(
    n: str, work: str, videos: str, cfg, threads: int, hw: str, procs: bool, spill: bool
) -> dict:
    """One stream_shard job as the workflow runs it (features in the job, no audio kept)."""
    global _FITTER
    from vox3d.fitting.fit import Fitter

    if _FITTER is None:
        _FITTER = Fitter(cfg, tensor_path=cfg.device == "cuda")
    return _stream_one(n, Path(work), Path(videos), cfg, threads, hw, _FITTER, None, procs, spill)


def _stream_one(n, work: Path, videos: Path, cfg, threads, hw, fitter, clock, procs, spill) -> dict:
    from vox3d.fitting import stream
    from vox3d.fitting.stream import stream_shard

    stream.SPILL_FRAMES = spill  # decode processes: frames through files, or pickled
    sd = work / "stream"
    return stream_shard(
        work / "shards" / f"{n}.tsv", videos, sd / "extract" / f"{n}.h5", sd / "fit" / f"{n}.h5",
        cfg, workers=threads, progress=False, clock=clock, fitter=fitter, hwaccel=hw or None,
        features_h5=sd / "features" / f"{n}.h5", keep_audio=False, processes=procs,
    )  # fmt: skip


def crop_storage(fit_shards: list[Path]) -> tuple[int, int]:
    """``(crops, JPEG bytes)`` the fit shards keep (0, 0 without ``fit.keep_crops``)."""
    from vox3d.fitting.fit_shard import FitShard

    sizes = [FitShard.crop_storage(p) for p in fit_shards]
    return sum(n for n, _ in sizes), sum(b for _, b in sizes)


def run_stream(a, work: Path, videos: Path, names: list[str], video_s: float, input_bytes: int,
               cfg, fitter) -> None:  # fmt: skip
    """The stream stage on every shard as rule ``stream_shard`` runs it (``--stream-jobs``
    jobs at once, ``--stream-threads`` decode threads each; the features in the job, no
    audio kept): mp4 -> extract index + fit + features."""
    import hashlib
    import shutil

    from vox3d.fitting.fit import StageClock

    sd = work / "stream"
    shutil.rmtree(sd, ignore_errors=True)
    for d in ("extract", "fit", "features"):
        (sd / d).mkdir(parents=True, exist_ok=True)
    clock = StageClock()
    frames = 0
    job_pool = None
    if a.stream_jobs > 1:
        job_pool = ProcessPoolExecutor(a.stream_jobs, mp_context=get_context("spawn"))
        list(job_pool.map(abs, range(a.stream_jobs)))  # processes started before the clock
    t0 = time.perf_counter()
    if job_pool is None:
        for n in names:
            r = _stream_one(
                n, work, videos, cfg, a.stream_threads, a.hwaccel, fitter, clock,
                a.stream_processes, not a.pickle_frames,
            )  # fmt: skip
            frames += r["fit"]["frames"]
    else:
        futs = [
            job_pool.submit(
                _stream_job,
                n,
                str(work),
                str(videos),
                cfg,
                a.stream_threads,
                a.hwaccel,
                a.stream_processes,
                not a.pickle_frames,
            )  # fmt: skip
            for n in names
        ]
        frames = sum(f.result()["fit"]["frames"] for f in futs)
        job_pool.shutdown()
    t_e2e = time.perf_counter() - t0
    size = {
        d: sum(p.stat().st_size for p in (sd / d).glob("*.h5"))
        for d in ("extract", "fit", "features")
    }
    total = sum(size.values())
    rate = video_s / t_e2e
    n_crops, crop_bytes = crop_storage(sorted((sd / "fit").glob("*.h5")))
    from vox3d.media import video

    hw_note = ""
    if a.hwaccel:
        hw_note = f", hwaccel {a.hwaccel}"
        if job_pool is None:
            hw_note += (
                f"; hardware decode fell back to the CPU {sum(video.HW_FAILURES.values())} times"
            )
    kind = "processes" if a.stream_processes else "threads"
    if a.stream_processes:
        kind += ", frames pickled" if a.pickle_frames else ", frames through files"
    print(f"\nSTREAM ({a.stream_jobs} job(s) x {a.stream_threads} decode {kind}{hw_note})")
    print(
        f"END TO END mp4 -> fit + features     : {t_e2e:7.1f} s  {rate:8,.0f} s video/s  "
        f"{frames / t_e2e:9,.0f} frames/s"
    )
    print(
        f"intermediates on disk: extract {size['extract'] / 1e6:,.1f} MB + fit "
        f"{size['fit'] / 1e6:,.1f} MB + features {size['features'] / 1e6:,.1f} MB = "
        f"{total / 1e6:,.1f} MB for {input_bytes / 1e6:,.1f} MB of mp4: "
        f"{total / input_bytes:.3f}x the input"
    )
    if n_crops:
        cap = cfg.crops_per_video
        cap_note = "every kept frame's" if cap is None else f"at most {cap} a video"
        print(
            f"  of which the kept crops (JPEG, fit.keep_crops, {cap_note}): {n_crops:,} crops, "
            f"{crop_bytes / 1e6:,.1f} MB = {crop_bytes / input_bytes:.3f}x the input, "
            f"{crop_bytes / n_crops / 1e3:.1f} KB a crop; without them {(total - crop_bytes) / input_bytes:.3f}x"
        )
    if clock.seconds:
        print("stream (one job): where the fit's time goes (s)")
        for k, v in sorted(clock.seconds.items(), key=lambda kv: -kv[1]):
            print(f"  {k:12s} {v:8.2f}")
    print(
        f"VoxCeleb2 ({VOX2_HOURS:,.0f} h of video) at this rate, shards independent, linear in nodes:"
    )
    for nodes in (1, 4, 64):
        print(f"  {nodes:3d} node(s): {VOX2_HOURS / rate / nodes:7.2f} h")
    two = work / "fit"
    if any(two.glob("*.h5")):

        def digest(p: Path) -> str:
            return hashlib.sha256(p.read_bytes()).hexdigest()

        same = [n for n in names if digest(sd / "fit" / f"{n}.h5") == digest(two / f"{n}.h5")]
        print(f"stream fit shards byte-identical to the two-stage ones: {len(same)}/{len(names)}")
        for n in [n for n in names if n not in same][:3]:
            print(f"  {n}: {compare_fit_files(two / f'{n}.h5', sd / 'fit' / f'{n}.h5')}")


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    if a.data:
        os.environ["VOX3D_DATA"] = a.data
    import torch

    from vox3d import paths
    from vox3d.fitting.fit import FitConfig, Fitter, StageClock, fit_shard
    from vox3d.media.extract_shard import ExtractShard
    from vox3d.media.manifest import build_manifest, write_manifest

    gpu = a.device == "cuda"
    prec = a.precision or ("bf16" if gpu else "fp32")
    bsz = a.batch or (1024 if gpu else 32)
    clips = Path(a.clips) if a.clips else paths.DATA_ROOT / "real" / "voxceleb"
    tmp = None if a.work else tempfile.TemporaryDirectory(prefix="vox3d-node-")
    work = Path(a.work or tmp.name)
    name = torch.cuda.get_device_name(0) if gpu else "CPU"
    print(
        f"node: {os.cpu_count()} CPUs, {name}; torch {torch.__version__}; extract workers "
        f"{a.workers}, fit {a.device} {prec} batch {bsz}, {a.fit_threads} inflate threads"
    )

    videos = work / "videos"
    rels = make_corpus(clips, videos, a.copies)
    t0 = time.perf_counter()
    rows = build_manifest(videos, threads=a.workers, progress=False)
    names = write_manifest(rows, work / "manifest.tsv", work / "shards", a.shard_size)
    t_manifest = time.perf_counter() - t0
    video_s = sum(float(r["duration_s"] or 0) for r in rows)
    print(
        f"corpus: {len(rels)} videos ({a.copies} x {len(rels) // a.copies} clips), "
        f"{video_s:,.0f} s of video, {len(names)} shards of {a.shard_size}"
    )

    cfg = FitConfig.from_config(
        {"face_model": {"name": "bfm"},
         "fit": {"device": a.device, "batch_size": bsz, "precision": prec,
                 "keep_crops": a.keep_crops, "crops_per_video": a.crops_per_video}},
        threads=a.fit_threads,
    )  # fmt: skip
    fitter = Fitter(cfg, tensor_path=True)
    input_bytes = sum((videos / r).stat().st_size for r in rels)
    if a.skip_two_stage:
        run_stream(a, work, videos, names, video_s, input_bytes, cfg, fitter)
        if tmp is not None:
            tmp.cleanup()
        return 0
    (work / "extract").mkdir()
    (work / "fit").mkdir()

    # --- extract in processes, fit each finished shard meanwhile (the node's schedule)
    clock_overlap = StageClock()
    fit_busy = extract_cpu = 0.0
    frames = 0
    t0 = time.perf_counter()
    ctx = get_context("spawn")  # no CUDA state in the workers
    with ProcessPoolExecutor(a.workers, mp_context=ctx) as pool:
        futs = [
            pool.submit(
                _extract_job,
                str(work / "shards" / f"{n}.tsv"),
                str(videos),
                str(work / "extract" / f"{n}.h5"),
            )
            for n in names
        ]
        done_at: list[float] = []
        for f in futs:
            f.add_done_callback(lambda _f: done_at.append(time.perf_counter()))
        for fut in as_completed(futs):
            out_h5, sec, _ = fut.result()
            extract_cpu += sec
            t1 = time.perf_counter()
            st = fit_shard(
                out_h5, work / "fit" / Path(out_h5).name, cfg, fitter=fitter, progress=False,
                clock=clock_overlap,
            )  # fmt: skip
            fit_busy += time.perf_counter() - t1
            frames += st["frames"]
        t_extract_done = max(done_at) - t0
    t_e2e = time.perf_counter() - t0

    # --- fit alone, CPUs free
    clock = StageClock()
    t0 = time.perf_counter()
    for n in names:
        fit_shard(
            work / "extract" / f"{n}.h5", work / "fit" / f"{n}.h5", cfg, fitter=fitter,
            progress=False, clock=clock,
        )  # fmt: skip
    if gpu:
        torch.cuda.synchronize()
    t_fit = time.perf_counter() - t0
    with ExtractShard(work / "extract" / f"{names[0]}.h5") as s:
        h, w = s.videos[0]["height"], s.videos[0]["width"]
    size = sum(p.stat().st_size for p in (work / "extract").glob("*.h5"))

    def rate(sec: float) -> str:
        return f"{video_s / sec:8,.0f} s video/s  {frames / sec:9,.0f} frames/s"

    print(f"\nframes: {frames:,} at 5 fps, {w}x{h}; extract HDF5 {size / 1e9:.2f} GB")
    print(f"manifest (probe {len(rows)} videos, {a.workers} threads): {t_manifest:7.1f} s")
    print(
        f"extract ({a.workers} processes), wall       : {t_extract_done:7.1f} s  "
        f"{rate(t_extract_done)}  ({video_s / extract_cpu:,.0f} s video/s per process)"
    )
    print(f"fit during extract (busy)            : {fit_busy:7.1f} s  {rate(fit_busy)}")
    print(f"END TO END mp4 -> fit shards          : {t_e2e:7.1f} s  {rate(t_e2e)}")
    print(f"fit alone ({a.device} {prec})              : {t_fit:7.1f} s  {rate(t_fit)}")
    print("\nfit alone: where the time goes (s; device steps by CUDA events on GPU)")
    for k, v in sorted(clock.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {k:12s} {v:8.2f}  {100 * v / t_fit:5.1f}% of {t_fit:.1f} s")
    print("fit during extract: where the time goes (s)")
    for k, v in sorted(clock_overlap.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {k:12s} {v:8.2f}")
    hours = VOX2_HOURS * 3600 / (video_s / t_e2e) / 3600
    print(
        f"\nVoxCeleb2 ({VOX2_HOURS:,.0f} h of video) at the end-to-end rate: {hours:,.1f} h on "
        f"this node (extract -> fit only; features, train, evaluate not included)"
    )
    if a.multi_gpu > 1:
        import hashlib

        from vox3d.fitting.multigpu import describe_parts, fit_shard_multi

        def digest(p: Path) -> str:
            return hashlib.sha256(p.read_bytes()).hexdigest()

        devs = [f"cuda:{i}" if gpu else "cpu" for i in range(a.multi_gpu)]
        same = 0
        todo = names[: a.multi_shards]
        t0 = time.perf_counter()
        for n in todo:
            src = work / "extract" / f"{n}.h5"
            print(describe_parts(src, cfg, devs))
            fit_shard_multi(src, work / "fit" / f"{n}.multi.h5", cfg, devs)
            one, multi = work / "fit" / f"{n}.h5", work / "fit" / f"{n}.multi.h5"
            same += digest(multi) == digest(one)
            print(f"  {n}: {compare_fit_files(one, multi)}")
        t_multi = time.perf_counter() - t0
        print(
            f"\nmulti-GPU fit ({a.multi_gpu} processes, {devs}): {len(todo)} shards in "
            f"{t_multi:.1f} s (process start-up and model loading included); byte-identical "
            f"to the one-GPU files: {same}/{len(todo)} (a cut between two videos inside a "
            "one-GPU batch changes batch composition: parameters then agree to rounding)"
        )
    if a.stream:
        run_stream(a, work, videos, names, video_s, input_bytes, cfg, fitter)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
