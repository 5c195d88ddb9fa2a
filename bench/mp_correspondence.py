"""Learn and test the MediaPipe-468 -> ICT vertex correspondence (issue 16, item 3).

    .venv/bin/python bench/mp_correspondence.py --out-dir results [--step 4] [--write]

Needs a finished synthetic run (``OUT/synthetic/ground_truth.h5`` and its videos) and
MediaPipe 0.10.14 in ``.venv-mp`` (``bench/mp_landmarks.py``).  Frames: every
``--step``-th frame of every utterance; a frame is used when MediaPipe finds a face, it is
not flagged hard (profile, small, blur) and ``|yaw| <= --max-yaw``.

Each frame's true face-area vertices (ICT ``face`` subset, true identity, expression and
pose) are projected to the image; coordinates are divided by the frame's true scale
(px per cm), so distances are cm at the face.  For each of MediaPipe's 468 points the
corresponded vertex is the one with the least mean squared 2D distance to that point over
the *learning* identities' frames (every second identity in sorted order); its RMS
residual there is the point's ``sigma_cm``.  Tested on the other identities' frames:
NME (mean point distance / sqrt(area of the true face box)) of the corresponded true
vertices, and the same with the mean face (true pose, identity 0: a shape-blind control;
the two differ only by how much identity the points carry).

``--write`` stores the result as :data:`vox3d.fitting.refine.MP468_ICT_JSON`
(``vox3d/data/mediapipe468_ict.json``), which :mod:`vox3d.fitting.refine` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mp_landmarks import run_in_venv  # noqa: E402  (bench/ is sys.path[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default="results")
    ap.add_argument("--step", type=int, default=4)
    ap.add_argument("--max-yaw", type=float, default=25.0)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    from tqdm import tqdm

    from vox3d.face.face_model import load_face_model
    from vox3d.fitting.refine import MP468_ICT_JSON, N_MP_POINTS
    from vox3d.media.video import decode
    from vox3d.params import CROP_SIZE, to_image, transform_vertices
    from vox3d.synthetic.ground_truth import read_tables

    t0 = time.perf_counter()
    out = Path(args.out_dir)
    gt_path = out / "synthetic" / "ground_truth.h5"
    a, t = read_tables(gt_path, {
        "identities": ("id", "id_coef"),
        "utterances": ("path", "identity", "frame_offset", "n_frames"),
        "frames": ("pose", "exp", "face_box", "scale_px_per_cm", "hard", "euler_deg"),
    })  # fmt: skip
    exp_names = json.loads(a["exp_names"])
    roi = np.asarray(a["pose_roi_box"], np.float64)
    crop = int(a["pose_crop_size"])
    assert crop == CROP_SIZE, crop
    ids, id_coef = list(t["identities"]["id"]), t["identities"]["id_coef"]
    utt_path = list(t["utterances"]["path"])
    utt_id, utt_off, utt_n = (t["utterances"][k] for k in ("identity", "frame_offset", "n_frames"))
    fr = t["frames"]
    pose, exp, box, hard = fr["pose"], fr["exp"], fr["face_box"], fr["hard"]
    scale = fr["scale_px_per_cm"].astype(np.float64)
    yaw = fr["euler_deg"][:, 0]
    model = load_face_model("ict", subset="face", n_id=id_coef.shape[1], exp_names=exp_names)
    frames, gidx = [], []
    for u in tqdm(range(len(utt_path)), desc="decode", file=sys.stderr):
        fr = decode(out / "synthetic" / "videos" / utt_path[u], frame_rate=25.0).frames
        take = np.arange(0, min(len(fr), int(utt_n[u])), args.step)
        frames.append(fr[take])
        gidx.append(utt_off[u] + take)
    gidx = np.concatenate(gidx)
    allfr = np.concatenate(frames)
    with tempfile.TemporaryDirectory() as tmp:
        (meshes,), mp_version = run_in_venv([allfr], Path(tmp))
    mp = meshes[:, :N_MP_POINTS, :2].astype(np.float64)
    found = np.isfinite(mp[:, 0, 0])
    ident = utt_id[np.searchsorted(utt_off, gidx, side="right") - 1]
    use = found & (hard[gidx] == 0) & (np.abs(yaw[gidx]) <= args.max_yaw)
    learn_ids = set(range(0, len(ids), 2))
    learn = use & np.isin(ident, sorted(learn_ids))
    test = use & ~np.isin(ident, sorted(learn_ids))

    def projected(sel, shape_blind=False):
        """(F, V, 2) true vertices of frames `sel` in cm at the face (image px / scale)."""
        res = []
        for g, i in zip(gidx[sel], ident[sel], strict=True):
            coef = np.zeros(model.n_id) if shape_blind else id_coef[i]
            v = model.vertices(coef, exp[g])
            img = to_image(transform_vertices(v, pose[g].reshape(3, 4)), roi, crop)
            res.append(img[:, :2] / scale[g])
        return np.asarray(res)

    pl = projected(learn)  # (F, V, 2)
    ml = mp[learn] / scale[gidx[learn]][:, None, None]  # (F, 468, 2)
    F = len(pl)
    A = ml.transpose(1, 0, 2).reshape(N_MP_POINTS, F * 2)
    B = pl.transpose(1, 0, 2).reshape(model.n_vertices, F * 2)
    d2 = (A**2).sum(1)[:, None] - 2 * A @ B.T + (B**2).sum(1)[None]
    best = np.argmin(d2, axis=1)
    sigma = np.sqrt(np.maximum(d2[np.arange(N_MP_POINTS), best], 0) / F)

    def nme(sel, shape_blind=False):
        p = projected(sel, shape_blind)[:, best]
        m = mp[sel] / scale[gidx[sel]][:, None, None]
        b = box[gidx[sel]]
        size = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])) / scale[gidx[sel]]
        return float((np.linalg.norm(p - m, axis=2).mean(1) / size).mean())

    res = {
        "frames_learn": int(learn.sum()),
        "frames_test": int(test.sum()),
        "nme_test": nme(test),
        "nme_test_mean_face": nme(test, True),
        "nme_learn": nme(learn),
        "sigma_cm_median": float(np.median(sigma)),
    }
    print(f"corpus: {gt_path}; mediapipe {mp_version}; step {args.step}, |yaw| <= {args.max_yaw}")
    print(
        f"frames: {len(gidx)} decoded, {int(found.sum())} with a face; used: "
        f"{res['frames_learn']} learning ({len(learn_ids)} identities), "
        f"{res['frames_test']} test ({len(ids) - len(learn_ids)} identities)"
    )
    print(f"correspondence: {len(np.unique(best))} distinct ICT face vertices for 468 points")
    print(f"per-point RMS residual on learning frames: median {res['sigma_cm_median']:.3f} cm")
    print(f"NME learning frames, true shape     {res['nme_learn']:.4f}")
    print(f"NME test frames, true shape         {res['nme_test']:.4f}")
    print(f"NME test frames, mean face (control) {res['nme_test_mean_face']:.4f}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    if args.write:
        doc = {
            "format": "vox3d mediapipe468-ict correspondence 1",
            "ict_vertex": [int(model.vertex_index[j]) for j in best],
            "sigma_cm": [round(float(s), 5) for s in sigma],
            "learned_on": (
                "bench/mp_correspondence.py on the default synthetic corpus "
                f"({res['frames_learn']} frames of {len(learn_ids)} identities, "
                f"|yaw| <= {args.max_yaw}); mediapipe {mp_version}"
            ),
            "test": {k: round(v, 5) if isinstance(v, float) else v for k, v in res.items()},
        }
        MP468_ICT_JSON.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {MP468_ICT_JSON.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
