"""Stream stage (config ``extract.keep_frames: false``, the default): one pass per video.

Per shard, one job decodes each video once and hands its sampled frames straight to the fit
(detection, crop, regression), with no full frame written to disk::

    OUT/shards/<shard>.tsv -> OUT/extract/<shard>.h5   index and frame times (+ audio with
                                                       extract.keep_audio); no frames
                           -> OUT/fit/<shard>.h5       the fit's fields (+ crops, fit.keep_crops)
                           -> OUT/features/<shard>.h5  the voice features of the decoded audio

The audio rides the same decode (:func:`vox3d.media.video.decode` gives both): each decode
worker computes the utterance's features (:func:`vox3d.audio.features.utterance_features`, the
features stage's code) as soon as the video is decoded, and the features shard is written
as :func:`vox3d.audio.features.features_shard` would write it from the extract shard (the same
bytes, tests/test_stream.py).  The extract shard keeps its layout (:mod:`vox3d.media.extract_shard`)
without the ``frames/<i>`` datasets (attribute ``frames_stored`` 0) and, by default,
without the audio samples (``audio_stored`` 0; lengths and offsets are kept):
:meth:`vox3d.media.extract_shard.ExtractShard.video_audio` and ``frame`` decode them again when
wanted (the export does).  So no intermediate grows with the video's pixels or samples.  With
``extract.keep_frames: true`` the two-stage path (``extract_shard`` writes the frames,
``fit_shard`` reads them) runs instead; on the CPU both give the same fit shards, byte for
byte (tests/test_stream.py), because the same frames arrive in the same pieces
(:func:`vox3d.fitting.frame_source.piece_frames`).

Decoding runs in `workers` threads (or, with ``processes``, config ``extract.decode_workers:
processes``, or ``auto`` with two or more workers, :func:`decode_in_processes`, in `workers`
spawned processes fed in order by one thread, each decoding whole videos: no GIL between
them; a video reaches the fit once decoded, at most ``workers + 2`` in flight, its frames
handed over through one file in ``/dev/shm``, :class:`_Spilled`), ahead of the fit, in
manifest order (sorted paths):
worker k decodes video j into its own queue of at most :data:`QUEUE_CHUNKS` chunks of
:data:`vox3d.media.video_frames.FRAME_CHUNK` frames and blocks when it is full, so memory is bounded by
``workers x QUEUE_CHUNKS x FRAME_CHUNK`` frames plus the video being fitted.  PyAV releases
the GIL while it decodes and converts; the fit's own read-ahead thread consumes the pieces.
``hwaccel`` (config ``extract.hwaccel``) decodes on an FFmpeg hardware device (``cuda``:
NVDEC) with the CPU as the fallback (:func:`vox3d.media.video.decode`).

Rejects: a video the manifest already condemns, or that fails to decode, is truncated or too
short (:func:`vox3d.media.extract.check_row`, :func:`vox3d.media.extract.check_decoded`: the extract
stage's rules, unchanged) becomes a row of the extract shard's ``rejects`` as before.
The fit sees a video only once it is accepted: its frames are held until its decode ends
(at most :data:`HOLD_FRAMES`; every VoxCeleb utterance fits).  A longer video streams to
the fit before its decode ends; if it is then rejected (truncated at its end), its frames
are dropped from the fit's output and the remaining videos renumbered
(:meth:`StreamSource.finish`).  Only then can the fit's host-path chunks, and so its last
float bits, differ from the two-stage path's.

Resumable like the other stages: both files are written to temporary names and renamed when
complete (:class:`vox3d.media.extract_shard.ShardWriter`, :func:`vox3d.fitting.fit_shard.write_fit_shard`).
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from vox3d.audio.fbank import FeatureConfig
from vox3d.audio.features import STAGE, Utterance, _one, write
from vox3d.config import default
from vox3d.fitting.fit import fit_source
from vox3d.fitting.frame_source import Piece, piece_frames
from vox3d.io import main_not_reimported
from vox3d.media.extract import check_decoded, check_row
from vox3d.media.extract_shard import ShardWriter
from vox3d.media.manifest import read_shard
from vox3d.media.video import DECODERS, SAMPLE_RATE, decode
from vox3d.media.video_probe import MediaError

#: Frames of one video held back until its decode ends (so a rejected video never reaches
#: the fit): 256 frames = 51 s at 5 fps, 38 MB at 224x224.
HOLD_FRAMES = 256
#: Chunks of decoded frames a worker may queue ahead of the fit, per video.
QUEUE_CHUNKS = 4
#: Config ``extract.decode_workers`` values.
DECODE_WORKERS = ("auto", "threads", "processes")
#: ``auto`` decodes in processes from this many workers on.  Measured: 2 processes decode
#: faster than 2 threads here (bench/results/cpu_decode.txt); on the 16-core GPU node one
#: job of 15 processes runs 3.5x one of 15 threads, two jobs of 7 processes 1.9x two of 7
#: threads, mp4 to fit + features (docs/cluster.md).  One worker stays a thread (no process
#: to spawn: ``make run``'s jobs).
AUTO_PROCESSES_FROM = 2


def decode_in_processes(setting: str, workers: int) -> bool:
    """Whether a stream job of `workers` decode workers decodes in processes (config
    ``extract.decode_workers``: ``threads``, ``processes`` or ``auto``)."""
    if setting not in DECODE_WORKERS:
        raise ValueError(f"extract.decode_workers {setting!r}: choose from {DECODE_WORKERS}")
    if setting == "auto":
        return int(workers) >= AUTO_PROCESSES_FROM
    return setting == "processes"


class StreamSource:
    """A frame source (:mod:`vox3d.fitting.frame_source`) that decodes a shard's videos while the fit
    consumes them, and writes their audio and index to an extract shard.

    rows: the shard's manifest rows (sorted by path here); writer: an open
    :class:`vox3d.media.extract_shard.ShardWriter` with ``store_frames`` false.  ``videos`` lists the
    accepted videos (the fields of :class:`vox3d.media.extract_shard.ExtractShard`), complete once
    :meth:`pieces` is exhausted.  Call :meth:`close` (or use ``with``) to stop the workers.
    """

    def __init__(
        self,
        rows: Sequence[dict[str, str]],
        videos_dir: str | os.PathLike,
        writer: ShardWriter,
        frame_rate: float,
        min_duration: float,
        decoder: str = default("extract.decoder"),
        workers: int = 1,
        decoder_threads: int = 1,
        hold_frames: int = HOLD_FRAMES,
        hwaccel: str | None = None,
        features_cfg=None,
        processes: bool = False,
    ) -> None:
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")
        self.rows = sorted(rows, key=lambda r: r["path"])
        self.videos_dir = Path(videos_dir)
        self.writer = writer
        self.frame_rate, self.min_duration = float(frame_rate), float(min_duration)
        self.decoder, self.decoder_threads = decoder, max(1, int(decoder_threads))
        self.hold_frames = max(0, int(hold_frames))
        self.hwaccel = hwaccel or None
        self.features_cfg = features_cfg
        #: with `features_cfg`: the accepted videos' features (:class:`vox3d.audio.features.
        #: Utterance`, in order) and the features stage's rejects rows
        self.utterances: list = []
        self.feature_rejects: list[dict[str, str]] = []
        self.videos: list[dict] = []
        self._ids: list[int] = []  # fit index given out per position -> accepted index or -1
        self._queues: dict[int, queue.Queue] = {}
        self._cond = threading.Condition()
        self._next_row = 0
        self._stop = threading.Event()
        self.processes = bool(processes)
        if self.processes:  # one feeding thread, the decodes in `workers` processes
            self._workers = max(1, int(workers))
            self._threads = [threading.Thread(target=self._feed, daemon=True, name="decode-feed")]
        else:
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

    def _open_next(self) -> tuple[int, queue.Queue] | None:
        """Claim the next row to decode and open its queue (None: every row is claimed)."""
        with self._cond:
            j = self._next_row
            if j >= len(self.rows):
                return None
            self._next_row += 1
            q = self._queues[j] = queue.Queue(maxsize=QUEUE_CHUNKS)
            self._cond.notify_all()
        return j, q

    def _work(self) -> None:
        while not self._stop.is_set():
            claimed = self._open_next()
            if claimed is None:
                return
            j, q = claimed
            try:
                self._put(
                    q, _decode_video(self._job(j), lambda f, t, q=q: self._put(q, ("frames", f, t)))
                )
            except BaseException as e:  # not a bad video: the job fails, as extract does
                self._put(q, ("fatal", e))

    def _job(self, j: int) -> tuple:
        """What :func:`_decode_video` needs for row `j` (picklable, for a worker process)."""
        return (
            self.rows[j], self.videos_dir / self.rows[j]["path"], self.frame_rate,
            self.min_duration, self.decoder, self.decoder_threads, self.hwaccel,
            self.features_cfg,
        )  # fmt: skip

    def _feed(self) -> None:
        """Process workers: submit the videos in order, at most ``workers + 2`` in flight,
        and hand each finished one's chunks to its queue, in order (the fit sees a video
        only once it is decoded; memory: the in-flight videos' frames)."""
        ctx = multiprocessing.get_context("spawn")  # nothing of the fit's CUDA state
        flight: collections.deque = collections.deque()
        spill = _spill_dir()
        try:
            with main_not_reimported(), ProcessPoolExecutor(self._workers, ctx) as pool:
                try:
                    while not self._stop.is_set():
                        while len(flight) < self._workers + 2:
                            claimed = self._open_next()
                            if claimed is None:
                                break
                            j, q = claimed
                            job = self._job(j)
                            flight.append((q, pool.submit(_decode_in_process, job, spill)))
                        if not flight:
                            return
                        q, fut = flight.popleft()
                        try:
                            chunks, result = fut.result()
                            if isinstance(chunks, _Spilled):
                                chunks = chunks.read()
                        except BaseException as e:  # a crashed worker or a bug: the job fails
                            self._put(q, ("fatal", e))
                            return
                        for f, t in chunks:
                            self._put(q, ("frames", f, t))
                        self._put(q, result)
                finally:  # stopped early: what has not started never runs
                    for _, fut in flight:
                        fut.cancel()
        finally:  # after the pool's end: no worker writes there any more
            if spill is not None:
                shutil.rmtree(spill, ignore_errors=True)

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
        """The pieces of every accepted video, in order (:func:`vox3d.fitting.frame_source.shard_pieces`);
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
                if self.features_cfg is not None:
                    self._add_features(row, item[2])
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

    def _add_features(self, row: dict[str, str], feats) -> None:
        if isinstance(feats, str):  # bad audio: a features reject, as features_shard makes
            self.feature_rejects.append({"path": row["path"], "stage": STAGE, "reason": feats})
        else:
            self.utterances.append(Utterance(row["path"], row.get("identity", ""), feats))

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


def _decode_video(job: tuple, sink) -> tuple:
    """Decode one video of a shard as the extract stage does (its checks, its rejects) and,
    with a features config, compute its features: ``("done", Decoded, features)`` or
    ``("reject", MediaError)``; frames go to ``sink(frames, times)`` as they decode."""
    row, path, frame_rate, min_duration, decoder, threads, hwaccel, features_cfg = job
    try:
        check_row(row, min_duration)
        dec = decode(path, frame_rate, decoder, threads, sink=sink, hwaccel=hwaccel)
        check_decoded(row, dec, min_duration)
    except MediaError as e:
        return ("reject", e)
    feats = None
    if features_cfg is not None:  # the audio rides the same decode
        feats = _one((dec.audio, SAMPLE_RATE, features_cfg))
    return ("done", dec, feats)


def _decode_in_process(job: tuple, spill_dir: str | None = None) -> tuple[object, tuple]:
    """Worker-process form of :func:`_decode_video`: the frame chunks (as the sink got them)
    and the outcome, for the parent to queue in order.

    With `spill_dir`, the chunks' pixels travel through one file there (a :class:`_Spilled`:
    written once here, read once by the parent, which deletes it) instead of through the
    result's pickle: the parent's share of the transfer, which holds the fit's interpreter,
    falls to about half (a scratch measurement; end to end ``bench/node.py --pickle-frames``
    compares the two).  Where the file cannot be written (a full ``/dev/shm``), the chunks
    are pickled as before."""
    chunks: list = []
    result = _decode_video(job, lambda f, t: chunks.append((f, t)))
    if result[0] == "reject":
        return [], result  # a rejected video never reaches the fit
    if spill_dir is not None and chunks:
        try:
            return _Spilled.write(chunks, spill_dir), result
        except OSError:
            pass
    return chunks, result


#: Decode processes hand their frames over through files (:func:`_decode_in_process`);
#: ``bench/node.py --pickle-frames`` turns it off to measure the difference.
SPILL_FRAMES = True
_SPILL_PREFIX = "vox3d-stream-"


class _Spilled:
    """Frame chunks of one decoded video in one raw file: ``shapes`` and ``times`` per chunk."""

    def __init__(self, path: str, shapes: list[tuple[int, ...]], times: list[np.ndarray]):
        self.path, self.shapes, self.times = path, shapes, times

    @classmethod
    def write(cls, chunks: list, spill_dir: str) -> _Spilled:
        fd, path = tempfile.mkstemp(dir=spill_dir, suffix=".frames")
        try:
            with open(fd, "wb") as fh:
                for f, _ in chunks:
                    fh.write(memoryview(np.ascontiguousarray(f, dtype=np.uint8)).cast("B"))
        except OSError:
            os.unlink(path)
            raise
        return cls(path, [tuple(f.shape) for f, _ in chunks], [t for _, t in chunks])

    def read(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The chunks (views of one array read from the file); the file is deleted."""
        try:
            buf = np.fromfile(self.path, dtype=np.uint8)
        finally:
            os.unlink(self.path)
        out, at = [], 0
        for shape, t in zip(self.shapes, self.times, strict=True):
            n = int(np.prod(shape))
            out.append((buf[at : at + n].reshape(shape), t))
            at += n
        if at != buf.size:
            raise RuntimeError(f"{self.path}: {buf.size} bytes, expected {at}")
        return out


def _spill_dir() -> str | None:
    """A private folder for :class:`_Spilled` files: in ``/dev/shm`` (memory) where there
    is one, else the temporary folder; folders of dead processes (a killed job) are
    removed first.  None with :data:`SPILL_FRAMES` off."""
    if not SPILL_FRAMES:
        return None
    root = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    for old in Path(root).glob(f"{_SPILL_PREFIX}*-*"):
        try:
            os.kill(int(old.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except (ValueError, OSError):
            continue
    return tempfile.mkdtemp(prefix=_SPILL_PREFIX, suffix=f"-{os.getpid()}", dir=root)


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
    """Video `i` of `writer` as :attr:`vox3d.media.extract_shard.ExtractShard.videos` lists it."""
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
    frame_rate: float = default("extract.frame_rate"),
    min_duration: float = default("extract.min_duration"),
    decoder: str = default("extract.decoder"),
    workers: int = 1,
    progress: bool = True,
    clock=None,
    hold_frames: int = HOLD_FRAMES,
    fitter=None,
    hwaccel: str | None = None,
    features_h5: str | os.PathLike | None = None,
    features_cfg=None,
    keep_audio: bool = True,
    processes: bool = False,
) -> dict:
    """One shard through decode -> fit (and features) in one pass (module docstring).

    fit_cfg: a :class:`vox3d.fitting.fit.FitConfig`; fitter: a :class:`vox3d.fitting.fit.Fitter` to reuse
    (default: one built from `fit_cfg`); clock: a :class:`vox3d.fitting.fit.StageClock`.
    features_h5: also write the features shard of the decoded audio there (settings
    `features_cfg`, a :class:`vox3d.audio.fbank.FeatureConfig`; the same file as
    :func:`vox3d.audio.features.features_shard` of the extract shard); keep_audio false: the
    extract shard keeps no audio samples (only with `features_h5`).  Returns ``{"extract":
    {"videos", "extracted", "rejected"}, "fit": the fit shard's stats, "features":
    {"utterances", "rejected"} (with features_h5)}``.  processes: decode in `workers`
    processes instead of threads (the same bytes; config ``extract.decode_workers``).
    """
    if not keep_audio and features_h5 is None:
        raise ValueError("keep_audio false needs features_h5: nothing else would read the audio")
    if features_h5 is not None and features_cfg is None:
        features_cfg = FeatureConfig()
    rows = read_shard(shard_tsv)
    out: dict = {}
    with ShardWriter(
        extract_h5, frame_rate, min_duration, decoder, store_frames=False, store_audio=keep_audio
    ) as w:
        with StreamSource(
            rows, videos_dir, w, frame_rate, min_duration, decoder, workers,
            hold_frames=hold_frames, hwaccel=hwaccel,
            features_cfg=features_cfg if features_h5 is not None else None, processes=processes,
        ) as src:  # fmt: skip
            out["fit"] = fit_source(
                src, fit_h5, fit_cfg, fitter, progress, clock, Path(shard_tsv).stem
            )
        if features_h5 is not None:
            write(
                features_h5, src.utterances, src.feature_rejects, features_cfg,
                source=Path(extract_h5).name,
            )  # fmt: skip
            out["features"] = {
                "utterances": len(src.utterances), "rejected": len(src.feature_rejects)
            }  # fmt: skip
    out["extract"] = w.counts(len(rows))
    return out
