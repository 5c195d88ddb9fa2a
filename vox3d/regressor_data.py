"""Training data of the ICT regressor, rendered by the corpus's own renderer.

One synthetic-face kit: the frames come from :mod:`vox3d.synth_render` (the renderer of
the default corpus: :func:`~vox3d.synth_rig.load_rig`, :func:`~vox3d.synth_rig.draw_face`,
:func:`~vox3d.synth_rig.draw_look`, :func:`~vox3d.synth_rig.albedo`,
:func:`~vox3d.synth_render.video_spec`, :func:`~vox3d.synth_render.background`,
:func:`~vox3d.synth_render.make_light`, :func:`~vox3d.synth_render.expression_track`,
:func:`~vox3d.synth_render.frame_pose`, :func:`~vox3d.synth_render.camera_frame` with its sensor
noise, motion blur and defocus), whole 224x224 frames, then a compression round trip
(H.264 through PyAV when it is installed, else JPEG), then the fit stage's crop path
(FaceBoxes, :func:`vox3d.quality.choose_face`, the 3DDFA-V2 ROI policy of
:mod:`vox3d.crop`), so that the crops are framed as the fit stage frames the corpus.

What differs from a corpus clip, on purpose:

* **fresh people**: every draw comes from ``SeedSequence([seed + REGDATA_SEED_OFFSET,
  stream, index])``.  A corpus draws its identities from ``SeedSequence([corpus_seed,
  1, i])`` (:data:`vox3d.synth_config._S_IDENTITY`); with ``REGDATA_SEED_OFFSET = 10**9`` and
  the streams 101-104 the two seed spaces never meet for corpus seeds below 10**9;
* **single frames**: samples come in groups of :attr:`RenderConfig.group` that share a
  person (identity, albedo, voice) and a session (background, light, face size and
  place, room) as the frames of one video do; each sample has its own pose,
  expression (a random frame of an expression track drawn by the corpus's
  :func:`~vox3d.synth_render.expression_track` from a synthetic utterance of the group's
  voice), sensor noise and camera shake;
* **wider poses**: with probability :attr:`RenderConfig.p_wide` yaw, pitch and roll are
  uniform in +-``yaw_deg`` (85), +-``pitch_deg`` (25), +-``roll_deg`` (15); otherwise
  they are drawn as a corpus clip's frames are (session mean + the clip's spread, clipped
  to +-40, +-20, +-10);
* camera shake in a fraction :attr:`RenderConfig.p_blur` of the frames (motion blur
  2-18 px, as the corpus's shake episodes reach).

Sample ``i`` of data seed ``s`` depends on ``(s, i)`` only (its group is ``i //
group``), so a shard is the same whatever the worker count.

Targets: the parameters in :func:`vox3d.params.ict_layout` order, the pose in the
coordinates of the detected ROI's 120x120 crop (:func:`vox3d.ict_regressor.pose_matrix`,
3DDFA-V2 convention: :func:`vox3d.params.to_image` with the ROI gives frame pixels).

Cache layout (``render``): ``DIR/meta.json`` (the :class:`RenderConfig`, the codec used)
and ``DIR/shard-NNNNN.npz`` of :attr:`RenderConfig.shard_size` samples each: ``crops
(n, 120, 120, 3) uint8`` BGR, ``params (n, P) float32``, ``id_coef (n, n_id) float32``,
``euler (n, 3) float32`` (yaw, pitch, roll deg), ``box (n, 5) float32`` (detector box +
score, NaN without a detection), ``roi (n, 4) float64``, ``face_box (n, 4) float32``
(box of the 68 projected landmarks), ``valid (n,) bool`` (a detection with score >=
``min_score`` overlapping the true face, IoU >= 0.3), ``index (n,) int64``.

    python -m vox3d.regressor_data render --n 300000 --workers 15 --out DIR [--device cuda]
    python -m vox3d.regressor_data render --n 2000 --heldout --out DIR/heldout
    python -m vox3d.regressor_data calibrate --checkpoint X.pth --n-groups 250

``calibrate`` (also the last step of ``all``, into ``calibration`` beside the held-out
cache): :func:`calibrate_checkpoint` renders groups of fresh people (data seed ``seed +
CALIB_SEED_OFFSET``, the checkpoint's generator settings), runs the checkpoint and stores
the per-mode identity calibration of :func:`vox3d.identities.calibrate_identity` as
``identity_calibration`` in the checkpoint's json (used by
:func:`vox3d.identities.aggregate_identities`).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import math
import multiprocessing
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vox3d.params import CROP_SIZE
from vox3d.torch_setup import resolve_device

#: Offset added to the data seed of every draw (see the module docstring).
REGDATA_SEED_OFFSET = 10**9
#: Held-out renders use data seed ``seed + HELDOUT_SEED_OFFSET`` (as the old generator's
#: ``vox3d.ict_regressor.EVAL_SEED_OFFSET``).
HELDOUT_SEED_OFFSET = 1_000_003
#: Identity-calibration renders (``calibrate``) use data seed ``seed +
#: CALIB_SEED_OFFSET``: fresh people, disjoint from the training and held-out renders.
CALIB_SEED_OFFSET = 2_000_029
#: Standardised identities are N(0, 1) clipped to +-Z_CLIP (vox3d.synth_rig.draw_face).
Z_CLIP = 3.0
#: Seed-sequence streams (disjoint from vox3d.synth_config's 1-7).
_S_GROUP, _S_SAMPLE, _S_AUDIO, _S_CODEC = 101, 102, 103, 104
#: Seconds of the synthetic utterance whose expression track a group samples from.
UTT_SECONDS = 2.0
#: Cache format.
CACHE_FORMAT = "vox3d regressor cache 1"


@dataclass(frozen=True)
class RenderConfig:
    """Distribution of the regressor's training frames (angles in degrees)."""

    n_id: int = 40
    n_exp: int = 10
    seed: int = 0
    group: int = 8  # samples per person + session
    p_wide: float = 0.5  # probability of a pose from the wide uniform range
    yaw_deg: float = 85.0
    pitch_deg: float = 25.0
    roll_deg: float = 15.0
    p_blur: float = 0.05  # probability of camera shake (motion blur + defocus)
    blur_px: tuple[float, float] = (2.0, 18.0)
    codec: str = "auto"  # auto (h264 with PyAV, else jpeg) | h264 | jpeg
    crf: int = 26  # x264 CRF of the one-frame (intra) stream, see _h264_round_trip
    jpeg_quality: tuple[int, int] = (30, 90)
    min_score: float = 0.6  # detector score of a valid sample (config fit.min_score)
    shard_size: int = 1024
    face_model_path: str | None = None  # ICT-FaceKit archive / folder (default: assets)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["blur_px"] = list(self.blur_px)
        d["jpeg_quality"] = list(self.jpeg_quality)
        d.pop("face_model_path")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RenderConfig:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("blur_px", "jpeg_quality"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


def _rng(seed: int, stream: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([int(seed) + REGDATA_SEED_OFFSET, stream, *map(int, keys)])
    )


# --------------------------------------------------------------------------------------
# the kit: rig + per-group state


@dataclass
class Kit:
    """The corpus rig (:func:`vox3d.synth_rig.load_rig`) and its voice mapping."""

    cfg: RenderConfig
    rig: object
    mapping: object
    _group: tuple = field(default=(None, None), repr=False)

    @classmethod
    def load(cls, cfg: RenderConfig) -> Kit:
        from vox3d import synth_config, synth_rig

        scfg = synth_config.SynthConfig(
            n_id=cfg.n_id, n_exp=cfg.n_exp, face_model_path=cfg.face_model_path
        )
        rig = synth_rig.load_rig(scfg)
        return cls(cfg, rig, synth_rig.default_mapping(rig))


@dataclass
class Group:
    """Shared draws of a group of samples: one person in one session."""

    ident: object  # vox3d.synth_rig.Identity
    spec: object  # vox3d.synth_render.VideoSpec
    colors: np.ndarray  # (V, 3) float32 albedo
    bg: np.ndarray  # (224, 224, 3) uint8 background
    light: object  # vox3d.render.Light
    exp: np.ndarray  # (T, n_exp) expression track
    base: np.ndarray  # (V, 3) float32 neutral vertices of the identity (cm)
    anchor: np.ndarray  # (3,) face centre (model cm)


def draw_group(kit: Kit, seed: int, g: int) -> Group:
    """Group `g` of data seed `seed` (a fresh person and session)."""
    from vox3d import synth_config, synth_render, synth_rig
    from vox3d import voice_synth as vs

    rig = kit.rig
    rng = _rng(seed, _S_GROUP, g)
    z, gender = synth_rig.draw_face(rng, rig, rig.model.n_id)
    voice = vs.voice_from_identity(z, gender, kit.mapping, rng)
    ident = synth_rig.Identity(
        index=g, vox_id=f"reg{g}", name="", gender=gender, split_set="",
        z=z, id_coef=z * rig.model.id_std.astype(np.float64), voice=voice,
        **synth_rig.draw_look(rng, gender),
    )  # fmt: skip
    spec = synth_render.video_spec(rng, g, 0)
    rng_a = _rng(seed, _S_AUDIO, g)
    utt = vs.synthesize(voice, UTT_SECONDS, spec.room, rng_a)
    T = int(round(UTT_SECONDS * synth_config.FPS))
    exp, _ = synth_render.expression_track(rng_a, rig, utt, T, ident.mouth_gain)
    return Group(
        ident=ident, spec=spec, colors=synth_rig.albedo(rig, ident),
        bg=synth_render.background(spec), light=synth_render.make_light(spec), exp=np.asarray(exp, np.float32),
        base=rig.model.vertices(ident.id_coef.astype(np.float32)),
        anchor=synth_render.face_center_model(rig, ident.id_coef),
    )  # fmt: skip


def _group(kit: Kit, seed: int, g: int) -> Group:
    """:func:`draw_group` with a one-entry cache (consecutive samples share groups)."""
    key, grp = kit._group
    if key != (seed, g):
        grp = draw_group(kit, seed, g)
        kit._group = ((seed, g), grp)
    return grp


@dataclass
class FrameSample:
    """One rendered frame and its truth.

    frame: (224, 224, 3) uint8 RGB after the compression round trip; pose_frame (3, 4):
    the corpus's pose convention (virtual crop = whole frame); alpha (n_id,), beta
    (n_exp,) float32; euler (3,) yaw, pitch, roll deg; face_box (4,) box of the 68
    projected landmarks (px); landmarks (68, 2) frame px; codec: "h264" | "jpeg".
    """

    frame: np.ndarray
    pose_frame: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    euler: np.ndarray
    face_box: np.ndarray
    landmarks: np.ndarray
    codec: str


def draw_pose(cfg: RenderConfig, spec, rng: np.random.Generator) -> np.ndarray:
    """Euler angles (3,) yaw, pitch, roll in degrees: wide uniform with probability
    ``p_wide``, else as a corpus frame (session mean + the clip spread of
    :func:`vox3d.synth_render.draw_utterance`, one unit normal per angle, clipped)."""
    if rng.random() < cfg.p_wide:
        return np.array(
            [rng.uniform(-cfg.yaw_deg, cfg.yaw_deg), rng.uniform(-cfg.pitch_deg, cfg.pitch_deg),
             rng.uniform(-cfg.roll_deg, cfg.roll_deg)]
        )  # fmt: skip
    m = spec.mean_euler_deg
    n = rng.standard_normal(3)
    return np.array(
        [np.clip(m[0] + 14 * n[0], -40, 40), np.clip(m[1] + 6 * n[1], -20, 20),
         np.clip(m[2] + 3 * n[2], -10, 10)]
    )  # fmt: skip


def render_sample(kit: Kit, seed: int, i: int, codec: str | None = None) -> FrameSample:
    """Sample `i` of data seed `seed`: a whole frame through the compression round trip."""
    from vox3d import synth_render

    cfg = kit.cfg
    rig = kit.rig
    grp = _group(kit, seed, i // cfg.group)
    rng = _rng(seed, _S_SAMPLE, i)
    euler = draw_pose(cfg, grp.spec, rng)
    scale = grp.spec.scale_px_per_cm * (1 + 0.03 * rng.standard_normal())
    center = grp.spec.center_px + rng.standard_normal(2) * np.array([4.0, 3.0])
    beta = grp.exp[int(rng.integers(len(grp.exp)))]
    blur_px, blur_angle = 0.0, 0.0
    if rng.random() < cfg.p_blur:
        blur_px, blur_angle = rng.uniform(*cfg.blur_px), rng.uniform(-20, 20)
    V = rig.model.n_vertices
    verts = grp.base + (beta @ rig.model.exp_basis.reshape(rig.model.n_exp, V * 3)).reshape(V, 3)
    P = synth_render.frame_pose(euler, scale, center, grp.anchor)
    img_v = synth_render.project(verts, P)
    frame = synth_render.camera_frame(
        rig, img_v, grp.colors, grp.bg, grp.light, rng, blur_px, blur_angle
    )
    codec = resolve_codec(cfg.codec if codec is None else codec)
    frame = compress(frame, codec, cfg, _rng(seed, _S_CODEC, i))
    lm = img_v[rig.model.landmarks68, :2].astype(np.float64)
    return FrameSample(
        frame=frame, pose_frame=P, alpha=grp.ident.id_coef.astype(np.float32),
        beta=np.asarray(beta, np.float32), euler=np.asarray(euler, np.float64),
        face_box=np.array([*lm.min(0), *lm.max(0)]), landmarks=lm, codec=codec,
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# compression


def h264_available() -> bool:
    """Whether PyAV with an H.264 encoder (libx264) is importable."""
    try:
        import av

        av.codec.Codec("libx264", "w")
        return True
    except Exception:  # ImportError, codec missing
        return False


def resolve_codec(codec: str) -> str:
    """``auto`` -> ``h264`` when :func:`h264_available`, else ``jpeg``."""
    if codec == "auto":
        return "h264" if h264_available() else "jpeg"
    if codec not in ("h264", "jpeg"):
        raise ValueError(f"codec must be auto, h264 or jpeg (got {codec!r})")
    return codec


def _h264_round_trip(frame: np.ndarray, crf: int) -> np.ndarray:
    """Encode one RGB frame ``(H, W, 3) uint8`` as a one-frame H.264 stream (libx264,
    yuv420p, preset faster, one thread, as the corpus's encoder settings) and decode it.

    A lone frame is an I-frame, which x264 quantises finer than the P/B frames that make
    most of a clip (ipratio 1.4: about 6 log2(1.4) = 2.9 QP lower), so the default
    ``crf`` 26 = the corpus's 23 + 3 gives about the corpus's quantiser."""
    from fractions import Fraction

    import av

    h, w = frame.shape[:2]
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base = Fraction(1, 25)
    enc.options = {"crf": str(crf), "preset": "faster", "threads": "1"}
    packets = list(enc.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    packets += list(enc.encode(None))
    dec = av.CodecContext.create("h264", "r")
    out = []
    for p in packets:
        out += dec.decode(p)
    out += dec.decode(None)
    if not out:
        raise RuntimeError("H.264 round trip gave no frame")
    return out[0].to_ndarray(format="rgb24")


def _jpeg_round_trip(frame: np.ndarray, quality: int) -> np.ndarray:
    """JPEG encode + decode of an RGB frame at `quality` (OpenCV, 4:2:0)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def compress(
    frame: np.ndarray, codec: str, cfg: RenderConfig, rng: np.random.Generator
) -> np.ndarray:
    """The frame after a lossy round trip: ``h264`` (:func:`_h264_round_trip`, CRF
    ``cfg.crf``) or ``jpeg`` (quality uniform in ``cfg.jpeg_quality``, drawn from `rng`)."""
    q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    if codec == "h264":
        return _h264_round_trip(frame, cfg.crf)
    return _jpeg_round_trip(frame, q)


# --------------------------------------------------------------------------------------
# the fit stage's crop path


class Cropper:
    """Detection + face choice + ROI + 120x120 crop, as :class:`vox3d.fit.Fitter` does it:
    on the CPU its reference path (``detect_batch``, :func:`vox3d.quality.choose_face`,
    :func:`vox3d.crop.roi_box_from_bbox`, :func:`vox3d.crop.crop_image`), on CUDA its
    tensor path (``detect_tensor``, :func:`vox3d.fit.choose_faces_torch`,
    :func:`vox3d.crop.roi_boxes_torch`, :func:`vox3d.crop.crop_batch_torch`; cv2-exact)."""

    def __init__(
        self,
        device: str = "cpu",
        weights: str | None = None,
        min_score: float = 0.6,
        deterministic: bool = False,
    ):
        from vox3d import paths
        from vox3d.detector import FaceBoxes

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
        from vox3d.crop import crop_image, roi_box_from_bbox
        from vox3d.quality import choose_face

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

        from vox3d.crop import crop_batch_torch, roi_boxes_torch
        from vox3d.fit import choose_faces_torch

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
    coordinates (:func:`vox3d.ict_regressor.pose_matrix`), identity, expression."""
    from vox3d.ict_regressor import pose_matrix
    from vox3d.params import euler_to_rotation, pose_to_srt
    from vox3d.synth_config import FRAME_SIZE

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
    from vox3d.io import atomic_path

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
    device: str = "auto",
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

    from vox3d.io import main_not_reimported, write_text_atomic

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


# --------------------------------------------------------------------------------------
# identity geometry after similarity alignment


def similarity_tangent(ref: np.ndarray) -> np.ndarray:
    """Orthonormal basis ``(3M, 7)`` of the tangent space of similarity transforms at the
    points ``ref (M, 3)``: translations (3), rotations about the centroid (3), scaling
    about the centroid (1)."""
    x = np.asarray(ref, np.float64)
    c = x - x.mean(0)
    cols = []
    for a in range(3):
        t = np.zeros_like(x)
        t[:, a] = 1.0
        cols.append(t.reshape(-1))
    for a in range(3):
        w = np.zeros(3)
        w[a] = 1.0
        cols.append(np.cross(w, c).reshape(-1))
    cols.append(c.reshape(-1))
    q, _ = np.linalg.qr(np.stack(cols, 1))
    return q


def identity_geometry_form(basis: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``Q (K, K) = B^T P_perp B / M`` (float64): for an identity-coefficient error ``d
    (K,)``, ``d^T Q d`` is the mean squared vertex error (units of the basis squared, cm^2
    for ICT) of ``B d`` after removing its similarity component at ``ref``.

    basis ``(K, M, 3)`` identity modes on the M points; ref ``(M, 3)`` the mean shape there.
    """
    k, m = basis.shape[:2]
    B = np.asarray(basis, np.float64).reshape(k, -1).T  # (3M, K)
    T = similarity_tangent(ref)
    TB = T.T @ B  # (7, K)
    return (B.T @ B - TB.T @ TB) / m


def vertex_geometry_error(dv: np.ndarray, ref: np.ndarray) -> float:
    """Mean squared per-point displacement of ``dv (M, 3)`` after removing its similarity
    component at ``ref (M, 3)`` (the vertex-space form of :func:`identity_geometry_form`)."""
    T = similarity_tangent(ref)
    v = np.asarray(dv, np.float64).reshape(-1)
    r = v - T @ (T.T @ v)
    return float(r @ r / len(ref))


# --------------------------------------------------------------------------------------
# training and evaluation (the loop is vox3d.ict_regressor.train_from_cache)


def train_config(a: argparse.Namespace):
    """:class:`vox3d.ict_regressor.TrainConfig` from the command line."""
    from vox3d.ict_regressor import TrainConfig

    return TrainConfig(
        steps=a.steps, batch_size=a.batch_size, lr=a.lr, device=a.device, threads=a.threads,
        id_weight=a.id_weight, vertex_weight=a.vertex_weight, widen=a.widen, amp=not a.no_amp,
        seed=a.seed,
    )  # fmt: skip


def train_and_save(a: argparse.Namespace) -> int:
    """Train from ``a.cache`` (resuming), then evaluate on ``a.heldout`` and write the
    checkpoint ``a.out`` (+ json with the accuracy and the training curve).  Returns 0
    when the checkpoint was written, 3 when the time budget stopped training first."""
    from vox3d import ict_regressor as ir

    gm = ir.build_gen_model(a.n_id, a.n_exp, a.ict)
    tc = train_config(a)
    out = Path(a.out)
    state = Path(a.state) if a.state else out.with_suffix(".state.pt")
    log = open(a.log, "a") if a.log else None  # noqa: SIM115
    try:
        model, mean, std, curve, finished = ir.train_from_cache(
            gm, a.cache, tc, state, a.time_budget, log=log
        )
    finally:
        if log:
            log.close()
    if not finished:
        return 3
    acc = ir.evaluate_cache(model, gm, a.heldout, mean, std, a.device)
    print(ir.format_accuracy(acc))
    meta = cache_meta(a.cache)
    rcfg = meta["config"]
    gen = ir.GenConfig(n_id=gm.n_id, n_exp=gm.n_exp, seed=int(rcfg["seed"]),
                       yaw_deg=float(rcfg["yaw_deg"]), pitch_deg=float(rcfg["pitch_deg"]),
                       roll_deg=float(rcfg["roll_deg"]))  # fmt: skip
    n_train = int(len(load_cache(a.cache, keys=("valid",))["valid"]))
    extra = {
        "data_generator": "vox3d.regressor_data",
        "generator": rcfg,
        "codec": meta["codec"],
        "train_samples_rendered": int(meta["n"]),
        "train_samples_valid": n_train,
        "heldout": {"data_seed": cache_meta(a.heldout)["data_seed"], "n": acc["n"],
                    "n_rendered": acc["n_rendered"]},
        "training_curve_columns": ["step", "param_mse", "vertex_px", "identity_mm2", "lr",
                                   "elapsed_s"],
        "training_curve": curve,
    }  # fmt: skip
    m = ir.save_checkpoint(model, out, gen, tc, mean, std, acc, extra, gm=gm)
    print(f"wrote {out} sha256 {m['sha256']}")
    return 0


def evaluate_checkpoint(a: argparse.Namespace) -> int:
    """Print the held-out accuracy of checkpoint ``a.checkpoint`` on ``a.heldout``."""
    from vox3d import ict_regressor as ir

    model, mean, std, meta = ir.load_model(a.checkpoint, a.device)
    gm = ir.build_gen_model(int(meta["n_id"]), int(meta["n_exp"]), a.ict)
    acc = ir.evaluate_cache(model, gm, a.heldout, mean, std, a.device)
    print(ir.format_accuracy(acc))
    if a.json:
        from vox3d.io import write_text_atomic

        write_text_atomic(a.json, json.dumps(acc, indent=1, sort_keys=True) + "\n")
    return 0


def calibrate_checkpoint(
    checkpoint: str | os.PathLike,
    n_groups: int = 250,
    cache: str | os.PathLike | None = None,
    workers: int = 1,
    device: str = "cpu",
    max_yaw_deg: float = 60.0,
    ict: str | None = None,
    shard_size: int = 128,
    write: bool = True,
) -> dict:
    """Identity calibration of an ICT checkpoint, written into its json.

    Renders ``n_groups`` groups of :attr:`RenderConfig.group` frames (one person + session
    each) with the checkpoint's own generator settings (its json ``generator`` and
    ``codec``) at data seed ``data_seed + CALIB_SEED_OFFSET`` (fresh people) into `cache`
    (a temporary folder when None; resumable when given), runs the checkpoint on the valid
    crops whose true yaw is within +-`max_yaw_deg` (the fit stage's yaw gate, config
    ``fit.max_yaw_deg``), and fits :func:`vox3d.identities.calibrate_identity` of the
    predicted on the true identity coefficients, with prior std ``id_std x``
    :func:`~vox3d.identities.clipped_normal_std` ``(Z_CLIP)``.  With `write`, stores it as
    ``identity_calibration`` in the checkpoint's json (every other key unchanged).
    Returns the calibration dict.
    """
    import tempfile
    from dataclasses import replace

    from vox3d import ict_regressor as ir
    from vox3d.identities import calibrate_identity, clipped_normal_std
    from vox3d.io import write_text_atomic
    from vox3d.params import ict_layout

    checkpoint = Path(checkpoint)
    meta = ir.read_checkpoint_meta(checkpoint)
    gen = RenderConfig.from_dict(meta["generator"])
    data_seed = int(meta.get("data_seed", gen.seed)) + CALIB_SEED_OFFSET
    cfg = replace(
        gen, seed=data_seed, codec=str(meta.get("codec", gen.codec)), shard_size=shard_size,
        face_model_path=ict,
    )  # fmt: skip
    n = int(n_groups) * cfg.group
    with tempfile.TemporaryDirectory(prefix="vox3d-calib-") as td:
        folder = Path(cache) if cache is not None else Path(td)
        summ = render_cache(cfg, n, folder, workers, device, heldout=False)
        if not summ["complete"]:
            raise RuntimeError(f"{folder}: calibration renders incomplete ({summ})")
        d = load_cache(folder, keys=("crops", "id_coef", "euler", "index"))
        n_valid = len(d["index"])
    keep = (d["index"] < n) & (np.abs(d["euler"][:, 0]) <= max_yaw_deg)
    model, mean, std, _ = ir.load_model(checkpoint, device)
    pred = ir.predict_crops(model, d["crops"][keep], device) * std + mean
    lay = ict_layout(int(meta["n_id"]), int(meta["n_exp"]))
    gm = ir.build_gen_model(int(meta["n_id"]), int(meta["n_exp"]), ict)
    sigma = gm.id_std.astype(np.float64) * clipped_normal_std(Z_CLIP)
    cal = calibrate_identity(
        pred[:, lay.shape].astype(np.float64), d["id_coef"][keep].astype(np.float64),
        d["index"][keep] // cfg.group, sigma,
    )  # fmt: skip
    cal.update(
        data_seed=data_seed, group=cfg.group, codec=cfg.codec, n_groups_rendered=int(n_groups),
        n_rendered=n, n_valid=int(n_valid), max_yaw_deg=float(max_yaw_deg),
        sigma_source=f"id_std x std of N(0, 1) clipped to +-{Z_CLIP:g} (vox3d.synth_rig.draw_face)",
        checkpoint_sha256=meta.get("sha256"),
        command="python -m vox3d.regressor_data calibrate",
    )  # fmt: skip
    if write:
        meta["identity_calibration"] = cal
        write_text_atomic(
            checkpoint.with_suffix(".json"), json.dumps(meta, indent=1, sort_keys=True) + "\n"
        )
    return cal


def format_calibration(cal: dict) -> str:
    """Per-mode table of a calibration (s, v, rho, sigma, R^2, gain at N=1 and N=100)."""
    from vox3d.identities import calibrated_gain

    g1, g100 = calibrated_gain(cal, 1), calibrated_gain(cal, 100)
    lines = [
        f"identity calibration: {cal['n_samples']} frames, {cal['n_groups']} people",
        f"{'mode':>4} {'s':>6} {'bias':>7} {'v':>6} {'rho':>5} {'sigma':>6} {'R2':>5} "
        f"{'gain1':>6} {'gain100':>7}",
    ]
    for k in range(len(cal["s"])):
        lines.append(
            f"{k:>4} {cal['s'][k]:6.3f} {cal['bias'][k]:7.3f} {cal['v'][k]:6.3f} "
            f"{cal['rho'][k]:5.2f} {cal['sigma'][k]:6.3f} {cal['r2'][k]:5.2f} "
            f"{g1[k]:6.3f} {g100[k]:7.3f}"
        )
    return "\n".join(lines)


def calibrate_command(a: argparse.Namespace) -> int:
    """``calibrate``: :func:`calibrate_checkpoint` from the command line."""
    cal = calibrate_checkpoint(
        a.checkpoint, a.n_groups, a.calib_cache, a.workers, a.device, a.max_yaw_deg, a.ict,
    )  # fmt: skip
    print(format_calibration(cal))
    print(f"wrote identity_calibration into {Path(a.checkpoint).with_suffix('.json')}")
    return 0


# --------------------------------------------------------------------------------------
# command line


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-id", type=int, default=40)
    p.add_argument("--n-exp", type=int, default=10)
    p.add_argument("--ict", default=None, help="ICT-FaceKit archive / FaceXModel folder")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0, help="data seed (and torch seed)")


def _train_args(p: argparse.ArgumentParser) -> None:
    from vox3d.ict_regressor import TrainConfig

    p.add_argument("--steps", type=int, default=30000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--id-weight", type=float, default=1.0, help="x identity mm^2")
    p.add_argument("--vertex-weight", type=float, default=TrainConfig.vertex_weight)
    p.add_argument("--widen", type=float, default=0.5)
    p.add_argument("--no-amp", action="store_true", help="CUDA: fp32 instead of bf16 autocast")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--cache", required=True, help="training render cache")
    p.add_argument("--heldout", required=True, help="held-out render cache")
    p.add_argument("--out", required=True, help="checkpoint .pth (+ .json)")
    p.add_argument("--state", default=None, help="resumable state (default OUT.state.pt)")
    p.add_argument("--log", default=None, help="append the training curve (tsv)")


#: Config ``fit.regressor`` keys passed to ``python -m vox3d.regressor_data all`` by rule
#: ``train_regressor`` beside steps, batch size, lr, seed, device and workers.
REGRESSOR_FLAGS = {"samples": "--n", "id_weight": "--id-weight", "widen": "--widen",
                   "codec": "--codec"}  # fmt: skip
#: ``all``'s held-out renders when ``--n-heldout`` is not given (the rule does not give it).
N_HELDOUT = 2000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vox3d.regressor_data", description=__doc__.split("\n")[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="render samples into a cache folder")
    r.add_argument("--n", type=int, required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--heldout", action="store_true", help="held-out seed (evaluation)")
    t = sub.add_parser("train", help="train from a cache (resumable), evaluate, save")
    _train_args(t)
    e = sub.add_parser("eval", help="held-out accuracy of a checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--heldout", required=True)
    e.add_argument("--json", default=None, help="also write the accuracy here")
    w = sub.add_parser("all", help="render (resumable), train, evaluate, save: the rule")
    _train_args(w)
    w.add_argument("--n", type=int, default=300000, help="training samples")
    w.add_argument("--n-heldout", type=int, default=N_HELDOUT)
    c = sub.add_parser(
        "calibrate", help="identity calibration of a checkpoint, written into its json"
    )
    c.add_argument("--checkpoint", required=True)
    for q in (c, w):
        q.add_argument("--n-groups", type=int, default=250, help="calibration people")
        q.add_argument("--calib-cache", default=None, help="calibration renders (resumable)")
        q.add_argument("--max-yaw-deg", type=float, default=60.0, help="config fit.max_yaw_deg")
    c.add_argument("--workers", type=int, default=1)
    for q in (r, w):
        q.add_argument("--workers", type=int, default=1)
        q.add_argument("--codec", default="auto", help="auto | h264 | jpeg")
        q.add_argument("--shard-size", type=int, default=RenderConfig.shard_size)
    for q in (r, t, e, w, c):
        _common(q)
        q.add_argument("--time-budget", type=float, default=None, help="seconds; resumable")
    a = p.parse_args(argv)
    a.device = resolve_device(a.device, "--device")
    if a.cmd in ("render", "all"):
        cfg = RenderConfig(
            n_id=a.n_id, n_exp=a.n_exp, seed=a.seed, codec=a.codec, shard_size=a.shard_size,
            face_model_path=a.ict,
        )  # fmt: skip
        runs = [(a.n, a.out, a.heldout)] if a.cmd == "render" else [
            (a.n, a.cache, False), (a.n_heldout, a.heldout, True)]  # fmt: skip
        for n, folder, held in runs:
            s = render_cache(cfg, n, folder, a.workers, a.device, heldout=held,
                             time_budget=a.time_budget)  # fmt: skip
            print(json.dumps(s, sort_keys=True), flush=True)
            if not s["complete"]:
                return 3
        if a.cmd == "render":
            return 0
        rc = train_and_save(a)
        if rc != 0:
            return rc
        a.checkpoint = a.out
        if a.calib_cache is None:
            a.calib_cache = str(Path(a.heldout).with_name("calibration"))
        return calibrate_command(a)
    if a.cmd == "calibrate":
        return calibrate_command(a)
    if a.cmd == "train":
        return train_and_save(a)
    return evaluate_checkpoint(a)


if __name__ == "__main__":
    sys.exit(main())
