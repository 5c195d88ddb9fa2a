"""Fitted vs ground truth on the synthetic corpus: per-frame parameter and vertex errors,
and per-identity aggregation against single frames.

    python bench/fit_synthetic.py --out-dir results
    (reads OUT/fit/shard-*.h5, OUT/fit/identities.h5, OUT/synthetic/ground_truth.h5)

Printed (kept frames; vertices = ICT narrow face area, model space, mm, no pose):
* per frame: |yaw|, |pitch|, |roll| error (deg), identity-coefficient RMSE, expression MAE,
  identity-shape vertex error, shape+expression vertex error, 2-D 68-landmark NME in the
  frame (over sqrt(w*h) of the true landmark box), by true |yaw| bin;
* per identity: the robust aggregate of identities.h5, the plain mean of the kept frames and
  the average single frame, each as identity-shape vertex error against the truth, with the
  mean face as the baseline.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vox3d.face.face_model import load_face_model  # noqa: E402
from vox3d.fitting.fit_shard import FitShard  # noqa: E402
from vox3d.fitting.identities import IdentitiesFile  # noqa: E402
from vox3d.fitting.quality import REASONS  # noqa: E402
from vox3d.params import to_image  # noqa: E402
from vox3d.synthetic.ground_truth import read_tables  # noqa: E402


def load_truth(path):
    attrs, t = read_tables(path, {
        "identities": ("id", "id_coef"),
        "utterances": ("path", "identity", "frame_offset", "n_frames"),
        "frames": ("pose", "euler_deg", "exp", "hard"),
    })  # fmt: skip
    fps = float(attrs["fps"])
    roi = np.asarray(attrs["pose_roi_box"], np.float64)
    crop = int(attrs["pose_crop_size"])
    ids, id_coef = list(t["identities"]["id"]), t["identities"]["id_coef"].astype(np.float64)
    u, fr = t["utterances"], t["frames"]
    paths, uid, off, nfr = (u[k] for k in ("path", "identity", "frame_offset", "n_frames"))
    pose, hard = fr["pose"], fr["hard"]
    euler, exp = fr["euler_deg"].astype(np.float64), fr["exp"].astype(np.float64)
    hard_flags = json.loads(attrs["hard_flags"])
    utt = {p: (int(u), int(o), int(n)) for p, u, o, n in zip(paths, uid, off, nfr, strict=True)}
    return dict(fps=fps, roi=roi, crop=crop, ids=ids, id_coef=id_coef, utt=utt, pose=pose,
                euler=euler, exp=exp, hard=hard, hard_flags=hard_flags)  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default="results")
    ap.add_argument("--fit-dir", default=None)
    ap.add_argument("--gt", default=None)
    args = ap.parse_args(argv)
    fit_dir = args.fit_dir or os.path.join(args.out_dir, "fit")
    gt = load_truth(args.gt or os.path.join(args.out_dir, "synthetic", "ground_truth.h5"))
    shards = sorted(glob.glob(os.path.join(fit_dir, "shard-*.h5")))
    if not shards:
        print(f"no fit shards in {fit_dir}", file=sys.stderr)
        return 1
    rows = {k: [] for k in ("ident", "yaw_t", "ang", "idc", "exp", "par")}
    lm_err, frames_seen, frames_kept = [], 0, 0
    lay = None
    # the yaw and blur filters against the truth, over every frame with a face
    filt = {k: [] for k in ("yaw_t", "yaw_fit", "reason", "blur_hard", "blur")}
    th = {}
    for sp in shards:
        fs = FitShard.read(sp, fields=("video", "time", "keep", "params", "roi", "yaw", "pitch",
                                       "roll", "reason", "blur"))  # fmt: skip
        if fs.attrs["face_model"] != "ict":
            print(
                f"{sp}: face model {fs.attrs['face_model']}: ground truth is ICT", file=sys.stderr
            )
            return 1
        lay, vpath, fr = fs.layout, list(fs.video_paths), fs.frames
        th = json.loads(fs.attrs["thresholds"])
        frames_seen += len(fr["video"])
        for i in np.flatnonzero(np.isfinite(fr["yaw"])):
            rel = vpath[fr["video"][i]]
            if rel in gt["utt"]:
                u, o, n = gt["utt"][rel]
                j = o + min(int(round(fr["time"][i] * gt["fps"])), n - 1)
                filt["yaw_t"].append(gt["euler"][j, 0])
                filt["yaw_fit"].append(fr["yaw"][i])
                filt["reason"].append(REASONS[fr["reason"][i]])
                filt["blur"].append(fr["blur"][i])
                filt["blur_hard"].append(bool(gt["hard"][j] & gt["hard_flags"]["blur"]))
        for i in np.flatnonzero(fr["keep"]):
            rel = vpath[fr["video"][i]]
            if rel not in gt["utt"]:
                continue
            u, o, n = gt["utt"][rel]
            j = o + min(int(round(fr["time"][i] * gt["fps"])), n - 1)
            frames_kept += 1
            rows["ident"].append(u)
            rows["yaw_t"].append(gt["euler"][j, 0])
            rows["ang"].append(
                np.abs(np.array([fr["yaw"][i], fr["pitch"][i], fr["roll"][i]]) - gt["euler"][j])
            )
            rows["par"].append(
                (fr["params"][i].astype(np.float64), fr["roi"][i].astype(np.float64), j)
            )
    if lay is None or not rows["ident"]:
        print("no kept frame matches the ground truth", file=sys.stderr)
        return 1
    k, e = lay.n_id, lay.n_exp
    model = load_face_model("ict", subset="head", n_id=max(k, gt["id_coef"].shape[1]), n_exp=e)
    fi = model.vertex_sets["narrow_face"]
    idb = model.id_basis[:k][:, fi].reshape(k, -1).astype(np.float64)
    exb = model.exp_basis[:e][:, fi].reshape(e, -1).astype(np.float64)
    mean = model.mean[fi].astype(np.float64).reshape(-1)
    li = model.landmarks68
    idl = model.id_basis[:k][:, li].reshape(k, -1).astype(np.float64)
    exl = model.exp_basis[:e][:, li].reshape(e, -1).astype(np.float64)
    lmean = model.mean[li].astype(np.float64).reshape(-1)

    def vmm(a, b):  # mean per-vertex distance, cm -> mm
        return float(np.linalg.norm((a - b).reshape(-1, 3), axis=1).mean() * 10)

    id_v, full_v, idc_rmse, exp_mae = [], [], [], []
    for (p, roi, j), u in zip(rows["par"], rows["ident"], strict=True):
        a, x = p[12 : 12 + k], p[12 + k : 12 + k + e]
        ta = gt["id_coef"][u, :k]
        tx = gt["exp"][j, :e]
        id_v.append(vmm(a @ idb, ta @ idb))
        full_v.append(vmm(a @ idb + x @ exb, ta @ idb + tx @ exb))
        idc_rmse.append(float(np.sqrt(np.mean((a - ta) ** 2))))
        exp_mae.append(float(np.mean(np.abs(x - tx))))
        P = p[:12].reshape(3, 4)
        lp = to_image(((lmean + a @ idl + x @ exl).reshape(-1, 3)) @ P[:, :3].T + P[:, 3], roi)
        Pt = gt["pose"][j].reshape(3, 4)
        lt = to_image(((lmean + ta @ idl + tx @ exl).reshape(-1, 3)) @ Pt[:, :3].T + Pt[:, 3],
                      gt["roi"], size=gt["crop"])  # fmt: skip
        norm = np.sqrt(np.ptp(lt[:, 0]) * np.ptp(lt[:, 1]))
        lm_err.append(float(np.linalg.norm(lp[:, :2] - lt[:, :2], axis=1).mean() / norm))
    ang = np.array(rows["ang"])
    yaw_t = np.abs(np.array(rows["yaw_t"]))
    id_v, full_v, lm_err = np.array(id_v), np.array(full_v), np.array(lm_err)
    print(f"fit shards: {len(shards)}; frames: {frames_seen}; kept and matched: {frames_kept}")
    print("\nper frame (kept):")
    print(f"{'|yaw| bin':<11}{'n':>6}{'yaw':>7}{'pitch':>7}{'roll':>7}{'id RMSE':>9}"
          f"{'exp MAE':>9}{'id mm':>8}{'id+exp mm':>11}{'NME':>8}")  # fmt: skip
    for lo, hi in ((0, 20), (20, 40), (40, 90), (0, 90)):
        s = (yaw_t >= lo) & (yaw_t < hi)
        if not s.any():
            continue
        name = "all" if (lo, hi) == (0, 90) else f"{lo}-{hi}"
        print(f"{name:<11}{s.sum():>6}{ang[s, 0].mean():>7.2f}{ang[s, 1].mean():>7.2f}"
              f"{ang[s, 2].mean():>7.2f}{np.mean(np.array(idc_rmse)[s]):>9.3f}"
              f"{np.mean(np.array(exp_mae)[s]):>9.3f}{id_v[s].mean():>8.3f}"
              f"{full_v[s].mean():>11.3f}{lm_err[s].mean():>8.4f}")  # fmt: skip
    # per identity
    idents = np.array(rows["ident"])
    agg = {}
    ip = os.path.join(fit_dir, "identities.h5")
    if os.path.isfile(ip):
        idf = IdentitiesFile.read(ip)
        for name, shp in zip(idf.ids, idf.shape, strict=True):
            agg[name] = shp.astype(np.float64)
    res = {"aggregate": [], "plain_mean": [], "single_frame": [], "mean_face": []}
    for u in np.unique(idents):
        ta = gt["id_coef"][u, :k]
        sel = np.flatnonzero(idents == u)
        coefs = np.stack([rows["par"][i][0][12 : 12 + k] for i in sel])
        res["single_frame"].append(float(np.mean(id_v[sel])))
        res["plain_mean"].append(vmm(coefs.mean(0) @ idb, ta @ idb))
        res["mean_face"].append(vmm(np.zeros(len(mean)), ta @ idb))
        name = gt["ids"][u]
        if name in agg:
            res["aggregate"].append(vmm(agg[name] @ idb, ta @ idb))
    print(f"\nper identity ({len(np.unique(idents))} identities; identity-shape vertex error, mm):")
    for key, vals in res.items():
        if vals:
            v = np.array(vals)
            print(f"  {key:<13} mean {v.mean():.3f}  median {np.median(v):.3f}  (n={len(v)})")
    # how much identity signal: correlation of estimated and true coefficients across
    # identities (aggregate) and across frames (single frames), first modes
    n_modes = min(10, k)
    frame_coef = np.stack([r[0][12 : 12 + k] for r in rows["par"]])
    frame_true = gt["id_coef"][idents, :k]
    r_frame = [np.corrcoef(frame_coef[:, m], frame_true[:, m])[0, 1] for m in range(n_modes)]
    summary_r = {"single_frame": float(np.mean(r_frame))}
    if agg:
        names = [gt["ids"][u] for u in np.unique(idents) if gt["ids"][u] in agg]
        A = np.stack([agg[nm] for nm in names])
        T = np.stack([gt["id_coef"][gt["ids"].index(nm), :k] for nm in names])
        r_agg = [np.corrcoef(A[:, m], T[:, m])[0, 1] for m in range(n_modes)]
        summary_r["aggregate"] = float(np.mean(r_agg))
        print(f"\ncorrelation with the true identity coefficients, modes 0-{n_modes - 1}:")
        print("  aggregate    " + " ".join(f"{x:5.2f}" for x in r_agg))
    print("  single frame " + " ".join(f"{x:5.2f}" for x in r_frame))
    summary = {
        "frames_kept": frames_kept,
        "frame_nme": float(lm_err.mean()),
        "frame_id_mm": float(id_v.mean()),
        **{f"identity_{k2}_mm": float(np.mean(v)) for k2, v in res.items() if v},
        **{f"coef_corr_{k2}": v for k2, v in summary_r.items()},
    }
    # filters against the truth: frames with a face whose truth is beyond the yaw limit /
    # marked camera shake, and what the yaw / blur filters made of them
    yt, yf = np.abs(np.array(filt["yaw_t"])), np.abs(np.array(filt["yaw_fit"]))
    reason, bh = np.array(filt["reason"]), np.array(filt["blur_hard"])
    lim = th.get("max_yaw_deg", 60.0)
    big = yt > lim
    print(f"\nfilters vs truth (frames with a face: {len(yt)}; thresholds {th})")
    print(
        f"  yaw: true |yaw| > {lim:g}: {big.sum()} frames, rejected for yaw {np.sum(big & (reason == 'yaw'))}; "
        f"rejected for yaw but true |yaw| <= {lim:g}: {np.sum(~big & (reason == 'yaw'))}; "
        f"mean fitted |yaw| of the former {yf[big].mean() if big.any() else float('nan'):.1f} deg "
        f"(true {yt[big].mean() if big.any() else float('nan'):.1f})"
    )
    print(
        f"  blur: camera-shake frames {bh.sum()}, rejected for blur {np.sum(bh & (reason == 'blur'))}; "
        f"rejected for blur but sharp: {np.sum(~bh & (reason == 'blur'))}"
    )
    bv = np.array(filt["blur"], np.float64)
    if bh.any() and (~bh).any():
        print(
            "  blur measure: camera-shake frames median {:.0f}, 95th pct {:.0f}; other frames "
            "1st pct {:.0f}, 5th pct {:.0f}".format(
                np.median(bv[bh]), np.percentile(bv[bh], 95), *np.percentile(bv[~bh], [1, 5])
            )
        )
    summary["yaw_beyond_limit"] = int(big.sum())
    summary["yaw_beyond_limit_rejected"] = int(np.sum(big & (reason == "yaw")))
    summary["blur_frames"] = int(bh.sum())
    summary["blur_frames_rejected"] = int(np.sum(bh & (reason == "blur")))
    print("\n" + json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
