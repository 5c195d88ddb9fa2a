"""The in-memory data of a supervised training run (:mod:`vox3d.voice.train`): the utterances of
the training identities with their deterministic random-crop batches (:class:`UtteranceBank`,
:func:`crop`), the per-identity targets (:class:`Targets`) and the selection identities
carved out of the training side (:func:`selection_identities`).  The unsupervised variant
draws its batches from the same bank (:mod:`vox3d.voice.speaker`, :mod:`vox3d.voice.distill_train`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vox3d.config import default
from vox3d.media.split import hash_fraction


class UtteranceBank:
    """In-memory utterances of some identities; deterministic random-crop batches.

    feats: list of ``(T_i, n_bands) float32`` arrays; ids: identity index per utterance
    (0..n_identities-1).
    """

    def __init__(self, feats: Sequence[np.ndarray], ids: Sequence[int]) -> None:
        if len(feats) != len(ids) or not feats:
            raise ValueError("need one identity index per utterance and at least one utterance")
        self.feats = [np.ascontiguousarray(f, dtype=np.float32) for f in feats]
        self.ids = np.asarray(ids, dtype=np.int64)
        self.n_bands = int(self.feats[0].shape[1])
        self.identities = np.unique(self.ids)
        self.by_identity = {int(i): np.flatnonzero(self.ids == i) for i in self.identities}

    def __len__(self) -> int:
        return len(self.feats)

    def fingerprint(self) -> str:
        """sha256 over the features and labels (identifies the data in a run key)."""
        h = hashlib.sha256()
        for f, i in zip(self.feats, self.ids, strict=True):
            h.update(np.int64(i).tobytes())
            h.update(np.asarray(f.shape, np.int64).tobytes())
            h.update(f.tobytes())
        return h.hexdigest()

    def batch(
        self,
        step: int,
        batch_size: int,
        crop_min: int,
        crop_max: int,
        seed: int = default("train.seed"),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch of step ``step``: ``(feats (B, L, n_bands) float32, identity (B,) int64)``."""
        rng = np.random.default_rng([seed, step])
        length = int(rng.integers(crop_min, crop_max + 1))
        who = rng.choice(self.identities, size=batch_size)
        out = np.empty((batch_size, length, self.n_bands), np.float32)
        for b, ident in enumerate(who):
            utts = self.by_identity[int(ident)]
            f = self.feats[int(utts[rng.integers(len(utts))])]
            out[b] = crop(f, length, int(rng.integers(0, max(1, len(f) - length + 1))))
        return torch.from_numpy(out), torch.from_numpy(who.astype(np.int64))


def crop(f: np.ndarray, length: int, start: int) -> np.ndarray:
    """``length`` frames of ``f (T, C)`` from ``start``; shorter inputs repeat cyclically."""
    if len(f) >= length:
        return f[start : start + length]
    reps = math.ceil(length / len(f))
    return np.tile(f, (reps, 1))[:length]


@dataclass
class Targets:
    """Per-identity training targets.

    coef: ``(n_identities, K)`` float32 identity coefficients (row = identity index);
    basis: ``(K, Vf, 3)`` float32 identity basis on the face-area vertices, or None
    (no vertex loss);
    ratio_mean, ratio_basis: ``(10, 3)`` / ``(K, 10, 3)`` mean and identity basis at the
    ARE vertex pairs in the order oicd, ear, forehead, mid, cheek (two vertices each), or
    None (no ratio loss).
    """

    coef: np.ndarray
    basis: np.ndarray | None = None
    ratio_mean: np.ndarray | None = None
    ratio_basis: np.ndarray | None = None


def selection_identities(train_ids: Sequence[str], fraction: float) -> tuple[list[str], list[str]]:
    """Split the training side into ``(fitted, selection)`` identities, both sorted.

    An identity is a selection identity when ``hash_fraction(identity + "/select")`` (a
    stable number in [0, 1), independent of the held-out split's hash) is below
    `fraction`; at least one identity stays on each side when there are two or more.  The
    selection identities are never trained on: their loss picks the checkpoint
    (``train.select: best``).  ``fraction`` 0 gives no selection identities.
    """
    ids = sorted(train_ids)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"train.select_fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or len(ids) < 2:
        return ids, []
    key = {i: hash_fraction(i + "/select") for i in ids}
    sel = [i for i in ids if key[i] < fraction] or [min(ids, key=key.__getitem__)]
    if len(sel) == len(ids):
        sel.remove(max(ids, key=key.__getitem__))
    chosen = set(sel)
    return [i for i in ids if i not in chosen], sorted(sel)
