"""Does the synthetic voice link survive the audio?  Linear probes on a workflow run.

The ceiling (``bench/voice_ceiling.py``) asks what the exact voice parameters say about
the face.  This asks what the pipeline's own features say, on the identities of one run
(``OUT`` of ``snakemake``; the synthetic corpus: ``OUT/synthetic/ground_truth.h5`` holds the
true shapes and voice parameters): ridge regressions fitted on the training identities of
``OUT/train/split.tsv`` (the regularisation by 5-fold cross-validation over them, never on
the held-out ones) and scored on its held-out identities:

* ``exact voice + gender``: the 12 voice parameters of the generator and gender -> the true
  identity coefficients: the ceiling at this corpus size;
* ``log-mel summary``: per identity the mean and std over its stored feature frames (64
  log-mel bands, after voice activity detection) -> the true coefficients: what a simple
  model of the pipeline's features can know;
* ``spectral shape + gender``: per identity, over the louder half of the frames of each
  utterance's first 200 (the stored arrays repeat short utterances to 1000 frames), the
  mean and the 90th percentile of the log-mel bands minus the frame's mean level (the
  spectral envelope where formants live), and gender;
* ``utterance statistics + gender``: the per-band mean and std of each utterance's log-mel
  *before* CMP's per-utterance normalisation (the shards' ``index/mean``, ``index/std``,
  averaged over the identity's utterances): the long-term spectrum, which the normalised
  frames the voice model sees no longer carry, and gender;
* ``speaker embedding + gender`` (with ``--speaker-steps N``): CMP's supervised recipe, a
  voice encoder pretrained as a speaker classifier on the training identities' utterances
  and frozen (:func:`vox3d.voice.speaker.pretrain_encoder`, the ``pretrain_voice`` rule's
  trainer, N steps), read linearly: the mean over an identity's utterances of its 64-d unit
  embedding of each whole utterance, and gender;
* controls: ``gender only``; ``shuffled`` (the exact-voice predictor given another held-out
  identity's voice, a fixed derangement); the train mean face is the reference (gain 0).

Scores: ARE (CMP pairs, :func:`vox3d.face.metrics.face_ratios`, mean over the four ratios and
the held-out identities) and its gain over the train mean face; and per voice parameter the
held-out R^2 of each feature set's ridge prediction of it (which links are audible).

    .venv/bin/python bench/voice_audibility.py --out-dir results
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import header  # noqa: E402

LAMBDAS = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)


def _standardise(xtr: np.ndarray, *xs: np.ndarray) -> list[np.ndarray]:
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-9
    return [(x - mu) / sd for x in (xtr, *xs)]


def ridge_fit(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` of ``y ~ x @ W + b`` with an L2 penalty `lam` on W (x standardised)."""
    xm, ym = x.mean(0), y.mean(0)
    a = x - xm
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (y - ym))
    return w, ym - xm @ w


def choose_lambda(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """The penalty with the lowest 5-fold squared error over the training rows."""
    order = np.random.default_rng(seed).permutation(len(x))
    parts = np.array_split(order, folds)
    best = (np.inf, LAMBDAS[0])
    for lam in LAMBDAS:
        err = 0.0
        for k in range(folds):
            te = parts[k]
            tr = np.concatenate([parts[j] for j in range(folds) if j != k])
            w, b = ridge_fit(x[tr], y[tr], lam)
            err += float(((x[te] @ w + b - y[te]) ** 2).sum())
        best = min(best, (err, lam))
    return best[1]


def probe(xtr, ytr, xte) -> tuple[np.ndarray, float]:
    """Held-out predictions of a cross-validated ridge and its penalty."""
    xtr, xte = _standardise(xtr, xte)
    lam = choose_lambda(xtr, ytr)
    w, b = ridge_fit(xtr, ytr, lam)
    return xte @ w + b, lam


def speaker_features(utts, tr, te, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Per identity, the mean unit embedding (64,) of its whole utterances under a speaker
    encoder pretrained for `steps` steps on the training identities' utterances (the
    ``pretrain_voice`` rule's trainer and defaults, 2 threads), for `tr` and `te`."""
    import torch

    from vox3d.voice.speaker import SpeakerConfig, pretrain_encoder
    from vox3d.voice.train_data import UtteranceBank
    from vox3d.voice.voice_model import unit_embedding

    torch.set_num_threads(2)
    feats, labels = [], []
    for j, ident in enumerate(tr):
        feats += utts[ident]
        labels += [j] * len(utts[ident])
    model, _ = pretrain_encoder(UtteranceBank(feats, labels), SpeakerConfig(steps=steps), False)

    def embed(ids) -> np.ndarray:
        rows = []
        with torch.no_grad():
            for i in ids:
                xs = [torch.from_numpy(np.asarray(u, np.float32))[None] for u in utts[i]]
                e = [unit_embedding(model.encoder, x)[0].numpy() for x in xs]
                rows.append(np.mean(e, axis=0))
        return np.stack(rows).astype(np.float64)

    return embed(tr), embed(te)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default="results", help="a workflow run's out_dir")
    ap.add_argument("--speaker-steps", type=int, default=0,
                    help="pretrain a speaker encoder for N steps and probe its embedding (0: skip)")  # fmt: skip
    a = ap.parse_args()
    import yaml

    from vox3d.audio.features import read_index
    from vox3d.audio.featurestore import load_utterances
    from vox3d.config import DEFAULT_CONFIG
    from vox3d.face.face_model import face_model_from_config, face_model_settings
    from vox3d.face.metrics import are_errors, face_ratios
    from vox3d.media.split import read_split
    from vox3d.synthetic.ground_truth import GroundTruth
    from vox3d.synthetic.voice_synth import VOICE_PARAM_NAMES

    out = Path(a.out_dir)
    truth = GroundTruth.read(out / "synthetic" / "ground_truth.h5")
    coef, voice, gender = truth.coefficients(), truth.voices(), truth.genders()
    utts = load_utterances(sorted((out / "features").glob("shard-*.h5")))
    train_ids, val_ids, _ = read_split(out / "train" / "split.tsv")
    tr = [i for i in train_ids if i in utts and i in coef]
    te = [i for i in val_ids if i in utts and i in coef]
    cfg = yaml.safe_load(open(DEFAULT_CONFIG, encoding="utf-8"))
    k = int(cfg["face_model"]["n_id"])
    fm = face_model_from_config(face_model_settings(cfg["face_model"], cfg["assets"]), n_id=k)

    def ratios(c: np.ndarray) -> np.ndarray:
        return np.stack([face_ratios(fm.vertices(ci.astype(np.float32)), fm.are_pairs) for ci in c])

    ytr = np.stack([coef[i][:k] for i in tr])
    yte = np.stack([coef[i][:k] for i in te])
    r_true = ratios(yte)
    are_mf = float(
        are_errors(ratios(np.repeat(ytr.mean(0, keepdims=True), len(te), 0)), r_true).mean()
    )

    def feats(ids):
        rows = []
        for i in ids:
            x = np.concatenate(utts[i]).astype(np.float64)
            rows.append(np.concatenate([x.mean(0), x.std(0)]))
        return np.stack(rows)

    def shape_feats(ids):
        rows = []
        for i in ids:
            x = np.concatenate([u[:200] for u in utts[i]]).astype(np.float64)
            e = x.mean(1)
            v = x[e > np.median(e)]
            v = v - v.mean(1, keepdims=True)
            rows.append(np.concatenate([v.mean(0), np.percentile(v, 90, axis=0)]))
        return np.stack(rows)

    upper = np.triu_indices(utts[tr[0]][0].shape[1], 1)

    def corr_feats(ids):
        rows = []
        for i in ids:
            cs = [np.corrcoef(u[:200].astype(np.float64).T)[upper] for u in utts[i]]
            rows.append(np.nan_to_num(np.mean(cs, axis=0)))
        return np.stack(rows)

    stats: dict[str, list[np.ndarray]] = {}
    for p in sorted((out / "features").glob("shard-*.h5")):
        ix = read_index(p)
        for i, m, s in zip(ix["identity"], ix["mean"], ix["std"], strict=True):
            stats.setdefault(i, []).append(np.concatenate([m, s]).astype(np.float64))

    def stat_feats(ids):
        return np.stack([np.mean(stats[i], axis=0) for i in ids])

    def gcol(ids):
        return np.array([[1.0 if gender[i] == "f" else 0.0] for i in ids])

    vtr = np.hstack([np.stack([voice[i] for i in tr]), gcol(tr)])
    vte = np.hstack([np.stack([voice[i] for i in te]), gcol(te)])
    ftr, fte = feats(tr), feats(te)
    perm = np.roll(np.arange(len(te)), 1)  # a derangement of the held-out identities
    rows = []
    p_exact, lam_e = probe(vtr, ytr, vte)
    rows.append(("exact voice + gender", p_exact, lam_e))
    p_mel, lam_m = probe(ftr, ytr, fte)
    rows.append(("log-mel summary", p_mel, lam_m))
    str_, ste = np.hstack([shape_feats(tr), gcol(tr)]), np.hstack([shape_feats(te), gcol(te)])
    p_sh, lam_s = probe(str_, ytr, ste)
    rows.append(("spectral shape + gender", p_sh, lam_s))
    cotr, cote = np.hstack([corr_feats(tr), gcol(tr)]), np.hstack([corr_feats(te), gcol(te)])
    p_co, lam_c = probe(cotr, ytr, cote)
    rows.append(("band correlations + gender", p_co, lam_c))
    sttr, stte = np.hstack([stat_feats(tr), gcol(tr)]), np.hstack([stat_feats(te), gcol(te)])
    p_st, lam_t = probe(sttr, ytr, stte)
    rows.append(("utterance stats + gender", p_st, lam_t))
    sets = [("log-mel summary", ftr, fte), ("spectral shape + gender", str_, ste),
            ("band correlations + gender", cotr, cote), ("utterance stats + gender", sttr, stte)]  # fmt: skip
    if a.speaker_steps > 0:
        sptr, spte = speaker_features(utts, tr, te, a.speaker_steps)
        sptr, spte = np.hstack([sptr, gcol(tr)]), np.hstack([spte, gcol(te)])
        p_sp, lam_p = probe(sptr, ytr, spte)
        rows.append(("speaker embedding + gender", p_sp, lam_p))
        sets.append(("speaker embedding + gender", sptr, spte))
    p_g, lam_g = probe(gcol(tr), ytr, gcol(te))
    rows.append(("gender only", p_g, lam_g))
    rows.append(("shuffled (exact voice)", p_exact[perm], lam_e))

    print(header())
    n_utt = sum(len(utts[i]) for i in tr + te)
    print(f"run {out}: a corpus of {len(coef)} identities; {len(tr)} training and {len(te)} "
          f"held-out identities with features and a shape, {n_utt} utterances")  # fmt: skip
    print(f"ARE of the train mean face on the held-out identities: {are_mf:.4f}")
    print(f"{'predictor':<26} {'ridge lambda':>12} {'ARE':>8} {'gain':>7}")
    for name, p, lam in rows:
        are = float(are_errors(ratios(p), r_true).mean())
        print(f"{name:<26} {lam:>12g} {are:>8.4f} {100 * (1 - are / are_mf):>6.1f}%")
    print("audibility: held-out R^2 of each voice parameter (ridge, CV lambda)")
    vt = np.stack([voice[i] for i in tr])
    vv = np.stack([voice[i] for i in te])
    r2s = []
    for _, xa, xb in sets:
        pv, _ = probe(xa, vt, xb)
        r2s.append(1 - ((vv - pv) ** 2).sum(0) / ((vv - vv.mean(0)) ** 2).sum(0))
    print(f"  {'parameter':<18} " + "  ".join(f"{n:>{len(n)}}" for n, _, _ in sets))
    for j, name in enumerate(VOICE_PARAM_NAMES):
        print(
            f"  {name:<18} "
            + "  ".join(f"{r[j]:>{len(n)}.2f}" for (n, _, _), r in zip(sets, r2s, strict=True))
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
