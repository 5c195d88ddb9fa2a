"""The workflow on the 10 real VoxCeleb2 clips with ``face_model: bfm`` (docs/real_voxceleb.md).

    .venv/bin/python bench/real_bfm.py [--repeat 1] [--work DIR]

Runs the workflow as docs/real_voxceleb.md says (``snakemake --cores 2 --configfile
config.yaml config/real_bfm.yaml --config meta_csv=META out_dir=OUT``, default target, from
the checkout; ``assets.bfm: null``, so parameter space), with the gender metadata written
from ``real/manifest.csv`` as the doc's step 1 does, into ``--work`` (a temporary folder by
default, removed at the end); ``--repeat`` runs, each from an empty ``OUT``.  Prints, from
the last run's outputs:

* extract: clips of the manifest, extracted, rejected, frames (``extract/stats.tsv``);
* fit: frames kept and rejected by reason, clips with parameters (``fit/stats.tsv``,
  ``fit/<shard>.h5``); ``fit/identities.h5``: identities, frames pooled and outliers per
  identity, against the share a chi-square quantile of ``fit.identity_mahal_quantile``
  implies for Gaussian frames;
* features: utterances kept and rejected; the split (``train/split.tsv``);
* the evaluation (``evaluate/metrics.tsv``): ``rmse_param``, ``rmse_z``, ``r2_param`` with
  their 95% bootstrap intervals per method;
* wall time of each run and the job seconds per rule from Snakemake's benchmark files
  (``OUT/benchmarks/``), and whether the runs gave the same ``metrics.tsv``;
* the mean-face ratios of the ICT ARE pair sets the doc quotes (``cmp``, ``landmark_rule``).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import h5py
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import header  # noqa: E402
from vox3d.io import read_tsv  # noqa: E402
from vox3d.paths import DATA_ROOT  # noqa: E402

REAL = DATA_ROOT / "real"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
#: Stages of the doc's wall-time line: rule (benchmark name) -> stage.
STAGES = {
    "manifest": "manifest",
    "extract_shard": "extract",
    "extract": "extract",
    "fit_shard": "fit",
    "fit_identities": "fit",
    "fit_rejects": "fit",
    "features_shard": "features",
    "features_rejects": "features",
    "train": "train",
    "evaluate": "evaluate + figures",
    "figures": "evaluate + figures",
}


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def write_meta(path: Path) -> dict[str, str]:
    """docs/real_voxceleb.md step 1: VoxCeleb1-format meta of the real clips (gender only)."""
    from vox3d.media.split import IdentityMeta, write_meta

    with open(REAL / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = [
            IdentityMeta(r["identity"], "", r["gender"])
            for r in csv.DictReader(fh)
            if r["path"].startswith("voxceleb/")
        ]
    write_meta(path, {m.identity: m for m in rows}.values())
    return {m.identity: m.gender for m in rows}


def rule_seconds(out: Path) -> dict[str, list[float]]:
    """rule -> seconds of each of its jobs (Snakemake benchmark files)."""
    acc: dict[str, list[float]] = defaultdict(list)
    for p in sorted((out / "benchmarks").rglob("*.tsv")):
        d = p.parent.name
        rule = d if d.endswith("_shard") else p.stem
        for r in read_tsv(p):
            acc[rule].append(float(r["s"]))
    return dict(acc)


def run_once(out: Path, meta: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(SNAKEMAKE), "--cores", "2", "--configfile", "config.yaml", "config/real_bfm.yaml",
           "--config", f"meta_csv={meta}", f"out_dir={out}"]  # fmt: skip
    env = dict(os.environ, PYTHONHASHSEED="0")
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"snakemake failed (rc {r.returncode}):\n{r.stderr[-6000:]}")
    return wall


def report_outputs(out: Path, cfg: dict, genders: dict[str, str]) -> None:
    clips = sorted(
        str(p.relative_to(REAL / "voxceleb")) for p in (REAL / "voxceleb").rglob("*.mp4")
    )
    ex = {r["shard"]: r for r in read_tsv(out / "extract" / "stats.tsv")}["total"]
    ex_rej = read_tsv(out / "extract" / "rejects.tsv")
    fps = cfg["extract"]["frame_rate"]
    print(
        f"extract: {ex['extracted']} of {len(clips)} clips extracted ({ex['videos']} in the "
        f"manifest), {ex['rejected']} rejected ({len(ex_rej)} rows in extract/rejects.tsv); "
        f"{ex['frames']} frames at {fps:g} fps, {float(ex['audio_s']):.1f} s of audio"
    )

    fs = {r["shard"]: r for r in read_tsv(out / "fit" / "stats.tsv")}["total"]
    reasons = [c for c in fs if c not in ("shard", "videos", "videos_rejected", "frames", "kept")]
    fit_rej = read_tsv(out / "fit" / "rejects.tsv")
    n_kept: dict[str, int] = {}
    for shard in sorted((out / "fit").glob("shard-*.h5")):
        with h5py.File(shard, "r") as f:
            for p, k in zip(f["videos/path"][()], f["videos/n_kept"][()], strict=True):
                n_kept[_s(p)] = int(k)
    with_params = sum(k > 0 for k in n_kept.values())
    print(
        f"fit: {fs['kept']} of {fs['frames']} frames kept; rejected by reason: "
        + ", ".join(f"{c} {fs[c]}" for c in reasons)
        + f"; {with_params} of {fs['videos']} clips with parameters, {fs['videos_rejected']} "
        f"clips rejected ({len(fit_rej)} rows in fit/rejects.tsv)"
    )

    with h5py.File(out / "fit" / "identities.h5", "r") as f:
        ids = [_s(x) for x in f["identity"][()]]
        k = f["shape"].shape[1]
        nf, nv, no = (f[n][()].astype(int) for n in ("n_frames", "n_videos", "n_outliers"))
        q = float(f.attrs.get("mahal_quantile", cfg["fit"]["identity_mahal_quantile"]))
    kept = nf + no
    print(
        f"fit/identities.h5: {len(ids)} identities, {k}-dim shape, from {nf.sum()} frames "
        f"({nf.min()}-{nf.max()} per identity) of {kept.sum()} kept; outliers dropped "
        f"{no.sum()} of {kept.sum()} ({100 * no.sum() / kept.sum():.1f}% = "
        f"{100 * no.sum() / kept.sum():.0f}%; {no.min()}-{no.max()} per identity); "
        f"chi-square quantile {q:g} implies {100 * (1 - q):.1f}% for Gaussian frames"
    )
    print(f"  {'identity':<12} {'videos':>6} {'kept':>5} {'pooled':>6} {'outliers':>8}")
    for i, ident in enumerate(ids):
        print(f"  {ident:<12} {nv[i]:>6} {kept[i]:>5} {nf[i]:>6} {no[i]:>8}")

    feats = set()
    for shard in sorted((out / "features").glob("shard-*.h5")):
        with h5py.File(shard, "r") as f:
            feats |= {_s(v) for v in f["index/video"][()]}
    ft_rej = read_tsv(out / "features" / "rejects.tsv")
    print(f"features: {len(feats)} of {len(clips)} utterances, {len(ft_rej)} rejected")

    split = read_tsv(out / "train" / "split.tsv")
    train = sorted(r["identity"] for r in split if r["set"] == "train")
    val = sorted(r["identity"] for r in split if r["set"] == "val")
    tcfg = cfg["train"]
    print(
        f"split ({tcfg['split']}, val_fraction {tcfg['val_fraction']}): {len(train)} training, "
        f"{len(val)} held out: " + ", ".join(f"{i} ({genders.get(i) or '?'})" for i in val)
    )
    with open(out / "train" / "log.csv", newline="") as fh:
        log = list(csv.DictReader(fh))
    print(f"train: {tcfg['steps']} steps (train/log.csv last step {log[-1].get('step', '?')})")

    rows = read_tsv(out / "evaluate" / "metrics.tsv")
    print(
        f"\nevaluate/metrics.tsv (target_space {rows[0]['target_space']}, {rows[0]['n_identities']} held-out identities):"
    )
    print(f"{'method':<16} {'rmse_param':>11} {'rmse_z [95% CI]':>26} {'r2_param [95% CI]':>26}")
    for r in rows:
        print(
            f"{r['method']:<16} {float(r['rmse_param']):>11,.0f} {_ci(r, 'rmse_z', '{:.3f}'):>26} "
            f"{_ci(r, 'r2_param', '{:.2f}'):>26}"
        )
    print(f"note: {rows[0]['note']}")


def _ci(r: dict[str, str], c: str, fmt: str) -> str:
    """Value of column `c` of metrics row `r` with its [lo, hi] interval when it has one."""
    lo, hi = r.get(f"{c}_lo", ""), r.get(f"{c}_hi", "")
    iv = f" [{fmt.format(float(lo))}, {fmt.format(float(hi))}]" if lo and hi else ""
    return fmt.format(float(r[c])) + iv


def ict_ratios() -> None:
    from bench.face_model import mean_face_ratios
    from vox3d.face import face_model as fm
    from vox3d.face.are_pairs import CMP_MEAN_FACE_RATIOS
    from vox3d.paths import ICT_FACEKIT

    if not ICT_FACEKIT.exists():
        print("ICT mean-face ratios: ICT-FaceKit asset missing")
        return
    m = fm.load_face_model("ict", subset="face", n_id=10, n_exp=0)
    print("\nICT mean-face ratios ER/FR/MR/CR (vox3d.face.metrics.face_ratios):")
    for name, r in mean_face_ratios(m).items():
        print(f"  evaluate.are_pairs {name}: " + "/".join(f"{x:.2f}" for x in r))
    c = CMP_MEAN_FACE_RATIOS
    print("  CMP's own (vox3d.face.are_pairs.CMP_MEAN_FACE_RATIOS): "
          + "/".join(f"{c[k]:.2f}" for k in ("ear", "forehead", "mid", "cheek")))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="workflow runs, each from scratch")
    ap.add_argument("--work", default=None, help="work folder (default: temporary, removed)")
    a = ap.parse_args(argv)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="vox3d-bench-realbfm-"))
    work.mkdir(parents=True, exist_ok=True)
    print(header(), flush=True)
    try:
        cfg: dict = {}
        for p in (
            "config.yaml",
            "config/real_bfm.yaml",
        ):  # the layered config, as Snakemake merges it
            _merge(cfg, yaml.safe_load((ROOT / p).read_text()))
        out, meta = work / "out", work / "real_meta.tsv"
        genders = write_meta(meta)
        print(
            f"snakemake --cores 2 --configfile config.yaml config/real_bfm.yaml --config "
            f"meta_csv={meta} out_dir={out} (assets.bfm: {cfg['assets']['bfm']}); "
            f"{len(genders)} identities in the meta, {sum(g == 'm' for g in genders.values())} male"
        )
        walls, per_run, metrics = [], [], []
        for i in range(a.repeat):
            walls.append(run_once(out, meta))
            per_run.append(rule_seconds(out))
            metrics.append((out / "evaluate" / "metrics.tsv").read_bytes())
            print(f"run {i + 1}: wall {walls[-1]:.1f} s, load {os.getloadavg()[0]:.2f}", flush=True)
        print()
        report_outputs(out, cfg, genders)

        print("\nwall time (s) of each run, and job seconds summed per stage / rule:")
        stages = list(dict.fromkeys(STAGES.values())) + ["export", "other"]
        print(f"{'':<22}" + "".join(f"{'run ' + str(i + 1):>9}" for i in range(a.repeat)))
        print(f"{'snakemake wall':<22}" + "".join(f"{w:>9.1f}" for w in walls))
        for st in stages:
            vals = []
            for rs in per_run:
                tot = 0.0
                for rule, xs in rs.items():
                    s = STAGES.get(rule, "export" if rule.startswith("export") else "other")
                    tot += sum(xs) if s == st else 0.0
                vals.append(tot)
            if any(vals):
                print(f"{st:<22}" + "".join(f"{v:>9.1f}" for v in vals))
        print("per rule (last run): " + ", ".join(
            f"{r} {sum(xs):.2f} ({len(xs)} jobs)" for r, xs in sorted(per_run[-1].items())))  # fmt: skip
        if a.repeat > 1:
            same = all(m == metrics[0] for m in metrics)
            print(f"metrics.tsv identical across the {a.repeat} runs: {'yes' if same else 'no'}")
        ict_ratios()
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _merge(base: dict, over: dict) -> None:
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


if __name__ == "__main__":
    raise SystemExit(main())
