"""Video decoding for the stream stage: CPU (PyAV) against NVDEC, threads against processes.

    python bench/decode.py --copies 20 --threads 1,2                    # here (CPU)
    python bench/decode.py --copies 60 --threads 1,4,8,15 --hwaccel cuda --processes 15

Decodes ``--copies`` x the clips of ``--clips`` (default the 10 real VoxCeleb2 clips) with
:func:`vox3d.media.video.decode` exactly as the extract and stream stages do (16 kHz mono audio,
frames sampled at 5 fps, RGB) and prints seconds of video decoded per second of wall time:

* ``cpu, T threads``: one process, T Python threads each decoding whole videos (the stream
  stage's decode workers, :class:`vox3d.fitting.stream.StreamSource`); PyAV releases the GIL while
  it decodes, so this shows how far threads scale;
* ``cpu, P processes``: P processes of one thread (the two-stage path's extract jobs, and
  the stream stage with ``extract.decode_workers: processes``); ``per-frame ctx``: the same
  with PyAV's own rgb24 conversion (below), as the decode did before;
* ``<hwaccel>, T threads``: the same through FFmpeg's hardware decoder (``--hwaccel cuda``:
  NVDEC, PyAV's ``HWAccel``), with the CPU as the fallback; the printout counts fallbacks.

* ``rgb24 conversion``: PyAV's ``VideoFrame.to_ndarray(format="rgb24")`` (a new libswscale
  context per frame, automatic threads) against one context per video on the calling thread
  (what :func:`vox3d.media.video.decode` does), ms per sampled frame of the first clip, and
  whether their bytes agree.

Parity (hardware against CPU, every clip once): frame times equal, audio equal, frames'
largest and mean absolute difference in grey levels.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import header  # noqa: E402
from vox3d.media import video  # noqa: E402

_CONVERTER = video._rgb24_converter


def _pyav_per_frame(hwaccel):
    return lambda fr: fr.to_ndarray(format="rgb24")


def _decode(args: tuple) -> tuple[float, int]:
    path, hw, *per_frame = args
    video._rgb24_converter = _pyav_per_frame if per_frame and per_frame[0] else _CONVERTER
    d = video.decode(path, 5.0, hwaccel=hw)
    return float(d.audio.size) / video.SAMPLE_RATE, len(d.frame_times)


def _rate(paths: list[str], hw: str | None, pool, per_frame=False) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    res = list(pool.map(_decode, [(p, hw, per_frame) for p in paths]))
    sec = time.perf_counter() - t0
    return sum(r[0] for r in res) / sec, sec, sum(r[1] for r in res)


def _conversion(path: str, reps: int = 5) -> tuple[float, float, bool]:
    """ms per frame of PyAV's per-frame rgb24 conversion and of the decode's, and same bytes."""
    import av
    from av.video.reformatter import VideoReformatter

    with av.open(path) as c:
        frames = list(c.decode(video=0))[::5]
    one = VideoReformatter()
    ways = {
        "pyav": lambda f: f.to_ndarray(format="rgb24"),
        "one": lambda f: one.reformat(f, format="rgb24", threads=1).to_ndarray(),
    }
    best, out = {}, {}
    for name, conv in ways.items():
        best[name] = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            out[name] = [conv(f) for f in frames]
            best[name] = min(best[name], (time.perf_counter() - t0) / len(frames) * 1e3)
    same = all(np.array_equal(a, b) for a, b in zip(out["pyav"], out["one"], strict=True))
    return best["pyav"], best["one"], same


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", help="VoxCeleb-layout folder (default: the shared real clips)")
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--threads", default="1,2", help="comma list of thread counts")
    ap.add_argument("--processes", type=int, default=0, help="also this many processes")
    ap.add_argument("--hwaccel", default="", help="FFmpeg hardware device type, e.g. cuda")
    a = ap.parse_args(argv)
    from vox3d import paths as vpaths

    clips = Path(a.clips) if a.clips else vpaths.DATA_ROOT / "real" / "voxceleb"
    src = sorted(str(p) for p in clips.glob("*/*/*.mp4"))
    work = src * a.copies
    print(header())
    print(f"{len(src)} clips x {a.copies} copies = {len(work)} decodes; {os.cpu_count()} CPUs")
    _decode((src[0], None))  # warm-up (imports, libraries)
    rows = []
    modes = [("cpu", None)] + ([(a.hwaccel, a.hwaccel)] if a.hwaccel else [])
    for name, hw in modes:
        for t in (int(x) for x in a.threads.split(",")):
            before = sum(video.HW_FAILURES.values())
            with ThreadPoolExecutor(t) as pool:
                r, sec, n = _rate(work, hw, pool)
            fb = sum(video.HW_FAILURES.values()) - before
            rows.append((f"{name}, {t} threads", r, sec, n, fb if hw else None))
    if a.processes:
        with ProcessPoolExecutor(a.processes, mp_context=get_context("spawn")) as pool:
            list(pool.map(_decode, [(p, None) for p in src]))  # start-up outside the timing
            r, sec, n = _rate(work, None, pool)
            rows.append((f"cpu, {a.processes} processes", r, sec, n, None))
            r, sec, n = _rate(work, None, pool, per_frame=True)
            rows.append((f"cpu, {a.processes} proc., per-frame ctx", r, sec, n, None))
    per_frame, one_ctx, same = _conversion(src[0])
    print(
        f"rgb24 conversion, {Path(src[0]).name}: PyAV per-frame context {per_frame:.3f} ms/frame, "
        f"one context per video {one_ctx:.3f} ms/frame ({per_frame / one_ctx:.1f}x), "
        f"bytes {'equal' if same else 'DIFFER'}"
    )
    print(f"{'mode':30s} {'s video/s':>10s} {'wall s':>8s} {'frames':>8s}  fallbacks")
    for name, r, sec, n, fb in rows:
        print(f"{name:30s} {r:10.1f} {sec:8.2f} {n:8d}  {'' if fb is None else fb}")
    if a.hwaccel:
        print(f"\nparity {a.hwaccel} vs cpu (every clip once):")
        worst = 0
        for p in src:
            c = video.decode(p, 5.0)
            before = sum(video.HW_FAILURES.values())
            h = video.decode(p, 5.0, hwaccel=a.hwaccel)
            fell = sum(video.HW_FAILURES.values()) > before
            same_t = np.array_equal(c.frame_times, h.frame_times)
            same_a = np.array_equal(c.audio, h.audio)
            if c.frames.shape == h.frames.shape:
                d = np.abs(c.frames.astype(np.int16) - h.frames.astype(np.int16))
                mx, mean = int(d.max()), float(d.mean())
            else:
                mx, mean = -1, float("nan")
            worst = max(worst, mx)
            print(
                f"  {Path(p).parent.parent.name}/{Path(p).parent.name}/{Path(p).name}: "
                f"times {'equal' if same_t else 'DIFFER'}, audio {'equal' if same_a else 'DIFFER'}, "
                f"frames max |d| {mx}, mean {mean:.3f}{' (fell back to cpu)' if fell else ''}"
            )
        print(f"largest pixel difference: {worst} grey levels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
