"""The unsupervised variant (vox3d.voice.distill) on the default corpus, scored beside the
supervised model (issue 20).

    python bench/unsupervised.py --out-dir results --work /tmp/unsup --steps 300

Takes a finished default run (``make run``: OUT/extract, OUT/features, OUT/train/model.pt
and split.tsv, OUT/fit/identities.h5, OUT/synthetic/ground_truth.h5); fits its extract
shards again with ``fit.keep_crops`` (the same fit, plus the crops; a stream run's videos are
decoded again, its extract shards hold no frames) into WORK/fit, pretrains
the voice encoder (rule pretrain_voice), trains the unsupervised variant for ``--steps``
(rule train_unsupervised, demo preset otherwise) and evaluates both models with the
workflow's evaluation (vox3d.voice.evaluate.run_evaluate) on the run's held-out identities.
Prints per method and target ARE, RMSE and similarity-aligned vertex R^2, the paired
bootstrap of the unsupervised model against each baseline (ARE, RMSE), how often the
GAN's identity classifier names the speaker of a face generated from a training
identity's voice (held-out speakers are not its classes), and each phase's wall time.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import header  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default="results")
    ap.add_argument("--work", default="/tmp/vox3d-unsupervised")
    ap.add_argument(
        "--steps", type=int, default=None, help="unsupervised steps (default: the preset's)"
    )
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(header())
    t_all = time.time()

    import torch

    from vox3d.config import load_config
    from vox3d.face.face_model import face_model_settings
    from vox3d.fitting.fit import FitConfig, fit_shard
    from vox3d.fitting.stream import stream_shard
    from vox3d.media.extract import ExtractSettings
    from vox3d.media.extract_shard import ExtractShard
    from vox3d.voice.distill_train import run_train_unsupervised
    from vox3d.voice.evaluate import run_evaluate
    from vox3d.voice.speaker import run_pretrain_voice

    torch.set_num_threads(args.threads)
    out, work = Path(args.out_dir), Path(args.work)
    (work / "fit").mkdir(parents=True, exist_ok=True)
    (work / "train").mkdir(parents=True, exist_ok=True)
    (work / "evaluate").mkdir(parents=True, exist_ok=True)
    conf = load_config()
    fit_cfg = dataclasses.replace(
        FitConfig.from_config(conf, threads=args.threads), keep_crops=True
    )
    st = ExtractSettings.from_section(conf["extract"])
    videos_dir = conf.get("videos_dir") or out / "synthetic" / "videos"
    (work / "extract").mkdir(exist_ok=True)
    t = time.time()
    for p in sorted((out / "extract").glob("shard-*.h5")):
        dst = work / "fit" / p.name
        if dst.is_file():
            continue
        with ExtractShard(p) as ex:
            stored = ex.frames_stored
        if stored:  # two-stage run (extract.keep_frames: true): refit the stored frames
            fit_shard(p, dst, fit_cfg, progress=False)
        else:  # stream run (the default): decode the shard's videos again, straight to the fit
            stream_shard(
                out / "shards" / f"{p.stem}.tsv", videos_dir, work / "extract" / p.name,
                dst, fit_cfg, frame_rate=st.frame_rate, min_duration=st.min_duration,
                decoder=st.decoder, workers=args.threads, progress=False,
            )  # fmt: skip
    print(
        f"fit with crops: {time.time() - t:.1f} s ({len(list((work / 'fit').glob('shard-*.h5')))} shards)"
    )
    feats = sorted(str(p) for p in (out / "features").glob("shard-*.h5"))
    meta = out / "synthetic" / "vox1_meta.csv"
    meta = str(meta) if meta.is_file() else None
    settings = dict(conf["train"])
    settings["unsupervised"] = {"preset": args.preset, "steps": args.steps}
    t = time.time()
    enc = run_pretrain_voice(settings, feats, meta, work / "train" / "voice_encoder.pt",
                             work / "train" / "voice_encoder_log.csv", args.threads, progress=False)  # fmt: skip
    print(f"pretrain voice encoder: {time.time() - t:.1f} s; {len(enc['identities'])} speakers, held-back "
          f"utterance accuracy {enc['heldback_utterance_accuracy']:.3f} (chance {enc['chance']:.3f})")  # fmt: skip
    t = time.time()
    info = run_train_unsupervised(
        settings, feats, sorted((work / "fit").glob("shard-*.h5")), meta,
        work / "train" / "voice_encoder.pt", fit_cfg, work / "train" / "unsupervised.pt",
        work / "train" / "unsupervised_log.csv", work / "train" / "unsupervised_split.tsv",
        args.threads, progress=False,
    )  # fmt: skip
    dt = time.time() - t
    print(f"train unsupervised: {dt:.1f} s, {info['steps']} steps ({dt / info['steps']:.2f} s a step, "
          f"batch {info['config']['batch_size']}), {info['n_face_crops']} face crops of "
          f"{len(info['identities'])} identities")  # fmt: skip
    print(f"identity classifier on generated faces (training voices): {info['generated_identity_accuracy']:.3f} "
          f"(chance {info['chance']:.3f})")  # fmt: skip
    t = time.time()
    ev = work / "evaluate"
    rows = run_evaluate(
        out / "train" / "model.pt", out / "train" / "split.tsv", out / "fit" / "identities.h5", feats,
        ev / "metrics.tsv", ev / "per_identity.tsv", ev / "predictions.h5",
        out / "synthetic" / "ground_truth.h5", face_model_settings(conf["face_model"], conf["assets"]),
        conf["evaluate"], "cpu", ev / "per_coefficient.tsv", ev / "comparisons.tsv",
        unsupervised_path=work / "train" / "unsupervised.pt",
    )  # fmt: skip
    print(f"evaluate: {time.time() - t:.1f} s")
    print(
        "\nheld-out identities (n per row); ARE and RMSE lower is better; R2 vsim: similarity-aligned vertex R^2"
    )
    print(f"{'target':<13} {'method':<22} {'n':>3} {'ARE':>7} {'RMSE cm':>8} {'R2 vsim':>8}")
    for r in sorted(rows, key=lambda r: (r["target"], r["method"])):
        print(f"{r['target']:<13} {r['method']:<22} {r['n_identities']:>3} {float(r['are_mean']):7.4f} "
              f"{float(r['rmse']):8.3f} {float(r['r2_vertex_sim']):8.3f}")  # fmt: skip
    with open(ev / "comparisons.tsv", newline="") as fh:
        comp = [c for c in csv.DictReader(fh, delimiter="\t") if c["method"] == "unsupervised"]
    print("\nunsupervised - baseline, paired bootstrap over identities (95% interval, two-sided p)")
    for c in comp:
        if c["metric"] in ("are_mean", "rmse"):
            print(f"{c['target']:<13} vs {c['baseline']:<22} {c['metric']:<9} {float(c['delta']):+9.4f} "
                  f"[{float(c['delta_lo']):+.4f}, {float(c['delta_hi']):+.4f}] p {float(c['p']):.3f}")  # fmt: skip
    print(f"\n({time.time() - t_all:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
