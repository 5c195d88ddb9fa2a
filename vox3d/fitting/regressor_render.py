"""The ICT regressor's training frames, rendered by the corpus's own renderer.

One synthetic-face kit: the frames come from :mod:`vox3d.synthetic.synth_render` (the renderer of
the default corpus: :func:`~vox3d.synthetic.synth_rig.load_rig`, :func:`~vox3d.synthetic.synth_rig.draw_face`,
:func:`~vox3d.synthetic.synth_rig.draw_look`, :func:`~vox3d.synthetic.synth_rig.albedo`,
:func:`~vox3d.synthetic.synth_render.video_spec`, :func:`~vox3d.synthetic.synth_render.background`,
:func:`~vox3d.synthetic.synth_render.make_light`, :func:`~vox3d.synthetic.synth_render.expression_track`,
:func:`~vox3d.synthetic.synth_render.frame_pose`, :func:`~vox3d.synthetic.synth_render.camera_frame` with its sensor
noise, motion blur and defocus), whole 224x224 frames, then a compression round trip
(H.264 through PyAV when it is installed, else JPEG).  :mod:`vox3d.fitting.regressor_cache` then
crops them by the fit stage's crop path and stores them; :mod:`vox3d.fitting.regressor_data` is
the command line.

What differs from a corpus clip, on purpose:

* **fresh people**: every draw comes from ``SeedSequence([seed + REGDATA_SEED_OFFSET,
  stream, index])``.  A corpus draws its identities from ``SeedSequence([corpus_seed,
  1, i])`` (:data:`vox3d.synthetic.synth_config._S_IDENTITY`); with ``REGDATA_SEED_OFFSET = 10**9`` and
  the streams 101-104 the two seed spaces never meet for corpus seeds below 10**9;
* **single frames**: samples come in groups of :attr:`RenderConfig.group` that share a
  person (identity, albedo, voice) and a session (background, light, face size and
  place, room) as the frames of one video do; each sample has its own pose,
  expression (a random frame of an expression track drawn by the corpus's
  :func:`~vox3d.synthetic.synth_render.expression_track` from a synthetic utterance of the group's
  voice), sensor noise and camera shake;
* **wider poses**: with probability :attr:`RenderConfig.p_wide` yaw, pitch and roll are
  uniform in +-``yaw_deg`` (85), +-``pitch_deg`` (25), +-``roll_deg`` (15); otherwise
  they are drawn as a corpus clip's frames are (session mean + the clip's spread, clipped
  to +-40, +-20, +-10);
* camera shake in a fraction :attr:`RenderConfig.p_blur` of the frames (motion blur
  2-18 px, as the corpus's shake episodes reach).

Sample ``i`` of data seed ``s`` depends on ``(s, i)`` only (its group is ``i //
group``), so a shard is the same whatever the worker count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from vox3d.config import setting
from vox3d.synthetic import synth_config

#: Offset added to the data seed of every draw (see the module docstring).
REGDATA_SEED_OFFSET = 10**9
#: Seed-sequence streams (disjoint from vox3d.synthetic.synth_config's 1-7).
_S_GROUP, _S_SAMPLE, _S_AUDIO, _S_CODEC = 101, 102, 103, 104
#: Seconds of the synthetic utterance whose expression track a group samples from.
UTT_SECONDS = 2.0


@dataclass(frozen=True)
class RenderConfig:
    """Distribution of the regressor's training frames (angles in degrees)."""

    n_id: int = setting("face_model.n_id")
    n_exp: int = setting("face_model.n_exp")
    seed: int = setting("fit.regressor.seed")
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
    min_score: float = setting("fit.min_score")  # detector score of a valid sample
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
    """The corpus rig (:func:`vox3d.synthetic.synth_rig.load_rig`) and its voice mapping."""

    cfg: RenderConfig
    rig: object
    mapping: object
    _group: tuple = field(default=(None, None), repr=False)

    @classmethod
    def load(cls, cfg: RenderConfig) -> Kit:
        from vox3d.synthetic import synth_rig

        scfg = synth_config.SynthConfig(
            n_id=cfg.n_id, n_exp=cfg.n_exp, face_model_path=cfg.face_model_path
        )
        rig = synth_rig.load_rig(scfg)
        return cls(cfg, rig, synth_rig.default_mapping(rig))


@dataclass
class Group:
    """Shared draws of a group of samples: one person in one session."""

    ident: object  # vox3d.synthetic.synth_rig.Identity
    spec: object  # vox3d.synthetic.synth_render.VideoSpec
    colors: np.ndarray  # (V, 3) float32 albedo
    bg: np.ndarray  # (224, 224, 3) uint8 background
    light: object  # vox3d.face.render.Light
    exp: np.ndarray  # (T, n_exp) expression track
    base: np.ndarray  # (V, 3) float32 neutral vertices of the identity (cm)
    anchor: np.ndarray  # (3,) face centre (model cm)


def draw_group(kit: Kit, seed: int, g: int) -> Group:
    """Group `g` of data seed `seed` (a fresh person and session)."""
    from vox3d.synthetic import synth_render, synth_rig
    from vox3d.synthetic import voice_synth as vs

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
    :func:`vox3d.synthetic.synth_render.draw_utterance`, one unit normal per angle, clipped)."""
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
    from vox3d.synthetic import synth_render

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
