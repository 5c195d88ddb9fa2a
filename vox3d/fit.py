"""Fit stage: every sampled frame of a shard -> face box, ROI, 3DMM parameters, quality.

Per shard (``OUT/extract/<shard>.h5`` -> ``OUT/fit/<shard>.h5``):

1. a background thread reads (decodes) the next videos' frames while the current chunk is
   on the detector / regressor (:class:`_Prefetcher`);
2. frames of several videos are gathered into chunks of ``batch_size`` frames; FaceBoxes
   runs on the chunk (:meth:`FaceBoxes.detect_batch`), one face per frame is chosen
   (:func:`vox3d.quality.choose_face`), cropped with the 3DDFA-V2 ROI policy and the crops
   regressed in one batch (:class:`vox3d.regressor.Regressor`);
3. quality fields and the keep / reason code (:mod:`vox3d.quality`) are computed and all
   written into one HDF5 file (layout in :func:`write_fit_shard`).

Face model from config: ``ict`` (default) uses the ICT regressor committed in
``vox3d/data/ict_regressor.pth`` (layout ``ict_layout(n_id, n_exp)``, see
:mod:`vox3d.ict_regressor`); ``bfm`` uses 3DDFA-V2's mb05 checkpoint (62 parameters).
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vox3d.params import TDDFA_LAYOUT, ParamLayout, ict_layout, pose_to_srt, rotation_to_euler
from vox3d.quality import REASONS, Thresholds, choose_face, classify, count_reasons

STAGE = "fit"
ICT_REGRESSOR = Path(__file__).resolve().parent / "data" / "ict_regressor.pth"
ICT_REGRESSOR_JSON = ICT_REGRESSOR.with_suffix(".json")


# --------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class FitConfig:
    """Everything the fit stage needs, from config.yaml's ``face_model``, ``fit`` and
    ``assets`` sections (see :meth:`from_config`)."""

    face_model: str = "ict"  # ict | bfm
    n_id: int = 40
    n_exp: int = 10
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 32
    precision: str = "fp32"  # fp32 | fp16 | bf16
    thresholds: Thresholds = field(default_factory=Thresholds)
    landmarks: str = "none"  # none | fan
    fan_weights: str | None = None
    faceboxes: str | None = None
    tddfa_weights: str | None = None
    tddfa_param_mean_std: str | None = None
    ict_regressor: str | None = None  # default: vox3d/data/ict_regressor.pth
    ict_facekit: str | None = None  # ICT-FaceKit archive (fit.landmarks: fan only)
    bfm: str | None = None  # bfm_noneck_v3.pkl (fit.landmarks: fan with face_model bfm)
    threads: int = 1

    @classmethod
    def from_config(cls, config: dict, threads: int = 1) -> FitConfig:
        """Build from the whole workflow config dict (missing keys -> defaults)."""
        fm = config.get("face_model", {}) or {}
        fit = config.get("fit", {}) or {}
        assets = config.get("assets", {}) or {}
        name = fm.get("name", "ict")
        n_id, n_exp = (40, 10) if name == "bfm" else (fm.get("n_id", 40), fm.get("n_exp", 10))
        return cls(
            face_model=name,
            n_id=int(n_id),
            n_exp=int(n_exp),
            device=fit.get("device", "auto"),
            batch_size=int(fit.get("batch_size", 32)),
            precision=fit.get("precision", "fp32"),
            thresholds=Thresholds.from_config(fit),
            landmarks=fit.get("landmarks", "none"),
            fan_weights=fit.get("fan_weights"),
            faceboxes=assets.get("faceboxes"),
            tddfa_weights=assets.get("tddfa_weights"),
            tddfa_param_mean_std=assets.get("tddfa_param_mean_std"),
            ict_regressor=fit.get("ict_regressor"),
            ict_facekit=assets.get("ict_facekit"),
            bfm=assets.get("bfm"),
            threads=int(threads),
        )

    @property
    def layout(self) -> ParamLayout:
        return TDDFA_LAYOUT if self.face_model == "bfm" else ict_layout(self.n_id, self.n_exp)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is an
    error naming the setting."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("fit.device is 'cuda' but torch sees no CUDA device; use auto or cpu")
    return device


# --------------------------------------------------------------------------------------
# models


class Fitter:
    """Detector + regressor of one face model, ready to run on chunks of frames."""

    def __init__(self, cfg: FitConfig) -> None:
        import torch

        from vox3d import paths
        from vox3d.detector import FaceBoxes
        from vox3d.regressor import Regressor

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if self.device == "cpu":
            torch.set_num_threads(max(1, cfg.threads))
        self.layout = cfg.layout
        self.detector = FaceBoxes(cfg.faceboxes or paths.FACEBOXES_WEIGHTS, device=self.device)
        if cfg.face_model == "bfm":
            weights = cfg.tddfa_weights or paths.MB05_WEIGHTS
            mean_std = cfg.tddfa_param_mean_std or paths.PARAM_MEAN_STD
            widen = 1.0 if "mb1" in Path(weights).name else 0.5
            self.model_file = str(weights)
            self.regressor = Regressor(
                weights, mean_std, widen=widen, num_params=self.layout.n,
                device=self.device, precision=cfg.precision,
            )  # fmt: skip
        else:
            from vox3d.ict_regressor import make_regressor

            self.model_file = str(cfg.ict_regressor or ICT_REGRESSOR)
            self.regressor = make_regressor(
                self.model_file, cfg.n_id, cfg.n_exp, self.device, cfg.precision
            )
        self.landmarker = None
        if cfg.landmarks == "fan":
            from vox3d.face_model import load_face_model
            from vox3d.landmarks import FanLandmarker

            fm = load_face_model(
                cfg.face_model,
                path=cfg.ict_facekit if cfg.face_model == "ict" else cfg.bfm,
                subset="head",
                n_id=self.layout.n_id,
                n_exp=self.layout.n_exp,
            )
            self.landmarker = FanLandmarker(cfg.fan_weights, self.device, fm, self.layout)

    def fit_frames(self, frames_rgb) -> dict[str, np.ndarray]:
        """Detect, choose, crop, regress and measure a chunk of frames.

        frames_rgb: a sequence of (H, W, 3) uint8 RGB frames (sizes may differ) or one
        (N, H, W, 3) array.  Returns per-frame arrays (N first): ``box`` (N, 5) float32,
        ``roi`` (N, 4), ``params`` (N, P) float32 (NaN without a face), ``score``,
        ``face_px``, ``n_faces``, ``margin``, ``yaw``/``pitch``/``roll`` (deg), ``blur``,
        optionally ``landmark_nme``; then ``reason`` (uint8) and ``keep``.
        """
        from vox3d.crop import crop_image, roi_box_from_bbox
        from vox3d.quality import laplacian_variance

        bgr = [np.ascontiguousarray(np.asarray(f)[..., ::-1]) for f in frames_rgb]
        n = len(bgr)
        dets: list[np.ndarray] = []
        bs = max(1, self.cfg.batch_size)
        for s in range(0, n, bs):
            dets += [
                np.asarray(d, np.float64).reshape(-1, 5)
                for d in self.detector.detect_batch(bgr[s : s + bs])
            ]
        out = _empty_fields(n, self.layout.n)
        th = self.cfg.thresholds
        idx, crops = [], []
        for i, d in enumerate(dets):
            ch = choose_face(d, th.min_score)
            out["n_faces"][i] = ch.n_faces
            out["margin"][i] = ch.margin
            if ch.index < 0:
                continue
            box = d[ch.index]
            roi = np.asarray(roi_box_from_bbox(box[:4]), np.float64)
            out["box"][i] = box
            out["roi"][i] = roi
            out["score"][i] = box[4]
            out["face_px"][i] = min(box[2] - box[0], box[3] - box[1])
            idx.append(i)
            crops.append(crop_image(bgr[i], roi))
        if idx:
            crops_a = np.stack(crops)
            params = np.concatenate(
                [self.regressor.predict(crops_a[s : s + bs]) for s in range(0, len(idx), bs)]
            )
            ii = np.asarray(idx)
            out["params"][ii] = params
            out["blur"][ii] = laplacian_variance(crops_a)
            angles = np.array([pose_angles_deg(p) for p in params])
            out["yaw"][ii], out["pitch"][ii], out["roll"][ii] = angles.T
            if self.landmarker is not None:
                out["landmark_nme"][ii] = self.landmarker.nme(
                    [np.asarray(frames_rgb[i]) for i in idx], out["box"][ii], out["roi"][ii], params
                )
        out["reason"] = classify(
            th,
            ~np.isnan(out["score"]),
            out["score"],
            out["face_px"],
            out["n_faces"],
            out["margin"],
            out["yaw"],
            out["blur"],
            out["landmark_nme"] if self.landmarker is not None else None,
        )
        out["keep"] = out["reason"] == 0
        if self.landmarker is None:
            del out["landmark_nme"]
        return out


def pose_angles_deg(params: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of one parameter vector (3DDFA-V2 convention)."""
    P = np.asarray(params[:12], np.float64).reshape(3, 4)
    if not np.all(np.isfinite(P)) or np.linalg.norm(P[0, :3]) == 0:
        return (np.nan, np.nan, np.nan)
    _, R, _ = pose_to_srt(P)
    return tuple(float(np.degrees(a)) for a in rotation_to_euler(R))


def _empty_fields(n: int, n_params: int) -> dict[str, np.ndarray]:
    nan32 = np.float32(np.nan)
    return {
        "box": np.full((n, 5), nan32, np.float32),
        "roi": np.full((n, 4), nan32, np.float32),
        "params": np.full((n, n_params), nan32, np.float32),
        "score": np.full(n, nan32, np.float32),
        "face_px": np.full(n, nan32, np.float32),
        "n_faces": np.zeros(n, np.int16),
        "margin": np.zeros(n, np.float32),
        "yaw": np.full(n, nan32, np.float32),
        "pitch": np.full(n, nan32, np.float32),
        "roll": np.full(n, nan32, np.float32),
        "blur": np.full(n, nan32, np.float32),
        "landmark_nme": np.full(n, nan32, np.float32),
    }


# --------------------------------------------------------------------------------------
# reading ahead


class _Prefetcher:
    """Reads videos' frames in a background thread, `depth` videos ahead.

    Yields ``(video_index, frames (N,H,W,3) uint8 RGB, times (N,) float64 s, error)``;
    a video whose frames cannot be read yields empty arrays and the error text.
    """

    def __init__(self, shard, depth: int = 2) -> None:
        self._shard = shard
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        for i in range(len(self._shard.videos)):
            try:
                frames, times = self._shard.frames(i)
                item = (i, np.asarray(frames), np.asarray(times, np.float64), None)
            except Exception as e:  # a broken video must not stop the shard
                item = (i, None, None, f"{type(e).__name__}: {e}")
            self._q.put(item)
        self._q.put(None)

    def __iter__(self) -> Iterator[tuple]:
        while True:
            item = self._q.get()
            if item is None:
                return
            yield item


# --------------------------------------------------------------------------------------
# the shard


FRAME_FIELDS = (
    "video", "frame", "time", "box", "roi", "params", "score", "face_px", "n_faces",
    "margin", "yaw", "pitch", "roll", "blur", "landmark_nme", "keep", "reason",
)  # fmt: skip


def fit_shard(
    extract_path: str | os.PathLike,
    out_path: str | os.PathLike,
    cfg: FitConfig,
    fitter: Fitter | None = None,
    progress: bool = True,
) -> dict:
    """Fit every frame of one extracted shard and write ``out_path`` (atomically).

    Returns the shard's stats: ``videos``, ``videos_rejected``, ``frames``, ``kept`` and a
    count per reason (see :data:`vox3d.quality.REASONS`).
    """

    from vox3d.extract import ExtractShard

    fitter = fitter or Fitter(cfg)
    shard = ExtractShard(extract_path)
    try:
        videos = list(shard.videos)
        frames_out, read_errors = _run_shard(shard, videos, fitter, cfg, extract_path, progress)
    finally:
        shard.close()
    rejects = video_rejects(videos, frames_out, read_errors)
    stats = {
        "videos": len(videos),
        "videos_rejected": len(rejects),
        "frames": int(len(frames_out["video"])),
        "kept": int(frames_out["keep"].sum()),
        **count_reasons(frames_out["reason"]),
    }
    write_fit_shard(out_path, videos, frames_out, rejects, stats, fitter)
    return stats


def _run_shard(shard, videos, fitter, cfg, extract_path, progress):
    from tqdm import tqdm

    chunks: dict[str, list[np.ndarray]] = {k: [] for k in FRAME_FIELDS}
    read_errors: dict[int, str] = {}
    pending: list[tuple[int, np.ndarray, np.ndarray]] = []
    n_pending = 0
    bs = max(1, cfg.batch_size)

    def flush() -> None:
        nonlocal pending, n_pending
        if not pending:
            return
        res = fitter.fit_frames([fr for p in pending for fr in p[1]])
        for k, v in res.items():
            chunks[k].append(v)
        chunks["video"].append(
            np.concatenate([np.full(len(p[1]), p[0], np.int32) for p in pending])
        )
        chunks["frame"].append(
            np.concatenate([np.arange(len(p[1]), dtype=np.int32) for p in pending])
        )
        chunks["time"].append(np.concatenate([p[2] for p in pending]))
        pending, n_pending = [], 0

    bar = tqdm(
        total=len(videos), desc=f"fit {Path(extract_path).stem}", unit="video",
        disable=not progress, file=sys.stderr,
    )  # fmt: skip
    for vi, frames, times, err in _Prefetcher(shard):
        if err is not None:
            read_errors[vi] = err
        elif frames.shape[0] > 0:
            pending.append((vi, frames, times))
            n_pending += frames.shape[0]
            if n_pending >= bs:
                flush()
        bar.update(1)
    flush()
    bar.close()

    frames_out = _concat_fields(chunks, fitter.layout.n, fitter.landmarker is not None)
    return frames_out, read_errors


def _concat_fields(chunks: dict, n_params: int, with_landmarks: bool) -> dict[str, np.ndarray]:
    out = {}
    empty = _empty_fields(0, n_params)
    empty.update(
        video=np.zeros(0, np.int32), frame=np.zeros(0, np.int32), time=np.zeros(0, np.float64),
        keep=np.zeros(0, bool), reason=np.zeros(0, np.uint8),
    )  # fmt: skip
    for k in FRAME_FIELDS:
        if k == "landmark_nme" and not with_landmarks:
            continue
        out[k] = np.concatenate(chunks[k]) if chunks[k] else empty[k]
    return out


def video_rejects(
    videos: list[dict], frames: dict[str, np.ndarray], read_errors: dict[int, str]
) -> list[dict[str, str]]:
    """One rejects row per video with no kept frame, the reason naming the counts."""
    rows = []
    for vi, v in enumerate(videos):
        path = str(v.get("video", v.get("path", vi)))
        if vi in read_errors:
            rows.append(
                {"path": path, "stage": STAGE, "reason": f"frames unreadable ({read_errors[vi]})"}
            )
            continue
        sel = frames["video"] == vi
        n = int(sel.sum())
        if n == 0:
            rows.append({"path": path, "stage": STAGE, "reason": "no frames to fit"})
            continue
        if frames["keep"][sel].any():
            continue
        counts = count_reasons(frames["reason"][sel])
        parts = ", ".join(
            f"{c} {r.replace('_', ' ')}" for r, c in counts.items() if c and r != "ok"
        )
        rows.append(
            {
                "path": path,
                "stage": STAGE,
                "reason": f"no usable frame: {n} frames rejected ({parts})",
            }
        )
    return rows


def write_fit_shard(
    out_path: str | os.PathLike,
    videos: list[dict],
    frames: dict[str, np.ndarray],
    rejects: list[dict[str, str]],
    stats: dict,
    fitter: Fitter,
) -> None:
    """Write ``OUT/fit/<shard>.h5``.

    Groups / datasets:

    * ``videos/path``, ``videos/identity`` (utf-8), ``videos/n_frames``, ``videos/n_kept``;
    * ``frames/<field>`` for every field of :data:`FRAME_FIELDS` (N first; ``video`` indexes
      ``videos``, ``frame`` is the frame's index within its video, ``time`` seconds);
    * ``rejects/path``, ``rejects/reason`` (utf-8): videos with no usable frame.

    Attributes: ``face_model``, ``n_id``, ``n_exp``, ``param_n_*`` (the layout),
    ``model_file``, ``thresholds`` (json), ``reason_names`` (json list, index = code),
    ``stats`` (json), ``precision``, ``version``.  No wall-clock time, so reruns of the same
    input and config on the same device give the same bytes.
    """

    from vox3d import __version__
    from vox3d.io import atomic_path, h5_group, h5_new, h5_strings

    cfg = fitter.cfg
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


# --------------------------------------------------------------------------------------
# deterministic HDF5 (no object timestamps)


# --------------------------------------------------------------------------------------
# aggregate tables

STATS_COLUMNS = ("shard", "videos", "videos_rejected", "frames", "kept", *REASONS[1:])


def write_fit_tables(
    shard_paths: list[str | os.PathLike],
    identities_path: str | os.PathLike | None,
    rejects_out: str | os.PathLike,
    stats_out: str | os.PathLike,
) -> None:
    """``OUT/fit/rejects.tsv`` (every shard's video rejects + identities without a usable
    frame) and ``OUT/fit/stats.tsv`` (one row per shard and a ``total`` row, frames counted
    by reason)."""
    import h5py

    from vox3d.io import write_rejects, write_tsv

    rows, stats = [], []
    for sp in sorted(str(p) for p in shard_paths):
        with h5py.File(sp, "r") as f:
            paths = [s.decode() if isinstance(s, bytes) else s for s in f["rejects/path"][()]]
            reasons = [s.decode() if isinstance(s, bytes) else s for s in f["rejects/reason"][()]]
            st = json.loads(f.attrs["stats"])
        rows += [
            {"path": p, "stage": STAGE, "reason": r} for p, r in zip(paths, reasons, strict=True)
        ]
        stats.append({"shard": Path(sp).stem, **st})
    if identities_path is not None:
        from vox3d.identities import read_identity_rejects

        rows += read_identity_rejects(identities_path)
    total = {"shard": "total"}
    for c in STATS_COLUMNS[1:]:
        total[c] = sum(int(s.get(c, 0)) for s in stats)
    write_rejects(rejects_out, rows)
    write_tsv(stats_out, [*stats, total], STATS_COLUMNS)
