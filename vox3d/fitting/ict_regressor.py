"""The ICT-FaceKit regressor: 3DDFA-V2's MobileNet-V1 trained on Sim3DR renders of ICT faces.

Network: :func:`vox3d.face.regressor.build_mobilenet` (widen 0.5, ``ict_layout(n_id, n_exp).n``
outputs), input ``(BGR - 127.5) / 128``, outputs whitened parameters (``(p - mean) / std``
with mean/std measured on 20,000 samples of the generator, stored in the json).  Loss:
MSE on whitened parameters + ``vertex_weight`` x the mean distance (crop pixels) of posed
face-area vertices (the 3DDFA "VDC" idea).

The pieces: the old generator of training renders (:mod:`vox3d.fitting.ict_generator`), the
training loops and the checkpoint writer (:mod:`vox3d.fitting.ict_train`), the held-out accuracy
(:mod:`vox3d.fitting.ict_eval`) and the checkpoint's readers with the fit stage's loader
(:mod:`vox3d.fitting.ict_checkpoint`).  The committed checkpoint was trained on frames of the
corpus's renderer instead: :mod:`vox3d.fitting.regressor_data`, the command line of that training.

Imports are light (numpy and torch; no h5py or OpenCV) so that the generator and the
training loop run on a GPU machine without those.
``python -m vox3d.fitting.ict_regressor --device cuda --steps N --out X.pth`` trains;
``--eval-only`` measures a checkpoint on held-out renders.
"""

from __future__ import annotations

import argparse
import sys
import time

from vox3d.fitting.ict_checkpoint import DEFAULT_CHECKPOINT, load_model, read_checkpoint_meta
from vox3d.fitting.ict_eval import evaluate, format_accuracy
from vox3d.fitting.ict_generator import GenConfig, GenModel, build_gen_model, param_stats
from vox3d.fitting.ict_train import TrainConfig, save_checkpoint, train


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vox3d.fitting.ict_regressor",
        description="train / evaluate the ICT-FaceKit MobileNet regressor on Sim3DR renders",
    )
    p.add_argument("--out", default=str(DEFAULT_CHECKPOINT), help="checkpoint .pth (+ .json)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--workers", type=int, default=0, help="DataLoader render workers")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=GenConfig.seed, help="data seed (and torch seed)")
    p.add_argument("--n-id", type=int, default=GenConfig.n_id)
    p.add_argument("--n-exp", type=int, default=GenConfig.n_exp)
    p.add_argument("--ict", default=None, help="ICT-FaceKit archive / FaceXModel folder")
    p.add_argument("--gen-model", default=None, help="npz from --export-gen-model (no ICT needed)")
    p.add_argument("--export-gen-model", default=None, help="write the generator arrays and exit")
    p.add_argument("--stats-samples", type=int, default=20000)
    p.add_argument("--eval-samples", type=int, default=600)
    p.add_argument("--eval-only", action="store_true", help="evaluate --out, do not train")
    p.add_argument("--log", default=None, help="training loss log (tsv)")
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop training early")
    args = p.parse_args(argv)

    if args.eval_only:  # the checkpoint says which face model sizes it predicts
        meta0 = read_checkpoint_meta(args.out)
        args.n_id, args.n_exp = int(meta0["n_id"]), int(meta0["n_exp"])
    gm = (
        GenModel.load(args.gen_model)
        if args.gen_model
        else build_gen_model(args.n_id, args.n_exp, args.ict)
    )
    if args.export_gen_model:
        gm.save(args.export_gen_model)
        print(f"wrote {args.export_gen_model}")
        return 0
    gen = GenConfig(n_id=gm.n_id, n_exp=gm.n_exp, seed=args.seed)
    if args.eval_only:
        model, mean, std, meta = load_model(args.out, args.device)
        gen = GenConfig.from_dict(meta["generator"])
        if meta.get("gen_model_sha256") not in (None, gm.digest()):
            print(
                "warning: the face model arrays differ from those the checkpoint was trained "
                "on (gen_model_sha256); accuracy may not be comparable",
                file=sys.stderr,
            )
    else:
        tc = TrainConfig(
            steps=args.steps, batch_size=args.batch_size, lr=args.lr, workers=args.workers,
            device=args.device, threads=args.threads, max_minutes=args.max_minutes,
        )  # fmt: skip
        mean, std = param_stats(gm, gen, args.stats_samples)
        log = open(args.log, "w") if args.log else None  # noqa: SIM115
        t0 = time.time()
        model = train(gm, gen, tc, mean, std, log=log)
        wall = time.time() - t0
        if log:
            log.close()
    acc = evaluate(model, gm, gen, mean, std, args.eval_samples, args.device)
    print(format_accuracy(acc))
    if not args.eval_only:
        meta = save_checkpoint(
            model, args.out, gen, tc, mean, std, acc, {"stats_samples": args.stats_samples}, gm=gm
        )
        print(f"training wall time {wall:.1f} s")
        print(f"wrote {args.out} sha256 {meta['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
