"""Fit stage: every sampled frame of a shard -> face box, ROI, 3DMM parameters, quality.

Per shard (``OUT/extract/<shard>.h5`` -> ``OUT/fit/<shard>.h5``):

1. a background thread reads the next videos' frames from a frame source (the extract
   shard's stored frames, or videos decoded on the fly by :mod:`vox3d.stream`) while the
   current chunk is on the detector / regressor (:class:`vox3d.frame_source.Prefetcher`);
2. frames of several videos are gathered into chunks of ``batch_size`` frames; FaceBoxes
   runs on the chunk (:meth:`FaceBoxes.detect_batch`), one face per frame is chosen
   (:func:`vox3d.quality.choose_face`), cropped with the 3DDFA-V2 ROI policy and the crops
   regressed in one batch (:class:`vox3d.regressor.Regressor`);
3. quality fields and the keep / reason code (:mod:`vox3d.quality`) are computed and all
   written into one HDF5 file (layout in :func:`vox3d.fit_shard.write_fit_shard`).

Two implementations of steps 1-3, with the same per-frame outputs:

* the **cv2 path** (:meth:`Fitter.fit_frames`, the reference, used on the CPU and in CI):
  FaceBoxes per batch with NMS on the host, the face chosen per frame, crops cut with
  cv2, regression in batches;
* the **tensor path** (:meth:`Fitter.fit_batch_tensor`, used when ``fit.device`` resolves
  to ``cuda``): frames of consecutive videos are cut into batches of ``fit.batch_size``
  same-sized frames by a background thread that also stages each batch in pinned memory
  and copies it to the GPU on a side stream (:class:`vox3d.frame_source.BatchPrefetcher`), so the next
  batch's read and host->device copy overlap the current batch; detection
  (:meth:`FaceBoxes.detect_tensor` with the batched NMS, every candidate kept), the face
  choice over *all* detections of each frame (:func:`choose_faces_torch`, count and
  margin as :func:`vox3d.quality.choose_face`), ROI, the cv2-exact torch crop, regression
  and the blur measure run batched on the device; per-frame fields come back once per
  batch, pose angles are vectorised on the host (:func:`vox3d.params.pose_angles_deg_batch`).

Parity (tests/test_fit.py, device cpu, real VoxCeleb2 frames, two-face and black frames):
boxes, ROIs, scores, counts, margins, blur, keep and reason identical; parameters equal to
float rounding (~1e-6 in whitened units, from regressing other batch compositions).  On
this machine's CPU (1 thread, 144 real 224x224 frames, batch 32) the tensor path took
1.14-1.19 s against 0.99-1.07 s for the cv2 path: the torch crop costs ~41 ms per 32 faces
against ~2 ms for cv2, so the CPU keeps the cv2 path (``Fitter(cfg, tensor_path=True)``
forces the tensor path, as the tests do).  On CUDA with ``fit.precision: fp32`` TF32 is
switched off so the GPU stays at fp32 parity; the regressor layout per precision is
:func:`regressor_layout`.

Face model from config: ``ict`` (default) uses the ICT regressor committed in
``vox3d/data/ict_regressor.pth`` (layout ``ict_layout(n_id, n_exp)``, see
:mod:`vox3d.ict_checkpoint`); ``bfm`` uses 3DDFA-V2's mb05 checkpoint (62 parameters).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vox3d.config import default, setting, train_variants
from vox3d.fit_shard import FRAME_FIELDS, FitShard, write_fit_shard
from vox3d.frame_source import Batch, BatchPrefetcher, Prefetcher, progress_totals
from vox3d.params import (
    TDDFA_LAYOUT,
    ParamLayout,
    ict_layout,
    pose_angles_deg,
    pose_angles_deg_batch,
)
from vox3d.quality import REASONS, Thresholds, choose_face, classify, count_reasons
from vox3d.torch_setup import resolve_device

STAGE = "fit"
#: The host path gathers whole videos into a chunk until it has ``batch_size`` frames; a
#: video longer than this many frames (51 s at 5 fps) is cut into chunks of about this size.
MAX_CHUNK_FRAMES = 256
ICT_REGRESSOR = Path(__file__).resolve().parent / "data" / "ict_regressor.pth"
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
    #: keep the 120x120 crop of every kept frame, JPEG-compressed, in the shard's
    #: ``crops/`` group (:mod:`vox3d.fit_shard`); the unsupervised voice model trains on
    #: them.  ``fit.keep_crops`` resolved (:func:`crops_needed`): its ``auto`` is a choice.
    keep_crops: bool = False

    @classmethod
    def from_config(cls, config: dict, threads: int = 1) -> FitConfig:
        """Build from the whole workflow config dict (missing keys -> config.yaml's)."""
        fm = {**default("face_model"), **(config.get("face_model", {}) or {})}
        fit = {**default("fit"), **(config.get("fit", {}) or {})}
        assets = config.get("assets", {}) or {}
        name = fm["name"]
        layout = TDDFA_LAYOUT if name == "bfm" else ict_layout(int(fm["n_id"]), int(fm["n_exp"]))
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
        )

    @property
    def layout(self) -> ParamLayout:
        return TDDFA_LAYOUT if self.face_model == "bfm" else ict_layout(self.n_id, self.n_exp)

    @property
    def regressor_file(self) -> str:
        """The regressor weights the fit reads: the ICT checkpoint (``fit.ict_regressor``,
        default the committed one) or 3DDFA-V2's ``assets.tddfa_weights``."""
        from vox3d import paths

        if self.face_model == "bfm":
            return str(self.tddfa_weights or paths.MB05_WEIGHTS)
        return str(self.ict_regressor or ICT_REGRESSOR)

    def model_files(self) -> list[str]:
        """Every file the fit's models are built from: detector weights, regressor weights,
        and the regressor's whitening statistics (BFM: the 62-d mean/std pickle; ICT: the
        checkpoint's json, which also holds the identity calibration of ``fit_identities``).
        The workflow lists them as inputs, so that replacing one refits.  FAN weights are
        left out: their default location is torch's hub cache, resolved at run time."""
        from vox3d import paths

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

        from vox3d import paths
        from vox3d.detector import FaceBoxes

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
        from vox3d.quality import crop_windows, laplacian_variance

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
        equals the host's), the face choice (:func:`choose_faces_torch`: all detections
        of a frame, as :func:`vox3d.quality.choose_face`), ROI, crop
        (:func:`vox3d.crop.crop_batch_torch`, cv2-exact), regression and the blur measure
        (:func:`laplacian_variance_torch`) run batched on the device; the per-frame
        fields (as :meth:`fit_frames` returns them) come back to the host once.
        frames_host: the same frames ``(B, H, W, 3) uint8`` RGB on the host, needed only
        with ``fit.landmarks: fan``.
        """
        import torch

        from vox3d.crop import crop_batch_torch, roi_boxes_torch

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
    precision: str = "fp32",
    channels_last: bool = False,
    fuse_bn: bool = False,
):
    """The fit's image -> parameters regressor (:class:`vox3d.regressor.Regressor`) of
    `cfg`: 3DDFA-V2's MobileNet with ``assets.tddfa_*`` for BFM, the ICT checkpoint
    (``fit.ict_regressor``, its json's whitening) for ICT.  The fit stage and the
    unsupervised variant's teacher (:mod:`vox3d.distill`) are built here."""
    from vox3d import paths
    from vox3d.regressor import Regressor

    if cfg.face_model == "bfm":
        weights = cfg.regressor_file
        return Regressor(
            weights, cfg.tddfa_param_mean_std or paths.PARAM_MEAN_STD,
            widen=1.0 if "mb1" in Path(weights).name else 0.5, num_params=cfg.layout.n,
            device=device, precision=precision, channels_last=channels_last, fuse_bn=fuse_bn,
        )  # fmt: skip
    from vox3d.ict_checkpoint import make_regressor

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


def choose_faces_torch(dets, keep, min_score: float):
    """Batched :func:`vox3d.quality.choose_face` on the device.

    dets ``(B, K, 5) float32`` x1, y1, x2, y2 (px), score; keep ``(B, K) bool`` (real
    detections, as :meth:`FaceBoxes.detect_tensor` returns them).  Returns ``index (B,)
    long`` (row of the chosen face, -1 without a detection), ``n_faces (B,) long``
    (detections scoring >= min_score) and ``margin (B,) float64`` (area of the chosen face
    / area of the next largest; inf alone, 0 without a face above min_score).  Same
    arithmetic (float64 areas) and the same order as ``choose_face``: largest area, then
    best score, then first row; without a face above min_score the best-scoring row.
    """
    import torch

    d = dets.double()
    b, k = d.shape[:2]
    area = (d[..., 2] - d[..., 0]).clamp_min(0) * (d[..., 3] - d[..., 1]).clamp_min(0)
    score = d[..., 4]
    good = keep & (score >= min_score)
    n_good = good.sum(1)
    inf = torch.full_like(area, float("inf"))
    # np.lexsort((-score, -area)) as two stable sorts: secondary key first
    o1 = torch.sort(torch.where(good, -score, inf), dim=1, stable=True).indices
    o2 = torch.sort(torch.where(good, -area, inf).gather(1, o1), dim=1, stable=True).indices
    order = o1.gather(1, o2)
    best = order[:, 0]
    any_det = keep.any(1)
    fallback = torch.where(keep, score, torch.full_like(score, -float("inf"))).argmax(1)
    index = torch.where(n_good > 0, best, torch.where(any_det, fallback, torch.full_like(best, -1)))
    rows = torch.arange(b, device=d.device)
    a_best = area[rows, best]
    if k > 1:
        a_second = area[rows, order[:, 1]]
    else:
        a_second = torch.zeros_like(a_best)
    ratio = torch.where(a_second > 0, a_best / a_second, torch.full_like(a_best, float("inf")))
    margin = torch.where(
        n_good >= 2,
        ratio,
        torch.where(n_good == 1, torch.full_like(ratio, float("inf")), torch.zeros_like(ratio)),
    )
    return index, n_good, margin


def crop_windows_torch(roi, image_hw: tuple[int, int], size: int = 120):
    """:func:`vox3d.quality.crop_windows` on the device: ``roi (N, 4)`` -> ``(N, 4) long``
    r0, r1, c0, c1 (same float64 operations, so the same windows)."""
    import torch

    r = torch.round(roi.double())
    out = []
    for a, b, n in ((r[:, 1], r[:, 3], image_hw[0]), (r[:, 0], r[:, 2], image_hw[1])):
        scale = (b - a) / size
        lo = torch.ceil((0.5 - a) / scale - 0.5)
        hi = torch.floor((n - 0.5 - a) / scale - 0.5) + 1.0
        out += [lo.clamp(0, size), hi.clamp(0, size)]
    return torch.stack(out, 1).long()


def laplacian_variance_torch(crops, windows=None):
    """:func:`vox3d.quality.laplacian_variance` on the device: ``(N, H, W, 3) uint8`` BGR
    (and optional ``windows (N, 4)`` from :func:`crop_windows_torch`) -> ``(N,) float64``
    (same float64 arithmetic; sums may differ in the last bits)."""
    import torch

    from vox3d.quality import MIN_BLUR_PIXELS

    x = crops.double()
    g = 0.114 * x[..., 0] + 0.587 * x[..., 1] + 0.299 * x[..., 2]
    lap = (
        g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:] - 4.0 * g[:, 1:-1, 1:-1]
    )
    if windows is None:
        lap = lap.reshape(g.shape[0], -1)
        return (lap - lap.mean(1, keepdim=True)).square().mean(1)
    h, w = lap.shape[1:]
    rows = torch.arange(h, device=lap.device)
    cols = torch.arange(w, device=lap.device)
    mr = (rows[None] >= windows[:, :1]) & (rows[None] < windows[:, 1:2] - 2)
    mc = (cols[None] >= windows[:, 2:3]) & (cols[None] < windows[:, 3:4] - 2)
    mask = mr[:, :, None] & mc[:, None, :]
    small = mask.sum((1, 2)) < MIN_BLUR_PIXELS
    mask = mask | small[:, None, None]
    m = mask.double()
    cnt = m.sum((1, 2))
    mean = (lap * m).sum((1, 2)) / cnt
    return ((lap - mean[:, None, None]).square() * m).sum((1, 2)) / cnt


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
    count per reason (see :data:`vox3d.quality.REASONS`).  ``clock``: add the seconds of
    each step (read wait, detect, crop, regress, blur, host, write) to it.
    """
    from vox3d.extract import ExtractShard

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
    """Fit every frame of a frame source (:mod:`vox3d.frame_source`: an extract shard, or
    :class:`vox3d.stream.StreamSource`) and write ``out_path`` atomically; returns the
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


def shard_stats(videos: list, frames_out: dict, rejects: list) -> dict:
    """A fit shard's stats: ``videos``, ``videos_rejected``, ``frames``, ``kept`` and a
    count per reason (:data:`vox3d.quality.REASONS`)."""
    return {
        "videos": len(videos),
        "videos_rejected": len(rejects),
        "frames": int(len(frames_out["video"])),
        "kept": int(frames_out["keep"].sum()),
        **count_reasons(frames_out["reason"]),
    }


def _run_shard(shard, fitter, cfg, name: str, progress: bool):
    """Fit every frame of the frame source `shard` (:mod:`vox3d.frame_source`): returns the
    per-frame fields (``video`` indexes ``shard.videos``) and ``{video: read error}``."""
    from tqdm import tqdm

    if fitter.tensor_path:
        return _run_shard_tensor(shard, fitter, cfg, name, progress)
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in (*FRAME_FIELDS, "crop")}
    read_errors: dict[int, str] = {}
    pending: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # (video, first, frames, t)
    n_pending = 0
    bs = max(1, cfg.batch_size)
    cut = False  # the current video was cut (longer than MAX_CHUNK_FRAMES)

    def flush() -> None:
        nonlocal pending, n_pending
        if not pending:
            return
        frames = [fr for p in pending for fr in p[2]]
        res = fitter.fit_frames(frames)
        for k, v in res.items():
            chunks[k].append(v)
        if cfg.keep_crops:
            chunks["crop"].append(kept_crops(frames, res["roi"], res["keep"]))
        chunks["video"].append(
            np.concatenate([np.full(len(p[2]), p[0], np.int32) for p in pending])
        )
        chunks["frame"].append(
            np.concatenate([np.arange(p[1], p[1] + len(p[2]), dtype=np.int32) for p in pending])
        )
        chunks["time"].append(np.concatenate([p[3] for p in pending]))
        pending, n_pending = [], 0

    bar = tqdm(
        total=progress_totals(shard)[0], desc=f"fit {name}", unit="video",
        disable=not progress, file=sys.stderr,
    )  # fmt: skip
    # chunks end where a video ends and >= batch_size frames are pending (as with whole
    # videos: vox3d.multigpu.clean_boundaries models this); a long video is also cut
    # every MAX_CHUNK_FRAMES, and its chunk ends with it
    for vi, first, frames, times, err, last in Prefetcher(shard):
        if err is not None:
            read_errors[vi] = err
        elif frames.shape[0] > 0:
            pending.append((vi, first, frames, times))
            n_pending += frames.shape[0]
            if not last and n_pending >= max(bs, MAX_CHUNK_FRAMES):
                flush()
                cut = True
        if last:
            if n_pending >= bs or cut:
                flush()
            cut = False
            bar.update(1)
    flush()
    bar.close()

    frames_out = _concat_fields(chunks, fitter.layout.n, fitter.landmarker is not None)
    return _drop_videos(frames_out, read_errors), read_errors


def _drop_videos(frames_out: dict[str, np.ndarray], videos) -> dict[str, np.ndarray]:
    """`frames_out` without the rows of `videos` (read in part before a read error)."""
    if not len(videos) or not len(frames_out["video"]):
        return frames_out
    keep = ~np.isin(frames_out["video"], np.fromiter(videos, np.int64))
    return frames_out if keep.all() else {k: v[keep] for k, v in frames_out.items()}


def _run_shard_tensor(shard, fitter, cfg, name: str, progress: bool):
    """:func:`_run_shard` through :meth:`Fitter.fit_batch_tensor` (same outputs, same
    order: videos in order, frames in order; batches never mix frame sizes)."""
    import time

    import torch
    from tqdm import tqdm

    chunks: dict[str, list[np.ndarray]] = {k: [] for k in (*FRAME_FIELDS, "crop")}
    read_errors: dict[int, str] = {}
    total = progress_totals(shard)[1]
    bar = tqdm(
        total=total, desc=f"fit {name}", unit="frame",
        disable=not progress, file=sys.stderr,
    )  # fmt: skip
    clk = fitter.clock
    it = iter(BatchPrefetcher(shard, cfg.batch_size, fitter.device))
    while True:
        t0 = time.perf_counter()
        item = next(it, None)
        if clk is not None:
            clk.add("read wait", time.perf_counter() - t0)
        if item is None:
            break
        if item[0] == "error":
            read_errors[item[1]] = item[2]
            continue
        b: Batch = item[1]
        if b.ready is not None:
            torch.cuda.current_stream(fitter.detector.device).wait_event(b.ready)
            b.frames_dev.record_stream(torch.cuda.current_stream(fitter.detector.device))
        t0 = time.perf_counter()
        res = fitter.fit_batch_tensor(b.frames_dev, b.frames)
        if clk is not None:
            clk.add("batch wall", time.perf_counter() - t0)
        for k, v in res.items():
            chunks[k].append(v)
        if cfg.keep_crops:
            chunks["crop"].append(kept_crops(b.frames, res["roi"], res["keep"]))
        chunks["video"].append(
            np.concatenate([np.full(e - s, vi, np.int32) for vi, s, e in b.segments])
        )
        chunks["frame"].append(
            np.concatenate([np.arange(s, e, dtype=np.int32) for _, s, e in b.segments])
        )
        chunks["time"].append(b.times)
        bar.update(len(b.times))
    bar.close()
    frames_out = _concat_fields(chunks, fitter.layout.n, fitter.landmarker is not None)
    return _drop_videos(frames_out, read_errors), read_errors


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
    if chunks.get("crop"):
        out["crop"] = np.concatenate(chunks["crop"])
    return out


def kept_crops(frames_rgb, roi: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The JPEG bytes (:func:`vox3d.fit_shard.encode_crop`) of the 120x120 BGR crop of each
    kept frame, cut as the regressor's (:func:`vox3d.crop.crop_image`, cv2-exact with the
    device path's :func:`vox3d.crop.crop_batch_torch`): ``(N,) object`` array, ``None`` for
    frames not kept.  frames_rgb: N frames ``(H, W, 3) uint8`` RGB; roi: ``(N, 4)``."""
    from vox3d.crop import crop_image
    from vox3d.fit_shard import encode_crop

    out = np.empty(len(keep), dtype=object)
    for i in np.flatnonzero(keep):
        bgr = np.ascontiguousarray(np.asarray(frames_rgb[i])[..., ::-1])
        out[i] = encode_crop(crop_image(bgr, roi[i]))
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
    from vox3d.io import write_rejects, write_tsv

    rows, stats = [], []
    for sp in sorted(str(p) for p in shard_paths):
        shard = FitShard.read(sp, fields=())
        rows += [{"path": p, "stage": STAGE, "reason": r} for p, r in shard.rejects]
        stats.append({"shard": Path(sp).stem, **shard.stats})
    if identities_path is not None:
        from vox3d.identities import read_identity_rejects

        rows += read_identity_rejects(identities_path)
    total = {"shard": "total"}
    for c in STATS_COLUMNS[1:]:
        total[c] = sum(int(s.get(c, 0)) for s in stats)
    write_rejects(rejects_out, rows)
    write_tsv(stats_out, [*stats, total], STATS_COLUMNS)
