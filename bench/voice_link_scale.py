"""How many training identities, and how wide a formant spread, before the voice link is
learnable from the pipeline's audio?  Audio-only learning curves of linear probes.

The default corpus's supervised voice model does not beat the population mean face
(``OUT/evaluate/comparisons.tsv``; issue 17).  This bench asks whether any linear reading of
the pipeline's own features could, at the default corpus's 60 training identities and at
larger corpora, without rendering a single video: it draws identities exactly as the corpus
generator does (:func:`vox3d.synthetic.synth_rig.draw_identities`: same seeds, same face ->
voice mapping), synthesises one utterance per identity with the corpus's synthesiser and
room of the identity's first video, and computes the feature stage's log-mel features
(:func:`vox3d.audio.fbank.utterance_features`).  The audio skips the corpus's AAC encoding.

Predictors (ridge regressions to the standardised identity coefficients, the penalty by
5-fold cross-validation over the training identities; ``bench/voice_audibility.py``'s probe):

* ``stats + gender``: per utterance, the 64 log-mel bands' mean and std before CMP's
  per-utterance normalisation (what the feature shards keep in their index) and gender;
  the best feature set of ``bench/voice_audibility.py``;
* ``exact voice + gender``: the generator's voice parameters (log) and gender: the ceiling
  at this training-set size; ``exact ratios`` (the four formant ratios only) and
  ``exact vtl, f0 + gender`` split it between the links;
* controls: ``gender only``; ``stats, shuffled``: the stats predictor given another held-out
  identity's features (a fixed derangement); the train mean face is the reference.

Scores on a fixed set of held-out identities (the last ``--n-heldout``): ARE (CMP pairs) and
its gain over the train mean face with the paired bootstrap of
:func:`vox3d.face.metrics.paired_bootstrap` (interval of the gain, two-sided p), and the
held-out R^2 with which ``stats + gender`` reads each face-linked voice parameter.

``--spread F`` rows scale the formant-ratio link's gain and noise by F (its correlation with
the face, 0.91, is unchanged; F = 1 is the corpus's world, formants moved by about 5%).

    .venv/bin/python bench/voice_link_scale.py --n 1200 --n-heldout 200 --train 60,220,1000 --spread 1,2,3
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import header  # noqa: E402
from bench.voice_audibility import probe  # noqa: E402

#: Face-linked voice parameters scored for audibility (log where the link is in logs).
LINKED = ("vtl_cm", "f0_hz", "ratio_1", "ratio_2", "ratio_3", "ratio_4", "open_q", "breath")

_W: dict = {}


def _init(n: int, seed: int) -> None:
    from vox3d.audio.fbank import FeatureConfig
    from vox3d.synthetic.synth_config import SynthConfig
    from vox3d.synthetic.synth_rig import default_mapping, load_rig

    cfg = SynthConfig(identities=n, seed=seed)
    rig = load_rig(cfg)
    _W.update(cfg=cfg, rig=rig, mapping=default_mapping(rig), fcfg=FeatureConfig())


def _one(job: tuple[int, float]) -> tuple[np.ndarray, str, np.ndarray, np.ndarray]:
    """Identity `i` with the formant-ratio link scaled by `f`: ``(z (K,), gender, voice (8,),
    stats (128,))``; the draws are the corpus generator's."""
    from threadpoolctl import threadpool_limits

    from vox3d.audio.fbank import utterance_features
    from vox3d.synthetic import voice_synth as vs
    from vox3d.synthetic.synth_config import _S_AUDIO, _S_IDENTITY, _S_VIDEO, _rng
    from vox3d.synthetic.synth_render import video_spec
    from vox3d.synthetic.synth_rig import draw_face

    i, f = job
    cfg, rig, base = _W["cfg"], _W["rig"], _W["mapping"]
    mapping = replace(base, ratio_gain=base.ratio_gain * f, ratio_noise=base.ratio_noise * f)
    rng = _rng(cfg.seed, _S_IDENTITY, i)
    z, gender = draw_face(rng, rig, rig.model.n_id)
    voice = vs.voice_from_identity(z, gender, mapping, rng)
    room = video_spec(_rng(cfg.seed, _S_VIDEO, i, 0), i, 0).room
    with threadpool_limits(1):
        utt = vs.synthesize(voice, cfg.seconds, room, _rng(cfg.seed, _S_AUDIO, i, 0, 0))
        uf = utterance_features(utt.audio, vs.SAMPLE_RATE, _W["fcfg"])
    v = np.array([voice.vtl_cm, np.log(voice.f0_hz), *np.log(voice.formant_ratio),
                  voice.open_quotient, np.log(voice.breathiness)])  # fmt: skip
    return z, gender, v, np.concatenate([uf.mean, uf.std]).astype(np.float64)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1200, help="identities drawn")
    ap.add_argument("--n-heldout", type=int, default=200, help="the last N are held out")
    ap.add_argument("--train", default="60,220,1000", help="training-set sizes (the first N)")
    ap.add_argument("--spread", default="1,2,3", help="formant-ratio link scale factors")
    ap.add_argument("--seed", type=int, default=0, help="corpus seed")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    import yaml

    from vox3d.config import DEFAULT_CONFIG
    from vox3d.face.face_model import face_model_from_config, face_model_settings
    from vox3d.face.metrics import are_errors, face_ratios, paired_bootstrap
    from vox3d.synthetic.synth_config import SynthConfig
    from vox3d.synthetic.synth_rig import draw_identities

    t0 = time.time()
    sizes = [int(s) for s in a.train.split(",")]
    spreads = [float(s) for s in a.spread.split(",")]
    if max(sizes) > a.n - a.n_heldout:
        raise SystemExit(f"--train {max(sizes)} + --n-heldout {a.n_heldout} > --n {a.n}")
    _init(a.n, a.seed)
    rig = _W["rig"]
    cfg = yaml.safe_load(open(DEFAULT_CONFIG, encoding="utf-8"))
    fm = face_model_from_config(
        face_model_settings(cfg["face_model"], cfg["assets"]), n_id=rig.model.n_id
    )
    id_std = rig.model.id_std.astype(np.float64)

    def ratios(z: np.ndarray) -> np.ndarray:
        return np.stack([face_ratios(fm.vertices((zi * id_std).astype(np.float32)),
                                     fm.are_pairs) for zi in z])  # fmt: skip

    print(header())
    print(f"{a.n} identities of the corpus generator (seed {a.seed}), one {_W['cfg'].seconds:g}-s "
          f"utterance each; held out: the last {a.n_heldout}; training sets: the first "
          f"{', '.join(map(str, sizes))}")  # fmt: skip
    print("gain = 1 - ARE / ARE(train mean face); [95% paired bootstrap interval of the gain], p")
    te = np.arange(a.n - a.n_heldout, a.n)
    perm = np.roll(np.arange(len(te)), 1)  # a derangement of the held-out identities
    check = draw_identities(SynthConfig(identities=a.n, seed=a.seed), rig)
    for f in spreads:
        t = time.time()
        with cf.ProcessPoolExecutor(a.workers, initializer=_init, initargs=(a.n, a.seed)) as ex:
            res = list(ex.map(_one, [(i, f) for i in range(a.n)], chunksize=16))
        z = np.stack([r[0] for r in res])
        g = np.array([[1.0 if r[1] == "f" else 0.0] for r in res])
        v = np.stack([r[2] for r in res])
        x = np.hstack([np.stack([r[3] for r in res]), g])
        if f == 1.0:  # the corpus's own identities and voices, draw for draw
            assert all(np.array_equal(z[i], check[i].z) for i in range(a.n))
            assert all(np.array_equal(np.log(c.voice.formant_ratio), v[i, 2:6])
                       for i, c in enumerate(check))  # fmt: skip
        r_true = ratios(z[te])
        spread = np.std(v[:, 2:6], axis=0).mean()
        print(f"\nformant-ratio link x{f:g} (log-ratio spread {spread:.3f}; synthesis and "
              f"features {time.time() - t:.0f} s)")  # fmt: skip
        print(f"  {'train':>5}  {'predictor':<22} {'ARE':>7} {'gain':>7} {'interval':>16} "
              f"{'p':>6}  audibility R^2 ({' '.join(LINKED)})")  # fmt: skip
        for n_tr in sizes:
            tr = np.arange(n_tr)
            e_ref = are_errors(ratios(np.repeat(z[tr].mean(0, keepdims=True), len(te), 0)),
                               r_true).mean(1)  # fmt: skip
            ex_tr, ex_te = np.hstack([v[tr], g[tr]]), np.hstack([v[te], g[te]])
            p_st, _ = probe(x[tr], z[tr], x[te])
            preds = [
                ("stats + gender", p_st),
                ("exact voice + gender", probe(ex_tr, z[tr], ex_te)[0]),
                ("exact ratios", probe(v[tr, 2:6], z[tr], v[te, 2:6])[0]),
                (
                    "exact vtl, f0 + gender",
                    probe(ex_tr[:, [0, 1, 8]], z[tr], ex_te[:, [0, 1, 8]])[0],
                ),
                ("gender only", probe(g[tr], z[tr], g[te])[0]),
                ("stats, shuffled", p_st[perm]),
            ]
            pv, _ = probe(x[tr], v[tr], x[te])
            r2 = 1 - ((v[te] - pv) ** 2).sum(0) / ((v[te] - v[te].mean(0)) ** 2).sum(0)
            for k, (name, p) in enumerate(preds):
                e = are_errors(ratios(p), r_true).mean(1)
                pb = paired_bootstrap(e, e_ref)
                m = e_ref.mean()
                aud = " ".join(f"{r:5.2f}" for r in r2) if k == 0 else ""
                print(f"  {n_tr:>5}  {name:<22} {e.mean():7.4f} {100 * (1 - e.mean() / m):6.1f}% "
                      f"[{-100 * pb['hi'] / m:+6.1f},{-100 * pb['lo'] / m:+6.1f}] {pb['p']:6.3f}  "
                      f"{aud}")  # fmt: skip
            print(f"  {n_tr:>5}  {'(train mean face)':<22} {e_ref.mean():7.4f}")
    print(f"\nwall {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
