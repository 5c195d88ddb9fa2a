"""Identity consistency on real clips, no ground truth (issue 16, item 4).

    .venv/bin/python bench/real_identity.py [--max-frames 30] [--fps 10] [--work DIR]

Clips: ``real/identity/`` (obama: 6 clips in 3 sessions; cremad1001: 5 clips, one
session) are the tested persons; the other real clips of ``real/manifest.csv``
(``voxceleb/``: 10 clips, 9 identities; ``other/grid_*``: 4 GRID speakers) are different
people.  ``other/pcavs00473/*`` are left out: they are re-encodings of
``voxceleb/pcavs00473`` (the same footage).  ``id07414`` has two VoxCeleb clips: they
keep one label (never a different-person pair) but are not queries.

Frames: :func:`vox3d.media.video.decode` at ``--fps``, then at most ``--max-frames`` evenly
spaced (deterministic).  Detection, crop, regression and frame quality filters are the
fit stage's (:class:`vox3d.fitting.fit.Fitter`, config.yaml defaults) for each face model; a
method uses the frames its fitter keeps.  One shape vector per clip and method:

a. 3DDFA-V2 mb05 (BFM, 40 shape coefficients): the BFM basis is not available, so no
   mesh and no similarity alignment: shape coefficients whitened by the std of
   ``param_mean_std_62d_120x120.pkl`` (dimensionless); the middle kept frame, and the
   per-clip median over kept frames.
b. ours: the committed ICT regressor (``vox3d/data/ict_regressor.pth``/``.json``); per clip
   the fit stage's identity (:func:`vox3d.fitting.identities.robust_identity_shape` of the kept
   frames, then :func:`vox3d.fitting.identities.calibrated_identity` with N = frames used, as
   ``aggregate_identities`` does per identity); identity mesh of the ICT ``face`` area
   (9,409 vertices, cm), similarity-aligned to the ICT mean face, as the vector (reported
   distances: RMS per vertex, mm).  Also the middle kept frame (calibrated, N = 1), the
   uncalibrated robust shape, and the calibrated coefficients themselves (std units).
c. MediaPipe 0.10.14 face mesh (468 points, ``bench/mp_landmarks.py`` in ``.venv-mp``) on
   the frames our fitter keeps: each frame's mesh similarity-aligned to a generalised
   Procrustes reference of all frames, averaged per clip, re-aligned (distances: RMS per
   point, pixels of the reference's scale); and the middle kept frame alone.

Controls per row: shuffled labels (mean over 200 seeded permutations: ratio ~1, NN at
chance); and a "mean face" row (the same vector for every clip: ratio exactly 1.0, NN
accuracy exactly chance).  Metrics: :mod:`vox3d.fitting.consistency`.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vox3d.fitting.consistency import (  # noqa: E402
    consistency,
    procrustes_reference,
    shuffled_control,
    similarity_align,
)
from vox3d.paths import DATA_ROOT  # noqa: E402

REAL = DATA_ROOT / "real"
from mp_landmarks import run_in_venv  # noqa: E402  (bench/ is sys.path[0])

#: Tested persons (the folders of real/identity/).
PERSONS = ("obama", "cremad1001")


@dataclass(frozen=True)
class Clip:
    """One clip: path, person label, session label (clips of one session share camera,
    light and clothes; a distractor is its own session)."""

    path: Path
    person: str
    session: str


def clip_list() -> list[Clip]:
    """Identity clips (person = first folder, session = person/video folder) and the
    distractors of ``real/manifest.csv`` (``voxceleb/`` and ``other/grid_*``)."""
    clips = [
        Clip(p, p.relative_to(REAL / "identity").parts[0], f"{p.parts[-3]}/{p.parts[-2]}")
        for p in sorted((REAL / "identity").glob("*/*/*.mp4"))
    ]
    with open(REAL / "manifest.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            p = r["path"]
            if p.startswith("voxceleb/") or p.startswith("other/grid_"):
                clips.append(Clip(REAL / p, r["identity"], p))
    return clips


def sample_frames(path: Path, fps: float, max_frames: int) -> np.ndarray:
    """``(F, H, W, 3) uint8`` RGB: frames at `fps` (vox3d.media.video.decode), at most
    `max_frames` of them evenly spaced."""
    from vox3d.media.video import decode

    fr = decode(path, frame_rate=fps).frames
    if len(fr) > max_frames:
        fr = fr[np.round(np.linspace(0, len(fr) - 1, max_frames)).astype(int)]
    return np.ascontiguousarray(fr)


def fit_all(frames: list[np.ndarray], face_model: str, threads: int) -> list[dict]:
    """Per clip the fit stage's per-frame ``params`` (F, P) and ``keep`` (F,)."""
    from tqdm import tqdm

    from vox3d.fitting.fit import FitConfig, Fitter

    fitter = Fitter(FitConfig(face_model=face_model, device="cpu", threads=threads))
    out = []
    for fr in tqdm(frames, desc=f"fit {face_model}", file=sys.stderr):
        r = fitter.fit_frames(fr)
        out.append({"params": r["params"], "keep": r["keep"]})
    return out


def middle(idx: np.ndarray) -> int:
    """The middle entry of the kept-frame indices `idx`."""
    return int(idx[len(idx) // 2])


def main(argv: list[str] | None = None) -> int:
    """Run the bench; print the table (stdout) and progress (stderr)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--max-frames", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--perms", type=int, default=200)
    ap.add_argument("--work", help="folder for intermediate files (default: a temp folder)")
    args = ap.parse_args(argv)
    from tqdm import tqdm

    from vox3d.face.face_model import load_face_model
    from vox3d.fitting.fit import ICT_REGRESSOR_JSON
    from vox3d.fitting.identities import (
        calibrated_identity,
        calibrated_posterior_std,
        load_identity_calibration,
        robust_identity_shape,
    )
    from vox3d.fitting.refine import (
        fit_identity,
        load_mp_correspondence,
        mediapipe_observations,
    )
    from vox3d.paths import PARAM_MEAN_STD
    from vox3d.safeload import load_pickle

    t0 = time.perf_counter()
    clips = clip_list()
    work = Path(args.work or tempfile.mkdtemp(prefix="real_identity_"))
    work.mkdir(parents=True, exist_ok=True)
    frames = [
        sample_frames(c.path, args.fps, args.max_frames)
        for c in tqdm(clips, desc="decode", file=sys.stderr)
    ]
    t_dec = time.perf_counter()
    ict = fit_all(frames, "ict", args.threads)
    bfm = fit_all(frames, "bfm", args.threads)
    t_fit = time.perf_counter()
    mp_lm, mp_version = run_in_venv(frames, work)
    t_mp = time.perf_counter()

    labels = np.array([c.person for c in clips])
    sessions = np.array([c.session for c in clips])
    k = len(clips)
    rows: list[tuple[str, str, np.ndarray, int]] = []  # name, units, (K, D), frames used

    # a. 3DDFA-V2 mb05, whitened BFM shape coefficients
    ms = load_pickle(PARAM_MEAN_STD)
    mean, std = np.asarray(ms["mean"], np.float64), np.asarray(ms["std"], np.float64)
    wcoef = [(r["params"][:, 12:52] - mean[12:52]) / std[12:52] for r in bfm]
    bkeep = [np.flatnonzero(r["keep"]) for r in bfm]
    missing = [clips[i].path.name for i in range(k) if len(bkeep[i]) == 0]
    if missing:
        raise SystemExit(f"3DDFA-V2 fit kept no frame of {missing}")
    rows.append(
        ("3DDFA-V2 mb05, middle frame", "coef/std",
         np.stack([w[middle(i)] for w, i in zip(wcoef, bkeep, strict=True)]), k)
    )  # fmt: skip
    rows.append(
        ("3DDFA-V2 mb05, clip median", "coef/std",
         np.stack([np.median(w[i], 0) for w, i in zip(wcoef, bkeep, strict=True)]),
         sum(map(len, bkeep)))
    )  # fmt: skip

    # b. ours: ICT regressor, calibrated multi-frame identity -> aligned face-area mesh
    cal = load_identity_calibration(ICT_REGRESSOR_JSON)
    if cal is None:
        raise SystemExit(f"{ICT_REGRESSOR_JSON}: no identity_calibration")
    fm = load_face_model("ict", subset="face", n_id=40, n_exp=10)
    ref_ict = fm.mean.astype(np.float64)
    ikeep = [np.flatnonzero(r["keep"]) for r in ict]
    missing = [clips[i].path.name for i in range(k) if len(ikeep[i]) == 0]
    if missing:
        raise SystemExit(f"ICT fit kept no frame of {missing}")
    icoef = [r["params"][:, 12:52].astype(np.float64) for r in ict]
    single, robust, calib = [], [], []
    for c, i in zip(icoef, ikeep, strict=True):
        est = robust_identity_shape(c[i], np.zeros(len(i), dtype=int))
        single.append(calibrated_identity(c[middle(i)], 1, cal))
        robust.append(est.shape)
        calib.append(calibrated_identity(est.shape, est.n_frames, cal))
    vscale = 10.0 / np.sqrt(fm.n_vertices)  # Euclidean of (V*3,) cm -> RMS per vertex, mm

    def ict_mesh_vectors(coefs: list[np.ndarray]) -> np.ndarray:
        return np.stack([similarity_align(fm.vertices(a), ref_ict).ravel() for a in coefs])

    n_ict = sum(map(len, ikeep))
    rows.append(("ours ICT, middle frame (calib N=1)", "mm", ict_mesh_vectors(single) * vscale, k))
    rows.append(("ours ICT, clip robust (uncalib)", "mm", ict_mesh_vectors(robust) * vscale, n_ict))
    rows.append(("ours ICT, clip calibrated", "mm", ict_mesh_vectors(calib) * vscale, n_ict))
    rows.append(("ours ICT, clip calibrated coef", "coef/std", np.stack(calib), n_ict))
    rows.append(("mean face (control)", "mm", np.repeat(ict_mesh_vectors([np.zeros(40)]), k, 0), 0))

    # c. MediaPipe 468-point mesh on the frames our fitter keeps (and MediaPipe finds)
    mp_idx = []
    for lm, i in zip(mp_lm, ikeep, strict=True):
        found = np.flatnonzero(np.isfinite(lm).all(axis=(1, 2)))
        both = np.intersect1d(found, i)
        mp_idx.append(both if len(both) else found)
    missing = [clips[i].path.name for i in range(k) if len(mp_idx[i]) == 0]
    if missing:
        raise SystemExit(f"MediaPipe found no face in {missing}")
    all_mp = np.concatenate([lm[i] for lm, i in zip(mp_lm, mp_idx, strict=True)]).astype(float)
    ref_mp = procrustes_reference(all_mp)
    pscale = 1.0 / np.sqrt(468)
    mp_mean = np.stack(
        [
            similarity_align(np.mean([similarity_align(v, ref_mp) for v in lm[i]], 0), ref_mp)
            for lm, i in zip(mp_lm, mp_idx, strict=True)
        ]
    )
    mp_single = np.stack(
        [similarity_align(lm[middle(i)], ref_mp) for lm, i in zip(mp_lm, mp_idx, strict=True)]
    )
    n_mp = sum(map(len, mp_idx))
    rows.append(("MediaPipe 468, middle frame", "px", mp_single.reshape(k, -1) * pscale, k))
    rows.append(("MediaPipe 468, clip mean", "px", mp_mean.reshape(k, -1) * pscale, n_mp))

    # d. ours, multi-frame: one ICT identity per clip fitted jointly to MediaPipe's points
    #    of all its frames (vox3d.fitting.refine, learned correspondence), without and with the
    #    regressor's calibrated clip identity as the prior
    corr = load_mp_correspondence()
    joint, joint_reg = [], []
    for lm, i, cal_c, c in tqdm(
        list(zip(mp_lm, mp_idx, calib, ikeep, strict=True)), desc="joint fit", file=sys.stderr
    ):
        vertex, obs, valid, sigma = mediapipe_observations(lm[i], corr, fm)
        joint.append(fit_identity(fm, vertex, obs, valid, sigma).id_coef)
        joint_reg.append(
            fit_identity(
                fm, vertex, obs, valid, sigma, prior_mean=cal_c,
                prior_std=calibrated_posterior_std(cal, len(c)),
            ).id_coef
        )  # fmt: skip
    rows.append(("ours ICT, joint fit to MediaPipe", "mm", ict_mesh_vectors(joint) * vscale, n_mp))
    rows.append(
        (
            "ours ICT, joint MediaPipe + calib prior",
            "mm",
            ict_mesh_vectors(joint_reg) * vscale,
            n_mp,
        )
    )
    t_end = time.perf_counter()

    # ---- report
    n_t = {p: int((labels == p).sum()) for p in PERSONS}
    print(f"clips: {k} = " + " + ".join(f"{p} {n}" for p, n in n_t.items())
          + f" (tested) + {k - sum(n_t.values())} distractors "
          f"({len(set(labels)) - len(PERSONS)} other people; id07414's 2 clips share a label)")  # fmt: skip
    print(f"frames: decode at {args.fps:g} fps, at most {args.max_frames} per clip, evenly "
          f"spaced: {sum(map(len, frames))} frames; kept by the fit filters: ICT "
          f"{n_ict}, 3DDFA-V2 {sum(map(len, bkeep))}; MediaPipe {n_mp} (ICT-kept with a face)")  # fmt: skip
    print("pairs: same = clip pairs of one tested person; diff = pairs of different people with "
          "at least one tested clip; means pooled over pairs; ratio = same / diff (lower = "
          "more consistent, 1 = no identity)")  # fmt: skip
    print("obama x-sess: same pairs and NN gallery of obama only across sessions (12 of 15 "
          "pairs); diff pairs obama vs everyone else")  # fmt: skip
    print("NN: leave-one-out nearest clip of the same person (queries: the 11 tested clips); "
          f"shuf = mean over {args.perms} label permutations")  # fmt: skip
    print("BFM: the BFM basis (bfm_noneck_v3.pkl) is not available here, so 3DDFA-V2 rows use "
          "whitened shape coefficients (coef - mean) / std of param_mean_std_62d_120x120.pkl, "
          "not similarity-aligned meshes")  # fmt: skip
    print(f"mediapipe {mp_version} (.venv-mp); ICT face area {fm.n_vertices} vertices; "
          "d_same/d_diff units: mm = RMS per vertex, px = RMS per point, coef/std = "
          "Euclidean in std units")  # fmt: skip
    print()
    head = (f"{'method':36s} {'units':8s} {'d_same':>7s} {'d_diff':>7s} {'ratio':>6s} "
            f"{'r_xs':>6s} {'NN':>5s} {'chance':>6s} {'NN_xs':>5s} {'ch_xs':>5s} "
            f"{'shuf_r':>6s} {'shuf_NN':>7s} {'clips':>5s} {'frames':>6s}")  # fmt: skip
    print(head)
    print("-" * len(head))
    results = {}
    for name, units, x, nfr in rows:
        c = consistency(x, labels, persons=PERSONS)
        xs = consistency(x, labels, persons=["obama"], sessions=sessions, cross_session=True)
        sr, sa, _ = shuffled_control(x, labels, n_perm=args.perms, seed=0, persons=PERSONS)
        results[name] = (c, xs)
        print(f"{name:36s} {units:8s} {c.d_same:7.3f} {c.d_diff:7.3f} {c.ratio:6.3f} "
              f"{xs.ratio:6.3f} {c.nn_accuracy:5.2f} {c.chance:6.3f} {xs.nn_accuracy:5.2f} "
              f"{xs.chance:5.3f} {sr:6.3f} {sa:7.3f} {k:5d} {nfr:6d}")  # fmt: skip
    print()
    for name in ("ours ICT, clip calibrated", "ours ICT, joint fit to MediaPipe",
                 "ours ICT, joint MediaPipe + calib prior"):  # fmt: skip
        ours = results[name]
        for other in ("3DDFA-V2 mb05, middle frame", "MediaPipe 468, clip mean"):
            o = results[other]
            beats = [
                ours[0].ratio < o[0].ratio,
                ours[1].ratio < o[1].ratio,
                ours[0].nn_accuracy >= o[0].nn_accuracy,
            ]
            verdict = "beats" if all(beats) else ("does NOT beat" if not any(beats) else "mixed vs")
            print(f"{name} {verdict} {other}: ratio {ours[0].ratio:.3f} vs "
                  f"{o[0].ratio:.3f}, obama x-sess {ours[1].ratio:.3f} vs {o[1].ratio:.3f}, "
                  f"NN {ours[0].nn_accuracy:.2f} vs {o[0].nn_accuracy:.2f}")  # fmt: skip
    print()
    print(f"time: decode {t_dec - t0:.0f} s, fit ICT+3DDFA-V2 {t_fit - t_dec:.0f} s, "
          f"MediaPipe {t_mp - t_fit:.0f} s, vectors {t_end - t_mp:.0f} s, metrics "
          f"{time.perf_counter() - t_end:.0f} s; total "
          f"{time.perf_counter() - t0:.0f} s ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {args.threads} torch threads; load average "
          f"{os.getloadavg()[0]:.2f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
