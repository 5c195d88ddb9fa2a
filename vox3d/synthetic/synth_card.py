"""The outputs of the synthetic corpus besides its clips (:mod:`vox3d.synthetic.synth`):
``ground_truth.h5`` (:func:`write_ground_truth`), ``vox1_meta.csv``
(:func:`write_meta_csv`), the summary counts (:func:`corpus_summary`) and the corpus card
``README.md`` (:func:`corpus_card`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from vox3d.io import atomic_path, write_text_atomic
from vox3d.params import CROP_SIZE
from vox3d.synthetic import voice_mapping as vm
from vox3d.synthetic import voice_synth as vs
from vox3d.synthetic.ground_truth import FORMAT as GT_FORMAT
from vox3d.synthetic.ground_truth import FORMAT_VERSION as GT_FORMAT_VERSION
from vox3d.synthetic.synth_config import (
    DEFOCUS_PER_BLUR_PX,
    FIRST_ID,
    FPS,
    FRAME_SIZE,
    GENDER_BIAS,
    GENDER_GAIN,
    HARD_BLUR,
    HARD_PROFILE,
    HARD_SMALL,
    P_BLUR_UTT,
    P_PROFILE_UTT,
    P_SMALL_VIDEO,
    SCALE_PX_PER_CM,
    SMALL_SCALE_PX_PER_CM,
    SynthConfig,
)
from vox3d.synthetic.synth_rig import FaceRig, Identity, default_mapping, proportion_correlations

META_COLUMNS = ("VoxCeleb1 ID", "VGGFace1 ID", "Gender", "Nationality", "Set")


def write_meta_csv(path: Path, idents: list[Identity]) -> None:
    """VoxCeleb1 meta format: tab separated, header ``VoxCeleb1 ID, VGGFace1 ID, Gender,
    Nationality, Set``."""
    lines = ["\t".join(META_COLUMNS)]
    lines += ["\t".join([p.vox_id, p.name, p.gender, p.nationality, p.split_set]) for p in idents]
    write_text_atomic(path, "\n".join(lines) + "\n")


def _str_ds(g, name, values):
    import h5py

    g.create_dataset(
        name, data=np.array(values, dtype=object), dtype=h5py.string_dtype("utf-8"),
        track_times=False,
    )  # fmt: skip


def _ds(g, name, data, dtype=np.float32):
    g.create_dataset(name, data=np.asarray(data, dtype=dtype), track_times=False)


def write_ground_truth(path, cfg, rig, idents, specs, clips, ceiling) -> None:
    """Write ``ground_truth.h5`` (layout in the corpus card and the file's attributes; its
    reader: :class:`vox3d.synthetic.ground_truth.GroundTruth`)."""
    import h5py

    model = rig.model
    mapping = default_mapping(rig)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver="latest", track_order=True) as f:
            a = f.attrs
            a["format"] = GT_FORMAT
            a["format_version"] = GT_FORMAT_VERSION
            a["config"] = json.dumps(_cfg_dict(cfg), sort_keys=True)
            a["face_model"] = "ict"
            a["n_id"] = model.n_id
            a["n_exp"] = model.n_exp
            a["exp_names"] = json.dumps(list(model.exp_names))
            a["frame_size"] = FRAME_SIZE
            a["fps"] = FPS
            a["sample_rate"] = vs.SAMPLE_RATE
            a["f0_rate"] = vs.F0_RATE
            a["pose_convention"] = (
                "P = [s R | t] row major (3x4), vox3d.params: model cm -> crop coords of a "
                "virtual crop = whole frame; image = to_image(transform_vertices(v, P), "
                "roi_box, size=crop_size)"
            )
            a["pose_roi_box"] = np.array([0, 0, FRAME_SIZE, FRAME_SIZE], np.float64)
            a["pose_crop_size"] = CROP_SIZE
            a["euler_convention"] = "degrees (yaw, pitch, roll), vox3d.params.rotation_to_euler"
            a["hard_flags"] = json.dumps(
                {"profile": HARD_PROFILE, "small": HARD_SMALL, "blur": HARD_BLUR}
            )
            a["voice_params"] = json.dumps(list(vs.VOICE_PARAM_NAMES))
            a["voice_mapping"] = json.dumps(mapping.linear_part())
            a["gender_model"] = json.dumps(
                {"u_g": np.round(rig.gender_dir, 6).tolist(), "gain": GENDER_GAIN,
                 "bias": GENDER_BIAS}
            )  # fmt: skip
            a["voice_ceiling"] = json.dumps(ceiling, sort_keys=True)
            gi = f.create_group("identities", track_order=True)
            _str_ds(gi, "id", [p.vox_id for p in idents])
            _str_ds(gi, "name", [p.name for p in idents])
            _str_ds(gi, "gender", [p.gender for p in idents])
            _str_ds(gi, "nationality", [p.nationality for p in idents])
            _str_ds(gi, "set", [p.split_set for p in idents])
            _ds(gi, "id_coef", [p.id_coef for p in idents])
            _ds(gi, "id_z", [p.z for p in idents])
            _ds(gi, "voice", [p.voice.as_vector() for p in idents])
            gi["voice"].attrs["columns"] = json.dumps(list(vs.VOICE_PARAM_NAMES))
            _ds(gi, "skin_tone", [p.skin_tone for p in idents])
            _ds(gi, "hair_color", [p.hair_color for p in idents])
            gv = f.create_group("videos", track_order=True)
            _ds(gv, "identity", [s.identity for s in specs], np.int32)
            _str_ds(gv, "youtube_id", [s.youtube_id for s in specs])
            _ds(gv, "background_seed", [s.background_seed for s in specs], np.int64)
            _ds(gv, "light_ambient", [s.light_ambient for s in specs])
            _ds(gv, "light_diffuse", [s.light_diffuse for s in specs])
            _ds(gv, "light_direction", [s.light_direction for s in specs])
            gv["light_direction"].attrs["frame"] = "image: x right, y down, z towards viewer"
            _ds(gv, "light_specular", [s.light_specular for s in specs])
            _ds(gv, "camera_scale_px_per_cm", [s.scale_px_per_cm for s in specs])
            _ds(gv, "camera_center_px", [s.center_px for s in specs])
            gv["camera_center_px"].attrs["projection"] = "scaled orthographic (3DDFA-V2)"
            _ds(gv, "mean_euler_deg", [s.mean_euler_deg for s in specs])
            _ds(gv, "small", [s.small for s in specs], np.uint8)
            _ds(gv, "room", [[s.room.rt60_s, s.room.drr_db, s.room.snr_db] for s in specs])
            gv["room"].attrs["columns"] = json.dumps(["rt60_s", "drr_db", "snr_db"])
            vid_index = {(s.identity, s.index): k for k, s in enumerate(specs)}
            gu = f.create_group("utterances", track_order=True)
            _str_ds(gu, "path", [c.relpath for c in clips])
            _ds(gu, "identity", [c.identity for c in clips], np.int32)
            _ds(gu, "video", [vid_index[(c.identity, c.video)] for c in clips], np.int32)
            n_fr = [len(c.scale) for c in clips]
            _ds(gu, "frame_offset", np.concatenate([[0], np.cumsum(n_fr)[:-1]]), np.int64)
            _ds(gu, "n_frames", n_fr, np.int64)
            _ds(gu, "n_samples", [c.n_samples for c in clips], np.int64)
            n_f0 = [len(c.f0) for c in clips]
            _ds(gu, "f0_offset", np.concatenate([[0], np.cumsum(n_f0)[:-1]]), np.int64)
            _ds(gu, "n_f0", n_f0, np.int64)
            n_seg = [len(c.segments) for c in clips]
            _ds(gu, "segment_offset", np.concatenate([[0], np.cumsum(n_seg)[:-1]]), np.int64)
            _ds(gu, "n_segments", n_seg, np.int64)
            _ds(gu, "f0_session_factor", [c.f0_offset for c in clips])
            gfr = f.create_group("frames", track_order=True)
            cat = lambda k, dt=np.float32: np.concatenate([getattr(c, k) for c in clips]).astype(  # noqa: E731
                dt
            )
            _ds(gfr, "pose", cat("pose", np.float64), np.float64)
            _ds(gfr, "euler_deg", cat("euler_deg"))
            _ds(gfr, "scale_px_per_cm", cat("scale"))
            _ds(gfr, "center_px", cat("center"))
            _ds(gfr, "exp", cat("exp"))
            _ds(gfr, "face_box", cat("face_box"))
            gfr["face_box"].attrs["columns"] = json.dumps(["x1", "y1", "x2", "y2"])
            _ds(gfr, "hard", cat("hard", np.uint8), np.uint8)
            _ds(gfr, "blur_px", cat("blur_px"))
            gfr["blur_px"].attrs["meaning"] = (
                f"motion blur length (px) at angle blur_angle_deg, plus a Gaussian defocus of "
                f"std blur_px * {DEFOCUS_PER_BLUR_PX} px; 0 = sharp"
            )
            _ds(gfr, "blur_angle_deg", cat("blur_angle"))
            _ds(gfr, "voicing", cat("voicing"))
            ga = f.create_group("audio", track_order=True)
            _ds(ga, "f0_hz", cat("f0"))
            _ds(
                ga,
                "segments",
                np.concatenate([c.segments for c in clips]).reshape(-1, 2),
                np.float64,
            )
            ga["segments"].attrs["columns"] = json.dumps(["start_s", "end_s"])


def _cfg_dict(cfg: SynthConfig) -> dict:
    d = dict(cfg.__dict__)
    d.pop("face_model_path", None)
    return d


def corpus_summary(cfg, idents, clips, ceiling) -> dict:
    hard = np.concatenate([c.hard for c in clips]) if clips else np.zeros(0, np.uint8)
    fb = np.concatenate([c.face_box for c in clips]) if clips else np.zeros((0, 4))
    return {
        "identities": len(idents),
        "men": sum(p.gender == "m" for p in idents),
        "women": sum(p.gender == "f" for p in idents),
        "names_a_e": sum(p.name[0] <= "E" for p in idents),
        "videos": cfg.identities * cfg.videos_per_identity,
        "clips": len(clips),
        "frames": int(len(hard)),
        "hours": len(clips) * cfg.seconds / 3600,
        "frames_profile": int(np.sum(hard & HARD_PROFILE > 0)),
        "frames_small": int(np.sum(hard & HARD_SMALL > 0)),
        "frames_blur": int(np.sum(hard & HARD_BLUR > 0)),
        "face_height_px_median": float(np.median(fb[:, 3] - fb[:, 1])) if len(fb) else 0.0,
        "ceiling": ceiling,
    }


def _mapping_links_table(rig: FaceRig, m: vm.VoiceMapping) -> str:
    """Rows of the corpus card's link table (feature, direction, gain, noise, r, names)."""
    props = proportion_correlations(rig.model, m.directions)
    rows = []
    for j, (g, s) in enumerate(zip(m.gains(), m.noises(), strict=True)):
        r = g / math.hypot(g, s) if math.hypot(g, s) > 0 else 0.0
        top = "; ".join(f"{p} {v:+.2f}" for p, v in props[j][:3])
        rows.append(
            f"| {vm.LINKED_FEATURES[j]} | {m.direction_names[j]} | {g:g} | {s:g} | {r:.2f} | {top} |"
        )
    return "\n".join(rows)


def _ceiling_cell(c: dict, key: str) -> str:
    return f"{c[key]:.3f}" if key in c else "-"


def _are_cell(c: dict, key: str, gain: str | None) -> str:
    if key not in c:
        return "-"
    return f"{c[key]:.4f}" + (f" ({100 * c[gain]:.0f}%)" if gain else "")


def corpus_card(cfg: SynthConfig, rig: FaceRig, s: dict) -> str:
    """The corpus card (Markdown)."""
    m = default_mapping(rig)
    c = s["ceiling"]
    names = rig.model.exp_names
    return f"""# Synthetic VoxCeleb-format corpus (vox3d embedded default)

Generated by `vox3d.synthetic.synth` (vox3d.synthetic.voice_synth and vox3d.synthetic.voice_mapping for the voices).  Regenerate with
`vox3d synth --identities {cfg.identities} --videos-per-identity {cfg.videos_per_identity} \\
--utterances-per-video {cfg.utterances_per_video} --seconds {cfg.seconds} --seed {cfg.seed} --out DIR`
(the workflow's `synthesize` rule does the same from config `synthetic:`).  Same config and
seed give the same mp4 bytes, decoded frames, audio and `ground_truth.h5`.

## Contents

| | |
|---|---|
| identities | {s["identities"]} ({s["men"]} m, {s["women"]} f; {s["names_a_e"]} names A-E = validation split) |
| videos (YouTube ids) | {s["videos"]} |
| clips (utterances, one mp4 each) | {s["clips"]} x {cfg.seconds:g} s = {s["hours"] * 60:.1f} min |
| frames | {s["frames"]} ({FPS} fps, {FRAME_SIZE}x{FRAME_SIZE}) |
| hard frames | profile (\\|yaw\\| > 60 deg) {s["frames_profile"]}, small face {s["frames_small"]}, blurred (camera shake) {s["frames_blur"]} |
| median landmark-box height | {s["face_height_px_median"]:.0f} px |

Layout: `videos/<id>/<youtube-id>/<utt>.mp4` as VoxCeleb2 dev (H.264 High, yuv420p,
25 fps, 224x224; AAC-LC 16 kHz mono), `vox1_meta.csv` (VoxCeleb1 meta format; `Set` is
`test` for names starting with E as in VoxCeleb1), `ground_truth.h5`.  Identity ids start
at `id{FIRST_ID}` (no clash with VoxCeleb).

## Faces

ICT-FaceKit (whole head topology: skin, eyeballs, mouth, teeth, eyelashes) rendered with
Sim3DR (`vox3d.face.render`): identity `z ~ N(0, I)` over {rig.model.n_id} modes (clipped +-3),
coefficients `z * id_std`; per identity skin albedo (tone between light and dark skin,
low-frequency noise, cheeks, lips, eyebrows, painted short hair); per video textured
background with a torso, ambient + directional + specular light, face size and place,
room acoustics; per frame smooth head pose (yaw +-40, pitch +-20, roll +-10 deg; profile
episodes 62-85 deg), expressions {", ".join(names)} with `jawOpen` driven by the
audio (voicing x vowel openness, lip sync), blinks every 2-6 s; hard material: small-face
videos (p = {P_SMALL_VIDEO}, {SMALL_SCALE_PX_PER_CM[0]}-{SMALL_SCALE_PX_PER_CM[1]} px/cm instead of
{SCALE_PX_PER_CM[0]}-{SCALE_PX_PER_CM[1]}), profile episodes (p = {P_PROFILE_UTT} per clip),
camera-shake episodes (p = {P_BLUR_UTT} per clip: motion blur 9-18 px plus defocus);
mild sensor noise.

## Voices and the face -> voice mapping

Source-filter synthesis (`vox3d/synthetic/voice_synth.py`): Rosenberg glottal pulses with jitter,
shimmer and breathiness, an F0 contour with declination, accents and phrase-final falls,
five formant resonators whose frequencies scale with `17.5 / VTL`, vowel trajectories
(Peterson & Barney), phrases separated by pauses, fricative noise, room reverberation and
noise.  Voice parameters of an identity, with `z` its standardised shape and `e ~ N(0,1)`:

    vtl_cm          = {vm.VTL_MEAN_CM[0]} (m) / {vm.VTL_MEAN_CM[1]} (f) + {m.vtl_gain} (a_vtl . z) + {m.vtl_noise} e1
    log f0_hz       = log {vm.F0_MEAN_HZ[0]} (m) / log {vm.F0_MEAN_HZ[1]} (f) + {m.f0_gain} (a_f0 . z) + {m.f0_noise} e2
    log ratio_i     = {m.ratio_gain} (b_i . z) + {m.ratio_noise} e_i        (formants F1-F4, i = 1..4)
    open_quotient   = {vm.OQ_MEAN[0]} (m) / {vm.OQ_MEAN[1]} (f) + {m.oq_gain} (a_oq . z) + {m.oq_noise} e8
    log breathiness = log {vm.BREATH_MEAN[0]} (m) / log {vm.BREATH_MEAN[1]} (f) + {m.breath_gain} (a_br . z) + {m.breath_noise} e11

`a_vtl` grows face length (landmarks 27-8: the size link, longer faces have longer
tracts and lower formants); the other seven directions are the leading face-proportion
modes (scale free: eigenvectors of the similarity-removed face-area shape plus CMP's four
face ratios, orthogonal to `a_vtl`; `vox3d.synthetic.synth.mapping_directions`), each assigned to a
voice feature by the source-filter story: F0 falls along a heavier lower face, the formant
ratios (oral / pharyngeal cavity proportions) follow facial breadth and the nose, mid-face
and forehead proportions, open quotient and breathiness (the glottal source) the next two
modes.  Every link, its within-gender correlation `gain / sqrt(gain^2 + noise^2)` and the
named proportions its direction correlates with most:

| feature | direction | gain | noise | r | direction's strongest named proportions |
|---|---|---|---|---|---|
{_mapping_links_table(rig, m)}

Intonation range, jitter, shimmer and speaking rate depend on gender and noise only.  These
strengths are a design choice (far stronger than real voice-face correlations), set so that
most of the voice's information is scale-free shape that an image fit can see.  Gender:
`P(m) = sigmoid({GENDER_GAIN} (u_g . z) + {GENDER_BIAS:.3f})`, `u_g` growing face length +
width.  All directions are stored in `ground_truth.h5` (attribute `voice_mapping`).

## Voice -> shape ceiling

Best linear predictor of the identity coefficients from the face-linked voice features and
gender, fitted and measured on two independent samples of {int(c["n_samples"])} identities
of the generative model (the ceiling for a model that hears the voice perfectly;
`vox3d.synthetic.voice_mapping.voice_ceiling`, `bench/voice_ceiling.py`).  Vertex R^2 over the
{cfg.metric_subset} area, raw and scale-normalised (similarity motions of the mean face
removed, to first order); ARE with CMP's pairs against the population mean face's:

| predictor | R^2 identity coefficients | R^2 vertices | R^2 vertices, scale-normalised | ARE (improvement over the mean face) |
|---|---|---|---|---|
| voice parameters + gender | {c["r2_coef"]:.3f} | {c["r2_vertex"]:.3f} | {_ceiling_cell(c, "r2_vertex_sim")} | {_are_cell(c, "are_mean", "are_improvement")} |
| gender only (gender-mean baseline) | {c["r2_coef_gender"]:.3f} | {c["r2_vertex_gender"]:.3f} | {_ceiling_cell(c, "r2_vertex_sim_gender")} | {_are_cell(c, "are_gender", "are_improvement_gender")} |
| population mean face | 0 | 0 | 0 | {_are_cell(c, "are_mean_face", None)} |

So at most {100 * c["r2_vertex"]:.0f}% of the face-shape variance (vertex space) is
predictable from the voice; the rest is independent of it by construction.

## ground_truth.h5

* attributes: config, face model, `exp_names`, pose convention (`P = [s R | t]`,
  `vox3d.params`, roi = whole frame, crop size 120), Euler convention, hard flags
  (profile 1, small 2, blur 4), voice mapping, gender model, this ceiling;
* `identities/`: `id`, `name`, `gender`, `nationality`, `set`, `id_coef (N, K_id)`,
  `id_z`, `voice (N, 12)` (columns in attribute), `skin_tone`, `hair_color`;
* `videos/`: `identity`, `youtube_id`, `background_seed`, `light_ambient`,
  `light_diffuse`, `light_direction` (image frame), `light_specular`,
  `camera_scale_px_per_cm`, `camera_center_px`, `mean_euler_deg`, `small`, `room`;
* `utterances/`: `path` (relative to `videos/`), `identity`, `video`, `frame_offset`,
  `n_frames`, `n_samples`, `f0_offset`, `n_f0`, `segment_offset`, `n_segments`,
  `f0_session_factor`;
* `frames/` (all clips concatenated): `pose (T, 12)`, `euler_deg (T, 3)`,
  `scale_px_per_cm`, `center_px`, `exp (T, K_exp)`, `face_box (T, 4)` (box of the
  68 projected landmarks, x1 y1 x2 y2 px), `hard`, `blur_px`, `blur_angle_deg`,
  `voicing`;
* `audio/`: `f0_hz` (100 Hz track, 0 = unvoiced), `segments (S, 2)` speech phrases (s).
"""
