"""The ICT regressor's render cache: the fit stage's crops of the corpus renderer's frames.

The frames come from :mod:`vox3d.fitting.regressor_render`; here they go through the fit stage's
crop path (FaceBoxes, :func:`vox3d.fitting.quality.choose_face`, the 3DDFA-V2 ROI policy of
:mod:`vox3d.face.crop`: :class:`Cropper`), so that the crops are framed as the fit stage frames
the corpus, and into the shards of a cache folder (:func:`render_cache`, read back by
:func:`load_cache`).

Targets: the parameters in :func:`vox3d.params.ict_layout` order, the pose in the
coordinates of the detected ROI's 120x120 crop (:func:`vox3d.params.pose_matrix`,
3DDFA-V2 convention: :func:`vox3d.params.to_image` with the ROI gives frame pixels).

Cache layout (``render``): ``DIR/meta.json`` (the :class:`RenderConfig`, the codec used)
and ``DIR/shard-NNNNN.npz`` of :attr:`RenderConfig.shard_size` samples each: ``crops
(n, 120, 120, 3) uint8`` BGR, ``params (n, P) float32``, ``id_coef (n, n_id) float32``,
``euler (n, 3) float32`` (yaw, pitch, roll deg), ``box (n, 5) float32`` (detector box +
score, NaN without a detection), ``roi (n, 4) float64``, ``face_box (n, 4) float32``
(box of the 68 projected landmarks), ``valid (n,) bool`` (a detection with score >=
``min_score`` overlapping the true face, IoU >= 0.3), ``index (n,) int64``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

from vox3d import paths
from vox3d.config import default
from vox3d.fitting.fit_tensor import choose_faces_torch
from vox3d.fitting.quality import choose_face
from vox3d.fitting.regressor_render import (
    FrameSample,
    Kit,
    RenderConfig,
    render_sample,
    resolve_codec,
)
from vox3d.io import atomic_path, main_not_reimported, write_text_atomic
from vox3d.params import CROP_SIZE, euler_to_rotation, pose_matrix, pose_to_srt
from vox3d.synthetic.synth_config import FRAME_SIZE
from vox3d.torch_setup import resolve_device

#: Held-out renders use data seed ``seed + HELDOUT_SEED_OFFSET``.
HELDOUT_SEED_OFFSET = 1_000_003
#: Cache format.
CACHE_FORMAT = "vox3d regressor cache 1"


# --------------------------------------------------------------------------------------
# the fit stage's crop path


class Cropper:
    """Detection + face choice + ROI + 120x120 crop, as :class:`vox3d.fitting.fit.Fitter` does it:
    on the CPU its reference path (``detect_batch``, :func:`vox3d.fitting.quality.choose_face`,
    :func:`vox3d.face.crop.roi_box_from_bbox`, :func:`vox3d.face.crop.crop_image`), on CUDA its
    tensor path (``detect_tensor``, :func:`vox3d.fitting.fit_tensor.choose_faces_torch`,
    :func:`vox3d.face.crop.roi_boxes_torch`, :func:`vox3d.face.crop.crop_batch_torch`; cv2-exact)."""

    def __init__(
        self,
        device: str = "cpu",
        weights: str | None = None,
        min_score: float = default("fit.min_score"),
        deterministic: bool = False,
    ):
        from vox3d.face.detector import FaceBoxes

        self.device = device
        self.min_score = float(min_score)
        #: CUDA: ``True`` detects under cuDNN's deterministic flags (no autotuning, no
        #: TF32).  Off by default, as for the committed checkpoint's data: on one H100 both
        #: settings give bit-identical boxes, crops and verdicts between passes and between
        #: processes, and they differ from each other in 32,487 boxes, 556 crops and 2
        #: verdicts of 32,768 samples (bench/gpu_crop_determinism.py,
        #: bench/results/h100_crop_determinism.txt).
        self.deterministic = bool(deterministic)
        self.detector = FaceBoxes(weights or paths.FACEBOXES_WEIGHTS, device=device)

    def __call__(self, frames_rgb: np.ndarray, batch: int = 512) -> dict[str, np.ndarray]:
        """``frames_rgb (N, H, W, 3) uint8`` -> ``box (N, 5) float32`` (NaN without a
        face), ``roi (N, 4) float64``, ``crops (N, 120, 120, 3) uint8`` BGR (zero without
        a face), ``found (N,) bool``."""
        n = len(frames_rgb)
        out = {
            "box": np.full((n, 5), np.nan, np.float32),
            "roi": np.full((n, 4), np.nan, np.float64),
            "crops": np.zeros((n, CROP_SIZE, CROP_SIZE, 3), np.uint8),
            "found": np.zeros(n, bool),
        }
        for s in range(0, n, batch):
            sl = slice(s, min(n, s + batch))
            if self.device == "cpu":
                self._cpu(frames_rgb[sl], out, s)
            else:
                self._tensor(frames_rgb[sl], out, s)
        return out

    def _cpu(self, frames, out, off) -> None:
        from vox3d.face.crop import crop_image, roi_box_from_bbox

        bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames]
        dets = self.detector.detect_batch(bgr)
        for j, d in enumerate(dets):
            ch = choose_face(np.asarray(d, np.float64).reshape(-1, 5), self.min_score)
            if ch.index < 0:
                continue
            box = np.asarray(d[ch.index], np.float64)
            roi = np.asarray(roi_box_from_bbox(box[:4]), np.float64)
            out["box"][off + j] = box
            out["roi"][off + j] = roi
            out["crops"][off + j] = crop_image(bgr[j], roi)
            out["found"][off + j] = True

    def _tensor(self, frames, out, off) -> None:
        import torch

        from vox3d.face.crop import crop_batch_torch, roi_boxes_torch

        flags = (
            torch.backends.cudnn.flags(
                enabled=True, benchmark=False, deterministic=True, allow_tf32=False
            )
            if self.deterministic
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), flags:
            bgr = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).flip(-1)
            bgr = bgr.contiguous()
            dets, keep = self.detector.detect_tensor(bgr, max_candidates=self.detector.top_k)
            index, _, _ = choose_faces_torch(dets, keep, self.min_score)
            idx = torch.nonzero(index >= 0).squeeze(1)
            if not idx.numel():
                return
            box = dets[idx, index[idx]]
            roi = roi_boxes_torch(box)
            crops = crop_batch_torch(bgr, roi, image_index=idx)
            ii = idx.cpu().numpy() + off
            out["box"][ii] = box.cpu().numpy()
            out["roi"][ii] = roi.cpu().numpy()
            out["crops"][ii] = crops.cpu().numpy()
            out["found"][ii] = True


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (N,) of boxes ``(N, 4)`` x1, y1, x2, y2 (NaN rows give 0)."""
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    iou = inter / (area(a) + area(b) - inter)
    return np.nan_to_num(iou, nan=0.0)


def roi_params(sample: FrameSample, roi: np.ndarray) -> np.ndarray:
    """The target (P,) float32 of `sample` for the crop of `roi`: its pose in the crop's
    coordinates (:func:`vox3d.params.pose_matrix`), identity, expression."""
    s_c, _, t = pose_to_srt(sample.pose_frame)
    k = CROP_SIZE / FRAME_SIZE  # virtual-crop units per frame pixel
    R = euler_to_rotation(*np.radians(sample.euler))
    P = pose_matrix(R, s_c / k, (t[0] - 1) / k, (CROP_SIZE - t[1]) / k, roi)
    return np.concatenate([P.reshape(-1), sample.alpha, sample.beta]).astype(np.float32)


# --------------------------------------------------------------------------------------
# shards

_KIT: dict = {}


def _worker_init(cfg: RenderConfig | None = None, n: int = 0, out: Path | None = None) -> None:
    """One thread per render process (BLAS, OpenCV, torch); a spawned worker also loads
    its own kit (`cfg`) and learns the sample count `n` and the cache folder `out`."""
    if cfg is not None:
        _KIT.update(kit=Kit.load(cfg), n=n, out=out)
    import cv2

    cv2.setNumThreads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def render_frames(kit: Kit, seed: int, indices: range, codec: str) -> dict[str, np.ndarray]:
    """Frames and truth of samples `indices`: ``frames (n, 224, 224, 3) uint8`` RGB,
    ``pose_frame (n, 3, 4)``, ``alpha``, ``beta``, ``euler (n, 3)``, ``face_box (n, 4)``."""
    ss = [render_sample(kit, seed, i, codec) for i in indices]
    return {
        "frames": np.stack([s.frame for s in ss]),
        "pose_frame": np.stack([s.pose_frame for s in ss]),
        "alpha": np.stack([s.alpha for s in ss]),
        "beta": np.stack([s.beta for s in ss]),
        "euler": np.stack([s.euler for s in ss]),
        "face_box": np.stack([s.face_box for s in ss]),
    }


def finish_shard(raw: dict, crop: dict, indices: range, min_score: float) -> dict:
    """Shard arrays (layout in the module docstring) from rendered frames and crops."""
    n = len(indices)
    params = np.zeros((n, 12 + raw["alpha"].shape[1] + raw["beta"].shape[1]))
    for j in range(n):
        if crop["found"][j]:
            fs = FrameSample(
                None, raw["pose_frame"][j], raw["alpha"][j], raw["beta"][j], raw["euler"][j],
                raw["face_box"][j], None, "",
            )  # fmt: skip
            params[j] = roi_params(fs, crop["roi"][j])
    iou = box_iou(crop["box"][:, :4].astype(np.float64), raw["face_box"])
    valid = crop["found"] & (np.nan_to_num(crop["box"][:, 4]) >= min_score) & (iou >= 0.3)
    return {
        "crops": crop["crops"],
        "params": params.astype(np.float32),
        "id_coef": raw["alpha"].astype(np.float32),
        "euler": raw["euler"].astype(np.float32),
        "box": crop["box"],
        "roi": crop["roi"],
        "face_box": raw["face_box"].astype(np.float32),
        "valid": valid,
        "index": np.asarray(indices, np.int64),
    }


def shard_path(out: Path, k: int) -> Path:
    return Path(out) / f"shard-{k:05d}.npz"


def write_shard(path: Path, arrays: dict) -> None:
    """Write one shard atomically (uncompressed npz)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _render_job(job: tuple[int, int, str, bool]):
    """Worker: render shard `k` (frames, or the finished shard when it crops on the CPU)."""
    k, seed, codec, crop_here = job
    kit: Kit = _KIT["kit"]
    ss = kit.cfg.shard_size
    indices = range(k * ss, min((k + 1) * ss, _KIT["n"]))
    raw = render_frames(kit, seed, indices, codec)
    if crop_here:
        if "cropper" not in _KIT:
            _KIT["cropper"] = Cropper("cpu", min_score=kit.cfg.min_score)
        crop = _KIT["cropper"](raw["frames"])
        write_shard(shard_path(_KIT["out"], k), finish_shard(raw, crop, indices, kit.cfg.min_score))
        return k, None
    return k, raw


def render_cache(
    cfg: RenderConfig,
    n: int,
    out: str | os.PathLike,
    workers: int = 1,
    device: str = default("fit.device"),
    heldout: bool = False,
    progress: bool = True,
    time_budget: float | None = None,
) -> dict:
    """Render samples ``0 .. n-1`` into shards under `out` (skipping finished shards).

    Data seed ``cfg.seed`` (``+ HELDOUT_SEED_OFFSET`` with `heldout`).  ``workers``
    processes render (spawned); detection runs on CUDA in this process when `device`
    resolves to cuda, else in the workers on the CPU.  Stops after `time_budget`
    seconds (finished shards stay; a later call resumes).  Returns a summary dict.
    """
    from dataclasses import replace

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed = cfg.seed + (HELDOUT_SEED_OFFSET if heldout else 0)
    if heldout:  # one sample per person: R^2 over many identities
        cfg = replace(cfg, group=1)
    codec = resolve_codec(cfg.codec)
    meta = {"format": CACHE_FORMAT, "config": cfg.as_dict(), "data_seed": seed, "n": n,
            "codec": codec, "heldout": heldout}  # fmt: skip
    mp = out / "meta.json"
    if mp.is_file():
        old = json.loads(mp.read_text())
        same = {k: old.get(k) for k in ("config", "data_seed", "codec", "heldout")}
        if same != {k: meta[k] for k in same}:
            raise RuntimeError(
                f"{out}: holds a cache made with other settings ({mp}); use another folder"
            )
        meta["n"] = max(int(old.get("n", 0)), n)
    write_text_atomic(mp, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    n_shards = math.ceil(n / cfg.shard_size)
    todo = [k for k in range(n_shards) if not shard_path(out, k).is_file()]
    dev = resolve_device(device, "fit.regressor.device")
    t0 = time.time()
    kit = Kit.load(cfg)
    _KIT.update(kit=kit, n=n, out=out)
    crop_here = dev == "cpu"
    jobs = [(k, seed, codec, crop_here) for k in todo]
    done = 0
    stopped = False
    cropper = None
    # workers are spawned, not forked: a fork of a process whose torch/OpenMP thread pools
    # have run can deadlock in the child (it hung the test suite for an hour under pytest)
    with main_not_reimported():
        if workers <= 1:
            _worker_init()
            results = map(_render_job, jobs)
            pool = None
        else:
            pool = cf.ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(cfg, n, out),
            )
            # at most 2 shards in flight per worker (the frames of a shard are ~150 MB)
            results = _bounded_map(pool, _render_job, jobs, 2 * workers)
        try:
            for k, raw in results:
                if raw is not None:
                    if cropper is None:  # CUDA only in this process: the workers never touch it
                        cropper = Cropper(dev, min_score=cfg.min_score)
                    ss = cfg.shard_size
                    indices = range(k * ss, min((k + 1) * ss, n))
                    crop = cropper(raw["frames"])
                    write_shard(shard_path(out, k), finish_shard(raw, crop, indices, cfg.min_score))
                done += 1
                if progress:
                    el = time.time() - t0
                    print(
                        f"shard {k}: {done}/{len(todo)} in {el:.0f} s "
                        f"({done * cfg.shard_size / max(el, 1e-9):.0f} samples/s)",
                        file=sys.stderr, flush=True,
                    )  # fmt: skip
                if time_budget is not None and time.time() - t0 > time_budget:
                    stopped = True
                    break
        finally:
            if pool is not None:
                pool.shutdown(wait=not stopped, cancel_futures=True)
    wall = time.time() - t0
    left = [k for k in range(n_shards) if not shard_path(out, k).is_file()]
    return {"shards_done": done, "shards_left": len(left), "wall_s": wall, "codec": codec,
            "device": dev, "complete": not left}  # fmt: skip


def _bounded_map(pool, fn, jobs, depth):
    """``pool.map`` in completion order with at most `depth` jobs submitted at once."""
    it = iter(jobs)
    pending = set()
    for job in it:
        pending.add(pool.submit(fn, job))
        if len(pending) >= depth:
            break
    while pending:
        done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
        for f in done:
            yield f.result()
            nxt = next(it, None)
            if nxt is not None:
                pending.add(pool.submit(fn, nxt))


def load_cache(
    out: str | os.PathLike, valid_only: bool = True, keys: tuple[str, ...] | None = None
) -> dict[str, np.ndarray]:
    """All shards of a cache concatenated (in index order); only valid samples by default."""
    out = Path(out)
    files = sorted(out.glob("shard-*.npz"))
    if not files:
        raise FileNotFoundError(f"{out}: no shard-*.npz (render the cache first)")
    parts: dict[str, list] = {}
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            sel = z["valid"] if valid_only else slice(None)
            for k in keys or z.files:
                parts.setdefault(k, []).append(z[k][sel])
    return {k: np.concatenate(v) for k, v in parts.items()}


def cache_meta(out: str | os.PathLike) -> dict:
    """The cache's ``meta.json``."""
    return json.loads((Path(out) / "meta.json").read_text())
