"""The extract shard's format: :class:`ShardWriter` writes ``extract/<shard>.h5``,
:class:`ExtractShard` reads it (the extract stage is :mod:`vox3d.media.extract`, the one-pass
stream stage :mod:`vox3d.fitting.stream`).

HDF5 layout of ``extract/<shard>.h5`` (version :data:`FORMAT_VERSION`; file attributes
``format``, ``format_version``, ``sample_rate``, ``frame_rate``, ``min_duration``,
``decoder``, ``frame_compression``, ``frames_stored``, ``audio_stored``, ``vox3d_version``):

* index, one entry per extracted video (datasets of length V, in manifest order):
  ``video`` (utf-8, the manifest path), ``identity`` (utf-8), ``duration_s`` (float64,
  probed), ``audio_offset`` / ``audio_length`` (int64, samples into ``audio``),
  ``frame_offset`` / ``frame_count`` (int64, rows into ``frame_times``), ``height`` /
  ``width`` (int64, pixels), ``av_offset`` (float64 s, first audio sample time minus first
  frame time as the demuxer reports it);
* ``audio``: (sum of audio_length,) float32, 16 kHz mono, [-1, 1], all videos concatenated
  (empty when the attribute ``audio_stored`` is 0: the stream stage with
  ``extract.keep_audio: false``);
* ``frame_times``: (sum of frame_count,) float64, seconds from each video's first frame;
* ``frames/<i:06d>``: (frame_count, height, width, 3) uint8 RGB for the i-th video, chunked
  one frame a chunk, gzip level 1 (videos of different sizes coexist); only when the
  attribute ``frames_stored`` is 1 (:func:`vox3d.media.extract.extract_shard`, config
  ``extract.keep_frames: true``); a shard of the stream stage (:mod:`vox3d.fitting.stream`) has none;
* ``rejects/path``, ``rejects/code``, ``rejects/reason`` (utf-8): the shard's rejected
  videos; ``code`` is one of :data:`vox3d.media.extract.REJECT_CODES`, ``reason`` a sentence.

A shard is written to a temporary file and renamed when complete (:func:`vox3d.io.atomic_path`),
so a killed job leaves no file at the final path and a rerun starts the shard afresh.
"""

from __future__ import annotations

import contextlib
import logging
import os
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from vox3d import __version__
from vox3d.io import atomic_path, check_free_space, h5_group, h5_new
from vox3d.media.video import SAMPLE_RATE, decode
from vox3d.media.video_probe import MediaError

log = logging.getLogger(__name__)

__all__ = ["FORMAT", "FORMAT_VERSION", "ShardWriter", "ExtractShard"]


FORMAT = "vox3d.extract"
FORMAT_VERSION = 1

#: Index datasets: name -> dtype ("str" = utf-8 variable-length string).
INDEX: dict[str, str] = {
    "video": "str",
    "identity": "str",
    "duration_s": "float64",
    "audio_offset": "int64",
    "audio_length": "int64",
    "frame_offset": "int64",
    "frame_count": "int64",
    "height": "int64",
    "width": "int64",
    "av_offset": "float64",
}
AUDIO_CHUNK = 1 << 16  # samples per HDF5 chunk of `audio`
#: Frame chunk filter: gzip (zlib) level 1, a standard HDF5 filter. Measured on the 10 real
#: clips (415 frames, 62.5 MB raw): gzip-1 writes in 0.81 s CPU to 33.2 MB (reads 0.24 s);
#: lzf is faster (0.44 s, 40.2 MB) but h5py's liblzf leaves its hash table uninitialised,
#: so the same frames compress to different bytes from run to run (seen here), which breaks
#: "same input, same bytes".
FRAME_COMPRESSION = {"compression": "gzip", "compression_opts": 1}
_STR = h5py.string_dtype("utf-8")


# ---------------------------------------------------------------------------------------
# deterministic HDF5 helpers
# ---------------------------------------------------------------------------------------


def _dataset(parent: h5py.Group, name: str, data=None, **kw) -> h5py.Dataset:
    return parent.create_dataset(name, data=data, track_times=False, **kw)


# ---------------------------------------------------------------------------------------
# writing one shard
# ---------------------------------------------------------------------------------------


class _FrameWriter:
    """``decode`` sink: appends one video's frames to ``frames/<name>`` as they decode, so
    a shard job holds at most :data:`vox3d.media.video_frames.FRAME_CHUNK` frames whatever the video's
    length; :meth:`drop` removes them again when the video is rejected after decoding."""

    def __init__(self, group: h5py.Group, name: str, out_h5: Path) -> None:
        self.group, self.name, self.out_h5 = group, name, out_h5
        self.data: h5py.Dataset | None = None
        self.count = 0

    def __call__(self, frames: np.ndarray, times: np.ndarray) -> None:
        check_free_space(self.out_h5, frames.nbytes)  # the raw size bounds gzip's output
        if self.data is None:
            h, w = frames.shape[1:3]
            self.data = _dataset(
                self.group, self.name, shape=(0, h, w, 3), maxshape=(None, h, w, 3),
                dtype=np.uint8, chunks=(1, h, w, 3), **FRAME_COMPRESSION,
            )  # fmt: skip
        self.data.resize(self.count + len(frames), axis=0)
        self.data[self.count :] = frames
        self.count += len(frames)

    def drop(self) -> None:
        if self.name in self.group:
            del self.group[self.name]
        self.data, self.count = None, 0


def _clean_stale_parts(out: Path) -> None:
    """Remove temporary files a killed earlier run of this very output left behind."""
    if out.parent.is_dir():
        for p in out.parent.glob(f".{out.name}.*.part"):
            p.unlink(missing_ok=True)


def _float(v: str | None) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


class ShardWriter:
    """Writes one ``extract/<shard>.h5`` (layout: module docstring) into a temporary file
    that becomes `out_h5` when the ``with`` block ends without an exception.

    ``store_frames`` false (config ``extract.keep_frames: false``, the streaming path of
    :mod:`vox3d.fitting.stream`): the index, audio and ``frame_times`` are written as always but no
    ``frames/<i>`` datasets (attribute ``frames_stored`` 0).  ``store_audio`` false (config
    ``extract.keep_audio: false``; the stream stage computes the features from the decoded
    audio itself): ``audio`` stays empty, ``audio_offset`` / ``audio_length`` still count
    the samples as if they were stored (attribute ``audio_stored`` 0).  Use: :meth:`frame_sink` before
    decoding a video, then :meth:`add` (kept) or :meth:`reject`.
    """

    def __init__(
        self,
        out_h5: str | os.PathLike,
        frame_rate: float,
        min_duration: float,
        decoder: str,
        store_frames: bool = True,
        store_audio: bool = True,
    ) -> None:
        self.out_h5 = Path(out_h5)
        self.store_frames = bool(store_frames)
        self.store_audio = bool(store_audio)
        self._attrs = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "sample_rate": SAMPLE_RATE,
            "frame_rate": float(frame_rate),
            "min_duration": float(min_duration),
            "decoder": decoder,
            "frame_compression": FRAME_COMPRESSION["compression"],
            "frames_stored": int(self.store_frames),
            "audio_stored": int(self.store_audio),
            "vox3d_version": __version__,
        }
        self.index: dict[str, list] = {k: [] for k in INDEX}
        self.rejects: list[tuple[str, str, str]] = []
        self.n_audio = self.n_frames = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> ShardWriter:
        _clean_stale_parts(self.out_h5)
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(self.out_h5))
            f = self._f = stack.enter_context(h5_new(tmp))
            f.attrs.update(self._attrs)
            self._audio = _dataset(
                f, "audio", shape=(0,), maxshape=(None,), dtype="float32", chunks=(AUDIO_CHUNK,)
            )
            self._ftimes = _dataset(
                f, "frame_times", shape=(0,), maxshape=(None,), dtype="float64", chunks=(4096,)
            )
            self._frames_g = h5_group(f, "frames")
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> bool | None:
        if exc[0] is None:
            try:
                for k, dt in INDEX.items():
                    arr = np.array(self.index[k], dtype=_STR if dt == "str" else dt)
                    _dataset(self._f, k, data=arr)
                rj = h5_group(self._f, "rejects")
                for j, col in enumerate(("path", "code", "reason")):
                    _dataset(rj, col, data=np.array([r[j] for r in self.rejects], dtype=_STR))
            except BaseException as e:  # the temporary file goes; the error stays
                self._stack.__exit__(type(e), e, e.__traceback__)
                raise
        return self._stack.__exit__(*exc)

    def frame_sink(self) -> _FrameWriter | None:
        """The ``decode`` sink that writes the next video's frames (None: frames not stored)."""
        if not self.store_frames:
            return None
        return _FrameWriter(self._frames_g, f"{len(self.index['video']):06d}", self.out_h5)

    def reject(self, rel: str, err: MediaError, sink: _FrameWriter | None = None) -> None:
        """Record `rel` as rejected (and drop what `sink` wrote of it)."""
        if sink is not None:
            sink.drop()
        self.rejects.append((rel, err.code, err.message))
        log.info("rejected %s: %s", rel, err.message)

    def add(self, row: dict[str, str], dec, sink: _FrameWriter | None = None) -> int:
        """Append a kept video's audio, frame times and index entry; returns its index."""
        # fail cleanly before HDF5 meets a full disk (it cannot recover from ENOSPC); the
        # raw size bounds what gzip level 1 will write
        check_free_space(
            self.out_h5, dec.audio.nbytes + dec.frames.nbytes + 8 * len(dec.frame_times)
        )
        i = len(self.index["video"])
        n_audio, n_frames = self.n_audio, self.n_frames
        if self.store_audio:
            self._audio.resize((n_audio + dec.audio.size,))
            self._audio[n_audio:] = dec.audio
        n = len(dec.frame_times)
        self._ftimes.resize((n_frames + n,))
        self._ftimes[n_frames:] = dec.frame_times
        if sink is not None:
            assert sink.count == n and sink.name == f"{i:06d}"  # written while decoding
        for k, v in (
            ("video", row["path"]),
            ("identity", row.get("identity", "")),
            ("duration_s", _float(row.get("duration_s")) or dec.audio.size / SAMPLE_RATE),
            ("audio_offset", n_audio),
            ("audio_length", dec.audio.size),
            ("frame_offset", n_frames),
            ("frame_count", n),
            ("height", dec.height),
            ("width", dec.width),
            ("av_offset", dec.av_offset),
        ):
            self.index[k].append(v)
        self.n_audio += dec.audio.size
        self.n_frames += n
        return i

    def counts(self, n_rows: int) -> dict[str, int]:
        return {
            "videos": n_rows,
            "extracted": len(self.index["video"]),
            "rejected": len(self.rejects),
        }


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------


#: Audio samples read from an extract shard in one HDF5 read (64 Mi float32 = 256 MiB at
#: most; a shard of 64 VoxCeleb videos is ~30 MiB, so usually one read per shard).
AUDIO_READ_SAMPLES = 64 << 20


class ExtractShard:
    """Read-only view of one ``extract/<shard>.h5``.

    ``videos[i]`` has ``video``, ``identity``, ``audio_length`` (samples), ``frame_count``,
    ``height``, ``width`` (pixels), ``duration_s``, ``av_offset`` (s). Use as a context
    manager or call :meth:`close`.

    ``threads`` > 1 decompresses a video's frames in that many threads: each frame is one
    gzip chunk, read raw (``read_direct_chunk``) and inflated with :mod:`zlib`, which
    releases the GIL (h5py's own reads hold one lock, so they run one chunk at a time).
    Same arrays as the plain read; any other filter layout falls back to the plain read.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 1) -> None:
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as e:
            raise OSError(f"{self.path}: not a readable HDF5 file ({e})") from e
        a = self._f.attrs
        if a.get("format") != FORMAT or int(a.get("format_version", -1)) != FORMAT_VERSION:
            fmt, ver = a.get("format"), a.get("format_version")
            self._f.close()
            raise ValueError(
                f"{self.path}: not an extract shard of format {FORMAT} v{FORMAT_VERSION} "
                f"(found format={fmt!r}, version={ver!r})"
            )
        self.sample_rate = int(a["sample_rate"])
        self.frame_rate = float(a["frame_rate"])
        self.decoder = str(a["decoder"])
        #: False for a shard of the streaming path (``extract.keep_frames: false``): the
        #: index and ``frame_times`` are there, the frames are not (:meth:`frame` decodes).
        self.frames_stored = bool(int(a.get("frames_stored", 1)))
        #: False when the audio was not kept (``extract.keep_audio: false``, stream stage):
        #: lengths are there, the samples are not (:meth:`video_audio` decodes).
        self.audio_stored = bool(int(a.get("audio_stored", 1)))
        idx = {k: self._f[k][()] for k in INDEX}
        self._audio_offset = idx["audio_offset"]
        self._frame_offset = idx["frame_offset"]
        self.videos: list[dict] = []
        for i in range(len(idx["video"])):
            self.videos.append(
                {
                    "video": idx["video"][i].decode("utf-8"),
                    "identity": idx["identity"][i].decode("utf-8"),
                    "audio_length": int(idx["audio_length"][i]),
                    "frame_count": int(idx["frame_count"][i]),
                    "height": int(idx["height"][i]),
                    "width": int(idx["width"][i]),
                    "duration_s": float(idx["duration_s"][i]),
                    "av_offset": float(idx["av_offset"][i]),
                }
            )

    def __len__(self) -> int:
        return len(self.videos)

    def _need_audio(self) -> None:
        if not self.audio_stored:
            raise ValueError(
                f"{self.path}: this shard stores no audio (extract.keep_audio: false: the "
                "stream stage computed the features from the decoded audio); set "
                "keep_audio: true to keep it, or use ExtractShard.video_audio(i, videos_dir)"
            )

    def audio(self, i: int) -> np.ndarray:
        """``(S,)`` float32, 16 kHz mono, [-1, 1] of video `i`."""
        self._need_audio()
        o, n = int(self._audio_offset[i]), self.videos[i]["audio_length"]
        return self._f["audio"][o : o + n]

    def audio_blocks(
        self, max_samples: int = AUDIO_READ_SAMPLES
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(i, audio (S_i,) float32)`` of every video, in order, in few large reads.

        All audio sits in one ``audio`` dataset with ``audio_offset`` / ``audio_length`` per
        video: consecutive videos whose audio is contiguous are read in one HDF5 read of up
        to `max_samples` samples (one per shard in practice), not one read per video.  If
        the layout is unexpected or a read fails, the remaining videos are read one by one
        (unreadable audio becomes empty, for the caller to reject), so every video is
        yielded exactly once.
        """
        self._need_audio()
        n = len(self.videos)
        done = 0  # videos yielded so far
        try:
            offs = np.asarray(self._audio_offset, np.int64)
            lens = np.asarray([v["audio_length"] for v in self.videos], np.int64)
            ds = self._f["audio"]
            if offs.shape != (n,) or ds.ndim != 1:
                raise ValueError("unexpected extract layout")
            while done < n:
                i, j = done, done + 1  # extend the read while the next video is contiguous
                while (
                    j < n
                    and offs[j] == offs[j - 1] + lens[j - 1]
                    and offs[j] + lens[j] - offs[i] <= max_samples
                ):
                    j += 1
                lo, hi = int(offs[i]), int(offs[j - 1] + lens[j - 1])
                if lo < 0 or hi > ds.shape[0] or np.any(lens[i:j] < 0):
                    raise ValueError("audio range outside the dataset")
                block = np.asarray(ds[lo:hi], np.float32)
                for k in range(i, j):
                    o = int(offs[k]) - lo
                    yield k, block[o : o + int(lens[k])]
                    done = k + 1
        except (KeyError, ValueError, OSError):
            pass
        for k in range(done, n):
            try:
                yield k, np.asarray(self.audio(k), np.float32)
            except (KeyError, ValueError, OSError, IndexError):
                yield k, np.zeros(0, np.float32)

    def frames(
        self, i: int, start: int = 0, stop: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(N, H, W, 3)`` uint8 RGB and ``(N,)`` float64 seconds of video `i`: its frames
        ``start:stop`` (default all; read only those, so a long video can be read in parts)."""
        if not self.frames_stored:
            raise ValueError(
                f"{self.path}: this shard stores no frames (written with extract.keep_frames: "
                "false, frames went straight to the fit); rerun extract with keep_frames: true "
                "to keep them, or use ExtractShard.frame(i, k, videos_dir)"
            )
        o, n = int(self._frame_offset[i]), self.videos[i]["frame_count"]
        a, b, _ = slice(start, stop).indices(n)
        b = max(a, b)
        d = self._f["frames"][f"{i:06d}"]
        return self._read_frames(d, a, b), self._f["frame_times"][o + a : o + b]

    def frame_times(self, i: int) -> np.ndarray:
        """``(N,)`` float64 seconds (from the first frame) of video `i`'s sampled frames."""
        o, n = int(self._frame_offset[i]), self.videos[i]["frame_count"]
        return self._f["frame_times"][o : o + n]

    def video_frames(self, i: int, videos_dir: str | os.PathLike | None = None) -> np.ndarray:
        """All sampled frames of video `i`, ``(N, H, W, 3)`` uint8 RGB: read when the shard
        stores frames, else decoded again from ``videos_dir / video`` with the shard's frame
        rate and decoder (the frames :func:`vox3d.media.video.decode` gave at extraction)."""
        if self.frames_stored:
            return self.frames(i)[0]
        if videos_dir is None:
            raise ValueError(f"{self.path}: stores no frames; give videos_dir to decode them")
        path = Path(videos_dir) / self.videos[i]["video"]
        frames = decode(path, self.frame_rate, self.decoder).frames
        if len(frames) != self.videos[i]["frame_count"]:
            raise ValueError(
                f"{path}: decoded {len(frames)} frames, the shard has "
                f"{self.videos[i]['frame_count']} (the video changed since extraction?)"
            )
        return frames

    def video_audio(self, i: int, videos_dir: str | os.PathLike | None = None) -> np.ndarray:
        """Audio of video `i` as :meth:`audio` gives it: read when stored, else decoded again
        from ``videos_dir / video`` (the samples :func:`vox3d.media.video.decode` gave at
        extraction; checked against the stored length)."""
        if self.audio_stored:
            return self.audio(i)
        if videos_dir is None:
            raise ValueError(f"{self.path}: stores no audio; give videos_dir to decode it")
        path = Path(videos_dir) / self.videos[i]["video"]
        audio = decode(path, self.frame_rate, self.decoder).audio
        if audio.size != self.videos[i]["audio_length"]:
            raise ValueError(
                f"{path}: decoded {audio.size} samples, the shard has "
                f"{self.videos[i]['audio_length']} (the video changed since extraction?)"
            )
        return audio

    def frame(self, i: int, k: int, videos_dir: str | os.PathLike | None = None) -> np.ndarray:
        """Sampled frame `k` of video `i`, ``(H, W, 3)`` uint8 RGB (see :meth:`video_frames`)."""
        n = self.videos[i]["frame_count"]
        if not 0 <= k < n:
            raise IndexError(f"{self.path}: video {i} has {n} frames, not frame {k}")
        if self.frames_stored:
            return self.frames(i, k, k + 1)[0][0]
        return self.video_frames(i, videos_dir)[k]

    def _read_frames(self, d: h5py.Dataset, a: int = 0, b: int | None = None) -> np.ndarray:
        """Frames ``a:b`` of ``d`` ``(N, H, W, 3) uint8``: in parallel when it is one gzip
        chunk a frame."""
        b = d.shape[0] if b is None else b
        plain = (
            self._pool is None
            or b - a < 2
            or d.dtype != np.uint8
            or d.chunks != (1, *d.shape[1:])
            or d.compression != "gzip"
            or d.shuffle
            or d.fletcher32
            or d.scaleoffset is not None
        )
        if plain:
            return d[a:b]
        raw = [d.id.read_direct_chunk((k,) + (0,) * (d.ndim - 1)) for k in range(a, b)]
        if any(mask != 0 for mask, _ in raw):  # a chunk stored without its filter
            return d[a:b]
        out = np.empty((b - a, *d.shape[1:]), np.uint8)

        def inflate(k: int) -> None:
            out[k] = np.frombuffer(zlib.decompress(raw[k][1]), np.uint8).reshape(d.shape[1:])

        list(self._pool.map(inflate, range(b - a)))
        return out

    @property
    def rejects(self) -> list[dict[str, str]]:
        """The shard's rejected videos: ``path``, ``code``, ``reason``."""
        g = self._f["rejects"]
        cols = {k: [s.decode("utf-8") for s in g[k][()]] for k in ("path", "code", "reason")}
        return [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]

    def close(self) -> None:
        self._f.close()
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> ExtractShard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
