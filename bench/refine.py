"""Multi-frame identity fit on the synthetic corpus (issue 16, item 3): which evidence helps?

    .venv/bin/python bench/refine.py --out-dir results [--work DIR] [--device cpu]

Needs a finished default run (``OUT/extract``, ``OUT/fit``, ``OUT/synthetic``) and, for
the MediaPipe rows, ``.venv-mp`` (``bench/mp_landmarks.py``).  Per identity, on the frames
the fit stage kept (:func:`vox3d.fitting.refine.fit_identity`, one identity for all its frames):

* ``robust (workflow)``: ``fit/identities.h5`` as the workflow writes it (calibrated);
* ``joint: regressor vertices``: observations = each kept frame's regressor mesh (600
  evenly spaced face vertices, projected), sigma 0.15 cm, prior N(0, 1);
* ``joint: mediapipe``: MediaPipe's 468 points through the learned correspondence
  (``vox3d/data/mediapipe468_ict.json``), prior N(0, 1);
* ``joint: mediapipe + regressor prior``: the same points, prior = the workflow's
  calibrated identity and its posterior std (:func:`vox3d.fitting.identities.calibrated_posterior_std`).

Scored against the ground truth by :func:`vox3d.fitting.fit_accuracy.accuracy_table` (held-out
identities as the workflow splits them; the mean face and a shuffled assignment are
printed as controls).  Prints the summary rows and the cost per identity.
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mp_landmarks import run_in_venv  # noqa: E402  (bench/ is sys.path[0])


def kept_frames(out: Path):
    """Per identity: kept frames' images (N, H, W, 3), params (N, P), rois (N, 4)."""
    from vox3d.fitting.fit_shard import FitShard
    from vox3d.media.extract_shard import ExtractShard

    per: dict[str, dict[str, list]] = {}
    for fp in sorted(glob.glob(str(out / "fit" / "shard-*.h5"))):
        fs = FitShard.read(fp, fields=("keep", "video", "frame", "params", "roi"))
        fr = fs.frames
        keep = fr["keep"].astype(bool)
        video, frame = fr["video"], fr["frame"]
        with ExtractShard(out / "extract" / Path(fp).name) as es:
            for v in np.unique(video[keep]):
                sel = np.flatnonzero(keep & (video == v))
                imgs = es.video_frames(int(v), out / "synthetic" / "videos")[frame[sel]]
                d = per.setdefault(
                    fs.video_identities[int(v)], {"img": [], "params": [], "roi": []}
                )
                d["img"].append(imgs)
                d["params"].append(fr["params"][sel].astype(np.float64))
                d["roi"].append(fr["roi"][sel].astype(np.float64))
    return {k: {n: np.concatenate(x) for n, x in d.items()} for k, d in sorted(per.items())}


def mediapipe(per: dict, work: Path) -> dict[str, np.ndarray]:
    """MediaPipe meshes (N, 468, 3) per identity (``bench/mp_landmarks.py``)."""
    keys = list(per)
    meshes, _ = run_in_venv([per[k]["img"] for k in keys], work)
    return dict(zip(keys, meshes, strict=True))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default="results")
    ap.add_argument("--work", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-mediapipe", action="store_true")
    args = ap.parse_args(argv)
    from tqdm import tqdm

    from vox3d.face.face_model import load_face_model
    from vox3d.fitting import fit_accuracy as fa
    from vox3d.fitting.fit import ICT_REGRESSOR_JSON
    from vox3d.fitting.identities import (
        IdentitiesFile,
        calibrated_posterior_std,
        load_identity_calibration,
    )
    from vox3d.fitting.refine import (
        fit_identity,
        load_mp_correspondence,
        mediapipe_observations,
        regressor_observations,
        subsample_vertices,
    )
    from vox3d.params import ict_layout

    out = Path(args.out_dir)
    work = Path(args.work or out / "bench_refine")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    truth = fa.read_true_identities(out / "synthetic" / "ground_truth.h5")
    idf = IdentitiesFile.read(out / "fit" / "identities.h5")
    robust = dict(zip(idf.ids, idf.shape.astype(np.float64), strict=True))
    n_frames = dict(zip(idf.ids, idf.n_frames, strict=True))
    calib = load_identity_calibration(ICT_REGRESSOR_JSON)
    per = kept_frames(out)
    model = load_face_model("ict", subset="face", n_id=40, n_exp=10)
    layout = ict_layout(40, 10)
    area = fa.face_area_for({"name": "ict"}, 40)
    meta = out / "synthetic" / "vox1_meta.csv"
    held = fa.held_out_identities(sorted(set(robust) & set(truth)), meta)
    methods: dict[str, dict[str, np.ndarray]] = {"robust (workflow)": robust}
    cost: dict[str, list[float]] = {}
    verts = subsample_vertices(model.n_vertices, 600)

    def run(name, ident, obs_fn, prior=(None, None)):
        t = time.perf_counter()
        vertex, obs, valid, sigma = obs_fn()
        r = fit_identity(
            model,
            vertex,
            obs,
            valid,
            sigma,
            prior_mean=prior[0],
            prior_std=prior[1],
            device=args.device,
        )
        methods.setdefault(name, {})[ident] = r.id_coef
        cost.setdefault(name, []).append(time.perf_counter() - t)

    mp = None if args.no_mediapipe else mediapipe(per, work)
    corr = load_mp_correspondence()
    for ident in tqdm(per, desc="refine", file=sys.stderr):
        d = per[ident]
        run(
            "joint: regressor vertices",
            ident,
            lambda d=d: regressor_observations(model, d["params"], d["roi"], layout, verts, 0.15),
        )
        if mp is None:
            continue
        run("joint: mediapipe", ident, lambda i=ident: mediapipe_observations(mp[i], corr, model))
        run(
            "joint: mediapipe + regressor prior",
            ident,
            lambda i=ident: mediapipe_observations(mp[i], corr, model),
            (robust[ident], calibrated_posterior_std(calib, int(n_frames[ident]))),
        )
    rng = np.random.default_rng(0)
    order = sorted(robust)
    perm = rng.permutation(len(order))
    methods["control: mean face"] = {i: np.zeros(40) for i in order}
    methods["control: robust, shuffled"] = {
        i: robust[order[j]] for i, j in zip(order, perm, strict=True)
    }
    frames_total = sum(len(d["params"]) for d in per.values())
    print(
        f"out dir: {out}; {len(per)} identities, {frames_total} kept frames; held out: {len(held)}"
    )
    print(
        "columns: sim mm = error after similarity alignment (mean over identities); ratio = / mean face;"
        " R2 / slope = mean over modes 0-9; min slope = the lowest mode's; R2 vsim = vertex R^2 aligned"
    )
    hdr = f"{'method':<38}{'group':<10}{'sim mm':>8}{'ratio':>7}{'ARE':>8}{'R2':>7}{'slope':>7}{'min sl':>7}{'R2 vsim':>8}"
    print(hdr)
    for name, fitted in methods.items():
        rows = fa.accuracy_table(area, fitted, truth, held)
        for r in rows:
            if r["set"] != "summary" or r["identity"] == "all":
                continue
            slopes = [r[f"slope_m{m}"] for m in range(fa.N_MODES)]
            print(
                f"{name:<38}{r['identity']:<10}{r['err_sim_mm']:>8.3f}{r['ratio_sim']:>7.3f}"
                f"{r['are_mean']:>8.4f}{r['r2_mean']:>7.3f}{r['slope_mean']:>7.3f}"
                f"{min(slopes):>7.3f}{r['r2_vertex_sim']:>8.3f}"
            )
    for name, c in cost.items():
        print(f"cost {name}: {np.mean(c):.2f} s per identity ({args.device}, {len(c)} identities)")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
