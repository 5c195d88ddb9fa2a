"""BFM as 3DDFA-V2 ships it: ``bfm_noneck_v3.pkl`` (Basel Face Model 2009, academic licence,
user supplied) and ``tri.pkl``; the vertex counts of the two BFM topologies in play.

:func:`load_bfm_arrays` reads the pickle through the restricted unpickler into arrays;
:func:`vox3d.face.face_model.load_face_model` turns them into a
:class:`vox3d.face.face_model.FaceModel`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vox3d.safeload import BadModelFileError, load_pickle

#: Vertex counts of the two BFM topologies: the one CMP's indices address (3DDFA v1's
#: 53,215-vertex mesh) and 3DDFA-V2's ``bfm_noneck_v3`` (38,365 vertices, no neck, no ears).
BFM53K_N_VERTICES, BFM_NONECK_V3_N_VERTICES = 53215, 38365


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
