"""Voice -> shape ceiling of the synthetic corpus's face -> voice mapping, old vs new.

The ceiling is the best linear predictor of the identity shape from the exact face-linked
voice features (and gender): what a model that hears the voice perfectly could know.  By
Monte Carlo over the generative model (:func:`vox3d.synthetic.voice_mapping.simulate_voices`: ``z ~
N(0, I)``, gender from the gender model, the linear voice features with their noise, no
clipping), the predictor is fitted by least squares on one sample of ``--n-samples``
identities and scored on an independent one of the same size, for:

* ``previous``: the mapping before issue 17 (rebuilt here: ``a_vtl`` face length,
  ``a_f0`` minus jaw width, ``b_1..b_4`` random in the leading 10 modes, seed
  ``vox3d.synthetic.synth_config.MAPPING_SEED``; 6 linked features);
* ``new``: :func:`vox3d.synthetic.synth_rig.default_mapping` (face length + 7 face-proportion modes;
  8 linked features);
* ``new, 6 links``: the new directions without the open-quotient / breathiness links;
* controls: ``deaf`` (the new directions, every gain 0: the voice carries no face) and
  ``shuffled`` (the new mapping's predictor given another identity's voice and gender).

Measures (face model and areas as the evaluation: ICT-FaceKit, config ``face_model``,
``n_id`` 40, the ``face`` area of 9,409 vertices; ``vox3d.synthetic.synth_rig.ceiling_inputs``):

* ``R2 coef``: R^2 of the 40 identity coefficients;
* ``R2 vert``: face-area vertex R^2 (no alignment; both meshes in the model frame);
* ``R2 sim``: scale-normalised vertex R^2, linearised, on the whole sample: the vertex
  errors after removing the 7 similarity motions of the mean face (translation, rotation,
  uniform scale; :func:`vox3d.synthetic.voice_mapping.similarity_gram`);
* ``R2 sim exact``: the same by exact similarity alignment (Umeyama with scale,
  ``vox3d.fitting.fit_accuracy._vertex_ss`` as ``r2_vertex_sim`` of vox3d.fitting.fit_accuracy and
  vox3d.voice.evaluate): each predicted face and the population mean face are similarity-aligned
  onto each true face, ``1 - sum |align(p_i) - t_i|^2 / sum |align(mean) - t_i|^2``, on the
  first ``--n-exact`` identities of the scoring sample;
* ``ARE``: CMP's face-ratio error with the evaluation's pairs (``evaluate.are_pairs: cmp``,
  :func:`vox3d.face.are_selection.select_are_pairs`; :func:`vox3d.face.metrics.face_ratios`), per
  identity the mean over the four ratios of ``|ratio(pred) - ratio(true)|``, then the mean
  over identities (checked against :func:`vox3d.face.metrics.identity_errors` on full meshes);
  ``ARE mf`` the population mean face's and ``ARE gain`` = ``1 - ARE / ARE mf``.

Each link: the feature, its direction, gain, noise, the within-gender correlation of the
feature with its direction's projection ``d . z`` (analytic ``gain / sqrt(gain^2 +
noise^2)`` and measured on the sample), and the named proportions the direction correlates
with most (:func:`vox3d.synthetic.synth_rig.proportion_correlations`).

Run: ``.venv/bin/python bench/voice_ceiling.py --out bench/results/cpu_voice_ceiling.txt``.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import header  # noqa: E402
from vox3d.face import metrics  # noqa: E402
from vox3d.fitting.fit_accuracy import _vertex_ss  # noqa: E402
from vox3d.synthetic import synth_config, synth_rig  # noqa: E402
from vox3d.synthetic import voice_mapping as vm  # noqa: E402


def previous_directions(model) -> np.ndarray:
    """The mapping directions ``(6, K)`` before issue 17 (vox3d.synthetic.synth at bbf119e)."""
    K = model.n_id
    a_vtl = synth_rig._landmark_distance_gradient(model, 27, 8)
    a_f0 = -synth_rig._landmark_distance_gradient(model, 4, 12)
    rows = [a_vtl / np.linalg.norm(a_vtl), a_f0 / np.linalg.norm(a_f0)]
    rng = np.random.default_rng(synth_config.MAPPING_SEED)
    k_lead = min(10, K)
    while len(rows) < 6:
        v = np.zeros(K)
        v[:k_lead] = rng.standard_normal(k_lead)
        for r in rows:
            v -= (v @ r) * r
        rows.append(v / np.linalg.norm(v))
    return np.stack(rows)


def exact_sim_r2(model, idx, pred, true, chunk=250) -> float:
    """Vertex R^2 after exact similarity alignment (module doc) of predicted coefficients
    ``(N, K)`` against the true ones, the population mean face as the reference."""
    mean = model.mean[idx].astype(np.float64)
    B = model.id_basis[:, idx].astype(np.float64) * model.id_std[:, None, None]
    res = tot = 0.0
    for s in range(0, len(true), chunk):
        p = mean + np.einsum("nk,kvd->nvd", pred[s : s + chunk], B)
        t = mean + np.einsum("nk,kvd->nvd", true[s : s + chunk], B)
        r, d = _vertex_ss(p, t, mean, similarity=True)
        res, tot = res + r, tot + d
    return 1.0 - res / tot


def check_are(model, are, pred, true, n=200) -> float:
    """Largest difference between the bench's vectorised ARE and
    :func:`vox3d.face.metrics.identity_errors` on full meshes, over `n` identities."""
    from vox3d.face.are_selection import select_are_pairs

    pairs = select_are_pairs(model, "cmp").pairs
    mean = model.mean.astype(np.float64)
    B = model.id_basis.astype(np.float64) * model.id_std[:, None, None]
    worst = 0.0
    for i in range(n):
        pv = mean + np.einsum("k,kvd->vd", pred[i], B)
        tv = mean + np.einsum("k,kvd->vd", true[i], B)
        ref = metrics.identity_errors(pv[None], tv, pairs)["are_mean"]
        mine = vm.are_errors_of(are, true[i : i + 1], {"p": pred[i : i + 1]})["p"]
        worst = max(worst, abs(ref - mine))
    return worst


def measure(name, mapping, rig, inputs, gl, n, n_exact, seed, shuffle=False):
    gram, gram_sim, are = inputs
    rng = np.random.default_rng(seed)
    X, c = vm.simulate_voices(mapping, rig.model.id_std, gl, n, rng)
    Xt, ct = vm.simulate_voices(mapping, rig.model.id_std, gl, n, rng)
    g_cols = [X.shape[1] - 2, X.shape[1] - 1]
    W, *_ = np.linalg.lstsq(X, c, rcond=None)
    Wg, *_ = np.linalg.lstsq(X[:, g_cols], c, rcond=None)
    if shuffle:  # another identity's voice and gender
        Xt = Xt[np.random.default_rng(seed + 1).permutation(n)]
    preds = {"voice + gender": Xt @ W, "gender only": Xt[:, g_cols] @ Wg}
    d = ct - ct.mean(0)
    are_err = vm.are_errors_of(are, ct, {**preds, "mean face": 0 * ct})
    rows = []
    for pname, p in preds.items():
        e = ct - p

        def r2(g, e=e):
            return 1 - np.einsum("ij,jk,ik->", e, g, e) / np.einsum("ij,jk,ik->", d, g, d)

        rows.append(
            (
                f"{name}: {pname}",
                r2(np.eye(len(gram))),
                r2(gram),
                r2(gram_sim),
                exact_sim_r2(rig.model, rig.face_idx, p[:n_exact], ct[:n_exact]),
                are_err[pname],
                are_err["mean face"],
                100 * (1 - are_err[pname] / are_err["mean face"]),
            )
        )
    # within-gender correlation of each feature with its direction's projection
    male = Xt[:, -2] > 0.5
    proj = (ct / rig.model.id_std[None, : ct.shape[1]]) @ mapping.directions.T
    corr = []
    for j in range(mapping.n_linked):
        f = Xt[:, j].copy()
        q = proj[:, j].copy()
        for sel in (male, ~male):
            f[sel] -= f[sel].mean()
            q[sel] -= q[sel].mean()
        corr.append(float(f @ q / np.sqrt((f @ f) * (q @ q))) if f @ f > 0 else 0.0)
    return rows, corr, (Xt @ W, ct)


def links(name, mapping, rig, corr):
    print(f"links of {name} ({mapping.n_linked} face-linked features):")
    props = synth_rig.proportion_correlations(rig.model, mapping.directions)
    g, s = mapping.gains(), mapping.noises()
    print(
        f"  {'feature':20s} {'dir':5s} {'gain':>7s} {'noise':>7s} {'r model':>7s} "
        f"{'r meas':>7s}  strongest named proportions (correlation)"
    )
    for j in range(mapping.n_linked):
        r = g[j] / np.hypot(g[j], s[j]) if np.hypot(g[j], s[j]) > 0 else 0.0
        top = "; ".join(f"{p} {v:+.2f}" for p, v in props[j][:3])
        print(
            f"  {vm.LINKED_FEATURES[j]:20s} {mapping.direction_names[j]:5s} {g[j]:7.3f} "
            f"{s[j]:7.3f} {r:7.2f} {corr[j]:7.2f}  {top}"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n-samples", type=int, default=200_000)
    ap.add_argument("--n-exact", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--out", type=Path, default=None, help="also write the output here")
    a = ap.parse_args(argv)
    buf = io.StringIO()
    with redirect_stdout(buf):
        cmd = " ".join(["$ .venv/bin/python bench/voice_ceiling.py", *(argv or sys.argv[1:])])
        print(cmd)
        print(header())
        run(a)
    text = buf.getvalue()
    sys.stdout.write(text)
    if a.out:
        a.out.write_text(text)
    return 0


def run(a) -> None:
    t0 = time.time()
    rig = synth_rig.load_rig(synth_config.SynthConfig())
    m = rig.model
    inputs = synth_rig.ceiling_inputs(m, rig.face_idx)
    gl = (rig.gender_dir, synth_config.GENDER_GAIN, synth_config.GENDER_BIAS)
    new = synth_rig.default_mapping(rig)
    old = vm.VoiceMapping(directions=previous_directions(m))
    six = vm.VoiceMapping(directions=new.directions[:6])
    deaf = vm.VoiceMapping(
        directions=new.directions, vtl_gain=0.0, f0_gain=0.0, ratio_gain=0.0,
        oq_gain=0.0, breath_gain=0.0,
    )  # fmt: skip
    print(
        f"ICT-FaceKit, {m.n_id} identity modes, face area {len(rig.face_idx)} vertices; "
        f"{a.n_samples:,} identities to fit, {a.n_samples:,} to score (seed {a.seed}); "
        f"exact similarity alignment on {a.n_exact:,} of them"
    )
    table = []
    for name, mp, shuffle in (
        ("previous", old, False),
        ("new", new, False),
        ("new, 6 links", six, False),
        ("deaf", deaf, False),
        ("shuffled", new, True),
    ):
        rows, corr, (p, ct) = measure(name, mp, rig, inputs, gl, a.n_samples, a.n_exact,
                                      a.seed, shuffle)  # fmt: skip
        table += rows
        if name in ("previous", "new"):
            print()
            links(name, mp, rig, corr)
            print(
                f"  ARE check vs metrics.identity_errors: max |diff| {check_are(m, inputs[2], p, ct):.1e}"
            )
    print()
    print(
        f"{'predictor':32s} {'R2 coef':>8s} {'R2 vert':>8s} {'R2 sim':>8s} {'sim exact':>9s} "
        f"{'ARE':>7s} {'ARE mf':>7s} {'ARE gain':>8s}"
    )
    for r in table:
        print(
            f"{r[0]:32s} {r[1]:8.3f} {r[2]:8.3f} {r[3]:8.3f} {r[4]:9.3f} {r[5]:7.4f} {r[6]:7.4f} "
            f"{r[7]:7.1f}%"
        )
    c = synth_rig.compute_ceiling(synth_config.SynthConfig(), rig)
    print()
    print(
        "vox3d.synthetic.synth_rig.compute_ceiling (the corpus card's, 200,000 + 200,000, seed 12345): "
        + ", ".join(f"{k} {v:.3f}" for k, v in sorted(c.items()) if k != "n_samples")
    )
    print(f"wall {time.time() - t0:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
