"""The fit's loops over a frame source: every frame of a shard through a
:class:`vox3d.fitting.fit.Fitter`, gathered into the per-frame fields of the fit shard.

Two loops with the same outputs in the same order (videos in order, frames in order):

* the host path (:func:`_run_shard`): frames read ahead by
  :class:`vox3d.fitting.frame_source.Prefetcher`, whole videos gathered into chunks of at least
  ``batch_size`` frames (a video longer than :data:`MAX_CHUNK_FRAMES` is cut), each chunk
  through :meth:`vox3d.fitting.fit.Fitter.fit_frames`;
* the tensor path (:func:`_run_shard_tensor`): batches of same-sized frames staged on the
  device by :class:`vox3d.fitting.frame_source.BatchPrefetcher`, each through
  :meth:`vox3d.fitting.fit.Fitter.fit_batch_tensor`.

Also here: the per-frame fields' empty layout (:func:`_empty_fields`, which the fitter
fills), their concatenation over chunks (:func:`_concat_fields`) and the JPEG crops the
fit keeps (:func:`kept_crops`).  :func:`vox3d.fitting.fit.fit_source` runs these loops in one
process, :mod:`vox3d.fitting.multigpu` one part of the shard per process.
"""

from __future__ import annotations

import sys

import numpy as np

from vox3d.fitting.fit_shard import FRAME_FIELDS, encode_crop
from vox3d.fitting.frame_source import Batch, BatchPrefetcher, Prefetcher, progress_totals

#: The host path gathers whole videos into a chunk until it has ``batch_size`` frames; a
#: video longer than this many frames (51 s at 5 fps) is cut into chunks of about this size.
MAX_CHUNK_FRAMES = 256


def _empty_fields(n: int, n_params: int) -> dict[str, np.ndarray]:
    nan32 = np.float32(np.nan)
    return {
        "box": np.full((n, 5), nan32, np.float32),
        "roi": np.full((n, 4), nan32, np.float32),
        "params": np.full((n, n_params), nan32, np.float32),
        "score": np.full(n, nan32, np.float32),
        "face_px": np.full(n, nan32, np.float32),
        "n_faces": np.zeros(n, np.int16),
        "margin": np.zeros(n, np.float32),
        "yaw": np.full(n, nan32, np.float32),
        "pitch": np.full(n, nan32, np.float32),
        "roll": np.full(n, nan32, np.float32),
        "blur": np.full(n, nan32, np.float32),
        "landmark_nme": np.full(n, nan32, np.float32),
    }


def _run_shard(shard, fitter, cfg, name: str, progress: bool):
    """Fit every frame of the frame source `shard` (:mod:`vox3d.fitting.frame_source`): returns the
    per-frame fields (``video`` indexes ``shard.videos``) and ``{video: read error}``."""
    from tqdm import tqdm

    if fitter.tensor_path:
        return _run_shard_tensor(shard, fitter, cfg, name, progress)
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in (*FRAME_FIELDS, "crop")}
    read_errors: dict[int, str] = {}
    pending: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # (video, first, frames, t)
    n_pending = 0
    bs = max(1, cfg.batch_size)
    cut = False  # the current video was cut (longer than MAX_CHUNK_FRAMES)

    def flush() -> None:
        nonlocal pending, n_pending
        if not pending:
            return
        frames = [fr for p in pending for fr in p[2]]
        res = fitter.fit_frames(frames)
        for k, v in res.items():
            chunks[k].append(v)
        if cfg.keep_crops:
            chunks["crop"].append(kept_crops(frames, res["roi"], res["keep"]))
        chunks["video"].append(
            np.concatenate([np.full(len(p[2]), p[0], np.int32) for p in pending])
        )
        chunks["frame"].append(
            np.concatenate([np.arange(p[1], p[1] + len(p[2]), dtype=np.int32) for p in pending])
        )
        chunks["time"].append(np.concatenate([p[3] for p in pending]))
        pending, n_pending = [], 0

    bar = tqdm(
        total=progress_totals(shard)[0], desc=f"fit {name}", unit="video",
        disable=not progress, file=sys.stderr,
    )  # fmt: skip
    # chunks end where a video ends and >= batch_size frames are pending (as with whole
    # videos: vox3d.fitting.multigpu.clean_boundaries models this); a long video is also cut
    # every MAX_CHUNK_FRAMES, and its chunk ends with it
    for vi, first, frames, times, err, last in Prefetcher(shard):
        if err is not None:
            read_errors[vi] = err
        elif frames.shape[0] > 0:
            pending.append((vi, first, frames, times))
            n_pending += frames.shape[0]
            if not last and n_pending >= max(bs, MAX_CHUNK_FRAMES):
                flush()
                cut = True
        if last:
            if n_pending >= bs or cut:
                flush()
            cut = False
            bar.update(1)
    flush()
    bar.close()

    frames_out = _concat_fields(chunks, fitter.layout.n, fitter.landmarker is not None)
    return _drop_videos(frames_out, read_errors), read_errors


def _drop_videos(frames_out: dict[str, np.ndarray], videos) -> dict[str, np.ndarray]:
    """`frames_out` without the rows of `videos` (read in part before a read error)."""
    if not len(videos) or not len(frames_out["video"]):
        return frames_out
    keep = ~np.isin(frames_out["video"], np.fromiter(videos, np.int64))
    return frames_out if keep.all() else {k: v[keep] for k, v in frames_out.items()}


def _run_shard_tensor(shard, fitter, cfg, name: str, progress: bool):
    """:func:`_run_shard` through :meth:`vox3d.fitting.fit.Fitter.fit_batch_tensor` (same outputs,
    same order: videos in order, frames in order; batches never mix frame sizes)."""
    import time

    import torch
    from tqdm import tqdm

    chunks: dict[str, list[np.ndarray]] = {k: [] for k in (*FRAME_FIELDS, "crop")}
    read_errors: dict[int, str] = {}
    total = progress_totals(shard)[1]
    bar = tqdm(
        total=total, desc=f"fit {name}", unit="frame",
        disable=not progress, file=sys.stderr,
    )  # fmt: skip
    clk = fitter.clock
    it = iter(BatchPrefetcher(shard, cfg.batch_size, fitter.device))
    while True:
        t0 = time.perf_counter()
        item = next(it, None)
        if clk is not None:
            clk.add("read wait", time.perf_counter() - t0)
        if item is None:
            break
        if item[0] == "error":
            read_errors[item[1]] = item[2]
            continue
        b: Batch = item[1]
        if b.ready is not None:
            torch.cuda.current_stream(fitter.detector.device).wait_event(b.ready)
            b.frames_dev.record_stream(torch.cuda.current_stream(fitter.detector.device))
        t0 = time.perf_counter()
        res = fitter.fit_batch_tensor(b.frames_dev, b.frames)
        if clk is not None:
            clk.add("batch wall", time.perf_counter() - t0)
        for k, v in res.items():
            chunks[k].append(v)
        if cfg.keep_crops:
            chunks["crop"].append(kept_crops(b.frames, res["roi"], res["keep"]))
        chunks["video"].append(
            np.concatenate([np.full(e - s, vi, np.int32) for vi, s, e in b.segments])
        )
        chunks["frame"].append(
            np.concatenate([np.arange(s, e, dtype=np.int32) for _, s, e in b.segments])
        )
        chunks["time"].append(b.times)
        bar.update(len(b.times))
    bar.close()
    frames_out = _concat_fields(chunks, fitter.layout.n, fitter.landmarker is not None)
    return _drop_videos(frames_out, read_errors), read_errors


def _concat_fields(chunks: dict, n_params: int, with_landmarks: bool) -> dict[str, np.ndarray]:
    out = {}
    empty = _empty_fields(0, n_params)
    empty.update(
        video=np.zeros(0, np.int32), frame=np.zeros(0, np.int32), time=np.zeros(0, np.float64),
        keep=np.zeros(0, bool), reason=np.zeros(0, np.uint8),
    )  # fmt: skip
    for k in FRAME_FIELDS:
        if k == "landmark_nme" and not with_landmarks:
            continue
        out[k] = np.concatenate(chunks[k]) if chunks[k] else empty[k]
    if chunks.get("crop"):
        out["crop"] = np.concatenate(chunks["crop"])
    return out


def kept_crops(frames_rgb, roi: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The JPEG bytes (:func:`vox3d.fitting.fit_shard.encode_crop`) of the 120x120 BGR crop of each
    kept frame, cut as the regressor's (:func:`vox3d.face.crop.crop_image`, cv2-exact with the
    device path's :func:`vox3d.face.crop.crop_batch_torch`): ``(N,) object`` array, ``None`` for
    frames not kept.  frames_rgb: N frames ``(H, W, 3) uint8`` RGB; roi: ``(N, 4)``.  The
    shard stores only those :func:`vox3d.fitting.fit_shard.crop_selection` picks
    (``fit.crops_per_video``), chosen when it is written."""
    from vox3d.face.crop import crop_image

    out = np.empty(len(keep), dtype=object)
    for i in np.flatnonzero(keep):
        bgr = np.ascontiguousarray(np.asarray(frames_rgb[i])[..., ::-1])
        out[i] = encode_crop(crop_image(bgr, roi[i]))
    return out
