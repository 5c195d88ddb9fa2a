"""Linear 3D face models (ICT-FaceKit, BFM) behind one interface.

A :class:`FaceModel` holds ``mean (V, 3)``, an identity basis ``(K_id, V, 3)`` and an
expression basis ``(K_exp, V, 3)`` (all float32, model units), so that

    vertices = mean + sum_k id_coef[k] * id_basis[k] + sum_j exp_coef[j] * exp_basis[j]

Model axes (both models): x towards the subject's left (= image right in a frontal view),
y up, z out of the face towards the camera.  Triangles are counter-clockwise seen from the
front (outside) of the surface, i.e. ``cross(v1 - v0, v2 - v0)`` points outwards.

ICT-FaceKit ("ICT Face Model Light", github.com/ICT-VGL/ICT-FaceKit, MIT licence):

* units: centimetres (the neutral head is 24.8 cm wide, 33.8 cm tall);
* identity: the 100 PCA modes ``identityNNN.obj - generic_neutral_mesh.obj``.  Their norms
  fall like the square roots of PCA eigenvalues, i.e. each mode is stored at one standard
  deviation: coefficient 1.0 is the shipped ``identityNNN.obj`` shape, and the prior of
  a coefficient is N(0, 1) (``id_std`` = 1);
* expression: the 53 ARKit-named blendshapes ``name.obj - neutral``, coefficient 0 =
  neutral, 1 = the full shipped expression (the natural range is [0, 1]);
* subsets (upstream README vertex ranges): ``head`` (all 26,719 vertices: skin, mouth
  socket, teeth, eyes, eyelashes), ``face_neck`` (0-11247: face + head and neck skin),
  ``face`` (0-9408, the full face area) and ``narrow_face`` (0-6705).

BFM (3DDFA-V2's ``bfm_noneck_v3.pkl``, Basel Face Model 2009 academic licence, user
supplied): units of BFM 2009 (micrometres; 3DDFA-V2's pose scale ~3.5e-4 maps it to a
120-pixel crop); 40 shape + 10 expression columns, un-normalised PCA directions whose
coefficient spread is 3DDFA-V2's ``param_mean_std_62d_120x120.pkl`` std (used as ``id_std``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vox3d import params as prm
from vox3d import paths
from vox3d.io import atomic_path
from vox3d.metrics import similarity_transform
from vox3d.params import TDDFA_LAYOUT, ict_layout
from vox3d.safeload import BadModelFileError, load_pickle

# ---------------------------------------------------------------------------------------
# ICT-FaceKit facts (upstream README.md, 0-indexed, inclusive ranges)
# ---------------------------------------------------------------------------------------

#: Number of vertices of the ICT-FaceKit topology.
ICT_N_VERTICES = 26719
#: Multi-PIE 68-point landmark vertex indices (upstream README).
ICT_LANDMARKS68 = np.array(
    [1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608, 3272,
     4088, 3443, 268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978, 4527, 4942,
     4857, 1140, 2075, 1147, 4269, 3360, 1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751,
     3756, 3721, 3725, 3732, 5708, 5695, 2081, 0, 4275, 6200, 6213, 6346, 6461, 5518, 5957,
     5841, 5702, 5711, 5533, 6216, 6207, 6470, 5517, 5966],
    dtype=np.int64,
)  # fmt: skip
#: Named vertex ranges (first, last), inclusive (upstream README geometry tables).
ICT_RANGES: dict[str, tuple[int, int]] = {
    "face": (0, 9408),
    "narrow_face": (0, 6705),
    "head_neck": (9409, 11247),
    "mouth_socket": (11248, 13293),
    "eye_socket_left": (13294, 13677),
    "eye_socket_right": (13678, 14061),
    "gums_tongue": (14062, 17038),
    "teeth": (17039, 21450),
    "eyeball_left": (21451, 23020),
    "eyeball_right": (23021, 24590),
    "lacrimal_left": (24591, 24794),
    "lacrimal_right": (24795, 24998),
    "eye_blend_left": (24999, 25022),
    "eye_blend_right": (25023, 25046),
    "eye_occlusion_left": (25047, 25198),
    "eye_occlusion_right": (25199, 25350),
    "eyelashes_left": (25351, 26034),
    "eyelashes_right": (26035, 26718),
}
#: Vertex subsets (prefixes of the topology) selectable by `load_face_model(subset=...)`.
ICT_SUBSETS: dict[str, int] = {
    "head": ICT_N_VERTICES,
    "face_neck": 11248,
    "face": 9409,
    "narrow_face": 6706,
}
#: Default expression order: the first `n_exp` are used unless `exp_names` is given.  The
#: ten most useful for talking faces first, then the remaining upstream names in their
#: upstream (alphabetical) order.
ICT_DEFAULT_EXPRESSIONS = (
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthSmile_L",
    "mouthSmile_R",
    "eyeBlink_L",
    "eyeBlink_R",
    "browInnerUp_L",
    "browInnerUp_R",
)

#: Vertex counts of the two BFM topologies: the one CMP's indices address (3DDFA v1's
#: 53,215-vertex mesh) and 3DDFA-V2's ``bfm_noneck_v3`` (38,365 vertices, no neck, no ears).
BFM53K_N_VERTICES, BFM_NONECK_V3_N_VERTICES = 53215, 38365
#: ARE vertex pairs of the CMP authors' evaluation script, in the 53,215-vertex BFM topology.
CMP_ARE_PAIRS_BFM53K: dict[str, tuple[int, int]] = {
    "oicd": (2217, 14607),
    "forehead": (1678, 42117),
    "cheek": (2294, 13635),
    "ear": (20636, 34153),
    "mid": (2130, 15003),
}
#: CMP's mean-face ratios ER, FR, MR, CR with its own pairs (the target of any transfer).
CMP_MEAN_FACE_RATIOS: dict[str, float] = {"ear": 1.41, "forehead": 1.16, "mid": 1.11, "cheek": 1.00}
#: CMP's pairs carried to ICT-FaceKit (a measured fact): dense correspondence of the BFM and
#: ICT mean faces (alignment on shared landmarks, nearest vertex).  Gives ER/FR/MR/CR
#: 1.40/1.16/1.11/1.00 on the ICT mean, but three pairs are up to 1.8 cm off mirror symmetry
#: (OICD: one vertex at the eye corner, the other 1.6 cm below it), so it is not used as is:
#: :func:`symmetric_are_pairs` turns it into :data:`ICT_ARE_PAIRS`.
ICT_CMP_TRANSFER: dict[str, tuple[int, int]] = {
    "oicd": (6590, 2258),
    "forehead": (386, 2627),
    "cheek": (2209, 2454),
    "ear": (7844, 7117),
    "mid": (1204, 3423),
}
#: Default ICT ARE pairs (``evaluate.are_pairs: cmp``): CMP's positions, mirror-symmetric,
#: ``symmetric_are_pairs(neutral, ICT_CMP_TRANSFER, narrow face 0-6705)`` (the test
#: recomputes them); all in the narrow face, so every subset keeps them.  (subject's right,
#: subject's left).  ER/FR/MR/CR on the neutral mesh: 1.403/1.161/1.117/1.000.
ICT_ARE_PAIRS: dict[str, tuple[int, int]] = {
    "oicd": (2248, 4439),
    "forehead": (386, 2627),
    "cheek": (2206, 4397),
    "ear": (377, 2618),
    "mid": (1202, 3420),
}
#: The former ICT pairs (``evaluate.are_pairs: landmark_rule``), chosen by
#: :func:`choose_are_pairs` with the narrow face as forehead candidates.  Not CMP's positions:
#: mean-face ratios 1.65/1.23/1.63/1.56 instead of CMP's 1.41/1.16/1.11/1.00.
ICT_ARE_PAIRS_LANDMARK_RULE: dict[str, tuple[int, int]] = {
    "oicd": (1507, 3721),
    "forehead": (1989, 4189),
    "cheek": (1052, 3272),
    "ear": (1225, 3443),
    "mid": (1888, 4088),
}
#: Pair sets selectable by config ``evaluate.are_pairs`` (:func:`select_are_pairs`).
ARE_PAIR_SETS = ("cmp", "landmark_rule")

#: Format version of the ICT cache file (bump when its contents change).
_CACHE_VERSION = 1


@dataclass(frozen=True, eq=False)
class FaceModel:
    """A linear face model.  Shapes: V vertices, F triangles, K_id / K_exp modes.

    Attributes:
        name: ``"ict"`` or ``"bfm"``.
        mean: ``(V, 3) float32`` mean / neutral shape, model units (ICT: cm, BFM: um).
        id_basis: ``(K_id, V, 3) float32`` identity modes (model units per coefficient).
        exp_basis: ``(K_exp, V, 3) float32`` expression modes.
        triangles: ``(F, 3) int32``, counter-clockwise seen from outside the surface.
        landmarks68: ``(68,) int64`` Multi-PIE landmark vertex indices.
        vertex_sets: named ``int64`` vertex index arrays (``face``, ``eyes``, ``mouth``, ...).
        are_pairs: ARE vertex pairs ``oicd``, ``forehead``, ``cheek``, ``ear``, ``mid``.
        id_std: ``(K_id,) float32`` prior standard deviation of each identity coefficient
            (ICT: 1, modes are stored at one std; BFM: 3DDFA-V2's coefficient std).
        exp_names: expression names (ICT: ARKit names; BFM: ``exp00`` ...).
        units: ``"cm"`` or ``"um"``.
        subset_name: vertex subset this model holds (``head``, ``face_neck``, ``face``,
            ``narrow_face``; BFM: ``face``).
        vertex_index: ``(V,) int64`` index of each vertex in the full source topology.
    """

    name: str
    mean: np.ndarray
    id_basis: np.ndarray
    exp_basis: np.ndarray
    triangles: np.ndarray
    landmarks68: np.ndarray
    vertex_sets: dict[str, np.ndarray]
    are_pairs: dict[str, tuple[int, int]]
    id_std: np.ndarray
    exp_names: list[str]
    units: str = "cm"
    subset_name: str = "head"
    vertex_index: np.ndarray | None = None
    _torch_cache: dict = field(default_factory=dict, repr=False, compare=False)

    # -- sizes ---------------------------------------------------------------------------
    @property
    def n_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_id(self) -> int:
        return int(self.id_basis.shape[0])

    @property
    def n_exp(self) -> int:
        return int(self.exp_basis.shape[0])

    # -- shapes --------------------------------------------------------------------------
    def vertices(self, id_coef, exp_coef=None) -> np.ndarray:
        """Coefficients ``(B, K_id)`` [+ ``(B, K_exp)``] -> vertices ``(B, V, 3) float32``.

        1-D coefficients give ``(V, 3)``.  Fewer coefficients than modes use the leading
        modes; ``exp_coef=None`` means neutral.
        """
        id_coef = np.asarray(id_coef, dtype=np.float32)
        single = id_coef.ndim == 1
        idc = id_coef[None] if single else id_coef
        k = idc.shape[1]
        if k > self.n_id:
            raise ValueError(f"{k} identity coefficients, model has {self.n_id} modes")
        V = self.n_vertices
        out = idc @ self.id_basis[:k].reshape(k, V * 3)
        if exp_coef is not None:
            exp_coef = np.asarray(exp_coef, dtype=np.float32)
            exc = exp_coef[None] if exp_coef.ndim == 1 else exp_coef
            j = exc.shape[1]
            if j > self.n_exp:
                raise ValueError(f"{j} expression coefficients, model has {self.n_exp} modes")
            out += exc @ self.exp_basis[:j].reshape(j, V * 3)
        out = out.reshape(-1, V, 3) + self.mean
        return out[0] if single else out

    def _torch_tensors(self, device, dtype):
        import torch

        key = (str(device), dtype)
        if key not in self._torch_cache:
            V = self.n_vertices
            self._torch_cache[key] = (
                torch.from_numpy(np.ascontiguousarray(self.mean)).to(device, dtype),
                torch.from_numpy(self.id_basis.reshape(self.n_id, V * 3).copy()).to(device, dtype),
                torch.from_numpy(self.exp_basis.reshape(self.n_exp, V * 3).copy()).to(
                    device, dtype
                ),
            )
        return self._torch_cache[key]

    def vertices_torch(self, id_coef, exp_coef=None):
        """Torch version of :meth:`vertices` (differentiable; device and dtype of `id_coef`).

        ``(B, K_id)`` [+ ``(B, K_exp)``] -> ``(B, V, 3)``; 1-D input gives ``(V, 3)``.
        """
        import torch

        id_coef = torch.as_tensor(id_coef)
        if not id_coef.is_floating_point():
            id_coef = id_coef.float()
        single = id_coef.dim() == 1
        idc = id_coef[None] if single else id_coef
        mean, idb, exb = self._torch_tensors(idc.device, idc.dtype)
        k = idc.shape[1]
        if k > self.n_id:
            raise ValueError(f"{k} identity coefficients, model has {self.n_id} modes")
        out = idc @ idb[:k]
        if exp_coef is not None:
            exc = torch.as_tensor(exp_coef, device=idc.device, dtype=idc.dtype)
            exc = exc[None] if exc.dim() == 1 else exc
            j = exc.shape[1]
            if j > self.n_exp:
                raise ValueError(f"{j} expression coefficients, model has {self.n_exp} modes")
            out = out + exc @ exb[:j]
        out = out.reshape(-1, self.n_vertices, 3) + mean
        return out[0] if single else out

    # -- subsets -------------------------------------------------------------------------
    def subset(self, name: str) -> FaceModel:
        """The model restricted to a vertex subset, re-indexed (triangles, landmarks, sets).

        ICT: ``head`` | ``face_neck`` | ``face`` | ``narrow_face`` (a subset of the current
        one).  BFM has a single face-only topology: every name returns the model itself.
        Landmarks and ARE pairs must lie inside the subset (they do for all ICT subsets).
        """
        if self.name != "ict":
            return self
        if name not in ICT_SUBSETS:
            raise ValueError(f"unknown ICT subset {name!r}; choose from {sorted(ICT_SUBSETS)}")
        if ICT_SUBSETS[name] > ICT_SUBSETS.get(self.subset_name, ICT_N_VERTICES):
            raise ValueError(
                f"cannot take subset {name!r} of a model restricted to {self.subset_name!r}: "
                f"load it with subset={name!r}"
            )
        src = self.vertex_index if self.vertex_index is not None else np.arange(self.n_vertices)
        keep = np.flatnonzero(src < ICT_SUBSETS[name])
        if len(keep) == self.n_vertices:
            return replace(self, subset_name=name, _torch_cache={})
        return restrict(self, keep, subset_name=name)

    def are_vertex_pairs(self) -> np.ndarray:
        """``(5, 2) int64`` ARE pairs in the order oicd, forehead, cheek, ear, mid."""
        return np.array([self.are_pairs[k] for k in ARE_KEYS], dtype=np.int64)


#: Order of the ARE pairs.
ARE_KEYS = ("oicd", "forehead", "cheek", "ear", "mid")


def restrict(model: FaceModel, keep: np.ndarray, subset_name: str | None = None) -> FaceModel:
    """Restrict `model` to the vertices `keep` (sorted indices), re-indexing everything.

    Triangles with a vertex outside `keep` are dropped; vertex sets are intersected.
    Raises ValueError when a landmark or ARE vertex would be dropped.
    """
    keep = np.asarray(keep, dtype=np.int64)
    remap = np.full(model.n_vertices, -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    tri = remap[model.triangles]
    tri = tri[(tri >= 0).all(axis=1)].astype(np.int32)
    lm = remap[model.landmarks68]
    if (lm < 0).any():
        raise ValueError(f"subset {subset_name!r} drops landmark vertices")
    pairs = {k: (int(remap[a]), int(remap[b])) for k, (a, b) in model.are_pairs.items()}
    if any(a < 0 or b < 0 for a, b in pairs.values()):
        raise ValueError(f"subset {subset_name!r} drops ARE vertices")
    sets = {}
    for k, idx in model.vertex_sets.items():
        r = remap[idx]
        r = r[r >= 0]
        if len(r):
            sets[k] = r
    src = model.vertex_index if model.vertex_index is not None else np.arange(model.n_vertices)
    return replace(
        model,
        mean=np.ascontiguousarray(model.mean[keep]),
        id_basis=np.ascontiguousarray(model.id_basis[:, keep]),
        exp_basis=np.ascontiguousarray(model.exp_basis[:, keep]),
        triangles=np.ascontiguousarray(tri),
        landmarks68=lm,
        vertex_sets=sets,
        are_pairs=pairs,
        subset_name=subset_name or model.subset_name,
        vertex_index=src[keep],
        _torch_cache={},
    )


# ---------------------------------------------------------------------------------------
# ARE pairs by anatomical position
# ---------------------------------------------------------------------------------------


def choose_are_pairs(mean: np.ndarray, landmarks68: np.ndarray, candidates=None):
    """Choose the five ARE vertex pairs of a face mesh by anatomical position.

    The CMP authors' pairs index a denser BFM topology, so for other meshes equivalent
    vertices are chosen by this fixed rule (model axes: x to the subject's left, y up,
    z forward; "right" = subject's right, listed first):

    * ``oicd``: outer eye corners, landmarks 36 and 45;
    * ``ear``: the face contour at the ear roots, landmarks 0 and 16;
    * ``mid``: the mid-face contour (cheekbone level, below the eyes), landmarks 1 and 15;
    * ``cheek``: the cheek contour at the nose base, landmarks 2 and 14;
    * ``forehead``: the frontal surface vertex nearest (in x, y) to the point above each
      outer eyebrow end (landmarks 17 / 26) by the brow-to-eye height (landmarks 19/24
      vs 36-45), among `candidates` (default: all vertices) no deeper than the brow end's
      depth minus 0.3 OICD.

    Returns ``{name: (right, left)}`` vertex indices.
    """
    mean = np.asarray(mean, dtype=np.float64)
    lm = np.asarray(landmarks68, dtype=np.int64)
    cand = np.arange(len(mean)) if candidates is None else np.asarray(candidates, np.int64)
    pairs = {
        "oicd": (int(lm[36]), int(lm[45])),
        "ear": (int(lm[0]), int(lm[16])),
        "mid": (int(lm[1]), int(lm[15])),
        "cheek": (int(lm[2]), int(lm[14])),
    }
    oicd = np.linalg.norm(mean[lm[36]] - mean[lm[45]])
    eye_y = mean[lm[[36, 39, 42, 45]], 1].mean()
    brow_y = mean[lm[[19, 24]], 1].mean()
    fh = []
    for brow_end in (17, 26):
        target = mean[lm[brow_end]].copy()
        target[1] = brow_y + (brow_y - eye_y)
        pts = mean[cand]
        ok = pts[:, 2] >= target[2] - 0.3 * oicd
        d2 = ((pts[:, :2] - target[:2]) ** 2).sum(axis=1)
        d2[~ok] = np.inf
        fh.append(int(cand[int(np.argmin(d2))]))
    pairs["forehead"] = (fh[0], fh[1])
    return {k: pairs[k] for k in ARE_KEYS}


def symmetric_are_pairs(
    mean: np.ndarray,
    transferred: dict[str, tuple[int, int]],
    candidates: np.ndarray | None = None,
    slack: float = 1.0,
) -> dict[str, tuple[int, int]]:
    """Mirror-symmetric ARE pairs from pairs carried over from another mesh.

    For each transferred pair ``(a, b)`` on a mesh symmetric about ``x = 0`` (model axes):
    the target is the mean of ``a`` and the mirror image of ``b`` (on the subject's right,
    ``x < 0``); among the `candidates` on that side no more than `slack` (model units; ICT:
    cm) farther from the target than the nearest one, the vertex whose mirror pair is closest
    in length to ``|a - b|`` wins (ties: the nearer), so the pair keeps the transferred
    length (hence the mean-face ratio) and sits at the transferred position; the left vertex
    is its exact mirror image.  Returns ``{name: (right, left)}`` in :data:`ARE_KEYS` order.
    """
    v = np.asarray(mean, dtype=np.float64)
    cand = np.arange(len(v)) if candidates is None else np.asarray(candidates, np.int64)
    right = cand[v[cand, 0] < 0]
    pts = v[cand]
    out = {}
    for key in ARE_KEYS:
        a, b = transferred[key]
        target = (v[a] + v[b] * (-1.0, 1.0, 1.0)) / 2.0
        dist = np.linalg.norm(v[right] - target, axis=1)
        length_err = np.abs(2.0 * np.abs(v[right, 0]) - np.linalg.norm(v[a] - v[b]))
        length_err[dist > dist.min() + slack] = np.inf
        r = int(right[np.lexsort((dist, length_err))[0]])
        mirror = np.linalg.norm(pts - v[r] * (-1.0, 1.0, 1.0), axis=1)
        out[key] = (r, int(cand[int(np.argmin(mirror))]))
    return out


def check_are_pairs(
    pairs: dict[str, tuple[int, int] | None], n_vertices: int, topology: str
) -> dict[str, tuple[int, int] | None]:
    """`pairs` unchanged when every vertex index lies in ``0 .. n_vertices - 1``, else a
    ValueError naming the pair, the index and the `topology` (e.g. ``"bfm_noneck_v3"``)."""
    for key, p in pairs.items():
        if p is None:
            continue
        for i in p:
            if not 0 <= int(i) < n_vertices:
                raise ValueError(
                    f"ARE pair {key!r}: vertex {int(i)} is outside the {topology} topology "
                    f"({n_vertices:,} vertices, 0..{n_vertices - 1})"
                )
    return pairs


def cmp_are_pairs_bfm(n_vertices: int, topology: str) -> dict[str, tuple[int, int]]:
    """CMP's published ARE pairs (:data:`CMP_ARE_PAIRS_BFM53K`) for a BFM mesh of
    `n_vertices`, refused (ValueError naming `topology`) unless every index is in range.
    They index the 53,215-vertex BFM; on any other topology (``bfm_noneck_v3``: 38,365) an
    in-range index would still be another vertex, so only that count is accepted."""
    check_are_pairs(CMP_ARE_PAIRS_BFM53K, n_vertices, topology)
    if n_vertices != BFM53K_N_VERTICES:
        raise ValueError(
            f"CMP's ARE indices address the {BFM53K_N_VERTICES:,}-vertex BFM; the {topology} "
            f"topology has {n_vertices:,} vertices, so they cannot be used on it"
        )
    return dict(CMP_ARE_PAIRS_BFM53K)


def transfer_are_pairs(
    src_mean: np.ndarray,
    src_landmarks: np.ndarray,
    src_pairs: dict[str, tuple[int, int]],
    dst_mean: np.ndarray,
    dst_landmarks: np.ndarray,
) -> dict[str, tuple[int, int]]:
    """Carry ARE pairs from one mesh to another: similarity-align the source onto the
    destination on the 51 inner landmarks (17-67 of the 68; the contour points are defined
    differently per model), then take the nearest destination vertex of each pair vertex."""
    s = np.asarray(src_mean, np.float64)
    d = np.asarray(dst_mean, np.float64)
    inner = np.arange(17, 68)
    apply = similarity_transform(
        s[np.asarray(src_landmarks)[inner]], d[np.asarray(dst_landmarks)[inner]]
    )
    out = {}
    for key, (a, b) in src_pairs.items():
        p = apply(s[[a, b]])
        out[key] = tuple(int(np.argmin(((d - q) ** 2).sum(axis=1))) for q in p)
    return out


@dataclass(frozen=True)
class AreSelection:
    """ARE pairs chosen for an evaluation (:func:`select_are_pairs`).

    Attributes:
        name: the pair set (``cmp``, ``landmark_rule``, ``bfm_fallback_no_ear``).
        pairs: ``{oicd, forehead, cheek, ear, mid: (i, j) | None}`` indices into the loaded
            model's vertices; None = ratio unavailable on this mesh (its ARE is NaN).
        note: why the set differs from CMP's definition, or "".
    """

    name: str
    pairs: dict[str, tuple[int, int] | None]
    note: str = ""


def local_vertex_index(model: FaceModel, full_index) -> np.ndarray:
    """Positions ``(P,) int64`` in `model`'s vertices of full-source-topology vertex indices
    `full_index` ``(P,)``; -1 where a vertex is not in the model's subset."""
    src = model.vertex_index if model.vertex_index is not None else np.arange(model.n_vertices)
    pos = np.full(int(src.max()) + 1, -1, dtype=np.int64)
    pos[src] = np.arange(len(src))
    full = np.asarray(full_index, dtype=np.int64).reshape(-1)
    inside = (full >= 0) & (full < len(pos))
    return np.where(inside, pos[np.where(inside, full, 0)], -1)


def _local_pairs(model: FaceModel, pairs: dict[str, tuple[int, int] | None], topology: str):
    out = {}
    for key, p in pairs.items():
        if p is None:
            out[key] = None
            continue
        ij = [int(i) for i in local_vertex_index(model, p)]
        if min(ij) < 0:
            raise ValueError(f"ARE pair {key!r} {tuple(p)} is outside the {topology} topology")
        out[key] = (ij[0], ij[1])
    return out


def select_are_pairs(model: FaceModel, which: str = "cmp") -> AreSelection:
    """The ARE vertex pairs for `model` under config ``evaluate.are_pairs``.

    * ICT, ``cmp`` (default): :data:`ICT_ARE_PAIRS`, CMP's positions (mean-face ratios
      within 0.01 of CMP's); ``landmark_rule``: :data:`ICT_ARE_PAIRS_LANDMARK_RULE`.
    * BFM, ``cmp``: on the 53,215-vertex BFM, CMP's own indices; on any other topology
      (``bfm_noneck_v3``, 38,365 vertices) CMP's indices cannot be mapped without the 53k
      mesh, so the named fallback ``bfm_fallback_no_ear``: the ICT pairs carried over by
      :func:`transfer_are_pairs` for OICD, forehead, cheek and mid, and the ear ratio
      unavailable (None: ``bfm_noneck_v3`` has no ears, where CMP's ear vertices sit).
      ``landmark_rule``: :func:`choose_are_pairs` on the keypoints.
    """
    if which not in ARE_PAIR_SETS:
        raise ValueError(f"evaluate.are_pairs {which!r} is not one of {ARE_PAIR_SETS}")
    rule_note = "ARE pairs by the landmark rule (evaluate.are_pairs: landmark_rule), not CMP's"
    if model.name == "ict":
        pairs = ICT_ARE_PAIRS if which == "cmp" else ICT_ARE_PAIRS_LANDMARK_RULE
        return AreSelection(
            which,
            _local_pairs(model, dict(pairs), "ICT-FaceKit"),
            "" if which == "cmp" else rule_note,
        )
    n = model.n_vertices
    topo = "bfm_noneck_v3" if n == BFM_NONECK_V3_N_VERTICES else f"{n:,}-vertex BFM"
    if which == "landmark_rule":
        return AreSelection(which, dict(choose_are_pairs(model.mean, model.landmarks68)), rule_note)
    if n == BFM53K_N_VERTICES:
        return AreSelection("cmp", dict(cmp_are_pairs_bfm(n, "53,215-vertex BFM")))
    ict = load_ict_arrays()
    carried = transfer_are_pairs(
        ict["mean"], ICT_LANDMARKS68, ICT_ARE_PAIRS, model.mean, model.landmarks68
    )
    carried["ear"] = None
    note = (
        f"ARE on {topo}: CMP's vertex indices address the 53,215-vertex BFM and cannot be "
        "mapped without that mesh; fallback pair set bfm_fallback_no_ear (OICD, forehead, "
        "cheek, mid carried from the ICT CMP pairs by landmark alignment); ER unavailable "
        "(NaN, no ear region), are_mean is the mean of FR, MR, CR"
    )
    return AreSelection("bfm_fallback_no_ear", check_are_pairs(carried, n, topo), note)


# ---------------------------------------------------------------------------------------
# ICT-FaceKit: parsing and cache
# ---------------------------------------------------------------------------------------


def parse_obj_vertices(data: bytes, source: str = "<obj>") -> np.ndarray:
    """Vertex positions ``(V, 3) float64`` of an OBJ file's ``v`` lines (extra values, e.g.
    colours or w, are ignored)."""
    lines = [ln[2:] for ln in data.split(b"\n") if ln[:2] in (b"v ", b"v\t")]
    if not lines:
        raise BadModelFileError(f"{source}: no vertices in OBJ")
    values = b" ".join(lines).split()
    if len(values) != 3 * len(lines):  # extra values on some lines: take x y z of each
        parts = [ln.split() for ln in lines]
        if any(len(p) < 3 for p in parts):
            raise BadModelFileError(f"{source}: a vertex line has fewer than 3 coordinates")
        values = [x for p in parts for x in p[:3]]
    try:
        return np.array(values, dtype=np.float64).reshape(-1, 3)
    except ValueError as e:
        raise BadModelFileError(f"{source}: bad vertex line ({e})") from e


def parse_obj_faces(data: bytes, source: str = "<obj>") -> np.ndarray:
    """Triangles ``(F, 3) int32`` (0-based) of an OBJ's ``f`` lines; polygons fanned
    (a, b, c, d) -> (a, b, c), (a, c, d), keeping their winding.  Negative indices resolve
    relative to the vertices read so far."""
    tris: list[tuple[int, int, int]] = []
    nv = 0
    for line in data.splitlines():
        if line.startswith(b"v "):
            nv += 1
            continue
        if not line.startswith(b"f "):
            continue
        idx = []
        for tok in line.split()[1:]:
            i = int(tok.split(b"/", 1)[0])
            idx.append(i - 1 if i > 0 else nv + i)
        if len(idx) < 3:
            raise BadModelFileError(f"{source}: face with {len(idx)} vertices")
        for k in range(1, len(idx) - 1):
            tris.append((idx[0], idx[k], idx[k + 1]))
    if not tris:
        raise BadModelFileError(f"{source}: no faces in OBJ")
    return np.array(tris, dtype=np.int32)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(path.iterdir()):
            if f.suffix in (".obj", ".json") and f.is_file():
                h.update(f.name.encode() + b"\0")
                with open(f, "rb") as fh:
                    for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                        h.update(chunk)
    else:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def _read_ict_files(path: Path) -> dict[str, bytes]:
    """``{basename: bytes}`` of the FaceXModel OBJ / JSON files in an archive or folder."""
    files: dict[str, bytes] = {}
    if path.is_dir():
        d = path / "FaceXModel" if (path / "FaceXModel").is_dir() else path
        for f in sorted(d.iterdir()):
            if f.suffix in (".obj", ".json"):
                files[f.name] = f.read_bytes()
    elif path.is_file():
        try:
            with tarfile.open(path, "r:*") as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    parts = m.name.split("/")
                    if (
                        len(parts) >= 2
                        and parts[-2] == "FaceXModel"
                        and (parts[-1].endswith(".obj") or parts[-1].endswith(".json"))
                    ):
                        fh = tar.extractfile(m)
                        if fh is not None:
                            files[parts[-1]] = fh.read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise BadModelFileError(f"{path}: not a readable ICT-FaceKit archive ({e})") from e
    else:
        raise BadModelFileError(
            f"{path}: ICT-FaceKit not found (download github.com/ICT-VGL/ICT-FaceKit and point "
            "config assets.ict_facekit at its FaceXModel/ folder or an archive of it)"
        )
    if "generic_neutral_mesh.obj" not in files:
        raise BadModelFileError(f"{path}: no FaceXModel/generic_neutral_mesh.obj inside")
    return files


def parse_ict(path: str | os.PathLike, progress: bool = True) -> dict[str, np.ndarray]:
    """Parse ICT-FaceKit (archive or folder) into arrays (all modes, full topology):
    ``mean (V,3)``, ``id_basis (100,V,3)``, ``exp_basis (53,V,3)`` float32 cm,
    ``triangles (F,3) int32``, ``exp_names``, ``rigid``, ``fitting`` index arrays."""
    path = Path(path)
    files = _read_ict_files(path)
    neutral_bytes = files["generic_neutral_mesh.obj"]
    neutral = parse_obj_vertices(neutral_bytes, f"{path}:generic_neutral_mesh.obj")
    tri = parse_obj_faces(neutral_bytes, f"{path}:generic_neutral_mesh.obj")
    meta = {}
    if "vertex_indices.json" in files:
        meta = json.loads(files["vertex_indices.json"])
    exp_names = list(meta.get("expressions") or [])
    if not exp_names:
        exp_names = sorted(
            n[:-4]
            for n in files
            if n.endswith(".obj")
            and n != "generic_neutral_mesh.obj"
            and not n.startswith("identity")
        )
    id_names = sorted(n for n in files if re.fullmatch(r"identity\d+\.obj", n))
    names = id_names + [f"{e}.obj" for e in exp_names]
    missing = [n for n in names if n not in files]
    if missing:
        raise BadModelFileError(f"{path}: missing FaceXModel files {missing[:5]}")
    V = len(neutral)
    modes = np.empty((len(names), V, 3), dtype=np.float32)
    it = names
    if progress:
        from tqdm import tqdm

        it = tqdm(names, desc="parse ICT-FaceKit", unit="obj", leave=False)
    for i, n in enumerate(it):
        v = parse_obj_vertices(files.pop(n), f"{path}:{n}")
        if v.shape != neutral.shape:
            raise BadModelFileError(f"{path}:{n}: {len(v)} vertices, neutral mesh has {V}")
        modes[i] = v - neutral
    tri = orient_outwards(neutral, tri)
    return {
        "mean": neutral.astype(np.float32),
        "id_basis": modes[: len(id_names)],
        "exp_basis": modes[len(id_names) :],
        "triangles": tri,
        "exp_names": np.array(exp_names),
        "rigid": np.array(meta.get("idx_to_rigid_verts", []), dtype=np.int64),
        "fitting": np.array(meta.get("idx_to_fitting_verts", []), dtype=np.int64),
    }


def orient_outwards(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Return `triangles` flipped as a whole if their area-weighted normals point inwards
    (towards the centroid) on balance, so they are counter-clockwise seen from outside."""
    v = np.asarray(vertices, dtype=np.float64)
    t = np.asarray(triangles)
    a, b, c = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    n = np.cross(b - a, c - a)
    out = ((a + b + c) / 3 - v.mean(axis=0) * 1.0) * n
    if out.sum() < 0:
        t = t[:, [0, 2, 1]]
    return np.ascontiguousarray(t, dtype=np.int32)


def ict_cache_path(source: Path, digest: str) -> Path:
    return paths.cache_dir() / f"ict_facekit_{digest[:16]}_v{_CACHE_VERSION}.npz"


def load_ict_arrays(
    path: str | os.PathLike | None = None, *, use_cache: bool = True, verbose: bool = False
) -> dict[str, np.ndarray]:
    """All ICT arrays (see :func:`parse_ict`), from the cache when its key (the sha256 of
    the archive, or of the folder's OBJ/JSON files) matches, else parsed and cached.

    A cache file that cannot be read (empty, truncated, not an npz, arrays missing) is
    ignored with a ``RuntimeWarning`` naming it; the source is parsed again and the cache
    rewritten atomically.  A cache that cannot be written only warns.  An error while
    parsing is a :class:`BadModelFileError` naming the source path."""
    src = Path(path) if path is not None else Path(paths.ICT_FACEKIT)
    if not src.exists() and not src.is_absolute() and (paths.REPO_ROOT / src).exists():
        src = paths.REPO_ROOT / src  # config paths are relative to the project root
    if not src.exists():
        raise BadModelFileError(
            f"{src}: ICT-FaceKit not found (upstream: github.com/ICT-VGL/ICT-FaceKit, "
            "folder FaceXModel/; set config assets.ict_facekit)"
        )
    t0 = time.perf_counter()
    digest = _sha256(src)
    cache = ict_cache_path(src, digest)
    if use_cache and cache.is_file():
        arrays = _read_ict_cache(cache)
        if arrays is not None and str(arrays["source_sha256"]) == digest:
            if verbose:
                print(f"ICT-FaceKit from cache {cache} ({time.perf_counter() - t0:.2f} s)")
            return arrays
    try:
        arrays = parse_ict(src, progress=verbose)
    except BadModelFileError:
        raise
    except Exception as e:  # anything else a damaged source raises (json, unicode, ...)
        raise BadModelFileError(f"{src}: cannot parse ICT-FaceKit ({type(e).__name__}: {e})") from e
    arrays["source_sha256"] = np.array(digest)
    if use_cache:
        _write_ict_cache(cache, arrays)
    if verbose:
        print(f"ICT-FaceKit parsed from {src} ({time.perf_counter() - t0:.2f} s)")
    return arrays


#: Arrays every ICT cache file holds (see :func:`parse_ict`, plus the key ``source_sha256``).
_CACHE_KEYS = ("mean", "id_basis", "exp_basis", "triangles", "exp_names", "rigid", "fitting",
               "source_sha256")  # fmt: skip


def _read_ict_cache(cache: Path) -> dict[str, np.ndarray] | None:
    """The arrays of an ICT cache file, or ``None`` (with a warning naming it) when any
    part of it cannot be read: a damaged cache must never fail a job."""
    import warnings

    try:
        with np.load(cache, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        missing = [k for k in _CACHE_KEYS if k not in arrays]
        if missing:
            raise KeyError(f"arrays {missing} missing")
        return arrays
    except Exception as e:  # EOFError, zipfile.BadZipFile, zlib.error, OSError, ValueError, ...
        warnings.warn(
            f"ICT-FaceKit cache {cache} is unreadable ({type(e).__name__}: {e}); "
            "parsing the source again and rewriting the cache",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _write_ict_cache(cache: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the cache atomically; a failure (read-only or full disk) only warns."""
    import warnings

    try:
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
    except OSError as e:
        warnings.warn(
            f"ICT-FaceKit cache {cache} could not be written ({e}); the next run parses again",
            RuntimeWarning,
            stacklevel=3,
        )


def _ict_model(arrays, n_id: int, n_exp: int, exp_names: Sequence[str] | None) -> FaceModel:
    all_exp = [str(e) for e in arrays["exp_names"]]
    if exp_names is None:
        order = [e for e in ICT_DEFAULT_EXPRESSIONS if e in all_exp]
        order += [e for e in all_exp if e not in order]
        if n_exp > len(order):
            raise ValueError(f"n_exp={n_exp}, ICT-FaceKit has {len(order)} expressions")
        exp_names = order[:n_exp]
    else:
        unknown = [e for e in exp_names if e not in all_exp]
        if unknown:
            raise ValueError(f"unknown ICT expressions {unknown}; known: {all_exp}")
    exp_idx = [all_exp.index(e) for e in exp_names]
    if n_id > arrays["id_basis"].shape[0]:
        raise ValueError(f"n_id={n_id}, ICT-FaceKit has {arrays['id_basis'].shape[0]} modes")
    V = arrays["mean"].shape[0]

    def rng(name):
        a, b = ICT_RANGES[name]
        return np.arange(a, b + 1, dtype=np.int64)

    sets = {k: rng(k) for k in ICT_RANGES}
    sets["eyes"] = np.concatenate([rng("eyeball_left"), rng("eyeball_right")])
    sets["mouth"] = np.concatenate([rng("mouth_socket"), rng("gums_tongue"), rng("teeth")])
    sets["skin"] = np.arange(0, ICT_SUBSETS["face_neck"], dtype=np.int64)
    if arrays.get("rigid") is not None and len(arrays["rigid"]):
        sets["rigid"] = np.asarray(arrays["rigid"], dtype=np.int64)
    if arrays.get("fitting") is not None and len(arrays["fitting"]):
        sets["fitting"] = np.asarray(arrays["fitting"], dtype=np.int64)
    return FaceModel(
        name="ict",
        mean=np.ascontiguousarray(arrays["mean"], dtype=np.float32),
        id_basis=np.ascontiguousarray(arrays["id_basis"][:n_id], dtype=np.float32),
        exp_basis=np.ascontiguousarray(arrays["exp_basis"][exp_idx], dtype=np.float32),
        triangles=np.ascontiguousarray(arrays["triangles"], dtype=np.int32),
        landmarks68=ICT_LANDMARKS68.copy(),
        vertex_sets=sets,
        are_pairs=dict(ICT_ARE_PAIRS),
        id_std=np.ones(n_id, dtype=np.float32),
        exp_names=list(exp_names),
        units="cm",
        subset_name="head",
        vertex_index=np.arange(V, dtype=np.int64),
    )


# ---------------------------------------------------------------------------------------
# BFM (3DDFA-V2 bfm_noneck_v3.pkl)
# ---------------------------------------------------------------------------------------


def load_bfm_arrays(
    path: str | os.PathLike, tri_path: str | os.PathLike | None = None
) -> dict[str, np.ndarray]:
    """Read 3DDFA-V2's ``bfm_noneck_v3.pkl`` (a dict: ``u (3V, 1)``, ``w_shp (3V, >=40)``,
    ``w_exp (3V, >=10)``, ``keypoints (204,)`` flattened xyz indices, optional ``tri``),
    through the restricted unpickler.  Triangles ((3, F) or (F, 3)) are chosen as 3DDFA-V2's
    ``bfm/bfm.py`` does: ``tri.pkl`` (`tri_path`, rebuilt upstream for this mesh) for a file
    named ``bfm_noneck_v3.pkl``, else the pickle's own ``tri``; a pickle without ``tri``
    takes `tri_path` whatever its name.  Without either, a BadModelFileError."""
    path = Path(path)
    d = load_pickle(path)
    if not isinstance(d, dict):
        raise BadModelFileError(f"{path}: expected a dict, got {type(d).__name__}")
    for k in ("u", "w_shp", "w_exp", "keypoints"):
        if k not in d:
            raise BadModelFileError(f"{path}: missing key {k!r} (have {sorted(d)})")
    u = np.asarray(d["u"], dtype=np.float32).reshape(-1)
    if u.size % 3:
        raise BadModelFileError(f"{path}: u has {u.size} values, not a multiple of 3")
    V = u.size // 3
    w_shp = np.asarray(d["w_shp"], dtype=np.float32)
    w_exp = np.asarray(d["w_exp"], dtype=np.float32)
    for k, w, n in (("w_shp", w_shp, 40), ("w_exp", w_exp, 10)):
        if w.ndim != 2 or w.shape[0] != 3 * V or w.shape[1] < n:
            raise BadModelFileError(f"{path}: {k} has shape {w.shape}, expected ({3 * V}, >={n})")
    kp = np.asarray(d["keypoints"]).reshape(-1).astype(np.int64)
    if kp.size != 204 or kp.min() < 0 or kp.max() >= 3 * V or np.any(kp[0::3] % 3):
        raise BadModelFileError(
            f"{path}: keypoints must be 68 (x, y, z) triples of indices into the 3V values"
        )
    if tri_path is not None and (path.name == "bfm_noneck_v3.pkl" or "tri" not in d):
        tri = np.asarray(load_pickle(tri_path))
        src = str(tri_path)
    elif "tri" in d:
        tri = np.asarray(d["tri"])
        src = f"{path}:tri"
    else:
        raise BadModelFileError(f"{path}: no 'tri' and no tri.pkl given")
    if tri.ndim != 2 or 3 not in tri.shape:
        raise BadModelFileError(f"{src}: triangles have shape {tri.shape}")
    if tri.shape[0] == 3 and tri.shape[1] != 3:
        tri = tri.T
    tri = tri.astype(np.int64)
    if tri.min() < 0 or tri.max() >= V:
        raise BadModelFileError(f"{src}: triangle indices outside 0..{V - 1}")
    return {
        # u and w are xyz-interleaved per vertex: row 3i+c is coordinate c of vertex i
        "mean": u.reshape(V, 3),
        "id_basis": np.ascontiguousarray(w_shp[:, :40].T.reshape(40, V, 3)),
        "exp_basis": np.ascontiguousarray(w_exp[:, :10].T.reshape(10, V, 3)),
        "triangles": tri.astype(np.int32),
        "landmarks68": kp[0::3] // 3,
    }


def _bfm_model(arrays, n_id: int, n_exp: int) -> FaceModel:
    if n_id > 40 or n_exp > 10:
        raise ValueError(
            f"BFM (3DDFA-V2) has 40 shape and 10 expression modes; got {n_id}, {n_exp}"
        )
    id_std = np.ones(n_id, dtype=np.float32)
    try:
        ms = load_pickle(paths.PARAM_MEAN_STD)
        id_std = np.asarray(ms["std"], dtype=np.float32)[12 : 12 + n_id]
    except (BadModelFileError, KeyError, TypeError):
        pass
    mean = arrays["mean"]
    tri = orient_outwards(mean, arrays["triangles"])
    lm = np.asarray(arrays["landmarks68"], dtype=np.int64)
    V = mean.shape[0]
    return FaceModel(
        name="bfm",
        mean=np.ascontiguousarray(mean, dtype=np.float32),
        id_basis=arrays["id_basis"][:n_id],
        exp_basis=arrays["exp_basis"][:n_exp],
        triangles=tri,
        landmarks68=lm,
        vertex_sets={"face": np.arange(V, dtype=np.int64)},
        # CMP's own indices on the 53,215-vertex BFM; other topologies: the landmark rule
        # (evaluation picks its pairs with select_are_pairs)
        are_pairs=dict(CMP_ARE_PAIRS_BFM53K)
        if V == BFM53K_N_VERTICES
        else choose_are_pairs(mean, lm),
        id_std=id_std,
        exp_names=[f"exp{j:02d}" for j in range(n_exp)],
        units="um",
        subset_name="face",
        vertex_index=np.arange(V, dtype=np.int64),
    )


# ---------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------


def load_face_model(
    name: str = "ict",
    *,
    path: str | os.PathLike | None = None,
    subset: str = "face",
    n_id: int = 40,
    n_exp: int = 10,
    exp_names: Sequence[str] | None = None,
    tri_path: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> FaceModel:
    """Load a face model.

    Args:
        name: ``"ict"`` (ICT-FaceKit, default) or ``"bfm"`` (3DDFA-V2 bfm_noneck_v3.pkl).
        path: ICT: archive or FaceXModel folder (default ``vox3d.paths.ICT_FACEKIT``);
            BFM: the ``bfm_noneck_v3.pkl`` (required).
        subset: ICT vertex subset ``head`` | ``face_neck`` | ``face`` | ``narrow_face``
            (ignored for BFM).
        n_id, n_exp: modes kept (ICT <= 100 / 53; BFM <= 40 / 10).
        exp_names: ICT expressions by name (overrides `n_exp`); default: the first `n_exp`
            of :data:`ICT_DEFAULT_EXPRESSIONS` then the remaining upstream names.
        tri_path: BFM triangles (default ``vox3d.paths.BFM_TRI``, 3DDFA-V2's tri.pkl), used
            as 3DDFA-V2 does (see :func:`load_bfm_arrays`).
        use_cache: ICT: read/write the parsed cache in ``vox3d.paths.cache_dir()``.
    """
    if name == "ict":
        arrays = load_ict_arrays(path, use_cache=use_cache)
        model = _ict_model(arrays, n_id, n_exp, exp_names)
        return model.subset(subset)
    if name == "bfm":
        if path is None:
            raise BadModelFileError(
                "BFM needs a bfm_noneck_v3.pkl (3DDFA-V2 configs/, BFM academic licence): "
                "set config assets.bfm"
            )
        path, tp = Path(path), Path(tri_path if tri_path is not None else paths.BFM_TRI)
        if not path.exists() and not path.is_absolute():
            path = paths.REPO_ROOT / path  # config paths are relative to the project root
        if not tp.exists() and not tp.is_absolute():
            tp = paths.REPO_ROOT / tp
        arrays = load_bfm_arrays(path, tp if tp.is_file() else None)
        return _bfm_model(arrays, n_id, n_exp)
    raise ValueError(f"unknown face model {name!r} (ict | bfm)")


# ---------------------------------------------------------------------------------------
# configuration: the config's ``face_model`` section + asset paths
# ---------------------------------------------------------------------------------------


def face_model_settings(face_model: Mapping, assets: Mapping) -> dict:
    """The config's ``face_model`` section plus its asset paths (``path``, ``tri_path``)."""
    fm = dict(face_model)
    fm["path"] = assets.get("ict_facekit") if fm.get("name", "ict") == "ict" else assets.get("bfm")
    fm["tri_path"] = assets.get("bfm_tri")
    return fm


def face_model_from_config(face_cfg: Mapping, n_id: int | None = None):
    """Load the face model named by the config's ``face_model`` (+ asset paths) section.

    face_cfg keys: ``name``, ``subset``, ``n_id``, ``n_exp``, ``path`` (ICT archive or BFM
    pickle), ``tri_path``; ``n_id`` overrides (the targets' coefficient count).
    """
    name = face_cfg.get("name", "ict")
    kw = {
        "subset": face_cfg.get("subset", "face"),
        "n_id": int(n_id if n_id is not None else face_cfg.get("n_id", 40)),
        "n_exp": int(face_cfg.get("n_exp", 0)),
    }
    if face_cfg.get("path"):
        kw["path"] = face_cfg["path"]
    if face_cfg.get("tri_path"):
        kw["tri_path"] = face_cfg["tri_path"]
    return load_face_model(name, **kw)


def mesh_available(face_cfg: Mapping) -> bool:
    """Whether the face model of ``face_cfg`` (config ``face_model`` + asset paths, see
    :func:`face_model_settings`) has a basis to make meshes: ICT always (the archive is a
    default asset), BFM only with a ``path`` to ``bfm_noneck_v3.pkl``."""
    name = face_cfg.get("name", "ict")
    if name == "ict":
        return True
    if name == "bfm":
        return bool(face_cfg.get("path"))
    raise ValueError(f"unknown face model {name!r} (ict | bfm)")


def model_layout(model: FaceModel):
    """The parameter layout (:mod:`vox3d.params`) matching `model`'s mode counts."""
    if model.name == "bfm" and model.n_id == 40 and model.n_exp == 10:
        return TDDFA_LAYOUT
    return ict_layout(model.n_id, model.n_exp)


__all__ = [
    "ARE_KEYS",
    "FaceModel",
    "ICT_LANDMARKS68",
    "choose_are_pairs",
    "select_are_pairs",
    "load_face_model",
    "model_layout",
    "restrict",
]


def reconstruct(
    model: FaceModel,
    params: np.ndarray,
    roi_box=None,
    *,
    layout=None,
    size: int = 120,
) -> np.ndarray:
    """Parameters ``(n,)`` or ``(B, n)`` -> posed vertices ``(V, 3)`` / ``(B, V, 3)`` float32.

    Without `roi_box`: crop coordinates ``P @ [v; 1]`` (3DDFA-V2 convention, `size` crop);
    with ``roi_box (4,)`` (or ``(B, 4)``): image coordinates via :func:`vox3d.params.to_image`.
    `layout` defaults to :func:`model_layout`.
    """
    layout = layout or model_layout(model)
    params = np.asarray(params, dtype=np.float32)
    single = params.ndim == 1
    p2 = params[None] if single else params
    P, a_id, a_exp = prm.split(p2, layout)
    verts = model.vertices(a_id, a_exp if a_exp.shape[1] else None)
    out = prm.transform_vertices(verts, P).astype(np.float32)
    if roi_box is not None:
        boxes = np.asarray(roi_box, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 1:
            boxes = np.repeat(boxes, len(out), axis=0)
        out = np.stack([prm.to_image(o, b, size) for o, b in zip(out, boxes, strict=True)])
    return out[0] if single else out
