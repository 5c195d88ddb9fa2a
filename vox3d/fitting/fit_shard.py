"""``OUT/fit/<shard>.h5``: the fit stage's per-frame output, its writer and its one reader.

:func:`write_fit_shard` writes it (:func:`vox3d.fitting.fit.fit_shard`, and
:func:`vox3d.fitting.multigpu.fit_shard_multi`); :class:`FitShard` reads it for the identities, the
accuracy tables, the export, the figures and the stage's tables.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vox3d import __version__
from vox3d.fitting.quality import REASONS
from vox3d.io import atomic_path, h5_attrs, h5_group, h5_new, h5_read, h5_str, h5_strings
from vox3d.params import CROP_SIZE, ParamLayout

#: Per-frame datasets of ``frames/`` (N first).
FRAME_FIELDS = (
    "video", "frame", "time", "box", "roi", "params", "score", "face_px", "n_faces",
    "margin", "yaw", "pitch", "roll", "blur", "landmark_nme", "keep", "reason",
)  # fmt: skip


#: The crops kept with ``fit.keep_crops``: JPEG (this quality, 4:2:0) of the 120x120 BGR
#: crop the regressor read, one per kept frame up to ``fit.crops_per_video`` a video
#: (:func:`crop_selection`).
CROP_JPEG_QUALITY = 95
CROP_FORMAT = f"jpeg q{CROP_JPEG_QUALITY} bgr"


class FitShardError(ValueError):
    """A file that is not a readable fit shard (the message names it)."""


def encode_crop(crop_bgr: np.ndarray) -> np.ndarray:
    """JPEG bytes ``(L,) uint8`` of one crop ``(S, S, 3) uint8`` BGR (deterministic: cv2's
    libjpeg, fixed quality, no metadata)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", crop_bgr, [cv2.IMWRITE_JPEG_QUALITY, CROP_JPEG_QUALITY])
    if not ok:
        raise ValueError(f"JPEG encoding of a {crop_bgr.shape} crop failed")
    return np.asarray(buf, np.uint8).reshape(-1)


def decode_crop(data: np.ndarray) -> np.ndarray:
    """One crop ``(S, S, 3) uint8`` BGR from its JPEG bytes (:func:`encode_crop`)."""
    import cv2

    img = cv2.imdecode(np.asarray(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("not a JPEG crop")
    return img


def crop_selection(video: np.ndarray, has_crop: np.ndarray, cap: int | None) -> np.ndarray:
    """Which frames' crops a fit shard stores (``fit.crops_per_video``): ``(N,) bool``.

    video: ``(N,)`` int, each frame's video index; has_crop: ``(N,)`` bool, the frames that
    have a crop (the kept ones); cap: at most this many crops a video (an int >= 1), None:
    every frame that has one.  Videos are independent; within a video the n frames with a
    crop are taken in row order (the fit writes frame order) and, when n > cap, those at
    positions ``floor(k (n - 1) / (cap - 1) + 1/2)`` for ``k = 0 .. cap - 1`` are chosen
    (evenly spaced, the first and the last included; ``cap`` = 1: the first), computed in
    integers, so the choice is deterministic.  A frame without a crop is never chosen.
    """
    has = np.asarray(has_crop, bool)
    video = np.asarray(video)
    if video.shape != has.shape:
        raise ValueError(f"video {video.shape} and has_crop {has.shape} differ in shape")
    if cap is None:
        return has.copy()
    if isinstance(cap, bool) or int(cap) != cap or cap < 1:
        raise ValueError(f"crops_per_video must be an integer >= 1 or None, got {cap!r}")
    cap = int(cap)
    out = np.zeros(has.shape, bool)
    rows = np.flatnonzero(has)
    order = np.argsort(video[rows], kind="stable")  # by video, row order within one
    rows, vids = rows[order], video[rows][order]
    cuts = np.flatnonzero(np.diff(vids) != 0) + 1
    for group in np.split(rows, cuts):
        n = len(group)
        if n <= cap:
            out[group] = True
        elif cap == 1:
            out[group[0]] = True
        else:
            k = np.arange(cap, dtype=np.int64)
            out[group[(2 * k * (n - 1) + (cap - 1)) // (2 * (cap - 1))]] = True
    return out


def write_fit_shard(
    out_path: str | os.PathLike,
    videos: list[dict],
    frames: dict[str, np.ndarray],
    rejects: list[dict[str, str]],
    stats: dict,
    fitter,
) -> None:
    """Write ``OUT/fit/<shard>.h5``.

    Groups / datasets:

    * ``videos/path``, ``videos/identity`` (utf-8), ``videos/n_frames``, ``videos/n_kept``;
    * ``frames/<field>`` for every field of :data:`FRAME_FIELDS` (N first; ``video`` indexes
      ``videos``, ``frame`` is the frame's index within its video, ``time`` seconds);
    * ``rejects/path``, ``rejects/reason`` (utf-8): videos with no usable frame;
    * with ``fit.keep_crops`` (a ``crop`` entry in `frames`: ``(N,) object``, JPEG bytes or
      None per frame): ``crops/row`` ``(M,) int64`` (the frame's row in ``frames/``),
      ``crops/offset`` ``(M + 1,) int64`` and ``crops/bytes`` (the M JPEGs end to end),
      attribute ``crop_format`` (:data:`CROP_FORMAT`).  Only the frames that
      :func:`crop_selection` picks under ``fit.crops_per_video`` (``cfg.crops_per_video``)
      are stored; a cap is recorded as attribute ``crops_per_video`` (int; absent: every
      kept frame's crop).  Read with :meth:`FitShard.crops`.

    Attributes: ``face_model``, ``n_id``, ``n_exp``, ``param_n_*`` (the layout),
    ``model_file``, ``thresholds`` (json), ``reason_names`` (json list, index = code),
    ``stats`` (json), ``precision``, ``version``.  No wall-clock time, so reruns of the same
    input and config on the same device give the same bytes.  ``fitter``: a
    :class:`vox3d.fitting.fit.Fitter`, or anything with its ``cfg``, ``layout`` and ``model_file``.
    Read back with :class:`FitShard`.
    """

    cfg = fitter.cfg
    frames = dict(frames)
    crops = frames.pop("crop", None)
    n_vid = len(videos)
    n_frames = np.bincount(frames["video"], minlength=n_vid)[:n_vid] if n_vid else np.zeros(0)
    n_kept = (
        np.bincount(frames["video"][frames["keep"]], minlength=n_vid)[:n_vid]
        if n_vid
        else np.zeros(0)
    )
    with atomic_path(out_path) as tmp, h5_new(tmp) as f:
        g = h5_group(f, "videos")
        h5_strings(g, "path", [str(v.get("video", "")) for v in videos])
        h5_strings(g, "identity", [str(v.get("identity", "")) for v in videos])
        g.create_dataset("n_frames", data=np.asarray(n_frames, np.int64), track_times=False)
        g.create_dataset("n_kept", data=np.asarray(n_kept, np.int64), track_times=False)
        g = h5_group(f, "frames")
        for k, v in frames.items():
            g.create_dataset(k, data=v, track_times=False)
        g = h5_group(f, "rejects")
        h5_strings(g, "path", [r["path"] for r in rejects])
        h5_strings(g, "reason", [r["reason"] for r in rejects])
        if crops is not None:
            cap = cfg.crops_per_video
            has = np.fromiter((c is not None for c in crops), bool, len(crops))
            rows = np.flatnonzero(crop_selection(frames["video"], has, cap)).astype(np.int64)
            parts = [np.asarray(crops[i], np.uint8) for i in rows]
            offset = np.concatenate([[0], np.cumsum([len(b) for b in parts])]).astype(np.int64)
            g = h5_group(f, "crops")
            g.create_dataset("row", data=rows, track_times=False)
            g.create_dataset("offset", data=offset, track_times=False)
            data = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
            g.create_dataset("bytes", data=data, track_times=False)
            f.attrs["crop_format"] = CROP_FORMAT
            if cap is not None:
                f.attrs["crops_per_video"] = np.int64(cap)
        f.attrs["face_model"] = cfg.face_model
        f.attrs["n_id"] = fitter.layout.n_id
        f.attrs["n_exp"] = fitter.layout.n_exp
        for k, v in fitter.layout.as_attrs().items():
            f.attrs[k] = v
        f.attrs["model_file"] = Path(fitter.model_file).name
        f.attrs["thresholds"] = json.dumps(cfg.thresholds.as_dict(), sort_keys=True)
        f.attrs["reason_names"] = json.dumps(list(REASONS))
        f.attrs["stats"] = json.dumps(stats, sort_keys=True)
        f.attrs["precision"] = cfg.precision
        f.attrs["landmarks"] = cfg.landmarks
        f.attrs["version"] = __version__


@dataclass(frozen=True)
class FitShard:
    """A fit shard as :func:`write_fit_shard` wrote it.

    video_paths, video_identities: per video; n_frames, n_kept: ``(V,)`` int64 per video;
    frames: the requested ``frames/`` datasets (``{field: (N, ...) array}``); rejects:
    ``(path, reason)`` of videos with no usable frame; layout: the 62-style parameter
    layout (:class:`vox3d.params.ParamLayout`); stats: the shard's stats dict; attrs: every
    attribute (str decoded)."""

    path: str
    video_paths: tuple[str, ...]
    video_identities: tuple[str, ...]
    n_frames: np.ndarray
    n_kept: np.ndarray
    frames: dict
    rejects: tuple[tuple[str, str], ...]
    layout: ParamLayout
    stats: dict
    attrs: dict

    @classmethod
    def read(cls, path: str | os.PathLike, fields=None) -> FitShard:
        """Read the shard with the ``frames/`` datasets of ``fields`` (None: every one the
        file has; ``landmark_nme`` only with ``fit.landmarks``)."""
        with h5_read(path, FitShardError) as f:
            try:
                attrs = h5_attrs(f)
                names = sorted(f["frames"]) if fields is None else fields
                frames = {k: f[f"frames/{k}"][()] for k in names}
                out = cls(
                    str(path),
                    tuple(h5_str(x) for x in f["videos/path"][()]),
                    tuple(h5_str(x) for x in f["videos/identity"][()]),
                    np.asarray(f["videos/n_frames"][()], np.int64),
                    np.asarray(f["videos/n_kept"][()], np.int64),
                    frames,
                    tuple(
                        (h5_str(p), h5_str(r))
                        for p, r in zip(f["rejects/path"][()], f["rejects/reason"][()], strict=True)
                    ),
                    ParamLayout.from_attrs(f.attrs),
                    json.loads(attrs.get("stats", "{}")),
                    attrs,
                )
            except (KeyError, ValueError) as e:
                raise FitShardError(f"{path}: not a vox3d fit shard ({e})") from e
        return out

    @property
    def has_crops(self) -> bool:
        """Whether the shard kept its crops (``fit.keep_crops``)."""
        return "crop_format" in self.attrs

    @property
    def crops_per_video(self) -> int | None:
        """The cap its crops were chosen under (``fit.crops_per_video``, :func:`crop_selection`);
        None: every kept frame's crop was stored (or none, without :attr:`has_crops`)."""
        cap = self.attrs.get("crops_per_video")
        return None if cap is None else int(cap)

    def crops(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The kept crops: ``(rows (M,) int64, images (M, 120, 120, 3) uint8 BGR)``, rows
        indexing ``frames/``; ``rows`` given: only those frames (each must have a crop).
        A shard written without ``fit.keep_crops`` fails with the file named."""
        if not self.has_crops:
            raise FitShardError(
                f"{self.path}: no crops in this fit shard (fit it again with fit.keep_crops: "
                "true, or train.mode unsupervised / both, which keep them)"
            )
        if self.attrs["crop_format"] != CROP_FORMAT:
            raise FitShardError(f"{self.path}: crop format {self.attrs['crop_format']!r}, "
                                f"expected {CROP_FORMAT!r}")  # fmt: skip
        with h5_read(self.path, FitShardError) as f:
            try:
                have = np.asarray(f["crops/row"][()], np.int64)
                offset = np.asarray(f["crops/offset"][()], np.int64)
                want = have if rows is None else np.asarray(rows, np.int64)
                pos = np.searchsorted(have, want)
                if len(want) and (pos.max() >= len(have) or np.any(have[pos] != want)):
                    raise FitShardError(f"{self.path}: some requested frames have no crop")
                data = f["crops/bytes"][()]
                images = [decode_crop(data[offset[p] : offset[p + 1]]) for p in pos]
            except (KeyError, ValueError) as e:
                raise FitShardError(f"{self.path}: bad crops group ({e})") from e
        out = np.stack(images) if images else np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)
        return want, out

    @staticmethod
    def crop_storage(path: str | os.PathLike) -> tuple[int, int]:
        """``(crops, JPEG bytes)`` that the shard at `path` keeps, read without decoding
        anything; ``(0, 0)`` for a shard written without ``fit.keep_crops``."""
        with h5_read(path, FitShardError) as f:
            if "crops" not in f:
                return 0, 0
            try:
                return int(f["crops/row"].shape[0]), int(f["crops/bytes"].shape[0])
            except KeyError as e:
                raise FitShardError(f"{path}: bad crops group ({e})") from e
