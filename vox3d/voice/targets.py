"""Identity targets of training and evaluation: readers, standardisation, space.

The voice model learns identity coefficients: the fitted shapes of ``fit/identities.h5``
(:func:`read_identity_targets`; written by :func:`vox3d.fitting.identities.aggregate_identities`)
and, for the synthetic corpus, the true ones of ``ground_truth.h5``
(:class:`vox3d.synthetic.ground_truth.GroundTruth`; written by
:func:`vox3d.synthetic.synth_card.write_ground_truth`).  It predicts them standardised
(:func:`target_stats`), in the target space of :func:`resolve_target_space`
(``train.target``: mesh or parameters).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from vox3d.face.face_model import mesh_available
from vox3d.fitting.identities import IdentitiesFile

TARGET_SPACES = ("auto", "mesh", "params")
#: Why a run has no ARE / vertex metrics (BFM without its basis file).
NO_MESH_NOTE = (
    "parameter space only: ARE, vertex RMSE and meshes need the BFM basis "
    "(set assets.bfm to 3DDFA-V2's bfm_noneck_v3.pkl, academic licence; docs/real_voxceleb.md)"
)


def resolve_target_space(requested: str, face_cfg: Mapping) -> tuple[str, str]:
    """``train.target`` -> ``(space, note)``: ``mesh`` or ``params`` and why, or "".

    ``auto`` is ``mesh`` when :func:`vox3d.face.face_model.mesh_available`, else ``params`` with
    :data:`NO_MESH_NOTE`; ``mesh`` without a basis is a ValueError naming the setting.
    """
    if requested not in TARGET_SPACES:
        raise ValueError(f"train.target {requested!r} is not one of {TARGET_SPACES}")
    have = mesh_available(face_cfg)
    if requested == "mesh" and not have:
        raise ValueError(
            "train.target is 'mesh' but face model 'bfm' has no basis: set assets.bfm to "
            "3DDFA-V2's bfm_noneck_v3.pkl (docs/real_voxceleb.md) or use train.target: auto"
        )
    if requested == "params":
        return "params", "parameter space by request (train.target: params): no ARE or meshes"
    if have:
        return "mesh", ""
    return "params", NO_MESH_NOTE


def target_stats(coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardisation of identity coefficients ``coef (N, K)``: ``(mean (K,), std (K,))``
    float32, std with ddof 0 and 1.0 where it is below 1e-8 (a constant coefficient).
    The model predicts ``z = (coef - mean) / std``; evaluation uses the same statistics."""
    c = np.asarray(coef, dtype=np.float32)
    std = c.std(0)
    return c.mean(0), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def read_identity_targets(path: str | os.PathLike) -> tuple[list[str], np.ndarray, dict]:
    """``fit/identities.h5`` -> ``(identities, shape (N, K) float32, attrs)``
    (:class:`vox3d.fitting.identities.IdentitiesFile`)."""
    f = IdentitiesFile.read(path)
    return list(f.ids), f.shape, dict(f.attrs)
