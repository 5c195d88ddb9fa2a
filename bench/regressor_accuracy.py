"""The ICT regressor's accuracy: its own held-out renders beside the corpus, side by side.

    python bench/regressor_accuracy.py [--checkpoint vox3d/data/ict_regressor.pth]
        [--out-dir results]

Prints, from the checkpoint's json (written by its training run, ``rule train_regressor`` /
``python -m vox3d.fitting.regressor_data``): how it was trained (steps, batch, renders, valid crops,
device), its accuracy on the held-out renders (identity error after similarity alignment as
a ratio of the mean face's, identity R^2 and slope per mode 0-9, 68-landmark NME, yaw error
overall and per |yaw| bin) and what its identity calibration was measured on.

With ``--out-dir`` of a finished default run (``make run``; reads ``OUT/fit/shard-*.h5``,
``OUT/synthetic/ground_truth.h5``): the same two figures on the corpus for single frames
(every kept frame scored alone, as the renders are; :mod:`vox3d.fitting.fit_accuracy`, all
identities) next to the renders', and their relative difference (issue 16, item 2: the
corpus figure within 20% of the renders' one).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vox3d.fitting.ict_checkpoint import DEFAULT_CHECKPOINT, read_checkpoint_meta  # noqa: E402

N_MODES = 10


def renders_report(meta: dict) -> dict:
    """Print the stored training facts and held-out accuracy; return the held-out dict."""
    tr = meta["training"]
    acc = meta["heldout_accuracy"]
    cal = meta["identity_calibration"]
    print(
        f"training: {meta['steps_done']} steps x {tr['batch_size']} on {tr['device']} "
        f"(torch {meta['torch']}), widen {tr['widen']}, id_weight {tr['id_weight']}, "
        f"vertex_weight {tr['vertex_weight']}; {meta['train_samples_rendered']} renders, "
        f"{meta['train_samples_valid']} valid crops; generator yaw +-{meta['generator']['yaw_deg']} deg"
    )
    a = acc["all"]
    print(
        f"held-out renders: {acc['n']} valid of {acc['n_rendered']} (data seed "
        f"{meta['heldout']['data_seed']})"
    )
    print(
        f"  identity error after similarity alignment {a['id_sim_mm']:.3f} mm, mean face "
        f"{a['mean_face_sim_mm']:.3f} mm: ratio {a['id_sim_ratio']:.3f}"
    )
    print(
        f"  identity R^2 modes 0-{N_MODES - 1}: mean {acc['id_r2_mean']:.3f}; "
        f"slope mean {acc['id_slope_mean']:.3f}"
    )
    print(f"  {'mode':>4} {'R2':>6} {'slope':>6} {'spread':>6}")
    for k in range(N_MODES):
        print(
            f"  {k:>4} {acc['id_r2'][k]:6.3f} {acc['id_slope'][k]:6.3f} {acc['id_spread'][k]:6.3f}"
        )
    print(f"  NME {a['nme']:.4f}, yaw error {a['yaw_err_deg']:.2f} deg (mean |error|)")
    print(f"  {'|yaw| bin':>10} {'n':>4} {'yaw err':>8} {'NME':>7} {'id ratio':>8}")
    for key in sorted(k for k in acc if k.startswith("yaw_")):
        b = acc[key]
        print(
            f"  {key[4:].replace('_', '-'):>10} {b['n']:>4} {b['yaw_err_deg']:8.2f} "
            f"{b['nme']:7.4f} {b['id_sim_ratio']:8.3f}"
        )
    print(
        f"identity calibration: {cal['n_groups_rendered']} fresh people x {cal['group']} frames "
        f"({cal['n_samples']} frames kept at |yaw| <= {cal['max_yaw_deg']:g} deg)"
    )
    return acc


def corpus_single_frame(out_dir: str) -> dict:
    """Single-frame identity accuracy of the fit on the corpus, all identities."""
    from vox3d.fitting import fit_accuracy as fa

    truth = fa.read_true_identities(os.path.join(out_dir, "synthetic", "ground_truth.h5"))
    frames = fa.read_frame_coefficients(
        sorted(glob.glob(os.path.join(out_dir, "fit", "shard-*.h5")))
    )
    k = max(len(next(iter(frames.values()))[0]), len(next(iter(truth.values()))))
    area = fa.face_area_for({"name": "ict"}, k)
    rows = fa.accuracy_table(area, frames, truth, [])
    return next(r for r in rows if r["set"] == "summary" and r["identity"] == "all")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--out-dir", default=None, help="a finished default run (make run)")
    a = ap.parse_args(argv)
    meta = read_checkpoint_meta(a.checkpoint)
    print(f"checkpoint: {a.checkpoint} (sha256 {meta['sha256'][:12]})")
    acc = renders_report(meta)
    if a.out_dir is None:
        return 0
    c = corpus_single_frame(a.out_dir)
    r = {"ratio": acc["all"]["id_sim_ratio"], "r2": acc["id_r2_mean"]}
    q = {"ratio": c["ratio_sim"], "r2": c["r2_mean"]}
    print(
        f"\nsingle frames, renders vs corpus ({a.out_dir}: {c['n_identities']} identities, "
        f"{c['n_predictions']} kept frames)"
    )
    print(f"{'figure':<44} {'renders':>8} {'corpus':>8} {'corpus/renders':>15}")
    for key, name in (
        ("ratio", "identity error vs mean face, sim. aligned"),
        ("r2", f"identity R^2, mean of modes 0-{N_MODES - 1}"),
    ):
        print(f"{name:<44} {r[key]:8.3f} {q[key]:8.3f} {q[key] / r[key]:15.3f}")
    worst = max(abs(q[k] / r[k] - 1.0) for k in r)
    verdict = "within" if worst <= 0.20 else "NOT within"
    print(f"largest relative difference {worst:.3f}: {verdict} 20%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
