"""The ARE pairs of a loaded face model under config ``evaluate.are_pairs``
(:func:`select_are_pairs`), as indices into the model's own (maybe subset) vertices."""

from __future__ import annotations

from dataclasses import dataclass

from vox3d.face.are_pairs import (
    ARE_PAIR_SETS,
    ICT_ARE_PAIRS,
    ICT_ARE_PAIRS_LANDMARK_RULE,
    check_are_pairs,
    choose_are_pairs,
    cmp_are_pairs_bfm,
    transfer_are_pairs,
)
from vox3d.face.bfm import BFM53K_N_VERTICES, BFM_NONECK_V3_N_VERTICES
from vox3d.face.face_model import FaceModel, local_vertex_index
from vox3d.face.ict_facekit import ICT_LANDMARKS68, load_ict_arrays


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
