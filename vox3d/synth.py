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
  voice from :func:`vox3d.voice_synth.voice_from_identity`; a skin albedo field (a tone
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
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vox3d import voice_synth as vs
from vox3d.ground_truth import FORMAT as GT_FORMAT
from vox3d.ground_truth import FORMAT_VERSION as GT_FORMAT_VERSION
from vox3d.io import atomic_path, main_not_reimported, write_text_atomic

#: Frame size (pixels) and rate of every synthetic clip (VoxCeleb2 dev).
FRAME_SIZE = 224
FPS = 25
#: First synthetic identity number (``id90001``): far above VoxCeleb1 (id10001-id11251) and
#: VoxCeleb2 (id00012-id09272).
FIRST_ID = 90001
#: Gender model: ``P(m | z) = sigmoid(GENDER_GAIN * (u_g . z) + GENDER_BIAS)``; the bias
#: gives about 60% men as in VoxCeleb.
GENDER_GAIN = 1.5
GENDER_BIAS = math.log(0.6 / 0.4)
#: Seed of the former mapping's random formant directions (before issue 17; kept so that
#: bench/voice_ceiling.py can rebuild that mapping for comparison).
MAPPING_SEED = 20220601
#: Face size in the frame: image pixels per model centimetre (ICT outer eye corners ~9 cm ->
#: 75-100 px apart, as in VoxCeleb2 crops); small-face videos use SMALL_SCALE.
SCALE_PX_PER_CM = (8.6, 11.0)
SMALL_SCALE_PX_PER_CM = (2.6, 3.6)
#: Probabilities of hard material.
P_SMALL_VIDEO = 0.1
P_PROFILE_UTT = 0.3
P_BLUR_UTT = 0.25
#: Blurred episodes: motion blur of ``blur_px`` pixels plus a defocus (Gaussian) of
#: ``blur_px * DEFOCUS_PER_BLUR_PX`` pixels std (camera shake with focus hunting).
DEFOCUS_PER_BLUR_PX = 0.25
#: Bit flags of the per-frame ``hard`` field.
HARD_PROFILE, HARD_SMALL, HARD_BLUR = 1, 2, 4
#: Seed-sequence streams.
_S_IDENTITY, _S_VIDEO, _S_AUDIO, _S_MOTION, _S_NOISE, _S_NAMES, _S_BACKGROUND = range(1, 8)

#: Deterministic x264 / AAC encoding (VoxCeleb2: H.264 High yuv420p, AAC-LC 16 kHz mono).
FFMPEG_VIDEO_ARGS = (
    "-c:v", "libx264", "-preset", "faster", "-crf", "23", "-pix_fmt", "yuv420p",
    "-threads", "1", "-x264-params", "threads=1:lookahead-threads=1:sliced-threads=0",
)  # fmt: skip
FFMPEG_AUDIO_ARGS = ("-c:a", "aac", "-b:a", "64k", "-ar", "16000", "-ac", "1")
FFMPEG_BITEXACT_ARGS = (
    "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
    "-map_metadata", "-1", "-map_chapters", "-1",
)  # fmt: skip


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


@dataclass(frozen=True)
class SynthConfig:
    """Corpus size and seed (config ``synthetic:``) plus the face model used."""

    identities: int = 40
    videos_per_identity: int = 2
    utterances_per_video: int = 2
    seconds: float = 4.0
    seed: int = 0
    n_id: int = 40
    n_exp: int = 10
    metric_subset: str = "face"  # vertex subset for the voice->shape ceiling
    face_model_path: str | None = None

    def __post_init__(self):
        if self.identities < 1 or self.videos_per_identity < 1 or self.utterances_per_video < 1:
            raise ValueError("identities, videos_per_identity, utterances_per_video must be >= 1")
        if self.seconds < 0.5:
            raise ValueError(f"seconds must be >= 0.5 (got {self.seconds})")

    @property
    def n_frames(self) -> int:
        """Frames per utterance clip."""
        return int(round(self.seconds * FPS))

    @classmethod
    def from_settings(cls, settings: Mapping, **model) -> SynthConfig:
        """The config's ``synthetic`` section -> a SynthConfig: the sizes of the named
        ``preset`` (:data:`SYNTH_PRESETS`), then every key that is not null; `model`: the
        face-model fields (``n_id``, ``n_exp``, ``metric_subset``, ``face_model_path``)."""
        s = dict(settings)
        name = s.pop("preset", "default") or "default"
        if name not in SYNTH_PRESETS:
            raise ValueError(f"synthetic.preset {name!r}: choose from {sorted(SYNTH_PRESETS)}")
        d = dict(SYNTH_PRESETS[name])
        d.update({k: v for k, v in s.items() if v is not None and k in cls.__dataclass_fields__})
        d.update(model)
        return cls(**d)


#: Named corpus sizes (config ``synthetic.preset``).  ``default``: the embedded corpus of
#: ``make run`` (40 identities, 160 clips of 4 s; about 76 s on two cores).  ``paper``:
#: VoxCeleb1-like for the paper-scale voice model: 1,251 identities (VoxCeleb1's count;
#: names A-E in its proportion, the paper's validation split), 4 videos x 2 utterances = 8
#: utterances each, 4 s: 10,008 clips, 40,032 s of video (about 9,500 CPU s to render at
#: 9.5 ms a frame, bench/results/cpu_synth.txt: ~10 min on 16 cores).
SYNTH_PRESETS: dict[str, dict] = {
    "default": {"identities": 40, "videos_per_identity": 2, "utterances_per_video": 2,
                "seconds": 4.0, "seed": 0},
    "paper": {"identities": 1251, "videos_per_identity": 4, "utterances_per_video": 2,
              "seconds": 4.0, "seed": 0},
}  # fmt: skip


# =========================================================================== names

_MALE = (
    "Aaron Adrian Albert Alan Alex Andre Arthur Ben Bernard Boris Brian Bruce Calvin Carlos "
    "Chris Colin Daniel David Dennis Derek Diego Edgar Eddie Edward Elliot Emil Eric Ethan "
    "Felix Frank Gary George Gordon Harry Henry Hugo Ian Isaac Jack James Jason Joel Jonas "
    "Karl Keith Kevin Leon Liam Louis Marco Mark Martin Nathan Neil Noah Oliver Oscar Owen "
    "Patrick Paul Peter Quentin Rafael Ray Robert Ryan Samuel Scott Simon Stefan Theo Thomas "
    "Tony Victor Vincent Walter Wesley Xavier Yann Yusuf Zach"
).split()
_FEMALE = (
    "Abigail Ada Alice Amelia Anna Bella Beatrice Brenda Carla Carmen Chloe Clara Daisy "
    "Dana Diana Donna Edith Elena Ella Emma Erin Eva Fiona Flora Grace Greta Hanna Helen "
    "Holly Ingrid Irene Isabel Jane Jessica Julia Karen Kate Laura Lena Lucy Maria Martha "
    "Mia Nadia Nina Nora Olga Olivia Paula Petra Queenie Rachel Rosa Ruth Sara Sofia Susan "
    "Tara Tessa Uma Ursula Vera Violet Wendy Willa Xena Yara Yvonne Zoe Zora"
).split()
_SURNAMES = (
    "Abbott Alvarez Baker Barros Becker Bennett Brooks Carter Castro Chen Cole Dalton Diaz "
    "Dixon Ellis Evans Fischer Fleming Foster Garcia Gray Hale Hansen Hayes Ibarra Ito "
    "Jensen Jordan Kaur Keller Khan Larsen Lopez Moreau Murphy Nakamura Novak Olsen Ortiz "
    "Patel Perez Quinn Reyes Rossi Santos Schmidt Silva Tanaka Turner Ueda Vargas Walsh "
    "Weber Young Zhang Ziegler"
).split()
#: Nationalities with VoxCeleb1's approximate frequencies.
_NATIONALITIES = (
    ("USA", 0.64), ("UK", 0.17), ("Canada", 0.05), ("Australia", 0.035), ("India", 0.025),
    ("Ireland", 0.02), ("Norway", 0.015), ("Germany", 0.01), ("Italy", 0.01),
    ("New Zealand", 0.01), ("Mexico", 0.005), ("Sweden", 0.005), ("Spain", 0.005),
)  # fmt: skip


#: Fraction of VoxCeleb1 identities whose name starts with A-E (the paper's validation
#: split): 309 of the 1,251 names in VoxCeleb1's metadata (``cmp/vox1_meta.csv``).
VOX1_A_E_FRACTION = 309 / 1251


def draw_names(n: int, genders: list[str], seed: int) -> list[str]:
    """VGGFace1-style names ``First_Last``; exactly ``max(1, round(n * VOX1_A_E_FRACTION))``
    (for n >= 2) start with A-E, chosen by a seeded permutation.  Unique within the corpus."""
    rng = _rng(seed, _S_NAMES)
    n_val = max(1, round(n * VOX1_A_E_FRACTION)) if n >= 2 else 0
    val = set(rng.permutation(n)[:n_val].tolist())
    used: set[str] = set()
    names = []
    for i in range(n):
        pool = _MALE if genders[i] == "m" else _FEMALE
        pool = [p for p in pool if (p[0] <= "E") == (i in val)]
        for attempt in range(1000):
            first = pool[int(rng.integers(len(pool)))]
            last = _SURNAMES[int(rng.integers(len(_SURNAMES)))]
            name = f"{first}_{last}" if attempt < 500 else f"{first}_{last}_{attempt}"
            if name not in used:
                break
        used.add(name)
        names.append(name)
    return names


def youtube_id(rng: np.random.Generator) -> str:
    """An 11-character YouTube-style id (``[A-Za-z0-9_-]``)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[int(k)] for k in rng.integers(0, 64, 11))


# =========================================================================== face geometry


@dataclass
class FaceRig:
    """The face model prepared for rendering: full ICT head topology (skin, eyes, mouth,
    teeth, eyelashes; transparent eye layers dropped) and the fixed vertex regions."""

    model: object  # vox3d.face_model.FaceModel (subset "head")
    triangles: np.ndarray  # (F, 3) int32 drawn triangles
    face_idx: np.ndarray  # vertices of the metric face area (for boxes)
    regions: dict[str, np.ndarray]  # bool (V,) masks
    lip_w: np.ndarray  # (V,) lip tint weight
    brow_w: np.ndarray  # (V,) eyebrow weight
    cheek_w: np.ndarray  # (V,) cheek redness weight
    hairline: dict[str, np.ndarray]  # per-vertex geometry used by the hair painting
    iris_cos: np.ndarray  # (V,) cosine of each eyeball vertex to its eye's forward axis
    directions: np.ndarray  # (8, K) voice mapping directions
    gender_dir: np.ndarray  # (K,) u_g


def load_rig(cfg: SynthConfig):
    """Load ICT-FaceKit (subset ``head``) and derive the rendering regions and the
    face -> voice mapping directions (deterministic from the model)."""
    from vox3d.face_model import ICT_SUBSETS, load_face_model

    kw = {"path": cfg.face_model_path} if cfg.face_model_path else {}
    model = load_face_model("ict", subset="head", n_id=cfg.n_id, n_exp=cfg.n_exp, **kw)
    V = model.n_vertices
    src = model.vertex_index if model.vertex_index is not None else np.arange(V)
    sets = model.vertex_sets

    def mask(*names):
        m = np.zeros(V, bool)
        for nm in names:
            if nm in sets:
                m[sets[nm]] = True
        return m

    transparent = mask(
        "lacrimal_left", "lacrimal_right", "eye_blend_left", "eye_blend_right",
        "eye_occlusion_left", "eye_occlusion_right",
    )  # fmt: skip
    tri = model.triangles[~transparent[model.triangles].any(axis=1)]
    # Never visible (saves render time): gums and tongue, eye sockets, eyeball backs.
    mean0 = model.mean.astype(np.float64)
    hidden = mask("gums_tongue", "eye_socket_left", "eye_socket_right")
    for nm in ("eyeball_left", "eyeball_right"):
        if nm in sets:
            d = mean0[sets[nm]] - mean0[sets[nm]].mean(0)
            hidden[sets[nm][d[:, 2] < -0.1 * np.linalg.norm(d, axis=1)]] = True
    tri = tri[~hidden[tri].all(axis=1)]
    regions = {
        "skin": src < ICT_SUBSETS["face_neck"],
        "eyeball": mask("eyeball_left", "eyeball_right"),
        "socket": mask("eye_socket_left", "eye_socket_right"),
        "mouth": mask("mouth_socket"),
        "gums": mask("gums_tongue"),
        "teeth": mask("teeth"),
        "lashes": mask("eyelashes_left", "eyelashes_right"),
    }
    mean = model.mean.astype(np.float64)
    lm = mean[model.landmarks68]
    # Lips: inside the outer lip contour (landmarks 48-59) seen from the front, soft edge.
    from matplotlib.path import Path as MplPath

    front = regions["skin"] & (mean[:, 2] > lm[51, 2] - 2.5)
    lips = MplPath(lm[48:60, :2])
    inside = lips.contains_points(mean[:, :2], radius=0.0) & front
    d_lip = _dist_to_polyline(mean[:, :2], np.vstack([lm[48:60, :2], lm[48:49, :2]]))
    lip_w = np.where(inside, 1.0, np.clip(1.0 - d_lip / 0.25, 0, 1) * front)
    # Eyebrows: near the brow polylines (landmarks 17-21, 22-26), front skin only.
    d_brow = np.minimum(
        _dist_to_polyline(mean[:, :2], lm[17:22, :2] + [0, 0.15]),
        _dist_to_polyline(mean[:, :2], lm[22:27, :2] + [0, 0.15]),
    )
    brow_front = regions["skin"] & (mean[:, 2] > lm[19, 2] - 1.5)
    brow_w = np.clip(1.0 - d_brow / 0.45, 0, 1) ** 0.7 * brow_front
    # Cheeks: Gaussian blobs around the mid-cheek points.
    cheek_c = [(lm[1] + lm[31] + lm[36]) / 3, (lm[15] + lm[35] + lm[45]) / 3]
    cheek_w = sum(np.exp(-np.sum((mean - c) ** 2, 1) / (2 * 1.6**2)) for c in cheek_c)
    cheek_w = cheek_w * regions["skin"]
    brow_y = lm[17:27, 1].mean()
    hairline = {
        "y_rel": mean[:, 1] - brow_y,  # height above the brows (cm)
        "z_rel": mean[:, 2] - lm[[0, 16], 2].mean(),  # depth relative to the ear roots
        "y_ear": mean[:, 1] - lm[[0, 16], 1].mean(),
        "abs_x": np.abs(mean[:, 0]),
    }
    iris_cos = np.zeros(V)
    for nm in ("eyeball_left", "eyeball_right"):
        if nm in sets:
            idx = sets[nm]
            c = mean[idx].mean(0)
            d = mean[idx] - c
            iris_cos[idx] = d[:, 2] / (np.linalg.norm(d, axis=1) + 1e-9)
    face_idx = np.flatnonzero(src < ICT_SUBSETS.get(cfg.metric_subset, ICT_SUBSETS["face"]))
    directions, gender_dir = mapping_directions(model)
    rig = FaceRig(
        model, np.ascontiguousarray(tri, dtype=np.int32), face_idx, regions,
        lip_w, brow_w, cheek_w, hairline, iris_cos, directions, gender_dir,
    )  # fmt: skip
    return rig


def _dist_to_polyline(p: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance of points ``(N, 2)`` to a polyline ``(M, 2)``."""
    d = np.full(len(p), np.inf)
    for a, b in zip(line[:-1], line[1:], strict=True):
        ab = b - a
        t = np.clip(((p - a) @ ab) / (ab @ ab + 1e-12), 0, 1)
        d = np.minimum(d, np.linalg.norm(p - (a + t[:, None] * ab), axis=1))
    return d


def _landmark_distance_gradient(model, i: int, j: int, vertices: bool = False) -> np.ndarray:
    """Gradient ``(K,)`` w.r.t. standardised identity ``z`` of the distance between
    landmarks `i` and `j` (vertices `i`, `j` with ``vertices``) at the mean face."""
    a, b = (i, j) if vertices else (model.landmarks68[i], model.landmarks68[j])
    d = model.mean[a].astype(np.float64) - model.mean[b]
    u = d / np.linalg.norm(d)
    basis = model.id_basis[:, a].astype(np.float64) - model.id_basis[:, b]
    return (basis @ u) * model.id_std.astype(np.float64)


def _log_ratio_gradient(model, num: tuple[int, int], den: tuple[int, int]) -> np.ndarray:
    """Gradient ``(K,)`` w.r.t. ``z`` of ``log(|v_a - v_b| / |v_c - v_d|)`` at the mean
    face for vertex pairs ``num = (a, b)``, ``den = (c, d)`` (scale free)."""
    out = []
    for a, b in (num, den):
        length = float(np.linalg.norm(model.mean[a].astype(np.float64) - model.mean[b]))
        out.append(_landmark_distance_gradient(model, a, b, vertices=True) / length)
    return out[0] - out[1]


def ceiling_inputs(model, vertices: np.ndarray):
    """What :func:`vox3d.voice_synth.voice_ceiling` measures on: ``(gram (K, K), gram_sim
    (K, K), are)`` of the identity basis over `vertices` (raw and similarity-removed,
    :func:`vox3d.voice_synth.similarity_gram`), and ``are = (mean_pts (10, 3), basis_pts
    (K, 10, 3), pairs)`` at the evaluation's ARE vertices (``evaluate.are_pairs: cmp``,
    :func:`vox3d.face_model.select_are_pairs`)."""
    from vox3d.face_model import ARE_KEYS, select_are_pairs

    B = model.id_basis[:, vertices].astype(np.float64) * model.id_std[:, None, None]
    Bf = B.reshape(model.n_id, -1)
    gram_sim = vs.similarity_gram(model.mean[vertices], B)
    pairs = select_are_pairs(model, "cmp").pairs
    pts = np.array([v for k in ARE_KEYS for v in pairs[k]], dtype=np.int64)
    local = {k: (2 * n, 2 * n + 1) for n, k in enumerate(ARE_KEYS)}
    are = (
        model.mean[pts].astype(np.float64),
        model.id_basis[:, pts].astype(np.float64) * model.id_std[:, None, None],
        local,
    )
    return Bf @ Bf.T, gram_sim, are


#: Named face proportions (scale free: log ratios of two distances between landmarks
#: ``L<n>`` of the 68-point set or ARE vertices) by which the mapping's directions are
#: described (:func:`proportion_correlations`).
PROPORTIONS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "cheek width / eye spacing (CMP CR)": (("are:cheek", ""), ("are:oicd", "")),
    "head width at the ears / eye spacing (CMP ER)": (("are:ear", ""), ("are:oicd", "")),
    "mid-face width / eye spacing (CMP MR)": (("are:mid", ""), ("are:oicd", "")),
    "forehead width / eye spacing (CMP FR)": (("are:forehead", ""), ("are:oicd", "")),
    "jaw width / face length": (("L4", "L12"), ("L27", "L8")),
    "jaw width / face width": (("L4", "L12"), ("L0", "L16")),
    "lower-face height / face length": (("L33", "L8"), ("L27", "L8")),
    "nose length / face length": (("L27", "L33"), ("L27", "L8")),
    "nose width / eye spacing": (("L31", "L35"), ("L36", "L45")),
    "nose projection / nose width": (("L30", "L33"), ("L31", "L35")),
    "mouth width / jaw width": (("L48", "L54"), ("L4", "L12")),
    "lip height / mouth width": (("L51", "L57"), ("L48", "L54")),
    "face width / upper-face height (fWHR)": (("L1", "L15"), ("L27", "L51")),
}


def _proportion_pairs(model, spec):
    from vox3d.face_model import select_are_pairs

    pairs = select_are_pairs(model, "cmp").pairs
    out = []
    for a, b in spec:
        if a.startswith("are:"):
            out.append(tuple(pairs[a[4:]]))
        else:
            out.append((int(model.landmarks68[int(a[1:])]), int(model.landmarks68[int(b[1:])])))
    return out


def proportion_gradients(model) -> dict[str, np.ndarray]:
    """Unit gradients ``(K,)`` w.r.t. ``z`` of the log :data:`PROPORTIONS` at the mean face."""
    out = {}
    for name, spec in PROPORTIONS.items():
        g = _log_ratio_gradient(model, *_proportion_pairs(model, spec))
        out[name] = g / np.linalg.norm(g)
    return out


def proportion_correlations(model, directions: np.ndarray) -> list[list[tuple[str, float]]]:
    """Per direction row, the named proportions sorted by |correlation| (with ``z ~ N(0,
    I)``, the correlation of ``d . z`` with a proportion's linearised value ``g . z`` is
    the cosine of ``d`` and ``g``)."""
    grads = proportion_gradients(model)
    rows = []
    for d in np.asarray(directions):
        c = [(n, float(g @ d / np.linalg.norm(d))) for n, g in grads.items()]
        rows.append(sorted(c, key=lambda t: -abs(t[1])))
    return rows


#: Which proportion mode (by rank, :func:`proportion_modes`) each shape-linked feature
#: follows, and the named proportion whose sign fixes the mode's sign (positive along it).
_MODE_OF = {
    "a_f0": (3, "jaw width / face width", -1.0),  # wider, longer jaw -> lower F0
    "b_1": (0, "cheek width / eye spacing (CMP CR)", 1.0),
    "b_2": (1, "nose projection / nose width", 1.0),
    "b_3": (2, "lower-face height / face length", 1.0),
    "b_4": (4, "forehead width / eye spacing (CMP FR)", 1.0),
    "a_oq": (5, "face width / upper-face height (fWHR)", 1.0),
    "a_br": (6, "face width / upper-face height (fWHR)", -1.0),
}


def proportion_modes(model, exclude: np.ndarray, n: int = 7) -> np.ndarray:
    """The leading `n` face-proportion modes ``(n, K)`` (unit rows, orthogonal to each
    other and to the unit `exclude` direction, the face-length (size) link).

    Eigenvectors of ``W = G_sim / tr G_sim + A / tr A`` (largest first) with ``G_sim``
    the similarity-removed Gram of the face area (:func:`vox3d.voice_synth.similarity_gram`:
    how much of the scale-free vertex shape a direction moves) and ``A = sum_r g_r g_r^T /
    |g_r|`` over CMP's four ARE ratios (``g_r`` the gradient of ratio ``r``: how much of the
    face proportions CMP scores a direction moves), after projecting out `exclude`.
    """
    from vox3d.face_model import ICT_SUBSETS, select_are_pairs

    src = model.vertex_index if model.vertex_index is not None else np.arange(model.n_vertices)
    face = np.flatnonzero(src < ICT_SUBSETS["face"])
    B = model.id_basis[:, face].astype(np.float64) * model.id_std[:, None, None]
    gs = vs.similarity_gram(model.mean[face], B)
    pairs = select_are_pairs(model, "cmp").pairs
    a = np.zeros_like(gs)
    for key in ("ear", "forehead", "mid", "cheek"):
        lo = float(np.linalg.norm(model.mean[pairs[key][0]] - model.mean[pairs[key][1]]))
        lc = float(np.linalg.norm(model.mean[pairs["oicd"][0]] - model.mean[pairs["oicd"][1]]))
        g = _log_ratio_gradient(model, pairs[key], pairs["oicd"]) * lo / lc  # ratio gradient
        a += np.outer(g, g) / np.linalg.norm(g)
    w = gs / np.trace(gs) + a / np.trace(a)
    p = np.eye(len(w)) - np.outer(exclude, exclude)
    vals, vecs = np.linalg.eigh(p @ w @ p)
    return vecs[:, np.argsort(-vals)[:n]].T


def mapping_directions(model) -> tuple[np.ndarray, np.ndarray]:
    """The face -> voice directions ``(8, K)`` and the gender direction ``u_g (K,)``.

    * ``a_vtl``: grows face length (landmark 27 nasion - 8 chin): longer faces, longer
      tracts (the size link; face size is invisible to an image fit);
    * ``a_f0, b_1..b_4, a_oq, a_br``: the leading face-proportion modes
      (:func:`proportion_modes`: scale-free shape, orthogonal to ``a_vtl``), one each,
      assigned and signed by the named proportion of :data:`_MODE_OF`: ``a_f0`` is minus
      the mode that grows jaw width / face width (a heavier jaw, lower F0), ``b_1`` the
      mode of cheek width / eye spacing (broad mid/lower face), ``b_2`` nose projection,
      ``b_3`` lower-face height, ``b_4`` forehead width, ``a_oq`` and ``a_br`` the next two
      modes (face width / upper-face height, opposite signs);
    * ``u_g``: grows face length + face width (landmarks 0 - 16).
    All unit length.  The correlation of every direction with the named proportions:
    :func:`proportion_correlations`.
    """
    a_vtl = _landmark_distance_gradient(model, 27, 8)
    a_vtl /= np.linalg.norm(a_vtl)
    modes = proportion_modes(model, a_vtl, n=7)
    grads = proportion_gradients(model)
    rows = [a_vtl]
    for name in ("a_f0", "b_1", "b_2", "b_3", "b_4", "a_oq", "a_br"):
        rank, prop, sign = _MODE_OF[name]
        d = modes[rank]
        rows.append(d * sign * (1.0 if d @ grads[prop] >= 0 else -1.0))
    u_g = _landmark_distance_gradient(model, 27, 8) + _landmark_distance_gradient(model, 0, 16)
    return np.stack(rows), u_g / np.linalg.norm(u_g)


def default_mapping(rig: FaceRig) -> vs.VoiceMapping:
    """The corpus's face -> voice mapping (directions from the model, fixed gains)."""
    return vs.VoiceMapping(directions=rig.directions)


# =========================================================================== identities


@dataclass
class Identity:
    """One synthetic person."""

    index: int
    vox_id: str
    name: str
    gender: str
    nationality: str
    split_set: str
    z: np.ndarray  # (K,) standardised identity
    id_coef: np.ndarray  # (K,) model coefficients
    voice: vs.VoiceParams
    skin_tone: np.ndarray  # (3,) sRGB [0, 1]
    hair_color: np.ndarray  # (3,)
    hair: float  # 0 bald .. 1 full hair painting
    hairline_cm: float  # hairline height above the brows
    iris_color: np.ndarray  # (3,)
    albedo_seed: int
    mouth_gain: float  # lip-sync gain


#: Skin tones from light to dark (sRGB, [0, 1]).
_SKIN_TONES = np.array(
    [[0.96, 0.80, 0.69], [0.90, 0.72, 0.60], [0.80, 0.60, 0.47], [0.66, 0.47, 0.34],
     [0.50, 0.34, 0.23], [0.36, 0.24, 0.16]]
)  # fmt: skip
_HAIR = np.array(
    [[0.06, 0.05, 0.04], [0.18, 0.12, 0.08], [0.35, 0.24, 0.14], [0.62, 0.48, 0.30],
     [0.55, 0.55, 0.55], [0.40, 0.18, 0.08]]
)  # fmt: skip
_IRIS = np.array([[0.25, 0.15, 0.08], [0.12, 0.08, 0.05], [0.30, 0.42, 0.55], [0.32, 0.38, 0.22]])


def draw_identities(cfg: SynthConfig, rig: FaceRig) -> list[Identity]:
    """All identities of the corpus (deterministic in ``cfg.seed``)."""
    model = rig.model
    mapping = default_mapping(rig)
    K = model.n_id
    draws = []
    for i in range(cfg.identities):
        rng = _rng(cfg.seed, _S_IDENTITY, i)
        z, gender = draw_face(rng, rig, K)
        draws.append((rng, z, gender))
    names = draw_names(cfg.identities, [g for _, _, g in draws], cfg.seed)
    out = []
    for i, (rng, z, gender) in enumerate(draws):
        voice = vs.voice_from_identity(z, gender, mapping, rng)
        out.append(
            Identity(
                index=i,
                vox_id=f"id{FIRST_ID + i:05d}",
                name=names[i],
                gender=gender,
                split_set="test" if names[i].startswith("E") else "dev",
                z=z,
                id_coef=(z * model.id_std.astype(np.float64)),
                voice=voice,
                **draw_look(rng, gender),
            )
        )
    return out


def draw_face(rng: np.random.Generator, rig: FaceRig, k: int) -> tuple[np.ndarray, str]:
    """Standardised identity ``z (k,)`` (N(0, I) clipped to +-3) and gender ("m"/"f", from
    the gender model) of one person, drawn from `rng` (the corpus's first two draws of an
    identity; :mod:`vox3d.regressor_data` draws its fresh faces with it too)."""
    z = np.clip(rng.standard_normal(k), -3, 3)
    p_m = 1.0 / (1.0 + math.exp(-(GENDER_GAIN * float(rig.gender_dir @ z) + GENDER_BIAS)))
    gender = "m" if rng.random() < p_m else "f"
    return z, gender


def draw_look(rng: np.random.Generator, gender: str) -> dict:
    """The appearance fields of an :class:`Identity` drawn from `rng`, in the corpus's draw
    order: ``skin_tone (3,)``, ``hair_color (3,)``, ``hair`` (0 or 1), ``nationality``,
    ``hairline_cm`` (cm above the brows), ``iris_color (3,)``, ``albedo_seed``,
    ``mouth_gain`` (lip-sync gain).  Colours sRGB in [0, 1]."""
    nat_names = [n for n, _ in _NATIONALITIES]
    nat_p = np.array([p for _, p in _NATIONALITIES])
    nat_p /= nat_p.sum()
    t = rng.uniform(0, len(_SKIN_TONES) - 1)
    k = min(int(t), len(_SKIN_TONES) - 2)
    tone = _SKIN_TONES[k] * (1 - (t - k)) + _SKIN_TONES[k + 1] * (t - k)
    tone = np.clip(tone * rng.uniform(0.95, 1.05, 3), 0, 1)
    hair_color = _HAIR[int(rng.integers(len(_HAIR)))] * rng.uniform(0.85, 1.15)
    hair = 0.0 if rng.random() < (0.15 if gender == "m" else 0.03) else 1.0
    return {  # a dict display evaluates (and so draws) in this order
        "skin_tone": tone,
        "hair_color": np.clip(hair_color, 0, 1),
        "hair": hair,
        "nationality": nat_names[int(rng.choice(len(nat_names), p=nat_p))],
        "hairline_cm": float(rng.uniform(4.5, 7.0)),
        "iris_color": _IRIS[int(rng.integers(len(_IRIS)))],
        "albedo_seed": int(rng.integers(2**31)),
        "mouth_gain": float(rng.uniform(0.8, 1.2)),
    }


def albedo(rig: FaceRig, ident: Identity) -> np.ndarray:
    """Per-vertex colours ``(V, 3) float32`` in [0, 1] of an identity."""
    mean = rig.model.mean.astype(np.float64)
    V = len(mean)
    rng = np.random.default_rng(ident.albedo_seed)
    # Low-frequency variation: a sum of random 3-D sinusoids (wavelengths 3-12 cm).
    noise = np.zeros((V, 3))
    for _ in range(8):
        k = rng.standard_normal(3)
        k *= 2 * np.pi / (np.linalg.norm(k) * rng.uniform(3.0, 12.0))
        phase = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0.01, 0.035) * np.array([1.0, 1.05, 1.1]) * rng.uniform(0.7, 1.3, 3)
        noise += np.sin(mean @ k + phase)[:, None] * amp
    skin = ident.skin_tone * (1.0 + noise)
    skin = skin * (1 - 0.10 * rig.cheek_w[:, None]) + rig.cheek_w[:, None] * 0.10 * (
        ident.skin_tone * np.array([1.15, 0.8, 0.8])
    )
    lip = ident.skin_tone * np.array([0.85, 0.55, 0.55])
    skin = skin * (1 - rig.lip_w[:, None]) + lip * rig.lip_w[:, None]
    bw = 0.75 * rig.brow_w[:, None]
    skin = skin * (1 - bw) + ident.hair_color * bw
    if ident.hair > 0:
        h = rig.hairline
        front = _sigmoid((h["y_rel"] - ident.hairline_cm + 0.6 * np.sin(h["abs_x"] * 0.9)) / 0.35)
        back = _sigmoid(-h["z_rel"] / 0.8) * _sigmoid((h["y_ear"] - 2.5) / 0.6)
        w = np.clip(np.maximum(front, back), 0, 1) * ident.hair
        w = w * rig.regions["skin"]
        hair = ident.hair_color * (1.0 + 0.5 * noise)
        skin = skin * (1 - w[:, None]) + hair * w[:, None]
    col = np.where(rig.regions["skin"][:, None], skin, 0.0)
    sclera = np.array([0.86, 0.83, 0.78])
    eye = np.where(
        (rig.iris_cos > 0.965)[:, None],
        0.05,
        np.where((rig.iris_cos > 0.88)[:, None], ident.iris_color, sclera),
    )
    col = np.where(rig.regions["eyeball"][:, None], eye, col)
    col[rig.regions["socket"]] = ident.skin_tone * 0.45
    col[rig.regions["mouth"]] = np.array([0.30, 0.08, 0.08])
    col[rig.regions["gums"]] = np.array([0.60, 0.25, 0.25])
    col[rig.regions["teeth"]] = np.array([0.86, 0.84, 0.76])
    col[rig.regions["lashes"]] = 0.5 * ident.hair_color + 0.5 * ident.skin_tone * 0.6
    return np.clip(col, 0, 1).astype(np.float32)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


# =========================================================================== videos


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
    from vox3d.params import CROP_SIZE, euler_to_rotation, srt_to_pose

    R = euler_to_rotation(*np.radians(euler_deg))
    k = CROP_SIZE / FRAME_SIZE  # crop units per image pixel
    s_c = scale * k
    a = s_c * (R @ anchor)
    # Crop coords: x_img = (x_c - 1) / k, y_img = (CROP - y_c) / k.
    t = np.array([center_px[0] * k + 1 - a[0], CROP_SIZE - center_px[1] * k - a[1], -a[2]])
    return srt_to_pose(s_c, R, t)


def project(vertices: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Model vertices ``(V, 3)`` -> image coordinates ``(V, 3) float32`` of the full frame."""
    from vox3d.params import to_image, transform_vertices

    return to_image(transform_vertices(vertices, P), (0, 0, FRAME_SIZE, FRAME_SIZE))


# =========================================================================== rendering


def make_light(spec: VideoSpec):
    """The video's light as a :class:`vox3d.render.Light`."""
    from vox3d.render import Light

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
    from vox3d.render import render

    return render(vertices_img, rig.triangles, colors, image=bg, light=light)


def face_mask(rig: FaceRig, vertices_img: np.ndarray) -> np.ndarray:
    """Pixels covered by the rendered head ``(H, W) bool``."""
    from vox3d.render import render_full

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
    from vox3d.params import pose_to_srt, rotation_to_euler

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


def compute_ceiling(cfg: SynthConfig, rig: FaceRig) -> dict[str, float]:
    """Voice -> shape ceiling (see :func:`vox3d.voice_synth.voice_ceiling`) on the metric
    vertex subset: vertex R^2 raw and scale-normalised, and ARE (CMP pairs) against the
    population mean face (:func:`ceiling_inputs`)."""
    gram, gram_sim, are = ceiling_inputs(rig.model, rig.face_idx)
    return vs.voice_ceiling(
        default_mapping(rig), gram, rig.model.id_std,
        (rig.gender_dir, GENDER_GAIN, GENDER_BIAS), gram_sim=gram_sim, are=are,
    )  # fmt: skip


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
    reader: :class:`vox3d.ground_truth.GroundTruth`)."""
    import h5py

    from vox3d.params import CROP_SIZE

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


def _mapping_links_table(rig: FaceRig, m: vs.VoiceMapping) -> str:
    """Rows of the corpus card's link table (feature, direction, gain, noise, r, names)."""
    props = proportion_correlations(rig.model, m.directions)
    rows = []
    for j, (g, s) in enumerate(zip(m.gains(), m.noises(), strict=True)):
        r = g / math.hypot(g, s) if math.hypot(g, s) > 0 else 0.0
        top = "; ".join(f"{p} {v:+.2f}" for p, v in props[j][:3])
        rows.append(
            f"| {vs.LINKED_FEATURES[j]} | {m.direction_names[j]} | {g:g} | {s:g} | {r:.2f} | {top} |"
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

Generated by `vox3d.synth` (vox3d.voice_synth for the voices).  Regenerate with
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
Sim3DR (`vox3d.render`): identity `z ~ N(0, I)` over {rig.model.n_id} modes (clipped +-3),
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

Source-filter synthesis (`vox3d/voice_synth.py`): Rosenberg glottal pulses with jitter,
shimmer and breathiness, an F0 contour with declination, accents and phrase-final falls,
five formant resonators whose frequencies scale with `17.5 / VTL`, vowel trajectories
(Peterson & Barney), phrases separated by pauses, fricative noise, room reverberation and
noise.  Voice parameters of an identity, with `z` its standardised shape and `e ~ N(0,1)`:

    vtl_cm          = {vs.VTL_MEAN_CM[0]} (m) / {vs.VTL_MEAN_CM[1]} (f) + {m.vtl_gain} (a_vtl . z) + {m.vtl_noise} e1
    log f0_hz       = log {vs.F0_MEAN_HZ[0]} (m) / log {vs.F0_MEAN_HZ[1]} (f) + {m.f0_gain} (a_f0 . z) + {m.f0_noise} e2
    log ratio_i     = {m.ratio_gain} (b_i . z) + {m.ratio_noise} e_i        (formants F1-F4, i = 1..4)
    open_quotient   = {vs.OQ_MEAN[0]} (m) / {vs.OQ_MEAN[1]} (f) + {m.oq_gain} (a_oq . z) + {m.oq_noise} e8
    log breathiness = log {vs.BREATH_MEAN[0]} (m) / log {vs.BREATH_MEAN[1]} (f) + {m.breath_gain} (a_br . z) + {m.breath_noise} e11

`a_vtl` grows face length (landmarks 27-8: the size link, longer faces have longer
tracts and lower formants); the other seven directions are the leading face-proportion
modes (scale free: eigenvectors of the similarity-removed face-area shape plus CMP's four
face ratios, orthogonal to `a_vtl`; `vox3d.synth.mapping_directions`), each assigned to a
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
`vox3d.voice_synth.voice_ceiling`, `bench/voice_ceiling.py`).  Vertex R^2 over the
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


# =========================================================================== CLI


def cli(argv: list[str]) -> int:
    """``vox3d synth [--preset default|paper] [--identities N ...] --out DIR``."""
    p = argparse.ArgumentParser(prog="vox3d synth", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="default", choices=sorted(SYNTH_PRESETS))
    p.add_argument("--identities", type=int, default=None, help="default: the preset's")
    p.add_argument("--videos-per-identity", type=int, default=None)
    p.add_argument("--utterances-per-video", type=int, default=None)
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--n-id", type=int, default=40)
    p.add_argument("--n-exp", type=int, default=10)
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
