"""Probe videos: what a file holds (streams, codecs, size, duration), and why it is unusable.

Two probers give the same fields (see ``tests/test_manifest.py``): :func:`probe`, in-process
through PyAV, and :func:`probe_ffprobe`, the ``ffprobe`` command through ffmpeg-python.
Neither raises for bad media: :attr:`ProbeInfo.error` says why in a sentence a person
understands (:class:`MediaError`, also raised by the decoders of :mod:`vox3d.media.video`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: File name extensions taken as videos (compared case-insensitively).
VIDEO_EXTENSIONS = (".mp4", ".mpg", ".avi", ".mkv", ".webm")


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
