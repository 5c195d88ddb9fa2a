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

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vox3d import params as prm
from vox3d import paths
from vox3d.config import default, section
from vox3d.face.are_pairs import ARE_KEYS, CMP_ARE_PAIRS_BFM53K, ICT_ARE_PAIRS, choose_are_pairs
from vox3d.face.bfm import BFM53K_N_VERTICES, load_bfm_arrays
from vox3d.face.ict_facekit import (
    ICT_DEFAULT_EXPRESSIONS,
    ICT_LANDMARKS68,
    ICT_N_VERTICES,
    ICT_RANGES,
    ICT_SUBSETS,
    load_ict_arrays,
    orient_outwards,
)
from vox3d.params import TDDFA_LAYOUT, ict_layout
from vox3d.safeload import BadModelFileError, load_pickle


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


def local_vertex_index(model: FaceModel, full_index) -> np.ndarray:
    """Positions ``(P,) int64`` in `model`'s vertices of full-source-topology vertex indices
    `full_index` ``(P,)``; -1 where a vertex is not in the model's subset."""
    src = model.vertex_index if model.vertex_index is not None else np.arange(model.n_vertices)
    pos = np.full(int(src.max()) + 1, -1, dtype=np.int64)
    pos[src] = np.arange(len(src))
    full = np.asarray(full_index, dtype=np.int64).reshape(-1)
    inside = (full >= 0) & (full < len(pos))
    return np.where(inside, pos[np.where(inside, full, 0)], -1)


# ---------------------------------------------------------------------------------------
# the models from their arrays (ICT-FaceKit: vox3d.face.ict_facekit, BFM: vox3d.face.bfm)
# ---------------------------------------------------------------------------------------


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
    name: str = default("face_model.name"),
    *,
    path: str | os.PathLike | None = None,
    subset: str = default("face_model.subset"),
    n_id: int = default("face_model.n_id"),
    n_exp: int = default("face_model.n_exp"),
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


def face_model_section(face_cfg: Mapping | None) -> dict:
    """`face_cfg` (config ``face_model`` section, maybe with asset paths) over config.yaml's
    ``face_model`` defaults."""
    return section("face_model", face_cfg)


def face_model_settings(face_model: Mapping, assets: Mapping) -> dict:
    """The config's ``face_model`` section plus its asset paths (``path``, ``tri_path``)."""
    fm = face_model_section(face_model)
    fm["path"] = assets.get("ict_facekit") if fm["name"] == "ict" else assets.get("bfm")
    fm["tri_path"] = assets.get("bfm_tri")
    return fm


def face_model_from_config(face_cfg: Mapping, n_id: int | None = None):
    """Load the face model named by the config's ``face_model`` (+ asset paths) section.

    face_cfg keys: ``name``, ``subset``, ``n_id``, ``n_exp``, ``path`` (ICT archive or BFM
    pickle), ``tri_path``; absent ones take config.yaml's defaults; ``n_id`` overrides (the
    targets' coefficient count).
    """
    face_cfg = face_model_section(face_cfg)
    kw = {
        "subset": face_cfg["subset"],
        "n_id": int(n_id if n_id is not None else face_cfg["n_id"]),
        "n_exp": int(face_cfg["n_exp"]),
    }
    if face_cfg.get("path"):
        kw["path"] = face_cfg["path"]
    if face_cfg.get("tri_path"):
        kw["tri_path"] = face_cfg["tri_path"]
    return load_face_model(face_cfg["name"], **kw)


def mesh_available(face_cfg: Mapping) -> bool:
    """Whether the face model of ``face_cfg`` (config ``face_model`` + asset paths, see
    :func:`face_model_settings`) has a basis to make meshes: ICT always (the archive is a
    default asset), BFM only with a ``path`` to ``bfm_noneck_v3.pkl``."""
    name = face_model_section(face_cfg)["name"]
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
    "FaceModel",
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
