"""Frames for the fit stage: where they come from, read ahead in a background thread.

A **frame source** is what :func:`vox3d.fitting.fit.fit_source` fits: an object with ``videos``
(a list of dicts with at least ``video``, ``identity``, ``frame_count``, ``height``,
``width``; complete once its pieces are exhausted) that either

* reads stored frames, ``frames(i, start, stop) -> ((n, H, W, 3) uint8 RGB, (n,) float64
  s)`` (:class:`vox3d.media.extract_shard.ExtractShard`, the two-stage path of ``extract.keep_frames:
  true``; :class:`vox3d.fitting.multigpu` slices of one), or
* produces them itself, ``pieces()`` yielding the items of :func:`shard_pieces`
  (:class:`vox3d.fitting.stream.StreamSource`: videos decoded while they are fitted, no frame
  written to disk).

Either way the frames of a video arrive in **pieces** of :func:`piece_frames` frames (at
most :data:`READ_FRAMES` frames and :data:`READ_BYTES` bytes), so a long video never sits
in memory whole and both sources cut a video at the same frames: the host path's chunks,
and with them its outputs, are the same bytes from either source.

Two read-ahead threads consume them: :class:`Prefetcher` (the host path, pieces as they
come) and :class:`BatchPrefetcher` (the tensor path: batches of ``batch_size`` same-sized
frames, staged in pinned memory and copied to the GPU on a side stream).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

#: Frames are read in pieces of at most this many frames and bytes, so a long video never
#: sits in memory whole (at 224x224: 64 frames, 9.6 MB a piece).
READ_FRAMES = 64
READ_BYTES = 32 << 20

#: ``(video_index, first_frame, frames (n,H,W,3) uint8 RGB, times (n,) float64 s, error,
#: last)``: one piece of a video; a video that cannot be read ends with ``frames`` and
#: ``times`` None, the error text and ``last`` true.
Piece = tuple


def piece_frames(height: int, width: int) -> int:
    """Frames in one piece of a ``height x width`` RGB video (>= 1)."""
    return max(1, min(READ_FRAMES, READ_BYTES // max(1, int(height) * int(width) * 3)))


def stored_pieces(shard, i: int) -> Iterator[tuple[int, np.ndarray, np.ndarray, bool]]:
    """Video `i` of a stored-frames source in pieces: ``(first frame index, frames
    (n,H,W,3) uint8, times (n,) s, last)``; a video without frames gives one empty piece."""
    v = shard.videos[i]
    n = int(v.get("frame_count", 0))
    step = piece_frames(v.get("height", 0), v.get("width", 0))
    for a in range(0, max(n, 1), step):
        frames, times = shard.frames(i, a, min(n, a + step))
        yield a, np.asarray(frames), np.asarray(times, np.float64), a + step >= n


def shard_pieces(shard) -> Iterator[Piece]:
    """Every piece of every video of a frame source, in video order (module docstring)."""
    if hasattr(shard, "pieces"):
        yield from shard.pieces()
        return
    for i in range(len(shard.videos)):
        try:
            for a, frames, times, last in stored_pieces(shard, i):
                yield i, a, frames, times, None, last
        except Exception as e:  # a broken video must not stop the shard
            yield i, 0, None, None, f"{type(e).__name__}: {e}", True


def progress_totals(shard) -> tuple[int, int | None]:
    """``(videos, frames)`` a progress bar over `shard` counts to (frames None: unknown)."""
    if hasattr(shard, "progress_totals"):
        return shard.progress_totals()
    return len(shard.videos), int(sum(int(v.get("frame_count", 0)) for v in shard.videos))


class Prefetcher:
    """Reads a frame source's pieces in a background thread, `depth` pieces ahead.

    Yields the items of :func:`shard_pieces`; an error in the source itself (not in one
    video) is raised to the consumer.
    """

    def __init__(self, shard, depth: int = 2) -> None:
        self._shard = shard
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        try:
            self._produce()
            self._q.put(None)
        except BaseException as e:  # hand any failure to the consumer instead of hanging
            self._q.put(("fatal", e))

    def _produce(self) -> None:
        """Put every item on the queue (runs in the thread; subclasses cut batches)."""
        for item in shard_pieces(self._shard):
            self._q.put(item)

    def __iter__(self) -> Iterator[tuple]:
        while True:
            item = self._q.get()
            if item is None:
                return
            if item[0] == "fatal":
                raise item[1]
            yield item


@dataclass
class Batch:
    """Up to ``batch_size`` same-sized frames of consecutive videos (video order).

    segments: ``(video_index, first_frame, end_frame)`` per video piece; frames: ``(B, H, W,
    3) uint8`` RGB on the host (pinned on CUDA); frames_dev: the same on the device (CUDA:
    copied on a side stream, ready once ``ready`` (a CUDA event) has passed).
    """

    segments: list[tuple[int, int, int]]
    times: np.ndarray
    frames: np.ndarray
    frames_dev: object
    ready: object = None


class BatchPrefetcher(Prefetcher):
    """Background thread for the tensor path: reads a frame source's pieces, cuts their
    frames into :class:`Batch` es of ``batch_size`` same-sized frames and, on CUDA, stages
    each in pinned memory and copies it to the device on a side stream, so that the read
    and host->device copy of the next batch overlap the current batch's detection and
    regression.

    Yields ``("batch", Batch)`` and ``("error", video_index, text)`` for unreadable videos.
    """

    def __init__(self, shard, batch_size: int, device: str, depth: int = 2) -> None:
        import torch

        self._bs = max(1, batch_size)
        self._cuda = device == "cuda"
        self._device = torch.device(device)
        self._stream = torch.cuda.Stream(self._device) if self._cuda else None
        super().__init__(shard, depth)  # starts the thread: every field set before

    def _emit(self, buf: list, n: int) -> None:
        """Cut the first ``n`` frames of ``buf`` [(vi, frames, times, start, base)] into a
        batch (``frames`` is a piece of video ``vi`` beginning at its frame ``base``)."""
        import torch

        h, w = buf[0][1].shape[1:3]
        pinned = torch.empty((n, h, w, 3), dtype=torch.uint8, pin_memory=self._cuda)
        host = pinned.numpy()
        segs, times, k = [], [], 0
        while k < n:
            vi, frames, t, start, base = buf[0]
            m = min(n - k, frames.shape[0] - start)
            host[k : k + m] = frames[start : start + m]
            if segs and segs[-1][0] == vi and segs[-1][2] == base + start:
                segs[-1] = (vi, segs[-1][1], base + start + m)  # the next piece of one video
            else:
                segs.append((vi, base + start, base + start + m))
            times.append(t[start : start + m])
            k += m
            if start + m == frames.shape[0]:
                buf.pop(0)
            else:
                buf[0] = (vi, frames, t, start + m, base)
        if self._cuda:
            with torch.cuda.stream(self._stream):
                dev = pinned.to(self._device, non_blocking=True)
                ready = torch.cuda.Event()
                ready.record(self._stream)
        else:
            dev, ready = pinned, None
        self._q.put(("batch", Batch(segs, np.concatenate(times), host, dev, ready)))

    def _produce(self) -> None:
        """Cut the pieces into batches; report broken videos, skipping their later pieces."""
        buf: list = []
        n_buf = 0
        bad: set[int] = set()  # videos that failed: the rest of their pieces is skipped
        for i, a, frames, times, err, _ in shard_pieces(self._shard):
            if i in bad:
                continue
            if err is None and (
                frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8
            ):
                err = (
                    f"ValueError: frames {frames.shape} {frames.dtype}, expected (N, H, W, 3) uint8"
                )
            if err is not None:  # a broken video must not stop the shard
                bad.add(i)
                self._q.put(("error", i, err))
                continue
            if frames.shape[0] == 0:
                continue
            if buf and buf[0][1].shape[1:3] != frames.shape[1:3]:
                self._emit(buf, n_buf)  # a new frame size: close the batch
                n_buf = 0
            buf.append((i, frames, times, 0, a))
            n_buf += frames.shape[0]
            while n_buf >= self._bs:
                self._emit(buf, self._bs)
                n_buf -= self._bs
        if n_buf:
            self._emit(buf, n_buf)
