"""ARE vertex pairs: CMP's pairs, their ICT-FaceKit equivalents, and the rules that choose
or carry pairs on a mesh.

ARE (the CMP paper's face-ratio metric) divides four distances (forehead, cheek, ear,
mid-face) by the outer inter-ocular distance (OICD) of the same mesh; each distance is
between the two vertices of a pair, listed (subject's right, subject's left).  Everything
here works on arrays (mean shapes, landmark indices); the pairs of a loaded
:class:`vox3d.face.face_model.FaceModel` under config ``evaluate.are_pairs`` are
:func:`vox3d.face.are_selection.select_are_pairs`.
"""

from __future__ import annotations

import numpy as np

from vox3d.face.bfm import BFM53K_N_VERTICES
from vox3d.face.metrics import similarity_transform

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

#: Order of the ARE pairs.
ARE_KEYS = ("oicd", "forehead", "cheek", "ear", "mid")


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
