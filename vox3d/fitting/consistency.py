"""Identity consistency of per-clip shape vectors on real clips (no ground truth).

Input everywhere: ``x (K, D)``, one shape vector per clip (any units; distances are
Euclidean in those units), and ``labels (K,)``, the person of each clip.  *Tested
persons* are those with 2+ clips (or a given subset of them); the other clips are
distractors ("different people").

* **Pairs.**  Same-person pairs: unordered clip pairs ``i < j`` of one tested person.
  Different-person pairs: unordered pairs with different labels **where at least one
  clip is of a tested person** (pairs of two distractors say nothing about the tested
  people and are left out).  Both means are pooled over pairs (a person with more clips
  weighs more).
* **Ratio** = mean same-person distance / mean different-person distance: lower is more
  consistent; about 1.0 means the vectors carry no identity.  0/0 (every vector equal,
  e.g. the mean face for every clip) is defined as exactly 1.0; NaN when there is no
  same-person or no different-person pair.
* **Nearest-neighbour identification**, leave one out: each clip of a tested person is a
  query; its gallery is every other clip; a hit when the nearest gallery clip is of the
  query's person.  Ties at the minimum distance count the fraction of tied clips that are
  of the query's person (the expected score of a random tie-break), so identical vectors
  score exactly the chance level.  Chance = mean over queries of ``same-person gallery
  clips / gallery clips``.
* **Cross-session** (``cross_session=True`` with ``sessions (K,)``): a same-person pair
  or gallery clip of the query's own person counts only when its session differs (the
  strict test: a session shares camera, light and clothes); different-person pairs and
  distractor gallery clips are unchanged.

Meshes are compared after similarity alignment (:func:`similarity_align`, i.e.
:func:`vox3d.face.metrics.align` with scale: scale, rotation, translation; no reflection) to a
reference
(:func:`procrustes_reference` for a generalised-Procrustes mean when there is none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vox3d.config import default
from vox3d.face.metrics import align


@dataclass(frozen=True)
class Consistency:
    """Consistency figures of one set of shape vectors.

    d_same / d_diff: mean same- / different-person distance (units of ``x``).
    ratio: d_same / d_diff (dimensionless; 1.0 = no identity; see module doc for 0/0).
    nn_accuracy: leave-one-out nearest-neighbour identification accuracy in [0, 1].
    chance: chance level of ``nn_accuracy`` for these labels.
    n_same_pairs / n_diff_pairs / n_queries: counts behind the figures.
    """

    d_same: float
    d_diff: float
    ratio: float
    nn_accuracy: float
    chance: float
    n_same_pairs: int
    n_diff_pairs: int
    n_queries: int


def pairwise_distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix ``(K, K)`` float64 of the rows of ``x (K, D)``."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"need (K, D) shape vectors, got shape {x.shape}")
    return np.stack([np.sqrt(np.sum((x - row) ** 2, axis=1)) for row in x])


def tested_mask(labels: Sequence, persons: Sequence | None = None) -> np.ndarray:
    """Boolean ``(K,)``: clip is of a tested person (2+ clips, and in `persons` if given)."""
    lab = np.asarray(labels).astype(str)
    names, counts = np.unique(lab, return_counts=True)
    multi = set(names[counts >= 2])
    if persons is not None:
        multi &= {str(p) for p in persons}
    return np.array([s in multi for s in lab], dtype=bool)


def safe_ratio(d_same: float, d_diff: float) -> float:
    """``d_same / d_diff`` with 0/0 = 1.0 (no identity information); NaN stays NaN."""
    if np.isnan(d_same) or np.isnan(d_diff):
        return float("nan")
    if d_diff == 0.0:
        return 1.0 if d_same == 0.0 else float("inf")
    return float(d_same / d_diff)


def consistency(
    x: np.ndarray,
    labels: Sequence,
    persons: Sequence | None = None,
    sessions: Sequence | None = None,
    cross_session: bool = False,
    tie_rtol: float = 1e-9,
) -> Consistency:
    """Same/different-person distances, their ratio and NN accuracy (module doc).

    x: ``(K, D)`` shape vectors; labels: ``(K,)`` person per clip; persons: restrict the
    tested persons to these names (default: every person with 2+ clips); sessions:
    ``(K,)`` session per clip, needed for ``cross_session``; tie_rtol: distances within
    ``tie_rtol x`` (largest distance) of a query's minimum are ties.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"shape vectors must be finite (K, D), got shape {x.shape}")
    return consistency_from_distances(
        pairwise_distances(x), labels, persons, sessions, cross_session, tie_rtol
    )


def consistency_from_distances(
    d: np.ndarray,
    labels: Sequence,
    persons: Sequence | None = None,
    sessions: Sequence | None = None,
    cross_session: bool = False,
    tie_rtol: float = 1e-9,
) -> Consistency:
    """:func:`consistency` from a precomputed symmetric distance matrix ``d (K, K)``
    (units of the vectors; zero diagonal)."""
    d = np.asarray(d, np.float64)
    lab = np.asarray(labels).astype(str)
    k = d.shape[0]
    if d.shape != (k, k) or not np.isfinite(d).all():
        raise ValueError(f"need a finite (K, K) distance matrix, got shape {d.shape}")
    if lab.shape != (k,):
        raise ValueError(f"labels {lab.shape} do not match {k} shape vectors")
    if cross_session:
        if sessions is None:
            raise ValueError("cross_session needs sessions")
        ses = np.asarray(sessions).astype(str)
        if ses.shape != (k,):
            raise ValueError(f"sessions {ses.shape} do not match {k} shape vectors")
    test = tested_mask(lab, persons)
    same = lab[:, None] == lab[None, :]
    allowed = np.ones((k, k), dtype=bool)  # gallery / pair admissible
    if cross_session:
        allowed &= ~(same & (ses[:, None] == ses[None, :]))
    np.fill_diagonal(allowed, False)
    upper = np.triu(np.ones((k, k), dtype=bool), 1)
    same_pairs = upper & same & test[:, None] & allowed
    diff_pairs = upper & ~same & (test[:, None] | test[None, :])
    d_same = float(d[same_pairs].mean()) if same_pairs.any() else float("nan")
    d_diff = float(d[diff_pairs].mean()) if diff_pairs.any() else float("nan")
    tol = tie_rtol * max(float(d.max()), 1e-300)
    hits, chances = [], []
    for q in np.flatnonzero(test):
        gal = allowed[q]
        n_same = int((gal & same[q]).sum())
        if n_same == 0 or not gal.any():
            continue  # nothing of the query's person to find
        dq = d[q, gal]
        near = dq <= dq.min() + tol
        hits.append(float(same[q, gal][near].mean()))
        chances.append(n_same / int(gal.sum()))
    return Consistency(
        d_same=d_same,
        d_diff=d_diff,
        ratio=safe_ratio(d_same, d_diff),
        nn_accuracy=float(np.mean(hits)) if hits else float("nan"),
        chance=float(np.mean(chances)) if chances else float("nan"),
        n_same_pairs=int(same_pairs.sum()),
        n_diff_pairs=int(diff_pairs.sum()),
        n_queries=len(hits),
    )


def shuffled_control(
    x: np.ndarray,
    labels: Sequence,
    n_perm: int = 200,
    seed: int = default("evaluate.seed"),
    sessions: Sequence | None = None,
    **kw,
) -> tuple[float, float, float]:
    """Mean ``(ratio, nn_accuracy, chance)`` over `n_perm` random permutations of the
    (label, session) of the clips (seeded): what :func:`consistency` gives when labels
    carry no identity (ratio about 1, accuracy about chance).  `kw` go to it."""
    rng = np.random.default_rng(seed)
    d = pairwise_distances(x)
    lab = np.asarray(labels).astype(str)
    ses = None if sessions is None else np.asarray(sessions).astype(str)
    out = []
    for _ in range(n_perm):
        p = rng.permutation(len(lab))
        c = consistency_from_distances(d, lab[p], sessions=None if ses is None else ses[p], **kw)
        out.append((c.ratio, c.nn_accuracy, c.chance))
    r, a, ch = np.nanmean(np.asarray(out, np.float64), axis=0)
    return float(r), float(a), float(ch)


# --------------------------------------------------------------------------------------
# similarity alignment (vox3d.face.metrics.align, Umeyama 1991)


def similarity_align(mesh: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``mesh (V, 3)`` moved by its least-squares similarity (scale, rotation, translation,
    no reflection) onto ``ref (V, 3)`` -> ``(V, 3)`` float64 in ref's units."""
    return align(mesh, ref, scale=True)


def procrustes_reference(meshes: np.ndarray, iters: int = 10) -> np.ndarray:
    """Generalised-Procrustes mean ``(V, 3)`` of ``meshes (N, V, 3)``: start from the
    first, align all, average, rescale to the first mesh's centred RMS size; repeat."""
    m = np.asarray(meshes, np.float64)
    first = m[0] - m[0].mean(0)
    size = np.sqrt(np.mean(np.sum(first**2, 1)))
    ref = first
    for _ in range(iters):
        mean = np.mean([similarity_align(v, ref) for v in m], axis=0)
        mean -= mean.mean(0)
        ref = mean * size / np.sqrt(np.mean(np.sum(mean**2, 1)))
    return ref
