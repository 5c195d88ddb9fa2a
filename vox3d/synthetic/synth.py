"""The embedded default corpus: synthetic talking faces in the VoxCeleb2 format, with ground
truth for every stage.

Layout written by :func:`build_corpus` under ``out`` (the workflow's ``OUT/synthetic``)::

    videos/<id>/<youtube-id>/<utt>.mp4   224x224, 25 fps, H.264 yuv420p + AAC 16 kHz mono
    vox1_meta.csv                        VoxCeleb1 meta format (id, name, gender, nat., set)
    ground_truth.h5                      faces, voices, poses, expressions, lights, segments
    README.md                            the corpus card (generated)

Generative model (every draw from a ``numpy`` generator seeded by
``SeedSequence([seed, stream, index...])``, so each identity / video / utterance is
reproducible on its own and the result does not depend on the number of workers):

* **Identity** ``i``: ``z ~ N(0, I)`` (clipped to +-3) over ``n_id`` ICT-FaceKit identity
  modes, ``id_coef = z * id_std`` (the model's prior); gender ``m`` with probability
  ``sigmoid(GENDER_GAIN * (u_g . z) + GENDER_BIAS)`` (``u_g``: the direction that grows
  face length + width, so gender carries some face information as it does in people);
  voice from :func:`vox3d.synthetic.voice_synth.voice_from_identity`; a skin albedo field (a tone
  between light and dark skin, low-frequency noise over the vertices, redder cheeks and
  lips, eyebrows and short hair painted in a hair colour), iris colour.  Names are drawn
  so that ``max(1, round(N * VOX1_A_E_FRACTION))`` identities start with A-E (the paper's
  validation split, in the proportion of the real VoxCeleb1 metadata); ids are ``id90001``, ``id90002``, ... (never a real VoxCeleb id).
* **Video** (one YouTube id): textured background (gradient, low-frequency noise, blurred
  shapes, a torso in clothing colour), directional + ambient light, face size
  (``SCALE_PX_PER_CM``; some videos small) and position, a mean head pose, room acoustics.
* **Utterance** (one mp4): audio from the voice synthesiser; per frame a smooth head-pose
  trajectory (yaw +-40, pitch +-20, roll +-10 degrees), jaw opening driven by the audio's
  voicing x vowel openness (lip sync), blinks, smiles and brow raises; hard frames:
  profile episodes (|yaw| 62-85 degrees), camera-shake episodes (motion + defocus blur),
  small-face videos.

Pose ground truth is stored in the 3DDFA-V2 parameter convention of :mod:`vox3d.params`:
``P = [s R | t]`` maps model vertices (cm) to crop coordinates of a virtual crop equal to
the whole frame, ``roi_box = (0, 0, W, H)`` with crop size :data:`vox3d.params.CROP_SIZE`;
``to_image(transform_vertices(v, P), roi_box)`` gives image pixels.

The generator is split into flat modules: :mod:`vox3d.synthetic.synth_config` (constants,
:class:`~vox3d.synthetic.synth_config.SynthConfig`, presets), :mod:`vox3d.synthetic.synth_rig` (face rig,
mapping, identities), :mod:`vox3d.synthetic.synth_render` (videos, utterances, frames, encoding) and
:mod:`vox3d.synthetic.synth_card` (ground truth, metadata, corpus card); this module builds the
corpus (:func:`build_corpus`) and holds the ``vox3d synth`` command (:func:`cli`).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vox3d.config import default
from vox3d.io import main_not_reimported, write_text_atomic
from vox3d.params import pose_to_srt, rotation_to_euler
from vox3d.synthetic.synth_card import (
    corpus_card,
    corpus_summary,
    write_ground_truth,
    write_meta_csv,
)
from vox3d.synthetic.synth_config import _S_NOISE, SYNTH_PRESETS, SynthConfig, _rng
from vox3d.synthetic.synth_render import (
    background,
    clip_frames,
    draw_utterance,
    draw_video,
    encode_clip,
    make_light,
)
from vox3d.synthetic.synth_rig import (
    FaceRig,
    Identity,
    albedo,
    compute_ceiling,
    draw_identities,
    load_rig,
)

# =========================================================================== clips


@dataclass
class ClipResult:
    """Ground truth of one rendered clip."""

    identity: int
    video: int
    utt: int
    relpath: str
    pose: np.ndarray  # (T, 12)
    euler_deg: np.ndarray  # (T, 3)
    scale: np.ndarray  # (T,)
    center: np.ndarray  # (T, 2)
    exp: np.ndarray  # (T, K_exp)
    face_box: np.ndarray  # (T, 4) box of the projected 68 landmarks
    hard: np.ndarray
    blur_px: np.ndarray
    blur_angle: np.ndarray
    voicing: np.ndarray
    f0: np.ndarray
    segments: np.ndarray
    f0_offset: float
    n_samples: int


_STATE: dict = {}


def _init_worker(cfg: SynthConfig, videos_root: Path) -> None:
    """A spawned render worker: the module state :func:`build_corpus` sets, rebuilt."""
    rig = load_rig(cfg)
    _STATE.update(cfg=cfg, rig=rig, identities=draw_identities(cfg, rig), videos_root=videos_root)


def render_video(job: tuple[int, int]) -> list[ClipResult]:
    """Render and encode every utterance of video `job = (identity, video)`; returns their
    ground truth.  Uses the module state set by :func:`build_corpus` (rebuilt in spawned
    workers by :func:`_init_worker`)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # BLAS threads only spin here: one worker = one core
        return _render_video(job)


def _render_video(job: tuple[int, int]) -> list[ClipResult]:
    cfg: SynthConfig = _STATE["cfg"]
    rig: FaceRig = _STATE["rig"]
    idents: list[Identity] = _STATE["identities"]
    videos_root: Path = _STATE["videos_root"]
    i, v = job
    ident = idents[i]
    spec = draw_video(cfg, ident, v)
    bg = background(spec)
    colors = albedo(rig, ident)
    light = make_light(spec)
    out = []
    for u in range(cfg.utterances_per_video):
        truth = draw_utterance(cfg, rig, ident, spec, u)
        T = len(truth.scale)
        poses = np.zeros((T, 12))
        boxes = np.zeros((T, 4))
        rel = f"{ident.vox_id}/{spec.youtube_id}/{u + 1:05d}.mp4"
        noise_rng = _rng(cfg.seed, _S_NOISE, i, v, u)
        frames = clip_frames(rig, ident, spec, truth, colors, bg, light, noise_rng, poses, boxes)
        encode_clip(frames, truth.utt.audio, videos_root / rel)
        euler = np.array(
            [np.degrees(_euler_of_pose(p)) for p in poses]
        )  # recomputed from P: the stored convention
        out.append(
            ClipResult(
                identity=i,
                video=v,
                utt=u,
                relpath=rel,
                pose=poses,
                euler_deg=euler,
                scale=truth.scale,
                center=truth.center,
                exp=truth.exp,
                face_box=boxes,
                hard=truth.hard,
                blur_px=truth.blur_px,
                blur_angle=truth.blur_angle,
                voicing=truth.voicing,
                f0=truth.utt.f0,
                segments=truth.utt.segments,
                f0_offset=truth.utt.f0_offset,
                n_samples=len(truth.utt.audio),
            )  # fmt: skip
        )
    return out


def _euler_of_pose(p12: np.ndarray) -> tuple[float, float, float]:
    _, R, _ = pose_to_srt(np.asarray(p12).reshape(3, 4))
    return rotation_to_euler(R)


# =========================================================================== corpus


def build_corpus(cfg: SynthConfig, out: str | os.PathLike, threads: int = 1, progress=True):
    """Generate the whole corpus under `out` (see the module docstring).  Returns a summary
    dict (counts, ceiling)."""
    from tqdm import tqdm

    out = Path(out)
    videos_root = out / "videos"
    videos_root.mkdir(parents=True, exist_ok=True)
    rig = load_rig(cfg)
    idents = draw_identities(cfg, rig)
    _STATE.update(cfg=cfg, rig=rig, identities=idents, videos_root=videos_root)
    jobs = [(i, v) for i in range(cfg.identities) for v in range(cfg.videos_per_identity)]
    results: dict[tuple[int, int], list[ClipResult]] = {}
    bar = tqdm(total=len(jobs), desc="synthesize videos", unit="video", disable=not progress)
    if threads <= 1:
        for job in jobs:
            results[job] = render_video(job)
            bar.update()
    else:
        # spawned workers rebuild the same rig and identities (deterministic): a fork of a
        # process whose torch/OpenMP thread pools have run can deadlock in the child
        ctx = multiprocessing.get_context("spawn")
        with main_not_reimported(), cf.ProcessPoolExecutor(
            max_workers=threads, mp_context=ctx, initializer=_init_worker,
            initargs=(cfg, videos_root),
        ) as ex:  # fmt: skip
            futs = {ex.submit(render_video, job): job for job in jobs}
            for f in cf.as_completed(futs):
                results[futs[f]] = f.result()
                bar.update()
    bar.close()
    clips = [c for job in jobs for c in results[job]]
    specs = [draw_video(cfg, idents[i], v) for i, v in jobs]
    ceiling = compute_ceiling(cfg, rig)
    write_meta_csv(out / "vox1_meta.csv", idents)
    write_ground_truth(out / "ground_truth.h5", cfg, rig, idents, specs, clips, ceiling)
    summary = corpus_summary(cfg, idents, clips, ceiling)
    write_text_atomic(out / "README.md", corpus_card(cfg, rig, summary))
    return summary


# =========================================================================== CLI


def cli(argv: list[str]) -> int:
    """``vox3d synth [--preset default|paper] [--identities N ...] --out DIR``."""
    p = argparse.ArgumentParser(prog="vox3d synth", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default=default("synthetic.preset"), choices=sorted(SYNTH_PRESETS))
    p.add_argument("--identities", type=int, default=None, help="default: the preset's")
    p.add_argument("--videos-per-identity", type=int, default=None)
    p.add_argument("--utterances-per-video", type=int, default=None)
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--n-id", type=int, default=SynthConfig.n_id)
    p.add_argument("--n-exp", type=int, default=SynthConfig.n_exp)
    p.add_argument("--face-model-path", default=None, help="ICT-FaceKit archive or folder")
    p.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1,
        help="worker processes (the output does not depend on it; default: all CPUs)",
    )
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    try:
        cfg = SynthConfig.from_settings(
            {"preset": a.preset, "identities": a.identities, "seed": a.seed,
             "videos_per_identity": a.videos_per_identity, "seconds": a.seconds,
             "utterances_per_video": a.utterances_per_video},
            n_id=a.n_id, n_exp=a.n_exp, face_model_path=a.face_model_path,
        )  # fmt: skip
    except ValueError as e:
        print(f"vox3d synth: {e}", file=sys.stderr)
        return 2
    s = build_corpus(cfg, a.out, threads=a.threads)
    print(
        f"{s['clips']} clips of {s['identities']} identities in {a.out}; voice->shape "
        f"ceiling R^2 {s['ceiling']['r2_vertex']:.3f} (vertices)"
    )
    return 0
