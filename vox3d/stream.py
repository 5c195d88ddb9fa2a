"""Stream stage (config ``extract.keep_frames: false``, the default): one pass per video.

Per shard, one job decodes each video once and hands its sampled frames straight to the fit
(detection, crop, regression), with no full frame written to disk::

    OUT/shards/<shard>.tsv -> OUT/extract/<shard>.h5   audio, frame times, index; no frames
                           -> OUT/fit/<shard>.h5       the fit's fields (+ crops, fit.keep_crops)

The audio rides the same decode (:func:`vox3d.video.decode` gives both).  The extract
shard keeps its layout (:mod:`vox3d.extract`) without the ``frames/<i>`` datasets
(attribute ``frames_stored`` 0), so everything after the fit reads it as before.  With
``extract.keep_frames: true`` the two-stage path (``extract_shard`` writes the frames,
``fit_shard`` reads them) runs instead; on the CPU both give the same fit shards, byte for
byte (tests/test_stream.py), because the same frames arrive in the same pieces
(:func:`vox3d.frame_source.piece_frames`).

Decoding runs in `workers` threads, ahead of the fit, in manifest order (sorted paths):
worker k decodes video j into its own queue of at most :data:`QUEUE_CHUNKS` chunks of
:data:`vox3d.video.FRAME_CHUNK` frames and blocks when it is full, so memory is bounded by
``workers x QUEUE_CHUNKS x FRAME_CHUNK`` frames plus the video being fitted.  PyAV releases
the GIL while it decodes and converts; the fit's own read-ahead thread consumes the pieces.

Rejects: a video the manifest already condemns, or that fails to decode, is truncated or too
short (:func:`vox3d.extract.check_row`, :func:`vox3d.extract.check_decoded`: the extract
stage's rules, unchanged) becomes a row of the extract shard's ``rejects`` as before.
The fit sees a video only once it is accepted: its frames are held until its decode ends
(at most :data:`HOLD_FRAMES`; every VoxCeleb utterance fits).  A longer video streams to
the fit before its decode ends; if it is then rejected (truncated at its end), its frames
are dropped from the fit's output and the remaining videos renumbered
(:meth:`StreamSource.finish`).  Only then can the fit's host-path chunks, and so its last
float bits, differ from the two-stage path's.

Resumable like the other stages: both files are written to temporary names and renamed when
complete (:class:`vox3d.extract.ShardWriter`, :func:`vox3d.fit_shard.write_fit_shard`).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from vox3d.extract import ShardWriter, check_decoded, check_row
from vox3d.frame_source import Piece, piece_frames
from vox3d.manifest import read_shard
from vox3d.video import DECODERS, MediaError, decode

#: Frames of one video held back until its decode ends (so a rejected video never reaches
#: the fit): 256 frames = 51 s at 5 fps, 38 MB at 224x224.
HOLD_FRAMES = 256
#: Chunks of decoded frames a worker may queue ahead of the fit, per video.
QUEUE_CHUNKS = 4


class StreamSource:
    """A frame source (:mod:`vox3d.frame_source`) that decodes a shard's videos while the fit
    consumes them, and writes their audio and index to an extract shard.

    rows: the shard's manifest rows (sorted by path here); writer: an open
    :class:`vox3d.extract.ShardWriter` with ``store_frames`` false.  ``videos`` lists the
    accepted videos (the fields of :class:`vox3d.extract.ExtractShard`), complete once
    :meth:`pieces` is exhausted.  Call :meth:`close` (or use ``with``) to stop the workers.
    """

    def __init__(
        self,
        rows: Sequence[dict[str, str]],
        videos_dir: str | os.PathLike,
        writer: ShardWriter,
        frame_rate: float,
        min_duration: float,
        decoder: str = "pyav",
        workers: int = 1,
        decoder_threads: int = 1,
        hold_frames: int = HOLD_FRAMES,
    ) -> None:
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")
        self.rows = sorted(rows, key=lambda r: r["path"])
        self.videos_dir = Path(videos_dir)
        self.writer = writer
        self.frame_rate, self.min_duration = float(frame_rate), float(min_duration)
        self.decoder, self.decoder_threads = decoder, max(1, int(decoder_threads))
        self.hold_frames = max(0, int(hold_frames))
        self.videos: list[dict] = []
        self._ids: list[int] = []  # fit index given out per position -> accepted index or -1
        self._queues: dict[int, queue.Queue] = {}
        self._cond = threading.Condition()
        self._next_row = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, daemon=True, name=f"decode-{k}")
            for k in range(max(1, int(workers)))
        ]
        for t in self._threads:
            t.start()

    # ---------------------------------------------------------------- workers

    def _put(self, q: queue.Queue, item: tuple) -> None:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                j = self._next_row
                if j >= len(self.rows):
                    return
                self._next_row += 1
                q = self._queues[j] = queue.Queue(maxsize=QUEUE_CHUNKS)
                self._cond.notify_all()
            row = self.rows[j]
            try:
                check_row(row, self.min_duration)
                dec = decode(
                    self.videos_dir / row["path"], self.frame_rate, self.decoder,
                    self.decoder_threads, sink=lambda f, t, q=q: self._put(q, ("frames", f, t)),
                )  # fmt: skip
                check_decoded(row, dec, self.min_duration)
                self._put(q, ("done", dec))
            except MediaError as e:
                self._put(q, ("reject", e))
            except BaseException as e:  # not a bad video: the job fails, as extract does
                self._put(q, ("fatal", e))

    def _queue(self, j: int) -> queue.Queue:
        with self._cond:
            while j not in self._queues:
                self._cond.wait()
            return self._queues.pop(j)

    # ---------------------------------------------------------------- the fit's side

    def progress_totals(self) -> tuple[int, int | None]:
        """Videos of the shard and the frames they should give (from the manifest's
        durations at ``frame_rate``; None when a duration is missing)."""
        try:
            frames = int(sum(float(r["duration_s"]) * self.frame_rate for r in self.rows))
        except (KeyError, TypeError, ValueError):
            frames = None
        return len(self.rows), frames

    def pieces(self) -> Iterator[Piece]:
        """The pieces of every accepted video, in order (:func:`vox3d.frame_source.shard_pieces`);
        a video rejected after it began to stream ends with an error piece."""
        for j, row in enumerate(self.rows):
            q = self._queue(j)
            held: list[tuple[np.ndarray, np.ndarray]] = []  # chunks not yet cut into pieces
            n_held, first, fid, step = 0, 0, None, None
            while True:
                item = q.get()
                kind = item[0]
                if kind == "fatal":
                    raise item[1]
                if kind == "reject":
                    self.writer.reject(row["path"], item[1])
                    if fid is not None:  # it streamed already: the fit drops its rows
                        self._ids[fid] = -1
                        yield fid, 0, None, None, f"rejected by extract: {item[1].message}", True
                    break
                if kind == "frames":
                    held.append((item[1], item[2]))
                    n_held += len(item[2])
                    if step is None:
                        step = piece_frames(*item[1].shape[1:3])
                    if fid is None and n_held > self.hold_frames:
                        fid = self._give_id()
                    if fid is not None:  # streaming: cut whole pieces, never the last one
                        while n_held > step:
                            fr, tm, held, n_held = _take(held, step)
                            yield fid, first, fr, tm, None, False
                            first += step
                    continue
                # done: accepted
                i = self.writer.add(row, item[1])
                self.videos.append(_video_entry(self.writer, i))
                if fid is None:
                    fid = self._give_id()
                self._ids[fid] = i
                step = step or 1
                while n_held > step:
                    fr, tm, held, n_held = _take(held, step)
                    yield fid, first, fr, tm, None, False
                    first += step
                fr, tm, held, n_held = _take(held, n_held)
                yield fid, first, fr, tm, None, True
                break

    def _give_id(self) -> int:
        self._ids.append(-1)
        return len(self._ids) - 1

    def finish(
        self, frames_out: dict[str, np.ndarray], read_errors: dict[int, str]
    ) -> tuple[dict[str, np.ndarray], dict[int, str]]:
        """The fit's outputs over the accepted videos only: rows of videos rejected after
        they streamed dropped (the fit already dropped them as read errors), ``video``
        renumbered to indices of :attr:`videos`."""
        ids = np.asarray(self._ids + [-1], np.int64)  # -1 -> -1
        errors = {int(ids[k]): v for k, v in read_errors.items() if ids[k] >= 0}
        if not len(frames_out["video"]) or np.array_equal(ids[:-1], np.arange(len(ids) - 1)):
            return frames_out, errors
        new = ids[frames_out["video"]]
        keep = new >= 0
        out = {k: v[keep] for k, v in frames_out.items()}
        out["video"] = new[keep].astype(frames_out["video"].dtype)
        return out, errors

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> StreamSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _take(held: list, n: int) -> tuple[np.ndarray, np.ndarray, list, int]:
    """The first `n` frames of the chunks `held` as one piece, and what is left."""
    frames, times, got = [], [], 0
    while got < n:
        f, t = held[0]
        m = min(n - got, len(t))
        frames.append(f[:m])
        times.append(t[:m])
        got += m
        held = held[1:] if m == len(t) else [(f[m:], t[m:]), *held[1:]]
    rest = sum(len(t) for _, t in held)
    fr = frames[0] if len(frames) == 1 else np.concatenate(frames)
    tm = times[0] if len(times) == 1 else np.concatenate(times)
    return np.ascontiguousarray(fr), np.asarray(tm, np.float64), held, rest


def _video_entry(writer: ShardWriter, i: int) -> dict:
    """Video `i` of `writer` as :attr:`vox3d.extract.ExtractShard.videos` lists it."""
    idx = writer.index
    keys = ("video", "identity", "audio_length", "frame_count", "height", "width")
    out = {k: idx[k][i] for k in keys}
    out.update(duration_s=float(idx["duration_s"][i]), av_offset=float(idx["av_offset"][i]))
    return out


def stream_shard(
    shard_tsv: str | os.PathLike,
    videos_dir: str | os.PathLike,
    extract_h5: str | os.PathLike,
    fit_h5: str | os.PathLike,
    fit_cfg,
    frame_rate: float = 5.0,
    min_duration: float = 1.0,
    decoder: str = "pyav",
    workers: int = 1,
    progress: bool = True,
    clock=None,
    hold_frames: int = HOLD_FRAMES,
) -> dict:
    """One shard through decode -> fit in one pass (module docstring).

    fit_cfg: a :class:`vox3d.fit.FitConfig`.  Returns ``{"extract": {"videos", "extracted",
    "rejected"}, "fit": the fit shard's stats}``.
    """
    from vox3d.fit import fit_source

    rows = read_shard(shard_tsv)
    with ShardWriter(extract_h5, frame_rate, min_duration, decoder, store_frames=False) as w:
        with StreamSource(
            rows, videos_dir, w, frame_rate, min_duration, decoder, workers,
            hold_frames=hold_frames,
        ) as src:  # fmt: skip
            stats = fit_source(src, fit_h5, fit_cfg, None, progress, clock, Path(shard_tsv).stem)
    return {"extract": w.counts(len(rows)), "fit": stats}
