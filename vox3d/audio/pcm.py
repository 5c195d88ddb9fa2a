"""Audio to the features' input: 16 kHz mono 16-bit PCM, from arrays or files.

The first step of the Cross-Modal Perceptionist (CMP) feature pipeline (module doc of
:mod:`vox3d.audio.fbank`): the input is 16 kHz mono 16-bit PCM (``int16``, not scaled to +-1).
Float audio is quantised as ``clip(rint(x * 32768))`` (what ffmpeg's float -> s16
conversion does); other rates are resampled with soxr and channels averaged
(:func:`condition`).  :func:`load_audio` decodes any audio or video file (soundfile for
WAV/FLAC, else the ffmpeg program or PyAV); :class:`BadAudio` is the one error of the
feature stage, its message the reason shown in rejects.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

#: Sample rate of everything here (Hz).
SAMPLE_RATE = 16000
#: Full scale of 16-bit PCM.
PCM_SCALE = 32768.0


class BadAudio(ValueError):
    """Audio that cannot give features; the message is the reason shown in rejects."""


# --------------------------------------------------------------------------------------
# Audio conditioning
# --------------------------------------------------------------------------------------
def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> int16 ``clip(rint(x * 32768))``; int16 passes through.

    audio: (S,) float or int16.  Returns (S,) int16.
    """
    a = np.asarray(audio)
    if a.dtype == np.int16:
        return a
    if np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"expected float or int16 audio, got {a.dtype}")
    # float32 * 2**15 is exact, so float32 input needs no float64 copy
    work = a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)
    q = np.rint(work * work.dtype.type(PCM_SCALE))
    return np.clip(q, -32768, 32767, out=q).astype(np.int16)


def resample(audio: np.ndarray, sr: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Resample float audio (S,) from `sr` to `target` Hz with soxr (quality 'HQ')."""
    if sr == target:
        return audio
    import soxr

    return soxr.resample(np.asarray(audio, np.float64), sr, target, quality="HQ")


def condition(audio: np.ndarray, sr: int) -> np.ndarray:
    """Any audio -> 16 kHz mono int16, or :class:`BadAudio`.

    audio: (S,) or (S, C) float in [-1, 1] or int16 (channels last); sr in Hz.  Channels
    are averaged; other rates are resampled with soxr; floats are quantised like ffmpeg.
    """
    a = np.asarray(audio)
    if a.ndim == 2:
        if a.shape[1] == 0:
            raise BadAudio("no audio channels")
        a = a.astype(np.float64) / (PCM_SCALE if a.dtype == np.int16 else 1.0)
        a = a.mean(axis=1)
    elif a.ndim != 1:
        raise BadAudio(f"audio must be (samples,) or (samples, channels), got shape {a.shape}")
    if a.size == 0:
        raise BadAudio("empty audio (0 samples)")
    if a.dtype != np.int16 and not np.all(np.isfinite(a)):
        raise BadAudio("audio has non-finite samples (NaN or Inf)")
    if sr <= 0:
        raise BadAudio(f"invalid sample rate {sr}")
    if sr != SAMPLE_RATE:
        if a.dtype == np.int16:
            a = a.astype(np.float64) / PCM_SCALE
        a = resample(a, sr)
    return to_pcm16(a)


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------
SOUNDFILE_EXTS = {".wav", ".flac", ".ogg", ".aiff", ".aif", ".au"}


def load_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode any audio or video file to ``(samples, sample_rate)``.

    16-bit mono 16 kHz WAV/FLAC is returned as int16 exactly.  Other WAV/FLAC are returned
    as float64 (S, C) at their own rate.  Anything else (video, other codecs) is decoded by
    the ffmpeg program to 16 kHz mono s16 (how the reference WAVs were made; ``-ac 1 -ar
    16000``), or by PyAV when ffmpeg is not installed (float, own rate; channels averaged
    and resampled later).  Raises :class:`BadAudio` naming the file and the reason.
    """
    p = Path(path)
    if not p.is_file():
        raise BadAudio(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise BadAudio(f"{p}: empty file (0 bytes)")
    if p.suffix.lower() in SOUNDFILE_EXTS:
        import soundfile as sf

        try:
            info = sf.info(str(p))
            if info.channels == 1 and info.subtype == "PCM_16":
                data, sr = sf.read(str(p), dtype="int16")
                return data, int(sr)
            data, sr = sf.read(str(p), dtype="float64", always_2d=True)
            return data, int(sr)
        except (RuntimeError, sf.LibsndfileError) as e:
            if p.suffix.lower() in (".wav", ".flac"):
                raise BadAudio(f"{p}: cannot read audio ({e})") from e
    if shutil.which("ffmpeg"):
        return _load_ffmpeg(p), SAMPLE_RATE
    return _load_pyav(p)


def _load_ffmpeg(p: Path) -> np.ndarray:
    import ffmpeg

    try:
        out, _ = (
            ffmpeg.input(str(p))
            .output("pipe:", format="s16le", acodec="pcm_s16le", ac=1, ar=SAMPLE_RATE, vn=None)
            .global_args("-nostdin", "-v", "error")
            .run(capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as e:
        msg = (e.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise BadAudio(f"{p}: ffmpeg cannot decode audio ({msg[-1] if msg else e})") from e
    pcm = np.frombuffer(out, dtype="<i2").astype(np.int16)
    if pcm.size == 0:
        raise BadAudio(f"{p}: no audio stream or no audio samples")
    return pcm


def _load_pyav(p: Path) -> tuple[np.ndarray, int]:
    import av

    try:
        with av.open(str(p)) as c:
            if not c.streams.audio:
                raise BadAudio(f"{p}: no audio stream")
            s = c.streams.audio[0]
            chunks = []
            rate = s.rate
            for fr in c.decode(s):
                a = fr.to_ndarray()
                if fr.format.is_planar:
                    a = a.T
                else:
                    a = a.reshape(-1, len(fr.layout.channels))
                if np.issubdtype(a.dtype, np.integer):
                    a = a.astype(np.float64) / float(np.iinfo(a.dtype).max + 1)
                chunks.append(a.astype(np.float64))
                rate = fr.sample_rate
    except av.error.FFmpegError as e:
        raise BadAudio(f"{p}: cannot decode audio ({e})") from e
    if not chunks:
        raise BadAudio(f"{p}: no audio samples")
    return np.concatenate(chunks, axis=0), int(rate)


__all__ = [
    "PCM_SCALE",
    "SAMPLE_RATE",
    "SOUNDFILE_EXTS",
    "BadAudio",
    "condition",
    "load_audio",
    "resample",
    "to_pcm16",
]
