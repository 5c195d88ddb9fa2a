"""Probe and decode talking-face videos: 16 kHz mono audio and frames at a fixed rate.

Two decoders give the same result (see ``tests/test_extract.py``):

* ``pyav``: in-process through PyAV (libav* bundled with the ``av`` wheel).
* ``ffmpeg``: the ``ffmpeg`` command line, built with ffmpeg-python, read through pipes
  (video as raw RGB on stdout, audio as raw float32 on a second pipe, frame timestamps
  from the ``showinfo`` filter on stderr).

Both decode each file once, in one pass over its packets.

Audio (both decoders): every decoded sample of the first audio stream (in MP4/QuickTime,
which store exact stream durations, cut to the audio stream's declared duration: this drops
the encoder padding of the last AAC frame, up to 1024 samples, that decoders emit; other
containers only estimate durations, so nothing is cut), converted to float32
in [-1, 1] exactly as libswresample does (``s16 / 32768``), mixed down to mono by the mean of
the channels, then resampled to :data:`SAMPLE_RATE` with soxr (quality ``HQ``) when the
source rate differs, and clipped to [-1, 1]. Sample 0 is the first decoded sample.

Frames (both decoders): time ``t`` is measured from the first decoded video frame (so the
first frame is at ``t = 0``). The targets are ``t_k = k / frame_rate`` for ``k = 0, 1, ...``;
each target takes the decoded frame whose timestamp is nearest (a tie takes the earlier
frame). Targets later than the last frame by more than half a source frame interval are
dropped, and a source frame is taken at most once (a source slower than ``frame_rate``
gives each of its frames once). For a 25 fps source at 5 fps this is exactly every 5th
frame, at ``t = 0, 0.2, 0.4, ...``. Frames are uint8 RGB, full frame, no resizing.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Sample rate of all extracted audio, Hz.
SAMPLE_RATE = 16000
#: File name extensions taken as videos (compared case-insensitively).
VIDEO_EXTENSIONS = (".mp4", ".mpg", ".avi", ".mkv", ".webm")
#: Decoders implemented here (config ``extract.decoder``).
DECODERS = ("pyav", "ffmpeg")
#: A video whose decoded frames span less than this fraction of its probed duration is
#: taken as truncated.
MIN_DECODED_FRACTION = 0.9
#: Chosen frames held at most by :func:`decode` before it hands them to its ``sink``
#: (bounded memory for any video length: 32 frames of 224x224 RGB = 4.8 MB).
FRAME_CHUNK = 32
#: ``sink(frames (n, H, W, 3) uint8 RGB, times (n,) float64 s)``, n <= the chunk size.
FrameSink = Callable[[np.ndarray, np.ndarray], None]

_EPS = 1e-9


class MediaError(Exception):
    """A file that cannot be used; ``code`` is a short category, ``str()`` a sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self):  # pickles with both fields (a stream decode process sends it)
        return (MediaError, (self.code, self.message))


# ---------------------------------------------------------------------------------------
# probing
# ---------------------------------------------------------------------------------------


@dataclass
class ProbeInfo:
    """What one probe of a file says. Units: seconds, Hz, pixels."""

    size_bytes: int = 0
    duration_s: float | None = None
    has_video: bool = False
    has_audio: bool = False
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    vcodec: str = ""
    acodec: str = ""
    sample_rate: int | None = None
    channels: int | None = None
    error: str = ""  # empty when the file probed fine; else a reason a person understands
    error_code: str = ""

    def as_row(self) -> dict[str, object]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "error_code"}
        d["probe_error"] = d.pop("error")
        for k in ("has_video", "has_audio"):
            d[k] = int(bool(d[k]))
        if d["duration_s"] is not None:
            d["duration_s"] = round(float(d["duration_s"]), 6)
        if d["fps"] is not None:
            d["fps"] = round(float(d["fps"]), 6)
        return d


_MAGIC = [  # (offset, bytes, container name) for "this looks like a video but is broken"
    (4, b"ftyp", "MP4/QuickTime"),
    (4, b"moov", "MP4/QuickTime"),
    (4, b"mdat", "MP4/QuickTime"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"RIFF", "AVI"),
    (0, b"\x00\x00\x01\xba", "MPEG program stream"),
    (0, b"\x00\x00\x01\xb3", "MPEG video"),
]


def _container_guess(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    for off, magic, name in _MAGIC:
        if head[off : off + len(magic)] == magic:
            return name
    return None


def _first_line(e: BaseException, path: Path | None = None) -> str:
    s = str(e).strip().splitlines()
    msg = s[0] if s else type(e).__name__
    if path is not None:  # the rejects table names the file already
        msg = msg.replace(f"'{path}'", "").replace(str(path), "")
    msg = re.sub(r"^\[Errno -?\d+\]\s*", "", msg).strip(" :")
    return msg[:200] or type(e).__name__


def check_readable(path: str | os.PathLike) -> int:
    """Return the size in bytes; raise :class:`MediaError` for missing/empty/unreadable."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError as e:
        raise MediaError("unreadable", "file not found") from e
    except OSError as e:
        raise MediaError("unreadable", f"unreadable: {_first_line(e)}") from e
    if not path.is_file():
        raise MediaError("unreadable", "not a regular file")
    if size == 0:
        raise MediaError("empty_file", "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise MediaError("unreadable", "unreadable: permission denied")
    return size


def _open_failed(path: Path, e: BaseException) -> MediaError:
    kind = _container_guess(path)
    if kind:
        return MediaError(
            "unreadable",
            f"damaged or truncated {kind} file: it cannot be opened ({_first_line(e, path)})",
        )
    return MediaError(
        "unreadable", f"not a video: no known audio/video format ({_first_line(e, path)})"
    )


def probe(path: str | os.PathLike) -> ProbeInfo:
    """Probe a file in-process with PyAV; never raises for bad media (see ``.error``)."""
    import av

    path = Path(path)
    info = ProbeInfo()
    try:
        info.size_bytes = check_readable(path)
        try:
            container = av.open(str(path), metadata_errors="ignore")
        except Exception as e:  # av.error.* for every malformed input
            raise _open_failed(path, e) from e
        with container:
            vs = next((s for s in container.streams if s.type == "video"), None)
            as_ = next((s for s in container.streams if s.type == "audio"), None)
            if container.duration is not None:
                info.duration_s = container.duration / 1_000_000
            else:
                durs = [
                    float(s.duration * s.time_base)
                    for s in (vs, as_)
                    if s is not None and s.duration is not None and s.time_base is not None
                ]
                info.duration_s = max(durs) if durs else None
            if vs is not None:
                cc = vs.codec_context
                info.has_video = True
                info.vcodec = cc.name or ""
                info.width, info.height = int(cc.width), int(cc.height)
                rate = vs.average_rate or vs.guessed_rate or vs.base_rate
                info.fps = float(rate) if rate else None
            if as_ is not None:
                cc = as_.codec_context
                info.has_audio = True
                info.acodec = cc.name or ""
                info.sample_rate = int(cc.sample_rate or 0) or None
                info.channels = int(cc.layout.nb_channels) if cc.layout else None
    except MediaError as e:
        info.error, info.error_code = e.message, e.code
    except Exception as e:  # anything else PyAV may raise on odd input
        info.error, info.error_code = f"probe failed: {_first_line(e)}", "unreadable"
    return info


def _ffprobe(path: Path) -> dict:
    import ffmpeg

    try:
        return ffmpeg.probe(str(path))
    except ffmpeg.Error as e:
        err = (e.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise _open_failed(path, RuntimeError(err[-1] if err else "ffprobe failed")) from e


def probe_ffprobe(path: str | os.PathLike) -> ProbeInfo:
    """Probe with the ``ffprobe`` command (through ffmpeg-python); same fields as :func:`probe`."""
    path = Path(path)
    info = ProbeInfo()
    try:
        info.size_bytes = check_readable(path)
        meta = _ffprobe(path)
        streams = meta.get("streams", [])
        vs = next((s for s in streams if s.get("codec_type") == "video"), None)
        as_ = next((s for s in streams if s.get("codec_type") == "audio"), None)
        dur = meta.get("format", {}).get("duration")
        info.duration_s = float(dur) if dur not in (None, "N/A") else None
        if vs is not None:
            info.has_video = True
            info.vcodec = vs.get("codec_name", "")
            info.width, info.height = int(vs.get("width", 0)), int(vs.get("height", 0))
            num, _, den = str(vs.get("avg_frame_rate", "0/0")).partition("/")
            if not float(den or 0):
                num, _, den = str(vs.get("r_frame_rate", "0/0")).partition("/")
            info.fps = float(num) / float(den) if float(den or 0) else None
        if as_ is not None:
            info.has_audio = True
            info.acodec = as_.get("codec_name", "")
            info.sample_rate = int(as_.get("sample_rate", 0)) or None
            info.channels = int(as_.get("channels", 0)) or None
    except MediaError as e:
        info.error, info.error_code = e.message, e.code
    except Exception as e:
        info.error, info.error_code = f"probe failed: {_first_line(e)}", "unreadable"
    return info


# ---------------------------------------------------------------------------------------
# frame selection (shared by both decoders)
# ---------------------------------------------------------------------------------------


class NearestFrameSelector:
    """Streaming "nearest decoded frame to each t_k = k / frame_rate" (module docstring).

    Feed frames in presentation order with :meth:`feed`; it returns the frames chosen so
    far as ``(t, payload)`` with ``t`` in seconds from the first frame. Call
    :meth:`finish` after the last frame.
    """

    def __init__(self, frame_rate: float) -> None:
        if not frame_rate > 0:
            raise ValueError(f"frame_rate must be > 0, got {frame_rate}")
        self.frame_rate = float(frame_rate)
        self._t0: float | None = None
        self._k = 0
        self._prev: tuple[int, float, object] | None = None
        self._prev_dt: float | None = None
        self._n = 0
        self._last_taken = -1

    def _target(self) -> float:
        return self._k / self.frame_rate

    def _take(self, cand: tuple[int, float, object], out: list) -> None:
        if cand[0] > self._last_taken:
            out.append((cand[1], cand[2]))
            self._last_taken = cand[0]

    def feed(self, t_abs: float, payload: object) -> list[tuple[float, object]]:
        if self._t0 is None:
            self._t0 = t_abs
        t = t_abs - self._t0
        cur = (self._n, t, payload)
        self._n += 1
        out: list[tuple[float, object]] = []
        if self._prev is None:
            self._prev = cur
            return out
        if t <= self._prev[1]:  # non-increasing timestamp: keep the earlier frame only
            return out
        while self._target() <= t + _EPS:
            tk = self._target()
            prev = self._prev
            self._take(prev if (tk - prev[1]) <= (t - tk) + _EPS else cur, out)
            self._k += 1
        self._prev_dt = t - self._prev[1]
        self._prev = cur
        return out

    def finish(self) -> list[tuple[float, object]]:
        out: list[tuple[float, object]] = []
        if self._prev is None:
            return out
        half = 0.5 * (self._prev_dt if self._prev_dt else 1.0 / self.frame_rate)
        while self._target() <= self._prev[1] + half + _EPS:
            self._take(self._prev, out)
            self._k += 1
        return out


def select_frame_indices(times: Iterable[float], frame_rate: float) -> list[int]:
    """Indices of the frames :class:`NearestFrameSelector` takes from `times` (seconds)."""
    sel = NearestFrameSelector(frame_rate)
    out = []
    for i, t in enumerate(times):
        out += [p for _, p in sel.feed(float(t), i)]
    out += [p for _, p in sel.finish()]
    return out


# ---------------------------------------------------------------------------------------
# audio post-processing (shared by both decoders)
# ---------------------------------------------------------------------------------------


def to_mono_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """``(S, C)`` float32 at `rate` Hz -> ``(S',)`` float32 mono at :data:`SAMPLE_RATE`, [-1, 1]."""
    import soxr

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        mono = audio[:, 0].copy() if audio.shape[1] == 1 else audio.mean(axis=1, dtype=np.float32)
    else:
        mono = audio
    if rate != SAMPLE_RATE and mono.size:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


_INT_SCALE = {"s16": 32768.0, "s32": 2147483648.0}


def _pyav_audio_to_float(frame) -> np.ndarray:
    """One PyAV AudioFrame -> ``(S, C)`` float32 (libswresample's int->float scaling)."""
    arr = frame.to_ndarray()
    fmt = frame.format.name
    base = fmt.rstrip("p")
    ch = frame.layout.nb_channels
    arr = arr.T if frame.format.is_planar else arr.reshape(-1, ch)
    if base in ("flt", "dbl"):
        return arr.astype(np.float32, copy=False)
    if base == "u8":
        return ((arr.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if base in _INT_SCALE:
        return (arr.astype(np.float32) * np.float32(1.0 / _INT_SCALE[base])).astype(np.float32)
    raise MediaError("decode_error", f"unsupported audio sample format {fmt}")


# ---------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------


@dataclass
class Decoded:
    """One decoded video.

    audio: ``(S,)`` float32, :data:`SAMPLE_RATE` Hz mono, [-1, 1].
    frames: ``(N, H, W, 3)`` uint8 RGB, the frames chosen at ``frame_rate`` (empty,
        ``(0, 0, 0, 3)``, when :func:`decode` handed them to a ``sink``).
    frame_times: ``(N,)`` float64, seconds from the first decoded video frame (all N, also
        with a ``sink``).
    size: ``(height, width)`` of the frames in pixels (the first frame's).
    max_held: the most chosen frames held at once before a hand-over (<= the chunk size).
    av_offset: first audio sample time minus first video frame time, seconds (as the
        demuxer reports it; may differ by a few ms between decoders).
    """

    audio: np.ndarray
    frames: np.ndarray
    frame_times: np.ndarray
    av_offset: float = 0.0
    source_rate: int = 0
    source_channels: int = 0
    decoded_frames: int = 0  # all frames the video decoder produced
    last_frame_time: float = 0.0  # seconds from the first frame
    extra: dict = field(default_factory=dict)
    size: tuple[int, int] = (0, 0)
    max_held: int = 0

    @property
    def height(self) -> int:
        return int(self.size[0])

    @property
    def width(self) -> int:
        return int(self.size[1])


class _AudioBuffer:
    """Decoded audio ``(S, C)`` float32, appended in place into one array grown by doubling.

    Not a list of small per-frame arrays: those stay allocated between the transient RGB
    frame buffers and fragment the heap so that it grows with every frame taken (measured,
    a 10-minute clip: 0.5 GB resident with a list, the audio itself 37 MB).
    """

    def __init__(self) -> None:
        self._a: np.ndarray | None = None
        self.n = 0

    def append(self, x: np.ndarray) -> None:
        if self._a is None:
            self._a = np.empty((max(1 << 16, len(x)), x.shape[1]), np.float32)
        if x.shape[1] != self._a.shape[1]:
            raise MediaError(
                "decode_error",
                f"audio channel count changes mid-stream ({self._a.shape[1]} -> {x.shape[1]})",
            )
        if self.n + len(x) > len(self._a):
            grown = np.empty((max(2 * len(self._a), self.n + len(x)), x.shape[1]), np.float32)
            grown[: self.n] = self._a[: self.n]
            self._a = grown
        self._a[self.n : self.n + len(x)] = x
        self.n += len(x)

    def result(self) -> np.ndarray:
        """``(S, C)`` float32 (``(0, 1)`` when nothing was appended)."""
        return np.zeros((0, 1), np.float32) if self._a is None else self._a[: self.n]


class _FrameChunks:
    """Chosen frames in order, handed to `sink` in chunks of at most `chunk` frames.

    Frames whose size differs from the first frame's are resized to it (as ffmpeg does).
    Without a sink the chunks are kept and :meth:`result` joins them.
    """

    def __init__(self, sink: FrameSink | None, chunk: int) -> None:
        self._sink = sink
        self._chunk = max(1, int(chunk))
        self._frames: list[np.ndarray] = []
        self._times: list[float] = []
        self._kept: list[np.ndarray] = []
        self.times: list[float] = []
        self.size: tuple[int, int] | None = None
        self.max_held = 0

    def add(self, t: float, rgb: np.ndarray) -> None:
        if self.size is None:
            self.size = (int(rgb.shape[0]), int(rgb.shape[1]))
        elif rgb.shape[:2] != self.size:
            import cv2

            rgb = cv2.resize(rgb, (self.size[1], self.size[0]))
        self._frames.append(rgb)
        self._times.append(t)
        self.times.append(t)
        self.max_held = max(self.max_held, len(self._frames))
        if len(self._frames) >= self._chunk:
            self.flush()

    def flush(self) -> None:
        if not self._frames:
            return
        arr = np.ascontiguousarray(np.stack(self._frames))
        if self._sink is None:
            self._kept.append(arr)
        else:
            self._sink(arr, np.array(self._times, dtype=np.float64))
        self._frames, self._times = [], []

    def result(self) -> np.ndarray:
        """All frames ``(N, H, W, 3)`` (without a sink), else an empty ``(0, 0, 0, 3)``."""
        self.flush()
        if not self._kept:
            return np.zeros((0, 0, 0, 3), np.uint8)
        return self._kept[0] if len(self._kept) == 1 else np.concatenate(self._kept)


def decode(
    path: str | os.PathLike,
    frame_rate: float = 5.0,
    decoder: str = "pyav",
    threads: int = 1,
    sink: FrameSink | None = None,
    chunk: int = FRAME_CHUNK,
    hwaccel: str | None = None,
) -> Decoded:
    """Decode `path` once: audio to 16 kHz mono and frames at `frame_rate` (module docstring).

    hwaccel: with the ``pyav`` decoder, an FFmpeg hardware device type (``"cuda"``: NVDEC)
    to decode the video on; None decodes on the CPU.  Hardware decoding never changes a
    verdict: where it fails to open, stops early or reports an error, the video is decoded
    again on the CPU and that outcome stands; so a `sink` gets the frames of a hardware
    decode only once it succeeded (they are held until then: memory grows with the video).

    With `sink`, the chosen frames are not returned but handed to ``sink(frames, times)`` in
    order, at most `chunk` at a time, as they decode: memory stays bounded for any length
    (``Decoded.frames`` is then empty; ``frame_times`` and ``size`` are filled). A caller
    must be ready to drop what it received when this raises.

    Raises :class:`MediaError` (with a reason a person understands) for every file that
    cannot give both audio and frames.
    """
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")
    path = Path(path)
    check_readable(path)
    if hwaccel and decoder == "pyav":
        dec = _decode_hw(path, frame_rate, max(1, int(threads)), sink, chunk, hwaccel)
    elif decoder == "pyav":
        dec = _decode_pyav(path, frame_rate, max(1, int(threads)), _FrameChunks(sink, chunk))
    else:
        dec = _decode_ffmpeg(path, frame_rate, max(1, int(threads)), _FrameChunks(sink, chunk))
    if dec.decoded_frames == 0:
        raise MediaError("decode_error", "no video frames could be decoded")
    if dec.audio.size == 0:
        raise MediaError("decode_error", "no audio samples could be decoded")
    return dec


#: Hardware decoding attempts that failed, by device type (logged once each).
HW_FAILURES: dict[str, int] = {}


def _decode_hw(path: Path, frame_rate: float, threads: int, sink, chunk: int, hw: str) -> Decoded:
    """:func:`_decode_pyav` on the hardware device `hw`, else again on the CPU."""
    got: list[tuple[np.ndarray, np.ndarray]] = []  # held for the sink until the decode succeeds
    hold = _FrameChunks(None if sink is None else lambda f, t: got.append((f, t)), chunk)
    try:
        dec = _decode_pyav(path, frame_rate, threads, hold, hwaccel=hw)
        if not dec.extra.get("error") and dec.decoded_frames > 0:
            for f, t in got:
                sink(f, t)
            return dec
        why = dec.extra.get("error") or "no frames"
    except Exception as e:  # noqa: BLE001  (any failure: decode on the CPU instead)
        why = _first_line(e, path)
    if not HW_FAILURES.get(hw):
        log.warning("%s: %s decoding failed (%s); decoding on the CPU", path, hw, why)
    HW_FAILURES[hw] = HW_FAILURES.get(hw, 0) + 1
    return _decode_pyav(path, frame_rate, threads, _FrameChunks(sink, chunk))


#: FFmpeg's formats of frames downloaded from a hardware decoder -> the CPU decoder's planar
#: format of the same samples (a lossless rearrangement: NV12 interleaves U and V).
_HW_PLANAR = {"nv12": "yuv420p"}


def _rgb24_converter(hwaccel: str | None):
    """``frame -> (H, W, 3) uint8`` RGB for one video's frames.

    One libswscale context serves every frame of the video, on this thread (``threads=1``).
    ``VideoFrame.to_ndarray(format="rgb24")`` builds a new context per frame with automatic
    slice threads (a thread pool per frame, oversubscribing a node whose cores all decode):
    the same bytes (tests/test_extract.py) in several times the time per frame, and the
    decode's rate falls most where many workers decode at once (``bench/decode.py`` prints
    both).

    Hardware frames (`hwaccel`) arrive downloaded as NV12.  H.264 decoding is bit-exact, so
    NVDEC's samples are the CPU decoder's; only swscale's NV12 -> RGB path differs from its
    YUV420P -> RGB one (up to 50 grey levels).  So NV12 is first rearranged into YUV420P
    (lossless) and converted as the CPU's frames are: the same pixels
    (tests/test_extract.py simulates it on the CPU; ``bench/decode.py --hwaccel`` checks
    parity on the GPU).
    """
    from av.video.reformatter import VideoReformatter

    reformat = VideoReformatter().reformat
    if not hwaccel:
        return lambda fr: reformat(fr, format="rgb24", threads=1).to_ndarray()
    planar = VideoReformatter().reformat

    def convert(fr):
        to = _HW_PLANAR.get(fr.format.name)
        if to is not None:
            fr = planar(fr, format=to, threads=1)
        return reformat(fr, format="rgb24", threads=1).to_ndarray()

    return convert


def _decode_pyav(
    path: Path, frame_rate: float, threads: int, out: _FrameChunks, hwaccel: str | None = None
) -> Decoded:
    import av

    kw = {}
    if hwaccel:
        from av.codec.hwaccel import HWAccel

        # the device's primary context: one per process, not a new CUDA context per video
        opts = {"primary_ctx": "1"} if hwaccel == "cuda" else None
        kw["hwaccel"] = HWAccel(device_type=hwaccel, allow_software_fallback=False, options=opts)
    try:
        container = av.open(str(path), metadata_errors="ignore", **kw)
    except Exception as e:
        if hwaccel:
            raise
        raise _open_failed(path, e) from e
    with container:
        vs = next((s for s in container.streams if s.type == "video"), None)
        as_ = next((s for s in container.streams if s.type == "audio"), None)
        if vs is None:
            raise MediaError("no_video", "no video stream (audio only)")
        if as_ is None:
            raise MediaError("no_audio", "no audio stream (video only)")
        vs.thread_type = "AUTO" if threads > 1 else "SLICE"
        vs.codec_context.thread_count = threads
        to_rgb = _rgb24_converter(hwaccel)
        sel = NearestFrameSelector(frame_rate)
        chunks = _AudioBuffer()
        first_v = first_a = None
        n_v = 0
        rate = int(as_.codec_context.sample_rate or 0)
        t_now = 0.0
        error = ""
        try:
            for packet in container.demux(vs, as_):
                for frame in packet.decode():
                    if frame.time is not None:
                        t_now = float(frame.time)
                    if packet.stream.type == "video":
                        t = float(frame.time) if frame.time is not None else n_v / frame_rate
                        if first_v is None:
                            first_v = t
                        n_v += 1
                        for tk, fr in sel.feed(t, frame):
                            out.add(tk, to_rgb(fr))
                    else:
                        if first_a is None and frame.time is not None:
                            first_a = float(frame.time)
                        rate = frame.sample_rate or rate
                        chunks.append(_pyav_audio_to_float(frame))
        except MediaError:
            raise
        except Exception as e:  # damaged data: keep what decoded (as the ffmpeg command does)
            error = f"decoding stopped at {t_now:.2f} s: {_first_line(e, path)}"
        for tk, fr in sel.finish():
            out.add(tk, to_rgb(fr))
        frames = out.result()
        times = np.array(out.times, dtype=np.float64)
        raw = chunks.result()
        if _exact_durations(container.format.name) and as_.duration and as_.time_base:
            raw = _trim(raw, float(as_.duration * as_.time_base), rate)
        channels = int(raw.shape[1])
        last = sel._prev[1] if sel._prev is not None else 0.0
    return Decoded(
        audio=to_mono_16k(raw, rate),
        frames=frames,
        frame_times=times,
        av_offset=(first_a - first_v) if (first_a is not None and first_v is not None) else 0.0,
        source_rate=rate,
        source_channels=channels,
        decoded_frames=n_v,
        last_frame_time=float(last),
        extra={"error": error} if error else {},
        size=out.size or (0, 0),
        max_held=out.max_held,
    )


_SHOWINFO = re.compile(rb"\bn:\s*(\d+)\s+pts:\s*(-?\d+)\s+pts_time:\s*(-?[0-9.eE+-]+)")


def _reader(fh, sink: bytearray) -> None:
    for block in iter(lambda: fh.read(1 << 16), b""):
        sink += block  # one growing buffer, not many blocks (see _AudioBuffer)


def _decode_ffmpeg(path: Path, frame_rate: float, threads: int, out: _FrameChunks) -> Decoded:
    import ffmpeg

    meta = _ffprobe(path)
    streams = meta.get("streams", [])
    vs = next((s for s in streams if s.get("codec_type") == "video"), None)
    as_ = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if vs is None:
        raise MediaError("no_video", "no video stream (audio only)")
    if as_ is None:
        raise MediaError("no_audio", "no audio stream (video only)")
    w, h = int(vs["width"]), int(vs["height"])
    rate, ch = int(as_.get("sample_rate", 0)), int(as_.get("channels", 0))
    if w <= 0 or h <= 0 or rate <= 0 or ch <= 0:
        raise MediaError("unreadable", "stream parameters missing (size, rate or channels)")
    num, _, den = str(vs.get("avg_frame_rate", "0/0")).partition("/")
    src_fps = float(num) / float(den) if float(den or 0) and float(num or 0) else 25.0
    a_read, a_write = os.pipe()
    inp = ffmpeg.input(str(path), copyts=None, threads=threads)
    v_out = (
        inp["v:0"]
        .filter("showinfo")
        .output("pipe:1", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
    )
    a_out = inp["a:0"].output(f"pipe:{a_write}", format="f32le", acodec="pcm_f32le", ac=ch, ar=rate)
    cmd = (
        ffmpeg.merge_outputs(v_out, a_out)
        .global_args("-hide_banner", "-nostdin", "-nostats", "-loglevel", "info")
        .compile()
    )
    proc = subprocess.Popen(  # noqa: S603 (argument list, no shell)
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(a_write,)
    )
    os.close(a_write)
    audio_blocks = bytearray()
    times: queue.Queue[float | None] = queue.Queue()
    err_tail: list[bytes] = []

    def read_stderr() -> None:
        for line in proc.stderr:
            m = _SHOWINFO.search(line)
            if m:
                times.put(float(m.group(3)))
            elif line.strip():
                err_tail.append(line.strip())
                del err_tail[:-5]
        times.put(None)

    with os.fdopen(a_read, "rb") as a_fh:
        t_audio = threading.Thread(target=_reader, args=(a_fh, audio_blocks), daemon=True)
        t_err = threading.Thread(target=read_stderr, daemon=True)
        t_audio.start()
        t_err.start()
        sel = NearestFrameSelector(frame_rate)
        size = w * h * 3
        n_v = 0
        first_v = None
        for buf in _iter_frames(proc.stdout, size):
            t = times.get()
            if t is None:  # no showinfo line for this frame: assume a constant rate
                t = n_v / src_fps
            if first_v is None:
                first_v = t
            n_v += 1
            for tk, b in sel.feed(t, buf):
                out.add(tk, np.frombuffer(b, np.uint8).reshape(h, w, 3))
        for tk, b in sel.finish():
            out.add(tk, np.frombuffer(b, np.uint8).reshape(h, w, 3))
        rc = proc.wait()
        t_audio.join()
        t_err.join()
    if rc != 0:
        msg = err_tail[-1].decode("utf-8", "replace") if err_tail else f"ffmpeg exit code {rc}"
        raise MediaError("decode_error", f"decode error: {msg[:200]}")
    raw = np.frombuffer(audio_blocks, dtype="<f4")
    raw = raw[: raw.size - raw.size % ch].reshape(-1, ch)
    fmt = meta.get("format", {}).get("format_name", "")
    if _exact_durations(fmt) and _float_or_none(as_.get("duration")) is not None:
        raw = _trim(raw, float(as_["duration"]), rate)
    frames = out.result()
    a_start = as_.get("start_time")
    v_start = vs.get("start_time")
    try:
        av_offset = float(a_start) - float(v_start)
    except (TypeError, ValueError):
        av_offset = 0.0
    return Decoded(
        audio=to_mono_16k(raw, rate),
        frames=frames,
        frame_times=np.array(out.times, dtype=np.float64),
        av_offset=av_offset,
        source_rate=rate,
        source_channels=ch,
        decoded_frames=n_v,
        last_frame_time=float(sel._prev[1]) if sel._prev is not None else 0.0,
        size=out.size or (0, 0),
        max_held=out.max_held,
    )


def _float_or_none(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _exact_durations(format_name: str) -> bool:
    """MP4/QuickTime store exact stream durations (edit lists); MPEG-PS etc. estimate them."""
    return "mp4" in format_name.split(",") or "mov" in format_name.split(",")


def _trim(raw: np.ndarray, duration_s: float, rate: int) -> np.ndarray:
    """Drop decoded samples past the stream's declared duration (codec end padding)."""
    n = int(round(duration_s * rate))
    return raw[:n] if 0 < n < len(raw) else raw


def _iter_frames(fh, size: int) -> Iterator[bytes]:
    while True:
        buf = fh.read(size)
        if len(buf) < size:
            return
        yield buf


def expected_frame_count(n_source: int, source_fps: float, frame_rate: float) -> int:
    """Frames taken from `n_source` evenly spaced source frames at `source_fps` (docstring rule)."""
    if n_source <= 0:
        return 0
    if frame_rate >= source_fps:
        return n_source
    last = (n_source - 1) / source_fps
    return int(math.floor((last + 0.5 / source_fps) * frame_rate + _EPS)) + 1
