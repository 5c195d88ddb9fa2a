"""Which decoded frames a decode takes, and how it hands them over (:mod:`vox3d.media.video`).

The rule (both decoders, :mod:`vox3d.media.video`'s docstring): time ``t`` is measured from the
first decoded video frame; each target ``t_k = k / frame_rate`` takes the decoded frame
whose timestamp is nearest (a tie takes the earlier frame), a source frame at most once,
and targets later than the last frame by more than half a source frame interval are
dropped (:class:`NearestFrameSelector`, :func:`select_frame_indices`,
:func:`expected_frame_count`). The chosen frames reach a caller in chunks of at most
:data:`FRAME_CHUNK` frames (``_FrameChunks``, the ``sink`` of :func:`vox3d.media.video.decode`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

#: Chosen frames held at most by :func:`vox3d.media.video.decode` before it hands them to its ``sink``
#: (bounded memory for any video length: 32 frames of 224x224 RGB = 4.8 MB).
FRAME_CHUNK = 32
#: ``sink(frames (n, H, W, 3) uint8 RGB, times (n,) float64 s)``, n <= the chunk size.
FrameSink = Callable[[np.ndarray, np.ndarray], None]

_EPS = 1e-9


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


def expected_frame_count(n_source: int, source_fps: float, frame_rate: float) -> int:
    """Frames taken from `n_source` evenly spaced source frames at `source_fps` (docstring rule)."""
    if n_source <= 0:
        return 0
    if frame_rate >= source_fps:
        return n_source
    last = (n_source - 1) / source_fps
    return int(math.floor((last + 0.5 / source_fps) * frame_rate + _EPS)) + 1


# ---------------------------------------------------------------------------------------
# hand-over (the decode's sink)
# ---------------------------------------------------------------------------------------


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
