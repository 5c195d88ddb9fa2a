"""Fit stage: every sampled frame of a shard -> face box, ROI, 3DMM parameters, quality.

Per shard (``OUT/extract/<shard>.h5`` -> ``OUT/fit/<shard>.h5``):

1. a background thread reads the next videos' frames from a frame source (the extract
   shard's stored frames, or videos decoded on the fly by :mod:`vox3d.fitting.stream`) while the
   current chunk is on the detector / regressor (:class:`vox3d.fitting.frame_source.Prefetcher`);
2. frames of several videos are gathered into chunks of ``batch_size`` frames; FaceBoxes
   runs on the chunk (:meth:`FaceBoxes.detect_batch`), one face per frame is chosen
   (:func:`vox3d.fitting.quality.choose_face`), cropped with the 3DDFA-V2 ROI policy and the crops
   regressed in one batch (:class:`vox3d.face.regressor.Regressor`);
3. quality fields and the keep / reason code (:mod:`vox3d.fitting.quality`) are computed and all
   written into one HDF5 file (layout in :func:`vox3d.fitting.fit_shard.write_fit_shard`).

Two implementations of steps 1-3, with the same per-frame outputs:

* the **cv2 path** (:meth:`Fitter.fit_frames`, the reference, used on the CPU and in CI):
  FaceBoxes per batch with NMS on the host, the face chosen per frame, crops cut with
  cv2, regression in batches;
* the **tensor path** (:meth:`Fitter.fit_batch_tensor`, used when ``fit.device`` resolves
  to ``cuda``): frames of consecutive videos are cut into batches of ``fit.batch_size``
  same-sized frames by a background thread that also stages each batch in pinned memory
  and copies it to the GPU on a side stream (:class:`vox3d.fitting.frame_source.BatchPrefetcher`), so the next
  batch's read and host->device copy overlap the current batch; detection
  (:meth:`FaceBoxes.detect_tensor` with the batched NMS, every candidate kept), the face
  choice over *all* detections of each frame
  (:func:`vox3d.fitting.fit_tensor.choose_faces_torch`, count and margin as
  :func:`vox3d.fitting.quality.choose_face`), ROI, the cv2-exact torch crop, regression and the
  blur measure run batched on the device (:mod:`vox3d.fitting.fit_tensor`); per-frame fields come
  back once per batch, pose angles are vectorised on the host
  (:func:`vox3d.params.pose_angles_deg_batch`).

Parity (tests/test_fit.py, device cpu, real VoxCeleb2 frames, two-face and black frames):
boxes, ROIs, scores, counts, margins, blur, keep and reason identical; parameters equal to
float rounding (~1e-6 in whitened units, from regressing other batch compositions).  On
this machine's CPU (1 thread, 144 real 224x224 frames, batch 32) the tensor path took
1.14-1.19 s against 0.99-1.07 s for the cv2 path: the torch crop costs ~41 ms per 32 faces
against ~2 ms for cv2, so the CPU keeps the cv2 path (``Fitter(cfg, tensor_path=True)``
forces the tensor path, as the tests do).  On CUDA with ``fit.precision: fp32`` TF32 is
switched off so the GPU stays at fp32 parity; the regressor layout per precision is
:func:`regressor_layout`.

The loops over a shard's frames (host chunks, device batches) are :mod:`vox3d.fitting.fit_loop`;
the shard's rejects and stats and the stage's aggregate tables, :mod:`vox3d.fitting.fit_tables`.

Face model from config: ``ict`` (default) uses the ICT regressor committed in
``vox3d/data/ict_regressor.pth`` (layout ``ict_layout(n_id, n_exp)``, see
:mod:`vox3d.fitting.ict_checkpoint`); ``bfm`` uses 3DDFA-V2's mb05 checkpoint (62 parameters).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vox3d import paths
from vox3d.config import default, section, setting, train_variants
from vox3d.face.face_model import load_face_model
from vox3d.face.landmarks import FanLandmarker
from vox3d.fitting.fit_loop import _empty_fields, _run_shard
from vox3d.fitting.fit_shard import write_fit_shard
from vox3d.fitting.fit_tables import shard_stats, video_rejects
from vox3d.fitting.fit_tensor import (
    choose_faces_torch,
    crop_windows_torch,
    laplacian_variance_torch,
)
from vox3d.fitting.ict_checkpoint import make_regressor
from vox3d.fitting.quality import (
    Thresholds,
    choose_face,
    classify,
    crop_windows,
    laplacian_variance,
)
from vox3d.media.extract_shard import ExtractShard
from vox3d.params import (
    TDDFA_LAYOUT,
    ParamLayout,
    ict_layout,
    pose_angles_deg,
    pose_angles_deg_batch,
)
from vox3d.torch_setup import resolve_device

ICT_REGRESSOR = paths.PACKAGE_DATA / "ict_regressor.pth"
ICT_REGRESSOR_JSON = ICT_REGRESSOR.with_suffix(".json")


# --------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class FitConfig:
    """Everything the fit stage needs, from config.yaml's ``face_model``, ``fit`` and
    ``assets`` sections (see :meth:`from_config`); defaults: config.yaml's."""

    face_model: str = setting("face_model.name")  # ict | bfm
    n_id: int = setting("face_model.n_id")
    n_exp: int = setting("face_model.n_exp")
    device: str = setting("fit.device")  # auto | cpu | cuda
    batch_size: int = setting("fit.batch_size")
    precision: str = setting("fit.precision")  # fp32 | fp16 | bf16
    #: CUDA: replay the regressor as a CUDA graph (Fitter._regress)
    cuda_graphs: bool = setting("fit.cuda_graphs")
    thresholds: Thresholds = field(default_factory=Thresholds)
    landmarks: str = setting("fit.landmarks")  # none | fan
    fan_weights: str | None = setting("fit.fan_weights")
    faceboxes: str | None = None
    tddfa_weights: str | None = None
    tddfa_param_mean_std: str | None = None
    #: default (null): vox3d/data/ict_regressor.pth
    ict_regressor: str | None = setting("fit.ict_regressor")
    ict_facekit: str | None = None  # ICT-FaceKit archive (fit.landmarks: fan only)
    bfm: str | None = None  # bfm_noneck_v3.pkl (fit.landmarks: fan with face_model bfm)
    threads: int = 1
    #: keep the 120x120 crops of kept frames, JPEG-compressed, in the shard's ``crops/``
    #: group (:mod:`vox3d.fitting.fit_shard`); the unsupervised voice model trains on them.
    #: ``fit.keep_crops`` resolved (:func:`crops_needed`): its ``auto`` is a choice.
    keep_crops: bool = False
    #: with ``keep_crops``: at most this many crops a video, evenly spaced over its kept
    #: frames (:func:`vox3d.fitting.fit_shard.crop_selection`); None: every kept frame's.
    #: Every frame is still fitted and written; only which crops are stored changes.
    crops_per_video: int | None = setting("fit.crops_per_video")

    @classmethod
    def from_config(cls, config: dict, threads: int = 1) -> FitConfig:
        """Build from the whole workflow config dict (missing keys -> config.yaml's)."""
        fm = section("face_model", config.get("face_model"))
        fit = section("fit", config.get("fit"))
        assets = config.get("assets", {}) or {}
        name = fm["name"]
        layout = TDDFA_LAYOUT if name == "bfm" else ict_layout(int(fm["n_id"]), int(fm["n_exp"]))
        cap = fit["crops_per_video"]
        return cls(
            face_model=name,
            n_id=layout.n_id,
            n_exp=layout.n_exp,
            device=fit["device"],
            batch_size=int(fit["batch_size"]),
            precision=fit["precision"],
            cuda_graphs=bool(fit["cuda_graphs"]),
            thresholds=Thresholds.from_config(fit),
            landmarks=fit["landmarks"],
            fan_weights=fit["fan_weights"],
            faceboxes=assets.get("faceboxes"),
            tddfa_weights=assets.get("tddfa_weights"),
            tddfa_param_mean_std=assets.get("tddfa_param_mean_std"),
            ict_regressor=fit["ict_regressor"],
            ict_facekit=assets.get("ict_facekit"),
            bfm=assets.get("bfm"),
            threads=int(threads),
            keep_crops=crops_needed(config),
            crops_per_video=None if cap is None else int(cap),
        )

    @property
    def layout(self) -> ParamLayout:
        return TDDFA_LAYOUT if self.face_model == "bfm" else ict_layout(self.n_id, self.n_exp)

    @property
    def regressor_file(self) -> str:
        """The regressor weights the fit reads: the ICT checkpoint (``fit.ict_regressor``,
        default the committed one) or 3DDFA-V2's ``assets.tddfa_weights``."""
        if self.face_model == "bfm":
            return str(self.tddfa_weights or paths.MB05_WEIGHTS)
        return str(self.ict_regressor or ICT_REGRESSOR)

    def model_files(self) -> list[str]:
        """Every file the fit's models are built from: detector weights, regressor weights,
        and the regressor's whitening statistics (BFM: the 62-d mean/std pickle; ICT: the
        checkpoint's json, which also holds the identity calibration of ``fit_identities``).
        The workflow lists them as inputs, so that replacing one refits.  FAN weights are
        left out: their default location is torch's hub cache, resolved at run time."""
        files = [str(self.faceboxes or paths.FACEBOXES_WEIGHTS), self.regressor_file]
        if self.face_model == "bfm":
            files.append(str(self.tddfa_param_mean_std or paths.PARAM_MEAN_STD))
        else:
            files.append(str(Path(self.regressor_file).with_suffix(".json")))
        if self.landmarks == "fan" and self.fan_weights:
            files.append(str(self.fan_weights))
        return files


def crops_needed(config: dict) -> bool:
    """Whether the fit keeps its crops: config ``fit.keep_crops`` (``auto``: when
    ``train.mode`` trains the unsupervised variant, which learns from them)."""
    keep = (config.get("fit", {}) or {}).get("keep_crops")
    keep = default("fit.keep_crops") if keep is None else keep
    return "unsupervised" in train_variants(config) if keep == "auto" else bool(keep)


# --------------------------------------------------------------------------------------
# models


class StageClock:
    """Seconds per named step of the fit stage, summed over batches (for benchmarks and
    logs; never written into outputs).

    Host steps are wall time.  Device steps of the tensor path are timed between marks:
    on CUDA with events read once the batch's results reach the host (no extra
    synchronisation), elsewhere with the wall clock.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._marks: list[tuple[str, object]] = []

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)

    def mark(self, name: str, device) -> None:
        """End of step ``name`` (its start is the previous mark of this batch)."""
        import time

        import torch

        if device.type == "cuda":
            ev = torch.cuda.Event(enable_timing=True)
            ev.record(torch.cuda.current_stream(device))
            self._marks.append((name, ev))
        else:
            self._marks.append((name, time.perf_counter()))

    def collect(self) -> None:
        """Add the spans between this batch's marks (call after a synchronisation)."""
        for (_, a), (name, b) in zip(self._marks, self._marks[1:], strict=False):
            self.add(name, a.elapsed_time(b) / 1e3 if hasattr(a, "elapsed_time") else b - a)
        self._marks.clear()


class Fitter:
    """Detector + regressor of one face model, ready to run on chunks of frames."""

    def __init__(self, cfg: FitConfig, tensor_path: bool | None = None) -> None:
        """``tensor_path``: run shards through :meth:`fit_batch_tensor` (default: on CUDA
        only; see the module docstring for why the CPU keeps the cv2 path)."""
        import torch

        from vox3d.face.detector import FaceBoxes

        self.cfg = cfg
        #: per-step seconds of :meth:`fit_batch_tensor` when set (see :class:`StageClock`)
        self.clock: StageClock | None = None
        self._reg_graph = None  # CUDA graph runner of the regressor (built on first use)
        self.device = resolve_device(cfg.device, "fit.device")
        self.tensor_path = self.device == "cuda" if tensor_path is None else bool(tensor_path)
        if self.device == "cpu":
            torch.set_num_threads(max(1, cfg.threads))
        elif cfg.precision == "fp32":
            # fp32 means fp32: TF32 convolutions would move boxes and parameters away from
            # the CPU reference (the parity figures of bench/fit.py are without TF32)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.layout = cfg.layout
        self.detector = FaceBoxes(cfg.faceboxes or paths.FACEBOXES_WEIGHTS, device=self.device)
        channels_last, fuse_bn = regressor_layout(self.device, cfg.precision)
        self.model_file = cfg.regressor_file
        self.regressor = build_regressor(
            cfg, self.device, cfg.precision, channels_last=channels_last, fuse_bn=fuse_bn
        )
        self.landmarker = None
        if cfg.landmarks == "fan":
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
        from vox3d.face.crop import crop_image, roi_box_from_bbox

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
            wins = crop_windows(out["roi"][ii], [bgr[i].shape[:2] for i in idx], crops_a.shape[1])
            out["blur"][ii] = laplacian_variance(crops_a, wins)
            angles = np.array([pose_angles_deg(p) for p in params])
            out["yaw"][ii], out["pitch"][ii], out["roll"][ii] = angles.T
            if self.landmarker is not None:
                out["landmark_nme"][ii] = self.landmarker.nme(
                    [np.asarray(frames_rgb[i]) for i in idx], out["box"][ii], out["roi"][ii], params
                )
        return self._classify(out, th)

    def _regress(self, crops):
        """De-whitened parameters ``(F, P) float32`` of crops ``(F, 120, 120, 3) uint8`` on
        the device, in chunks of ``batch_size``.  On CUDA each chunk is one replay of a
        CUDA graph of the regressor (captured once, for ``batch_size`` crops): one launch
        instead of ~80, which keeps the GPU busy when the node's CPUs are saturated by
        extract jobs (bench/node.py: eager launches took 27 s of 54 s of GPU-side time)."""
        import torch

        bs = max(1, self.cfg.batch_size)
        reg = self.regressor
        if self.detector.device.type == "cuda" and self.cfg.cuda_graphs:
            if self._reg_graph is None:
                self._reg_graph = reg.cuda_graph(bs)
            return reg.dewhiten(
                torch.cat(
                    [self._reg_graph(crops[s : s + bs]) for s in range(0, crops.shape[0], bs)]
                )
            )
        return torch.cat(
            [reg.predict_tensor(crops[s : s + bs]) for s in range(0, crops.shape[0], bs)]
        )

    def _classify(self, out: dict, th) -> dict:
        """Fill `reason` and `keep` of per-frame outputs from the quality thresholds `th`
        (shared by the host and the device paths); drop the landmark field when unused."""
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

    def fit_batch_tensor(self, frames_rgb, frames_host: np.ndarray | None = None) -> dict:
        """:meth:`fit_frames` for one batch of same-sized frames, as tensors on the device.

        frames_rgb: ``(B, H, W, 3) uint8`` RGB tensor (any device; moved to the fitter's).
        Detection (:meth:`FaceBoxes.detect_tensor`, every candidate box kept so that NMS
        equals the host's), the face choice (:func:`vox3d.fitting.fit_tensor.choose_faces_torch`:
        all detections of a frame, as :func:`vox3d.fitting.quality.choose_face`), ROI, crop
        (:func:`vox3d.face.crop.crop_batch_torch`, cv2-exact), regression and the blur measure
        (:func:`vox3d.fitting.fit_tensor.laplacian_variance_torch`) run batched on the device; the
        per-frame fields (as :meth:`fit_frames` returns them) come back to the host once.
        frames_host: the same frames ``(B, H, W, 3) uint8`` RGB on the host, needed only
        with ``fit.landmarks: fan``.
        """
        import torch

        from vox3d.face.crop import crop_batch_torch, roi_boxes_torch

        th = self.cfg.thresholds
        clk, dev = self.clock, self.detector.device

        def mark(name: str) -> None:
            if clk is not None:
                clk.mark(name, dev)

        with torch.inference_mode():
            mark("start")
            bgr = frames_rgb.to(self.detector.device, non_blocking=True).flip(-1).contiguous()
            n = bgr.shape[0]
            dets, keep = self.detector.detect_tensor(bgr, max_candidates=self.detector.top_k)
            index, n_faces, margin = choose_faces_torch(dets, keep, th.min_score)
            mark("detect")
            idx = torch.nonzero(index >= 0).squeeze(1)
            box = dets[idx, index[idx]]  # (F, 5) float32
            b64 = box.double()
            face_px = torch.minimum(b64[:, 2] - b64[:, 0], b64[:, 3] - b64[:, 1])
            res = {"n_faces": n_faces, "margin": margin, "idx": idx, "box": box,
                   "face_px": face_px}  # fmt: skip
            if idx.numel():
                roi = roi_boxes_torch(box)
                crops = crop_batch_torch(bgr, roi, image_index=idx)
                mark("crop")
                res["params"] = self._regress(crops)
                mark("regress")
                res["roi"] = roi
                res["blur"] = laplacian_variance_torch(
                    crops, crop_windows_torch(roi, tuple(bgr.shape[1:3]), crops.shape[1])
                )
                mark("blur")
            host = {k: v.cpu().numpy() for k, v in res.items()}
            if clk is not None:
                clk.collect()
        out = _empty_fields(n, self.layout.n)
        out["n_faces"][:] = host["n_faces"]
        out["margin"][:] = host["margin"]
        ii = host["idx"]
        if ii.size:
            out["box"][ii] = host["box"]
            out["score"][ii] = host["box"][:, 4]
            out["face_px"][ii] = host["face_px"]
            out["roi"][ii] = host["roi"]
            out["params"][ii] = host["params"]
            out["blur"][ii] = host["blur"]
            angles = pose_angles_deg_batch(host["params"])
            out["yaw"][ii], out["pitch"][ii], out["roll"][ii] = angles.T
            if self.landmarker is not None:
                if frames_host is None:
                    frames_host = frames_rgb.cpu().numpy()
                out["landmark_nme"][ii] = self.landmarker.nme(
                    [np.asarray(frames_host[i]) for i in ii], out["box"][ii], out["roi"][ii],
                    host["params"],
                )  # fmt: skip
        return self._classify(out, th)


def build_regressor(
    cfg: FitConfig,
    device: str = "cpu",
    precision: str = default("fit.precision"),
    channels_last: bool = False,
    fuse_bn: bool = False,
):
    """The fit's image -> parameters regressor (:class:`vox3d.face.regressor.Regressor`) of
    `cfg`: 3DDFA-V2's MobileNet with ``assets.tddfa_*`` for BFM, the ICT checkpoint
    (``fit.ict_regressor``, its json's whitening) for ICT.  The fit stage and the
    unsupervised variant's teacher (:mod:`vox3d.voice.distill`) are built here."""
    from vox3d.face.regressor import Regressor

    if cfg.face_model == "bfm":
        weights = cfg.regressor_file
        return Regressor(
            weights, cfg.tddfa_param_mean_std or paths.PARAM_MEAN_STD,
            widen=1.0 if "mb1" in Path(weights).name else 0.5, num_params=cfg.layout.n,
            device=device, precision=precision, channels_last=channels_last, fuse_bn=fuse_bn,
        )  # fmt: skip

    if channels_last or fuse_bn:  # fold the BatchNorms in fp32, then cast
        ref = make_regressor(cfg.regressor_file, cfg.n_id, cfg.n_exp)
        return Regressor(
            ref.model.state_dict(), (ref.mean, ref.std), widen=ref.model.widen_factor,
            num_params=ref.num_params, device=device, precision=precision,
            channels_last=channels_last, fuse_bn=fuse_bn,
        )  # fmt: skip
    return make_regressor(cfg.regressor_file, cfg.n_id, cfg.n_exp, device, precision)


def regressor_layout(device: str, precision: str) -> tuple[bool, bool]:
    """``(channels_last, fuse_bn)`` of the regressor for a device and precision.

    From bench/results/h100_fit.txt (det+crop+reg from 224x224 frames, batch 1024, H100):
    channels-last with the BatchNorms folded (ReLU a separate pass) is the fastest layout in
    every precision: fp32 31.9k frames/s vs 29.5k NCHW, fp16 46.7k vs 38.4k, bf16 44.8k vs
    37.4k.  CPU: plain NCHW, unfolded (the parity reference).
    """
    if device == "cuda":
        return True, True
    return False, False


# --------------------------------------------------------------------------------------
# the shard


def fit_shard(
    extract_path: str | os.PathLike,
    out_path: str | os.PathLike,
    cfg: FitConfig,
    fitter: Fitter | None = None,
    progress: bool = True,
    clock: StageClock | None = None,
) -> dict:
    """Fit every frame of one extracted shard and write ``out_path`` (atomically).

    Returns the shard's stats: ``videos``, ``videos_rejected``, ``frames``, ``kept`` and a
    count per reason (see :data:`vox3d.fitting.quality.REASONS`).  ``clock``: add the seconds of
    each step (read wait, detect, crop, regress, blur, host, write) to it.
    """
    with ExtractShard(extract_path, threads=cfg.threads) as shard:
        return fit_source(shard, out_path, cfg, fitter, progress, clock, Path(extract_path).stem)


def fit_source(
    source,
    out_path: str | os.PathLike,
    cfg: FitConfig,
    fitter: Fitter | None = None,
    progress: bool = True,
    clock: StageClock | None = None,
    name: str = "",
) -> dict:
    """Fit every frame of a frame source (:mod:`vox3d.fitting.frame_source`: an extract shard, or
    :class:`vox3d.fitting.stream.StreamSource`) and write ``out_path`` atomically; returns the
    stats of :func:`fit_shard`.  `name` labels the progress bar."""
    import time

    fitter = fitter or Fitter(cfg)
    fitter.clock = clock
    try:
        frames_out, read_errors = _run_shard(source, fitter, cfg, name, progress)
    finally:
        fitter.clock = None
    if hasattr(source, "finish"):  # e.g. drop videos the source rejected after fitting
        frames_out, read_errors = source.finish(frames_out, read_errors)
    videos = list(source.videos)
    t0 = time.perf_counter()
    rejects = video_rejects(videos, frames_out, read_errors)
    stats = shard_stats(videos, frames_out, rejects)
    write_fit_shard(out_path, videos, frames_out, rejects, stats, fitter)
    if clock is not None:
        clock.add("write", time.perf_counter() - t0)
    return stats
