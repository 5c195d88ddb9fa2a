"""Training data of the ICT regressor, rendered by the corpus's own renderer.

The command line of the ICT regressor's training on frames of the corpus's renderer: the
frames come from :mod:`vox3d.fitting.regressor_render` (fresh people, single frames, wider
poses), their crops, targets and the render cache from :mod:`vox3d.fitting.regressor_cache`, the
training loop and the checkpoint from :mod:`vox3d.fitting.ict_train`, the held-out accuracy from
:mod:`vox3d.fitting.ict_eval`.

    python -m vox3d.fitting.regressor_data render --n 300000 --workers 15 --out DIR [--device cuda]
    python -m vox3d.fitting.regressor_data render --n 2000 --heldout --out DIR/heldout
    python -m vox3d.fitting.regressor_data calibrate --checkpoint X.pth --n-groups 250

``calibrate`` (also the last step of ``all``, into ``calibration`` beside the held-out
cache): :func:`calibrate_checkpoint` renders groups of fresh people (data seed ``seed +
CALIB_SEED_OFFSET``, the checkpoint's generator settings), runs the checkpoint and stores
the per-mode identity calibration of :func:`vox3d.fitting.identities.calibrate_identity` as
``identity_calibration`` in the checkpoint's json (used by
:func:`vox3d.fitting.identities.aggregate_identities`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from vox3d.config import default
from vox3d.fitting.ict_checkpoint import load_model, read_checkpoint_meta
from vox3d.fitting.ict_eval import evaluate_cache, format_accuracy, predict_crops
from vox3d.fitting.ict_generator import GenConfig, build_gen_model
from vox3d.fitting.ict_train import TrainConfig, save_checkpoint, train_from_cache
from vox3d.fitting.identities import calibrate_identity, calibrated_gain, clipped_normal_std
from vox3d.fitting.regressor_cache import cache_meta, load_cache, render_cache
from vox3d.fitting.regressor_render import RenderConfig
from vox3d.io import write_text_atomic
from vox3d.params import ict_layout
from vox3d.torch_setup import resolve_device

#: Identity-calibration renders (``calibrate``) use data seed ``seed +
#: CALIB_SEED_OFFSET``: fresh people, disjoint from the training and held-out renders.
CALIB_SEED_OFFSET = 2_000_029
#: Standardised identities are N(0, 1) clipped to +-Z_CLIP (vox3d.synthetic.synth_rig.draw_face).
Z_CLIP = 3.0


# --------------------------------------------------------------------------------------
# training and evaluation (the loop is vox3d.fitting.ict_train.train_from_cache)


def train_config(a: argparse.Namespace):
    """:class:`vox3d.fitting.ict_train.TrainConfig` from the command line."""
    return TrainConfig(
        steps=a.steps, batch_size=a.batch_size, lr=a.lr, device=a.device, threads=a.threads,
        id_weight=a.id_weight, vertex_weight=a.vertex_weight, widen=a.widen, amp=not a.no_amp,
        seed=a.seed,
    )  # fmt: skip


def train_and_save(a: argparse.Namespace) -> int:
    """Train from ``a.cache`` (resuming), then evaluate on ``a.heldout`` and write the
    checkpoint ``a.out`` (+ json with the accuracy and the training curve).  Returns 0
    when the checkpoint was written, 3 when the time budget stopped training first."""
    gm = build_gen_model(a.n_id, a.n_exp, a.ict)
    tc = train_config(a)
    out = Path(a.out)
    state = Path(a.state) if a.state else out.with_suffix(".state.pt")
    log = open(a.log, "a") if a.log else None  # noqa: SIM115
    try:
        model, mean, std, curve, finished = train_from_cache(
            gm, a.cache, tc, state, a.time_budget, log=log
        )
    finally:
        if log:
            log.close()
    if not finished:
        return 3
    acc = evaluate_cache(model, gm, a.heldout, mean, std, a.device)
    print(format_accuracy(acc))
    meta = cache_meta(a.cache)
    rcfg = meta["config"]
    gen = GenConfig(n_id=gm.n_id, n_exp=gm.n_exp, seed=int(rcfg["seed"]),
                       yaw_deg=float(rcfg["yaw_deg"]), pitch_deg=float(rcfg["pitch_deg"]),
                       roll_deg=float(rcfg["roll_deg"]))  # fmt: skip
    n_train = int(len(load_cache(a.cache, keys=("valid",))["valid"]))
    extra = {
        "data_generator": "vox3d.fitting.regressor_data",
        "generator": rcfg,
        "codec": meta["codec"],
        "train_samples_rendered": int(meta["n"]),
        "train_samples_valid": n_train,
        "heldout": {"data_seed": cache_meta(a.heldout)["data_seed"], "n": acc["n"],
                    "n_rendered": acc["n_rendered"]},
        "training_curve_columns": ["step", "param_mse", "vertex_px", "identity_mm2", "lr",
                                   "elapsed_s"],
        "training_curve": curve,
    }  # fmt: skip
    m = save_checkpoint(model, out, gen, tc, mean, std, acc, extra, gm=gm)
    print(f"wrote {out} sha256 {m['sha256']}")
    return 0


def evaluate_checkpoint(a: argparse.Namespace) -> int:
    """Print the held-out accuracy of checkpoint ``a.checkpoint`` on ``a.heldout``."""
    model, mean, std, meta = load_model(a.checkpoint, a.device)
    gm = build_gen_model(int(meta["n_id"]), int(meta["n_exp"]), a.ict)
    acc = evaluate_cache(model, gm, a.heldout, mean, std, a.device)
    print(format_accuracy(acc))
    if a.json:
        write_text_atomic(a.json, json.dumps(acc, indent=1, sort_keys=True) + "\n")
    return 0


def calibrate_checkpoint(
    checkpoint: str | os.PathLike,
    n_groups: int = 250,
    cache: str | os.PathLike | None = None,
    workers: int = 1,
    device: str = "cpu",
    max_yaw_deg: float = default("fit.max_yaw_deg"),
    ict: str | None = None,
    cache_shard_size: int = 128,
    write: bool = True,
) -> dict:
    """Identity calibration of an ICT checkpoint, written into its json.

    Renders ``n_groups`` groups of :attr:`RenderConfig.group` frames (one person + session
    each) with the checkpoint's own generator settings (its json ``generator`` and
    ``codec``) at data seed ``data_seed + CALIB_SEED_OFFSET`` (fresh people) into `cache`
    (a temporary folder when None; resumable when given), runs the checkpoint on the valid
    crops whose true yaw is within +-`max_yaw_deg` (the fit stage's yaw gate, config
    ``fit.max_yaw_deg``), and fits :func:`vox3d.fitting.identities.calibrate_identity` of the
    predicted on the true identity coefficients, with prior std ``id_std x``
    :func:`~vox3d.fitting.identities.clipped_normal_std` ``(Z_CLIP)``.  With `write`, stores it as
    ``identity_calibration`` in the checkpoint's json (every other key unchanged).
    Returns the calibration dict.
    """
    import tempfile
    from dataclasses import replace

    checkpoint = Path(checkpoint)
    meta = read_checkpoint_meta(checkpoint)
    gen = RenderConfig.from_dict(meta["generator"])
    data_seed = int(meta.get("data_seed", gen.seed)) + CALIB_SEED_OFFSET
    cfg = replace(
        gen, seed=data_seed, codec=str(meta.get("codec", gen.codec)), shard_size=cache_shard_size,
        face_model_path=ict,
    )  # fmt: skip
    n = int(n_groups) * cfg.group
    with tempfile.TemporaryDirectory(prefix="vox3d-calib-") as td:
        folder = Path(cache) if cache is not None else Path(td)
        summ = render_cache(cfg, n, folder, workers, device, heldout=False)
        if not summ["complete"]:
            raise RuntimeError(f"{folder}: calibration renders incomplete ({summ})")
        d = load_cache(folder, keys=("crops", "id_coef", "euler", "index"))
        n_valid = len(d["index"])
    keep = (d["index"] < n) & (np.abs(d["euler"][:, 0]) <= max_yaw_deg)
    model, mean, std, _ = load_model(checkpoint, device)
    pred = predict_crops(model, d["crops"][keep], device) * std + mean
    lay = ict_layout(int(meta["n_id"]), int(meta["n_exp"]))
    gm = build_gen_model(int(meta["n_id"]), int(meta["n_exp"]), ict)
    sigma = gm.id_std.astype(np.float64) * clipped_normal_std(Z_CLIP)
    cal = calibrate_identity(
        pred[:, lay.shape].astype(np.float64), d["id_coef"][keep].astype(np.float64),
        d["index"][keep] // cfg.group, sigma,
    )  # fmt: skip
    cal.update(
        data_seed=data_seed, group=cfg.group, codec=cfg.codec, n_groups_rendered=int(n_groups),
        n_rendered=n, n_valid=int(n_valid), max_yaw_deg=float(max_yaw_deg),
        sigma_source=f"id_std x std of N(0, 1) clipped to +-{Z_CLIP:g} (vox3d.synthetic.synth_rig.draw_face)",
        checkpoint_sha256=meta.get("sha256"),
        command="python -m vox3d.fitting.regressor_data calibrate",
    )  # fmt: skip
    if write:
        meta["identity_calibration"] = cal
        write_text_atomic(
            checkpoint.with_suffix(".json"), json.dumps(meta, indent=1, sort_keys=True) + "\n"
        )
    return cal


def format_calibration(cal: dict) -> str:
    """Per-mode table of a calibration (s, v, rho, sigma, R^2, gain at N=1 and N=100)."""
    g1, g100 = calibrated_gain(cal, 1), calibrated_gain(cal, 100)
    lines = [
        f"identity calibration: {cal['n_samples']} frames, {cal['n_groups']} people",
        f"{'mode':>4} {'s':>6} {'bias':>7} {'v':>6} {'rho':>5} {'sigma':>6} {'R2':>5} "
        f"{'gain1':>6} {'gain100':>7}",
    ]
    for k in range(len(cal["s"])):
        lines.append(
            f"{k:>4} {cal['s'][k]:6.3f} {cal['bias'][k]:7.3f} {cal['v'][k]:6.3f} "
            f"{cal['rho'][k]:5.2f} {cal['sigma'][k]:6.3f} {cal['r2'][k]:5.2f} "
            f"{g1[k]:6.3f} {g100[k]:7.3f}"
        )
    return "\n".join(lines)


def calibrate_command(a: argparse.Namespace) -> int:
    """``calibrate``: :func:`calibrate_checkpoint` from the command line."""
    cal = calibrate_checkpoint(
        a.checkpoint, a.n_groups, a.calib_cache, a.workers, a.device, a.max_yaw_deg, a.ict,
    )  # fmt: skip
    print(format_calibration(cal))
    print(f"wrote identity_calibration into {Path(a.checkpoint).with_suffix('.json')}")
    return 0


# --------------------------------------------------------------------------------------
# command line


#: The command line's defaults: config.yaml's ``fit.regressor`` (what rule train_regressor
#: passes), so ``python -m vox3d.fitting.regressor_data all`` alone trains the committed checkpoint.
REG = default("fit.regressor")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-id", type=int, default=default("face_model.n_id"))
    p.add_argument("--n-exp", type=int, default=default("face_model.n_exp"))
    p.add_argument("--ict", default=None, help="ICT-FaceKit archive / FaceXModel folder")
    p.add_argument(
        "--device", default=REG["device"], help="auto | cpu | cuda (default: config fit.regressor)"
    )
    p.add_argument("--seed", type=int, default=REG["seed"], help="data seed (and torch seed)")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=REG["steps"])
    p.add_argument("--batch-size", type=int, default=REG["batch_size"])
    p.add_argument("--lr", type=float, default=REG["lr"])
    p.add_argument("--id-weight", type=float, default=REG["id_weight"], help="x identity mm^2")
    p.add_argument("--vertex-weight", type=float, default=TrainConfig.vertex_weight)
    p.add_argument("--widen", type=float, default=REG["widen"])
    p.add_argument("--no-amp", action="store_true", help="CUDA: fp32 instead of bf16 autocast")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--cache", required=True, help="training render cache")
    p.add_argument("--heldout", required=True, help="held-out render cache")
    p.add_argument("--out", required=True, help="checkpoint .pth (+ .json)")
    p.add_argument("--state", default=None, help="resumable state (default OUT.state.pt)")
    p.add_argument("--log", default=None, help="append the training curve (tsv)")


#: Config ``fit.regressor`` keys passed to ``python -m vox3d.fitting.regressor_data all`` by rule
#: ``train_regressor`` beside steps, batch size, lr, seed, device and workers.
REGRESSOR_FLAGS = {"samples": "--n", "id_weight": "--id-weight", "widen": "--widen",
                   "codec": "--codec"}  # fmt: skip
#: ``all``'s held-out renders when ``--n-heldout`` is not given (the rule does not give it).
N_HELDOUT = 2000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vox3d.fitting.regressor_data", description=__doc__.split("\n")[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="render samples into a cache folder")
    r.add_argument("--n", type=int, required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--heldout", action="store_true", help="held-out seed (evaluation)")
    t = sub.add_parser("train", help="train from a cache (resumable), evaluate, save")
    _train_args(t)
    e = sub.add_parser("eval", help="held-out accuracy of a checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--heldout", required=True)
    e.add_argument("--json", default=None, help="also write the accuracy here")
    w = sub.add_parser("all", help="render (resumable), train, evaluate, save: the rule")
    _train_args(w)
    w.add_argument("--n", type=int, default=REG["samples"], help="training samples")
    w.add_argument("--n-heldout", type=int, default=N_HELDOUT)
    c = sub.add_parser(
        "calibrate", help="identity calibration of a checkpoint, written into its json"
    )
    c.add_argument("--checkpoint", required=True)
    for q in (c, w):
        q.add_argument("--n-groups", type=int, default=250, help="calibration people")
        q.add_argument("--calib-cache", default=None, help="calibration renders (resumable)")
        q.add_argument(
            "--max-yaw-deg", type=float, default=default("fit.max_yaw_deg"),
            help="config fit.max_yaw_deg",
        )  # fmt: skip
    c.add_argument("--workers", type=int, default=1)
    for q in (r, w):
        q.add_argument("--workers", type=int, default=1)
        q.add_argument("--codec", default=REG["codec"], help="auto | h264 | jpeg")
        q.add_argument("--shard-size", type=int, default=RenderConfig.shard_size)
    for q in (r, t, e, w, c):
        _common(q)
        q.add_argument("--time-budget", type=float, default=None, help="seconds; resumable")
    a = p.parse_args(argv)
    a.device = resolve_device(a.device, "--device")
    if a.cmd in ("render", "all"):
        cfg = RenderConfig(
            n_id=a.n_id, n_exp=a.n_exp, seed=a.seed, codec=a.codec, shard_size=a.shard_size,
            face_model_path=a.ict,
        )  # fmt: skip
        runs = [(a.n, a.out, a.heldout)] if a.cmd == "render" else [
            (a.n, a.cache, False), (a.n_heldout, a.heldout, True)]  # fmt: skip
        for n, folder, held in runs:
            s = render_cache(cfg, n, folder, a.workers, a.device, heldout=held,
                             time_budget=a.time_budget)  # fmt: skip
            print(json.dumps(s, sort_keys=True), flush=True)
            if not s["complete"]:
                return 3
        if a.cmd == "render":
            return 0
        rc = train_and_save(a)
        if rc != 0:
            return rc
        a.checkpoint = a.out
        if a.calib_cache is None:
            a.calib_cache = str(Path(a.heldout).with_name("calibration"))
        return calibrate_command(a)
    if a.cmd == "calibrate":
        return calibrate_command(a)
    if a.cmd == "train":
        return train_and_save(a)
    return evaluate_checkpoint(a)


if __name__ == "__main__":
    sys.exit(main())
