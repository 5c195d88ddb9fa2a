"""Rendering of the synthetic corpus (:mod:`vox3d.synthetic.synth`): video sessions (specs, ids,
backgrounds), utterance tracks (head motion, expressions, hard episodes), the projection,
light, rendered frames and masks, camera blur, the clip encoder and the camera frames of a
clip."""

from __future__ import annotations

import math
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vox3d.io import atomic_path
from vox3d.params import CROP_SIZE, euler_to_rotation, srt_to_pose, to_image, transform_vertices
from vox3d.synthetic import voice_synth as vs
from vox3d.synthetic.synth_config import (
    _S_AUDIO,
    _S_MOTION,
    _S_VIDEO,
    DEFOCUS_PER_BLUR_PX,
    FFMPEG_AUDIO_ARGS,
    FFMPEG_BITEXACT_ARGS,
    FFMPEG_VIDEO_ARGS,
    FPS,
    FRAME_SIZE,
    HARD_BLUR,
    HARD_PROFILE,
    HARD_SMALL,
    P_BLUR_UTT,
    P_PROFILE_UTT,
    P_SMALL_VIDEO,
    SCALE_PX_PER_CM,
    SMALL_SCALE_PX_PER_CM,
    SynthConfig,
    _rng,
)
from vox3d.synthetic.synth_rig import FaceRig, Identity

# =========================================================================== videos


def youtube_id(rng: np.random.Generator) -> str:
    """An 11-character YouTube-style id (``[A-Za-z0-9_-]``)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[int(k)] for k in rng.integers(0, 64, 11))


@dataclass
class VideoSpec:
    """One recording session (YouTube id) of an identity."""

    identity: int
    index: int  # within the identity
    youtube_id: str
    background_seed: int
    light_ambient: np.ndarray  # (3,) RGB
    light_diffuse: np.ndarray  # (3,) RGB
    light_direction: np.ndarray  # (3,) unit, image coords (x right, y down, z to viewer)
    light_specular: float
    scale_px_per_cm: float
    center_px: np.ndarray  # (2,) where the face centre sits
    mean_euler_deg: np.ndarray  # (3,) yaw, pitch, roll
    small: bool
    room: vs.Room
    shirt_color: np.ndarray = field(default_factory=lambda: np.zeros(3))


def draw_video(cfg: SynthConfig, ident: Identity, v: int) -> VideoSpec:
    """Video `v` of identity `ident` (deterministic in the corpus seed and the indices)."""
    return video_spec(_rng(cfg.seed, _S_VIDEO, ident.index, v), ident.index, v)


def video_spec(rng: np.random.Generator, identity: int, v: int) -> VideoSpec:
    """A recording session drawn from `rng`: background seed, light, face size (px / cm)
    and place (px), mean head pose (deg), room acoustics, shirt colour."""
    yt = youtube_id(rng)
    small = bool(rng.random() < P_SMALL_VIDEO)
    scale = rng.uniform(*(SMALL_SCALE_PX_PER_CM if small else SCALE_PX_PER_CM))
    az = math.radians(rng.uniform(-55, 55))
    el = math.radians(rng.uniform(-10, 45))
    # Image coords: y down, so light from above has a negative y component.
    d = np.array([math.sin(az) * math.cos(el), -math.sin(el), math.cos(az) * math.cos(el)])
    warm = rng.uniform(-0.06, 0.06)
    tint = np.array([1 + warm, 1.0, 1 - warm])
    return VideoSpec(
        identity=identity,
        index=v,
        youtube_id=yt,
        background_seed=int(rng.integers(2**31)),
        light_ambient=tint * rng.uniform(0.35, 0.6),
        light_diffuse=tint * rng.uniform(0.4, 0.7),
        light_direction=d / np.linalg.norm(d),
        light_specular=float(rng.uniform(0.0, 0.15)),
        scale_px_per_cm=float(scale),
        center_px=np.array(
            [FRAME_SIZE / 2 + rng.uniform(-12, 12), FRAME_SIZE * 0.52 + rng.uniform(-10, 10)]
        ),
        mean_euler_deg=np.array([rng.uniform(-20, 20), rng.uniform(-8, 8), rng.uniform(-4, 4)]),
        small=small,
        room=vs.Room.draw(rng),
        shirt_color=rng.uniform(0.05, 0.6, 3) * rng.uniform(0.5, 1.0),
    )


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A muted RGB colour (grey level 0.12-0.9, saturation <= 0.4), like real backgrounds."""
    grey = rng.uniform(0.12, 0.9)
    hue = rng.uniform(0, 2 * np.pi)
    sat = rng.uniform(0.0, 0.4) * min(grey, 1 - grey) * 2
    off = np.cos(hue + np.array([0.0, 2.094, 4.189]))
    return np.clip(grey + sat * off, 0, 1)


def background(spec: VideoSpec, size: int = FRAME_SIZE) -> np.ndarray:
    """The video's static background ``(size, size, 3) uint8``: a colour gradient,
    low-frequency noise, blurred shapes (shelves, windows, posters) and a torso.
    Deterministic in ``spec.background_seed``."""
    import cv2

    cv2.setNumThreads(1)
    rng = np.random.default_rng(spec.background_seed)
    H = W = size
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64) / size
    c1, c2 = _muted(rng), _muted(rng)
    ang = rng.uniform(0, 2 * np.pi)
    g = np.clip((xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang) + 0.5, 0, 1)
    img = c1 * (1 - g[..., None]) + c2 * g[..., None]
    for cells, amp in ((4, 0.06), (12, 0.03), (40, 0.012)):
        # Mostly luminance texture, a little colour.
        n = rng.standard_normal((cells, cells, 1)) + 0.3 * rng.standard_normal((cells, cells, 3))
        img += amp * cv2.resize(n.astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(2, 6))):
        layer = np.zeros((H, W), np.float32)
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
        w, h = rng.uniform(0.1, 0.6, 2) * size
        if rng.random() < 0.5:
            cv2.rectangle(layer, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), 1.0, -1)
        else:
            cv2.ellipse(
                layer, (int(x0), int(y0)), (int(w / 2), int(h / 2)), rng.uniform(0, 180),
                0, 360, 1.0, -1,
            )  # fmt: skip
        layer = cv2.GaussianBlur(layer, (0, 0), rng.uniform(1.5, 6.0))
        col = _muted(rng) if rng.random() < 0.8 else rng.uniform(0.6, 1.0, 3)
        a = rng.uniform(0.3, 0.8)
        img = img * (1 - a * layer[..., None]) + col * a * layer[..., None]
    # Torso: shoulders below the face, in clothing colour.
    torso = np.zeros((H, W), np.float32)
    cx = int(spec.center_px[0])
    top = int(spec.center_px[1] + spec.scale_px_per_cm * 13.0)
    half = int(spec.scale_px_per_cm * rng.uniform(17, 22))
    cv2.ellipse(torso, (cx, top + half // 2), (half, half // 2 + 4), 0, 180, 360, 1.0, -1)
    cv2.rectangle(torso, (cx - half, top + half // 2), (cx + half, H + 10), 1.0, -1)
    torso = cv2.GaussianBlur(torso, (0, 0), 1.2)
    shirt = spec.shirt_color * (1.0 + 0.15 * (yy[..., None] - 0.5))
    img = img * (1 - torso[..., None]) + shirt * torso[..., None]
    vign = 1.0 - 0.25 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
    img *= vign[..., None]
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


# =========================================================================== utterances


def _smooth_noise(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Unit-std smooth random series ``(n,)`` (white noise through a Gaussian, sigma frames)."""
    from scipy.ndimage import gaussian_filter1d

    pad = int(4 * sigma) + 1
    x = gaussian_filter1d(rng.standard_normal(n + 2 * pad), sigma)[pad : pad + n]
    # Unit white noise through a Gaussian of std `sigma` has variance 1 / (2 sqrt(pi) sigma).
    return x * math.sqrt(2.0 * math.sqrt(math.pi) * sigma)


def _hump(n: int, start: int, length: int, ramp: int) -> np.ndarray:
    """0 -> 1 -> 0 weight over frames ``start .. start + length`` with cosine ramps."""
    w = np.zeros(n)
    t = np.arange(n)
    a = np.clip((t - start) / max(ramp, 1), 0, 1)
    b = np.clip((start + length - t) / max(ramp, 1), 0, 1)
    w = np.minimum(a, b)
    return 0.5 - 0.5 * np.cos(np.pi * w)


@dataclass
class UtteranceTruth:
    """Per-frame and per-utterance ground truth of one clip (T frames)."""

    euler_deg: np.ndarray  # (T, 3) yaw, pitch, roll
    scale: np.ndarray  # (T,) px / cm
    center: np.ndarray  # (T, 2) px, image position of the face centre
    exp: np.ndarray  # (T, K_exp)
    hard: np.ndarray  # (T,) uint8 flags
    blur_px: np.ndarray  # (T,) motion-blur length (px), 0 = sharp
    blur_angle: np.ndarray  # (T,) degrees
    voicing: np.ndarray  # (T,) voicing per frame (lip-sync driver)
    utt: vs.Utterance = None


def draw_utterance(
    cfg: SynthConfig, rig: FaceRig, ident: Identity, spec: VideoSpec, u: int
) -> UtteranceTruth:
    """Audio, head motion, expressions and hard-frame episodes of one utterance."""
    T = cfg.n_frames
    rng_a = _rng(cfg.seed, _S_AUDIO, ident.index, spec.index, u)
    utt = vs.synthesize(ident.voice, cfg.seconds, spec.room, rng_a)
    rng = _rng(cfg.seed, _S_MOTION, ident.index, spec.index, u)
    m = spec.mean_euler_deg
    yaw = np.clip(m[0] + 14 * _smooth_noise(rng, T, 14), -40, 40)
    pitch = np.clip(m[1] + 6 * _smooth_noise(rng, T, 12), -20, 20)
    roll = np.clip(m[2] + 3 * _smooth_noise(rng, T, 16), -10, 10)
    hard = np.zeros(T, np.uint8)
    blur = np.zeros(T)
    blur_angle = np.zeros(T)
    if T >= 30 and rng.random() < P_PROFILE_UTT:
        length = int(rng.integers(15, 31))
        start = int(rng.integers(0, T - length))
        target = rng.choice([-1, 1]) * rng.uniform(62, 85)
        w = _hump(T, start, length, 6)
        yaw = (1 - w) * yaw + w * target
    if T >= 20 and rng.random() < P_BLUR_UTT:
        length = int(rng.integers(6, 13))
        start = int(rng.integers(0, T - length))
        w = _hump(T, start, length, 2)
        sweep = rng.choice([-1, 1]) * rng.uniform(8, 15)
        yaw = yaw + sweep * np.clip((np.arange(T) - start) / length, 0, 1) * (w > 0)
        blur = w * rng.uniform(9, 18)
        blur_angle[:] = rng.uniform(-20, 20)
    hard[np.abs(yaw) > 60] |= HARD_PROFILE
    hard[blur >= 2] |= HARD_BLUR
    if spec.small:
        hard |= HARD_SMALL
    scale = spec.scale_px_per_cm * (1 + 0.03 * _smooth_noise(rng, T, 20))
    center = spec.center_px + np.stack(
        [4 * _smooth_noise(rng, T, 15), 3 * _smooth_noise(rng, T, 15)], axis=1
    )
    exp, voice_f = expression_track(rng, rig, utt, T, ident.mouth_gain)
    return UtteranceTruth(
        euler_deg=np.stack([yaw, pitch, roll], axis=1),
        scale=scale,
        center=center,
        exp=exp,
        hard=hard,
        blur_px=blur,
        blur_angle=blur_angle,
        voicing=voice_f,
        utt=utt,
    )


def expression_track(
    rng: np.random.Generator, rig: FaceRig, utt: vs.Utterance, T: int, mouth_gain: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame expression coefficients ``(T, K_exp)`` of a clip of `T` frames at FPS and
    its voicing ``(T,)``: jaw opening driven by the audio (voicing x vowel openness, lip
    sync, gain `mouth_gain`), funnel / pucker while voiced, a smile, blinks every 2-6 s and
    brow raises; names the model lacks stay 0.  Draws from `rng`."""
    # Expressions by name (any model expression set; unknown names stay 0).
    open_f = utt.openness_at(FPS, T)
    voice_f = utt.voicing_at(FPS, T)
    drivers = {
        "jawOpen": np.clip(0.03 + 0.55 * mouth_gain * open_f, 0, 1),
        "mouthFunnel": np.clip(0.15 * voice_f * (0.5 + 0.5 * _smooth_noise(rng, T, 3)), 0, 1),
        "mouthPucker": np.clip(0.12 * voice_f * (0.5 + 0.5 * _smooth_noise(rng, T, 4)), 0, 1),
        "mouthClose": np.zeros(T),
    }
    smile = np.clip(rng.uniform(0, 0.35) + 0.12 * _smooth_noise(rng, T, 25), 0, 1)
    drivers["mouthSmile_L"] = smile
    drivers["mouthSmile_R"] = np.clip(smile + 0.03 * _smooth_noise(rng, T, 25), 0, 1)
    blink = np.zeros(T)
    t = int(rng.integers(5, 60))
    while t < T:
        shape = np.array([0.5, 1.0, 1.0, 0.6, 0.2])
        blink[t : t + len(shape)] = shape[: max(0, min(len(shape), T - t))]
        t += int(rng.uniform(2.0, 6.0) * FPS)
    drivers["eyeBlink_L"] = blink
    drivers["eyeBlink_R"] = blink
    brow = np.clip(0.2 * _smooth_noise(rng, T, 10) + 0.05, 0, 0.5)
    drivers["browInnerUp_L"] = drivers["browInnerUp_R"] = drivers["browInnerUp"] = brow
    names = rig.model.exp_names
    exp = np.stack([drivers.get(n, np.zeros(T)) for n in names], axis=1) if names else None
    if exp is None:
        exp = np.zeros((T, 0))
    return exp, voice_f


# =========================================================================== projection


def face_center_model(rig: FaceRig, id_coef: np.ndarray) -> np.ndarray:
    """The face centre in model coordinates (mid-point of nasion and chin) ``(3,)``."""
    lm = rig.model.landmarks68
    v = rig.model.mean[lm[[27, 8]]].astype(np.float64) + np.einsum(
        "k,kij->ij", id_coef, rig.model.id_basis[:, lm[[27, 8]]].astype(np.float64)
    )
    return v.mean(0)


def frame_pose(
    euler_deg: np.ndarray, scale: float, center_px: np.ndarray, anchor: np.ndarray
) -> np.ndarray:
    """Pose ``P (3, 4)`` (params convention, roi = whole frame) that rotates the model by
    the Euler angles, scales it to `scale` px / cm and puts model point `anchor` at image
    position `center_px`."""
    R = euler_to_rotation(*np.radians(euler_deg))
    k = CROP_SIZE / FRAME_SIZE  # crop units per image pixel
    s_c = scale * k
    a = s_c * (R @ anchor)
    # Crop coords: x_img = (x_c - 1) / k, y_img = (CROP - y_c) / k.
    t = np.array([center_px[0] * k + 1 - a[0], CROP_SIZE - center_px[1] * k - a[1], -a[2]])
    return srt_to_pose(s_c, R, t)


def project(vertices: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Model vertices ``(V, 3)`` -> image coordinates ``(V, 3) float32`` of the full frame."""
    return to_image(transform_vertices(vertices, P), (0, 0, FRAME_SIZE, FRAME_SIZE))


# =========================================================================== rendering


def make_light(spec: VideoSpec):
    """The video's light as a :class:`vox3d.face.render.Light`."""
    from vox3d.face.render import Light

    return Light(
        ambient=tuple(float(x) for x in spec.light_ambient),
        directional=[
            (
                tuple(float(x) for x in spec.light_direction),
                tuple(float(x) for x in spec.light_diffuse),
            )
        ],
        specular=float(spec.light_specular),
        shininess=12.0,
    )


def render_frame(
    rig: FaceRig,
    vertices_img: np.ndarray,
    colors: np.ndarray,
    bg: np.ndarray,
    light,
) -> np.ndarray:
    """Render the face over the background ``(H, W, 3) uint8``."""
    from vox3d.face.render import render

    return render(vertices_img, rig.triangles, colors, image=bg, light=light)


def face_mask(rig: FaceRig, vertices_img: np.ndarray) -> np.ndarray:
    """Pixels covered by the rendered head ``(H, W) bool``."""
    from vox3d.face.render import render_full

    r = render_full(
        vertices_img, rig.triangles, np.ones_like(vertices_img), size=(FRAME_SIZE, FRAME_SIZE)
    )
    return np.asarray(r.mask).astype(bool)


def defocus(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian defocus blur of std `sigma` pixels (uint8 in and out)."""
    import cv2

    if sigma < 0.3:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def motion_blur(img: np.ndarray, length: float, angle_deg: float) -> np.ndarray:
    """Linear motion blur of `length` pixels at `angle_deg` (uint8 in and out)."""
    import cv2

    n = max(int(round(length)), 1)
    if n < 2:
        return img
    k = np.zeros((n, n), np.float32)
    c = (n - 1) / 2
    a = math.radians(angle_deg)
    for s in np.linspace(-c, c, 4 * n):
        x, y = int(round(c + s * math.cos(a))), int(round(c + s * math.sin(a)))
        k[y, x] = 1.0
    k /= k.sum()
    return cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT)


# =========================================================================== encoding


def encode_clip(frames, audio: np.ndarray, path: Path, fps: int = FPS) -> None:
    """Encode RGB frames (iterable of ``(H, W, 3) uint8``) and 16 kHz mono audio into an
    mp4 at `path` (atomically), with deterministic x264 / AAC settings."""
    import soundfile as sf

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="vox3d-synth-") as td:
        wav = Path(td) / "audio.wav"
        sf.write(wav, audio.astype(np.float32), vs.SAMPLE_RATE, subtype="FLOAT")
        with atomic_path(path) as tmp:
            cmd = [
                "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{FRAME_SIZE}x{FRAME_SIZE}",
                "-r", str(fps), "-i", "pipe:0", "-i", str(wav),
                "-map", "0:v:0", "-map", "1:a:0",
                *FFMPEG_VIDEO_ARGS, *FFMPEG_AUDIO_ARGS, *FFMPEG_BITEXACT_ARGS,
                "-f", "mp4", str(tmp),
            ]  # fmt: skip
            with open(Path(td) / "ffmpeg.log", "wb") as log:
                p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=log)
                try:
                    for f in frames:
                        p.stdin.write(np.ascontiguousarray(f, dtype=np.uint8).tobytes())
                finally:
                    p.stdin.close()
                    rc = p.wait()
            if rc != 0:
                msg = (Path(td) / "ffmpeg.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{path}: ffmpeg failed (exit {rc}): {msg}")


# =========================================================================== clips


def clip_frames(rig, ident, spec, truth, colors, bg, light, noise_rng, poses_out, boxes_out):
    """Yield the rendered frames of a clip; fills `poses_out (T, 12)` and `boxes_out (T, 4)`."""
    anchor = face_center_model(rig, ident.id_coef)
    base = rig.model.vertices(ident.id_coef.astype(np.float32))
    V = rig.model.n_vertices
    expb = rig.model.exp_basis.reshape(rig.model.n_exp, V * 3)
    for t in range(len(truth.scale)):
        verts = base + np.dot(truth.exp[t].astype(np.float32), expb).reshape(V, 3)
        P = frame_pose(truth.euler_deg[t], truth.scale[t], truth.center[t], anchor)
        img_v = project(verts, P)
        poses_out[t] = P.reshape(12)
        fv = img_v[rig.model.landmarks68]
        boxes_out[t] = [fv[:, 0].min(), fv[:, 1].min(), fv[:, 0].max(), fv[:, 1].max()]
        yield camera_frame(
            rig, img_v, colors, bg, light, noise_rng, truth.blur_px[t], truth.blur_angle[t]
        )


def camera_frame(
    rig: FaceRig,
    img_v: np.ndarray,
    colors: np.ndarray,
    bg: np.ndarray,
    light,
    noise_rng: np.random.Generator,
    blur_px: float,
    blur_angle: float,
) -> np.ndarray:
    """One frame as the camera sees it ``(H, W, 3) uint8`` RGB: the face (image-space
    vertices ``img_v (V, 3)``, colours ``(V, 3)``) rendered over `bg` in `light`, sensor
    noise from `noise_rng`, then motion blur of `blur_px` px at `blur_angle` deg plus
    defocus when ``blur_px >= 2``."""
    frame = render_frame(rig, img_v, colors, bg, light)
    # Sensor noise (uniform integers in [-2, 2], std 1.4 grey levels), then the motion
    # blur of the exposure, which smears the noise too (blurred frames are smooth, as
    # their compressed real counterparts are).
    noisy = frame.astype(np.int16) + noise_rng.integers(-2, 3, frame.shape, dtype=np.int16)
    frame = np.clip(noisy, 0, 255).astype(np.uint8)
    if blur_px >= 2:
        frame = motion_blur(frame, blur_px, blur_angle)
        frame = defocus(frame, blur_px * DEFOCUS_PER_BLUR_PX)
    return frame
