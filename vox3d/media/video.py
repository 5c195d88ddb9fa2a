"""Decode talking-face videos: 16 kHz mono audio and frames at a fixed rate.

Probing (and :class:`~vox3d.media.video_probe.MediaError`) is :mod:`vox3d.media.video_probe`; the frame
rule below and the hand-over of the chosen frames to a ``sink`` are :mod:`vox3d.media.video_frames`.

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
import os
import queue
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vox3d.config import default
from vox3d.media.video_frames import FRAME_CHUNK, FrameSink, NearestFrameSelector, _FrameChunks
from vox3d.media.video_probe import MediaError, _ffprobe, _first_line, _open_failed, check_readable

log = logging.getLogger(__name__)

#: Sample rate of all extracted audio, Hz.
SAMPLE_RATE = 16000
#: Decoders implemented here (config ``extract.decoder``).
DECODERS = ("pyav", "ffmpeg")
#: A video whose decoded frames span less than this fraction of its probed duration is
#: taken as truncated.
MIN_DECODED_FRACTION = 0.9


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


def decode(
    path: str | os.PathLike,
    frame_rate: float = default("extract.frame_rate"),
    decoder: str = default("extract.decoder"),
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
