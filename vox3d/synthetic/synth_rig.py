"""The face rig of the synthetic corpus (:mod:`vox3d.synthetic.synth`): the ICT-FaceKit head prepared
for rendering (:class:`FaceRig`, :func:`load_rig`), landmark gradients and named face
proportions, the face -> voice mapping directions (:func:`mapping_directions`,
:func:`default_mapping`) and its voice -> shape ceiling, and the people: names,
:class:`Identity`, face and look draws, albedo."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vox3d.face.are_pairs import ARE_KEYS
from vox3d.face.are_selection import select_are_pairs
from vox3d.face.face_model import load_face_model
from vox3d.face.ict_facekit import ICT_SUBSETS
from vox3d.synthetic import voice_mapping as vm
from vox3d.synthetic import voice_synth as vs
from vox3d.synthetic.synth_config import (
    _S_IDENTITY,
    _S_NAMES,
    FIRST_ID,
    GENDER_BIAS,
    GENDER_GAIN,
    SynthConfig,
    _rng,
)

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


# =========================================================================== face geometry


@dataclass
class FaceRig:
    """The face model prepared for rendering: full ICT head topology (skin, eyes, mouth,
    teeth, eyelashes; transparent eye layers dropped) and the fixed vertex regions."""

    model: object  # vox3d.face.face_model.FaceModel (subset "head")
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
    """What :func:`vox3d.synthetic.voice_mapping.voice_ceiling` measures on: ``(gram (K, K), gram_sim
    (K, K), are)`` of the identity basis over `vertices` (raw and similarity-removed,
    :func:`vox3d.synthetic.voice_mapping.similarity_gram`), and ``are = (mean_pts (10, 3), basis_pts
    (K, 10, 3), pairs)`` at the evaluation's ARE vertices (``evaluate.are_pairs: cmp``,
    :func:`vox3d.face.are_selection.select_are_pairs`)."""
    B = model.id_basis[:, vertices].astype(np.float64) * model.id_std[:, None, None]
    Bf = B.reshape(model.n_id, -1)
    gram_sim = vm.similarity_gram(model.mean[vertices], B)
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
    the similarity-removed Gram of the face area (:func:`vox3d.synthetic.voice_mapping.similarity_gram`:
    how much of the scale-free vertex shape a direction moves) and ``A = sum_r g_r g_r^T /
    |g_r|`` over CMP's four ARE ratios (``g_r`` the gradient of ratio ``r``: how much of the
    face proportions CMP scores a direction moves), after projecting out `exclude`.
    """
    src = model.vertex_index if model.vertex_index is not None else np.arange(model.n_vertices)
    face = np.flatnonzero(src < ICT_SUBSETS["face"])
    B = model.id_basis[:, face].astype(np.float64) * model.id_std[:, None, None]
    gs = vm.similarity_gram(model.mean[face], B)
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


def default_mapping(rig: FaceRig) -> vm.VoiceMapping:
    """The corpus's face -> voice mapping (directions from the model, fixed gains)."""
    return vm.VoiceMapping(directions=rig.directions)


def compute_ceiling(cfg: SynthConfig, rig: FaceRig) -> dict[str, float]:
    """Voice -> shape ceiling (see :func:`vox3d.synthetic.voice_mapping.voice_ceiling`) on the metric
    vertex subset: vertex R^2 raw and scale-normalised, and ARE (CMP pairs) against the
    population mean face (:func:`ceiling_inputs`)."""
    gram, gram_sim, are = ceiling_inputs(rig.model, rig.face_idx)
    return vm.voice_ceiling(
        default_mapping(rig), gram, rig.model.id_std,
        (rig.gender_dir, GENDER_GAIN, GENDER_BIAS), gram_sim=gram_sim, are=are,
    )  # fmt: skip


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
    identity; :mod:`vox3d.fitting.regressor_render` draws its fresh faces with it too)."""
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
