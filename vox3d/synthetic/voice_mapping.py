"""The face -> voice mapping of the synthetic corpus, and its voice -> shape ceiling.

Face -> voice mapping (:class:`VoiceMapping`, documented in the corpus card; applied by
:func:`vox3d.synthetic.voice_synth.voice_from_identity`): with
``z = id_coef / id_std`` (the identity in prior standard units, ``z ~ N(0, I)``),

``vtl_cm          = VTL_MEAN[g] + VTL_GAIN * (a_vtl . z) + VTL_NOISE * e1``
``log f0_hz       = log F0_MEAN[g] + F0_GAIN * (a_f0 . z) + F0_NOISE * e2``
``log ratio_i     = RATIO_GAIN * (b_i . z) + RATIO_NOISE * e_i``          (i = 1..4)
``open_quotient   = OQ_MEAN[g] + OQ_GAIN * (a_oq . z) + OQ_NOISE * e8``
``log breathiness = log BREATH_MEAN[g] + BREATH_GAIN * (a_br . z) + BREATH_NOISE * e11``

with unit direction vectors (rows of :attr:`VoiceMapping.directions`), gender ``g`` and
per-identity noise ``e ~ N(0, 1)`` (12 draws per identity, clipped to +-3).  The source-
filter story behind each link (the directions are built by :func:`vox3d.synthetic.synth_rig.
mapping_directions`; the correlations below are within a gender, of the feature with its
direction's projection, ``gain / sqrt(gain^2 + noise^2)``, and of the direction with the
named face proportion it is signed by, :func:`vox3d.synthetic.synth_rig.proportion_correlations`):

* vocal-tract length (formant dispersion: all formants scale with ``1 / VTL``) follows face
  length (nasion - chin), the size link: r = 0.92 (0.8 cm per unit, 0.35 cm noise);
* F0 (larynx size) falls along a heavier lower face: ``a_f0`` is the face-proportion mode
  most tied to jaw width / face width (-0.53) and lower-face height / face length (-0.50);
  r = 0.82 (0.10 log Hz per unit, 0.07 noise);
* the formant ratios (the tract's departure from a uniform tube: oral and pharyngeal
  cavity proportions) follow face-proportion modes: ``b_1`` the breadth of the cheeks and
  head relative to the eye spacing (CMP's cheek / ear ratios, 0.94 / 0.87), ``b_2``
  forehead width and nose projection against mid-face width, ``b_3`` forehead width and
  lower-face height, ``b_4`` forehead and mouth width; r = 0.91 each (0.045 log ratio per
  unit, 0.02 noise: formants move by about 5%);
* the glottal source: open quotient and breathiness (spectral tilt, aspiration noise)
  follow the next two proportion modes (face width / upper-face height, +0.41 and -0.36);
  r = 0.91 each (0.045 and 0.27 log per unit; their total spread, 0.05 and 0.3 log, is as
  without the link).

The remaining voice parameters (intonation range, jitter, shimmer, speaking rate) depend on
gender and noise only.  The proportion modes are scale free (the leading eigenvectors of
the similarity-removed face-area shape plus CMP's face ratios, orthogonal to ``a_vtl``), so
most of the voice's information survives an image fit, which cannot see size.  A mapping
with 6 direction rows (the form before issue 17) links the first six features only.  These
strengths are a design choice of the synthetic world, far stronger than voice-face
correlations measured in real people; the resulting ceiling: :func:`voice_ceiling` and
``bench/results/cpu_voice_ceiling.txt``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from vox3d.face.metrics import face_ratios

#: Gender-specific means (index 0 = "m", 1 = "f").
VTL_MEAN_CM = (17.0, 14.8)
F0_MEAN_HZ = (118.0, 205.0)
#: Gender-specific means of the glottal parameters (open quotient; breathiness, log-normal).
OQ_MEAN = (0.55, 0.65)
BREATH_MEAN = (0.2, 0.35)

#: Names of the face-linked voice features (rows of :attr:`VoiceMapping.directions`), in
#: order; a mapping with 6 rows links the first six only.
LINKED_FEATURES = (
    "vtl_cm",
    "log_f0_hz",
    "log_formant_ratio_1",
    "log_formant_ratio_2",
    "log_formant_ratio_3",
    "log_formant_ratio_4",
    "open_quotient",
    "log_breathiness",
)


@dataclass(frozen=True)
class VoiceMapping:
    """Linear map from standardised identity coefficients ``z (K,)`` to voice parameters.

    directions: ``(L, K)`` unit rows, ``L`` = 8 (``a_vtl, a_f0, b_1..b_4, a_oq, a_br``: the
    features of :data:`LINKED_FEATURES`) or 6 (the first six; open quotient and
    breathiness then depend on gender and noise only); gains and noise levels as in the
    module docstring.  The default gains / noises are the corpus's: each feature correlates
    with its direction's projection ``d . z`` by ``gain / sqrt(gain^2 + noise^2)`` within a
    gender (0.92, 0.82, 0.91 x 4, 0.91, 0.91).  See
    :func:`vox3d.synthetic.voice_synth.voice_from_identity`.
    """

    directions: np.ndarray
    vtl_gain: float = 0.8  # cm per unit of a_vtl . z
    vtl_noise: float = 0.35  # cm
    f0_gain: float = 0.10  # log Hz per unit
    f0_noise: float = 0.07  # log Hz
    ratio_gain: float = 0.045  # log ratio per unit
    ratio_noise: float = 0.02  # log ratio
    oq_gain: float = 0.045  # open quotient per unit (total spread 0.05 as without the link)
    oq_noise: float = 0.02
    breath_gain: float = 0.27  # log breathiness per unit (total spread 0.3 as without it)
    breath_noise: float = 0.12
    direction_names: tuple[str, ...] = (
        "a_vtl", "a_f0", "b_1", "b_2", "b_3", "b_4", "a_oq", "a_br",
    )  # fmt: skip

    @property
    def n_linked(self) -> int:
        """Number of face-linked features (rows of `directions`: 6 or 8)."""
        n = int(np.asarray(self.directions).shape[0])
        if n not in (6, 8):
            raise ValueError(f"VoiceMapping needs 6 or 8 direction rows, got {n}")
        return n

    def linear_part(self) -> dict[str, object]:
        """The mapping as plain values (JSON-able) for the corpus card and HDF5 attributes."""
        d = {k: v for k, v in asdict(self).items() if k != "directions"}
        d["direction_names"] = list(self.direction_names[: self.n_linked])
        d["features"] = list(LINKED_FEATURES[: self.n_linked])
        d["directions"] = np.asarray(self.directions).round(6).tolist()
        d["vtl_mean_cm"] = list(VTL_MEAN_CM)
        d["f0_mean_hz"] = list(F0_MEAN_HZ)
        d["oq_mean"] = list(OQ_MEAN)
        d["breath_mean"] = list(BREATH_MEAN)
        return d

    def gains(self) -> np.ndarray:
        """``(L,)`` gains of the linear (log) voice features (:data:`LINKED_FEATURES`)."""
        g = [self.vtl_gain, self.f0_gain] + [self.ratio_gain] * 4
        g += [self.oq_gain, self.breath_gain]
        return np.asarray(g[: self.n_linked], dtype=np.float64)

    def noises(self) -> np.ndarray:
        """``(L,)`` per-identity noise std of the linear (log) voice features."""
        s = [self.vtl_noise, self.f0_noise] + [self.ratio_noise] * 4
        s += [self.oq_noise, self.breath_noise]
        return np.asarray(s[: self.n_linked], dtype=np.float64)

    def gender_means(self) -> np.ndarray:
        """``(2, L)`` the features' means for men (row 0) and women (row 1)."""
        m = [
            [VTL_MEAN_CM[g], math.log(F0_MEAN_HZ[g]), 0.0, 0.0, 0.0, 0.0, OQ_MEAN[g],
             math.log(BREATH_MEAN[g])]
            for g in (0, 1)
        ]  # fmt: skip
        return np.asarray(m, dtype=np.float64)[:, : self.n_linked]


def similarity_gram(mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Gram ``(K, K)`` of the identity basis after removing similarity, to first order.

    mean: ``(V, 3)`` the mean face over the evaluated vertices; basis: ``(K, V, 3)``.  Each
    basis displacement field loses its least-squares projection on the 7 infinitesimal
    similarity motions of the mean face (3 translations, 3 rotations about the centroid, 1
    uniform scale about it), so ``e^T G_sim e`` is the squared vertex error of a shape
    difference ``e`` after the best similarity alignment (Umeyama with scale) of the
    mean face plus ``e`` onto the mean face, to first order in ``e``: the scale-free part.
    """
    m = np.asarray(mean, dtype=np.float64)
    b = np.asarray(basis, dtype=np.float64)
    k, v = b.shape[0], m.shape[0]
    c = m - m.mean(0)
    motions = []
    for a in range(3):
        t = np.zeros((v, 3))
        t[:, a] = 1.0
        motions.append(t.ravel())
    for a in range(3):
        axis = np.zeros(3)
        axis[a] = 1.0
        motions.append(np.cross(axis, c).ravel())
    motions.append(c.ravel())
    q, _ = np.linalg.qr(np.array(motions).T)
    bf = b.reshape(k, -1)
    bp = bf - (bf @ q) @ q.T
    return bp @ bp.T


def voice_ceiling(
    mapping: VoiceMapping,
    gram: np.ndarray,
    id_std: np.ndarray,
    gender_logit: tuple[np.ndarray, float, float],
    n_samples: int = 200_000,
    seed: int = 12345,
    gram_sim: np.ndarray | None = None,
    are: tuple[np.ndarray, np.ndarray, dict] | None = None,
) -> dict[str, float]:
    """Fraction of identity-shape variance predictable from the voice parameters.

    Monte Carlo over the generative model: ``z ~ N(0, I)``, gender from
    ``gender_logit = (u (K,), gain, bias)`` (``P(m) = sigmoid(gain * u.z + bias)``), the
    face-linked voice features from :func:`vox3d.synthetic.voice_synth.voice_from_identity`'s linear part
    (no clipping).  The best linear predictor of ``c = z * id_std`` from ``[features, gender,
    1]`` is fitted by least squares on the sample; reported on a second, independent sample:

    * ``r2_coef``: ``1 - E|c - c_hat|^2 / E|c - mean c|^2`` (identity coefficients),
    * ``r2_vertex``: the same in vertex space, ``|B e|^2 = e^T G e`` with ``gram = G =
      B^T B`` of the identity basis over the evaluated vertices,
    * ``r2_vertex_gender``: vertex-space R^2 of the gender-mean baseline (gender only);
    * with ``gram_sim`` (:func:`similarity_gram`): ``r2_vertex_sim`` and
      ``r2_vertex_sim_gender``, the same with ``G_sim`` (scale-normalised: similarity
      removed to first order);
    * with ``are = (mean_pts (P, 3), basis_pts (K, P, 3), pairs)`` (the mean face and the
      identity basis at the ARE vertices, `pairs` the ARE pairs indexing those P points):
      ``are_mean`` (the predicted faces' ARE against the true faces,
      :func:`vox3d.face.metrics.face_ratios`, mean over ratios and identities),
      ``are_mean_face`` (the population mean face's), ``are_gender`` (the gender-mean
      baseline's), ``are_improvement`` = ``1 - are_mean / are_mean_face`` and
      ``are_improvement_gender``.
    """
    rng = np.random.default_rng(seed)
    K = mapping.directions.shape[1]

    def sample(n):
        return simulate_voices(mapping, id_std, gender_logit, n, rng)

    def fit(X, c, Xt, ct):
        W, *_ = np.linalg.lstsq(X, c, rcond=None)
        return Xt @ W

    def r2(e, d, g):
        return float(1 - np.einsum("ij,jk,ik->", e, g, e) / np.einsum("ij,jk,ik->", d, g, d))

    X, c = sample(n_samples)
    Xt, ct = sample(n_samples)
    g_cols = [X.shape[1] - 2, X.shape[1] - 1]
    pred = fit(X, c, Xt, ct)
    pred_g = fit(X[:, g_cols], c, Xt[:, g_cols], ct)
    d = ct - ct.mean(0)
    eye = np.eye(K)
    out = {
        "r2_coef": r2(ct - pred, d, eye),
        "r2_vertex": r2(ct - pred, d, gram),
        "r2_coef_gender": r2(ct - pred_g, d, eye),
        "r2_vertex_gender": r2(ct - pred_g, d, gram),
        "n_samples": float(n_samples),
    }
    if gram_sim is not None:
        out["r2_vertex_sim"] = r2(ct - pred, d, gram_sim)
        out["r2_vertex_sim_gender"] = r2(ct - pred_g, d, gram_sim)
    if are is not None:
        errs = are_errors_of(are, ct, {"voice": pred, "gender": pred_g, "mean": 0 * ct})
        out["are_mean"], out["are_gender"], out["are_mean_face"] = (
            errs["voice"], errs["gender"], errs["mean"],
        )  # fmt: skip
        out["are_improvement"] = 1.0 - errs["voice"] / errs["mean"]
        out["are_improvement_gender"] = 1.0 - errs["gender"] / errs["mean"]
    return out


def simulate_voices(
    mapping: VoiceMapping,
    id_std: np.ndarray,
    gender_logit: tuple[np.ndarray, float, float],
    n: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """`n` identities of the generative model (:func:`voice_ceiling`'s sample): ``X (n, L +
    2)`` = the linked voice features (:data:`LINKED_FEATURES`, with their gender means and
    noise), the male indicator and 1; ``c (n, K)`` = ``z * id_std``."""
    u, g_gain, g_bias = gender_logit
    K = mapping.directions.shape[1]
    std = np.asarray(id_std, dtype=np.float64)[:K]
    means = mapping.gender_means()
    z = rng.standard_normal((n, K))
    p_m = 1.0 / (1.0 + np.exp(-(g_gain * (z @ u) + g_bias)))
    male = rng.random(n) < p_m
    feats = (z @ mapping.directions.T) * mapping.gains()
    feats += rng.standard_normal(feats.shape) * mapping.noises()
    feats += np.where(male[:, None], means[0], means[1])
    X = np.column_stack([feats, male.astype(np.float64), np.ones(n)])
    return X, z * std


def are_errors_of(
    are: tuple[np.ndarray, np.ndarray, dict],
    true_coef: np.ndarray,
    predictions: dict[str, np.ndarray],
    chunk: int = 50_000,
) -> dict[str, float]:
    """Mean ARE (:func:`vox3d.face.metrics.face_ratios`; per identity the mean of the
    available ratios' ``|pred - true|``, then the mean over identities, as
    :func:`vox3d.face.metrics.identity_errors` with one prediction) of each of
    ``predictions {name: (N, K) coefficients}`` against ``true_coef (N, K)``.

    ``are = (mean_pts (P, 3), basis_pts (K, P, 3), pairs)``: the mean face and the identity
    basis at the P ARE vertices, `pairs` indexing those points.
    """
    mean_pts, basis_pts, pairs = are
    mp = np.asarray(mean_pts, dtype=np.float64)
    bp = np.asarray(basis_pts, dtype=np.float64)
    n = len(true_coef)
    sums = dict.fromkeys(predictions, 0.0)
    for s in range(0, n, chunk):
        sl = slice(s, min(s + chunk, n))
        rt = face_ratios(mp + np.einsum("nk,kpd->npd", true_coef[sl], bp), pairs)
        for name, p in predictions.items():
            rp = face_ratios(mp + np.einsum("nk,kpd->npd", p[sl], bp), pairs)
            sums[name] += float(np.nanmean(np.abs(rp - rt), axis=1).sum())
    return {name: v / n for name, v in sums.items()}
