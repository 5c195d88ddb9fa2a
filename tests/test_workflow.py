"""The whole workflow, end to end, on a tiny synthetic corpus (issue 8, item 7).

Runs `snakemake` (all stages: synthesize, manifest, extract, fit, features, train,
evaluate, figures) in a subprocess on a few identities, then `snakemake --report`, and
checks what a user would look at: the metrics table has a row per method and target with
finite values, the training loss fell, every figure exists and the report is a
self-contained HTML page that shows them.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from tiny_workflow import ROOT, TINY, run_snakemake  # noqa: E402

from vox3d.fitting.fit import ICT_REGRESSOR, ICT_REGRESSOR_JSON


def _snakemake(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_snakemake(args, cwd, timeout=1500)


@pytest.mark.slow
def test_whole_workflow_on_a_tiny_synthetic_corpus(tmp_path):
    out = tmp_path / "out"
    cfg = tmp_path / "tiny.yaml"
    # the committed ICT regressor, copied: its mtime is touched below (a new checkpoint)
    reg = tmp_path / "regressor" / "ict_regressor.pth"
    reg.parent.mkdir()
    for src in (ICT_REGRESSOR, ICT_REGRESSOR_JSON):
        shutil.copy2(src, reg.parent / src.name)
    fit = {**yaml.safe_load((ROOT / "config.yaml").read_text())["fit"], "ict_regressor": str(reg)}
    cfg.write_text(yaml.safe_dump({**TINY, "out_dir": str(out), "fit": fit}))
    common = ["--cores", "2", "--configfile", str(ROOT / "config.yaml"), str(cfg)]

    run = _snakemake(common, tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]

    with open(out / "evaluate" / "metrics.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    methods = {(r["method"], r["target"]) for r in rows}

    # The fit reads identity on a corpus whose answer is known, by a bar that a
    # mean-identity oracle fails (issue 15, item 5): after similarity alignment the fitted
    # shapes are under 0.85x the mean face's error and explain part of the identity modes.
    from vox3d.face.face_model import face_model_settings
    from vox3d.fitting import fit_accuracy as fa

    with open(out / "fit" / "accuracy.tsv", newline="") as fh:
        acc = {r["identity"]: r for r in csv.DictReader(fh, delimiter="\t")}

    def reads_identity(r) -> bool:
        return float(r["ratio_sim"]) < 0.85 and float(r["r2_mean"]) > 0.1

    assert reads_identity(acc["all"]), {k: acc["all"][k] for k in ("ratio_sim", "r2_mean")}
    truth = fa.read_true_identities(out / "synthetic" / "ground_truth.h5")
    fitted = fa.read_fitted_identities(out / "fit" / "identities.h5")
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    assets = {k: str(ROOT / v) if isinstance(v, str) else v for k, v in base["assets"].items()}
    face = face_model_settings(base["face_model"], assets)
    area = fa.face_area_for(face, len(next(iter(fitted.values()))))
    oracle = {i: 0.0 * fitted[i] for i in fitted}
    rows_oracle = fa.accuracy_table(area, oracle, truth, held_out=())
    assert not reads_identity({k: str(v) for k, v in rows_oracle[-1].items()})
    for m in (
        "model", "unsupervised", "population_mean", "train_mean", "gender_mean",
        "shuffled_voice", "unsupervised_shuffled",
    ):  # fmt: skip
        assert (m, "fitted") in methods and (m, "ground_truth") in methods
    with open(out / "evaluate" / "comparisons.tsv", newline="") as fh:
        comp = list(csv.DictReader(fh, delimiter="\t"))
    assert {(c["target"], c["baseline"], c["metric"]) for c in comp} >= {
        (t, b, "are_mean") for t in ("fitted", "ground_truth")
        for b in ("population_mean", "train_mean", "gender_mean", "shuffled_voice")
    }  # fmt: skip
    assert all(0 < float(c["p"]) <= 1 for c in comp)
    # the unsupervised variant is compared with the baselines, its own shuffled-voice
    # control and the supervised model (train.mode: both)
    assert {(c["baseline"]) for c in comp if c["method"] == "unsupervised"} == {
        "population_mean", "train_mean", "gender_mean", "unsupervised_shuffled", "model",
    }  # fmt: skip
    for r in rows:
        for col in ("are_er", "are_fr", "are_mr", "are_cr", "are_mean", "rmse"):
            v = float(r[col])
            assert math.isfinite(v) and v >= 0, (r["method"], col, v)
            assert float(r[f"{col}_lo"]) <= v <= float(r[f"{col}_hi"])
        ratios = [float(r[c]) for c in ("are_er", "are_fr", "are_mr", "are_cr")]
        assert float(r["are_mean"]) == pytest.approx(sum(ratios) / 4, rel=1e-6)

    with open(out / "train" / "log.csv", newline="") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh)]
    assert len(losses) >= 2 and losses[-1] < losses[0], losses

    for name in (
        "are_bars", "training_curves", "dataset_stats", "identities", "unsupervised_faces",
        "gan_curves",
    ):  # fmt: skip
        png = out / "evaluate" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png

    # Every stage wrote its rejects table in the shared format.
    for stage in ("extract", "fit", "features"):
        header = (out / stage / "rejects.tsv").read_text().splitlines()[0]
        assert header == "path\tstage\treason"

    # The export (rules/export.smk): one row per utterance with a voice and a shape, the
    # split equal to the one training used, lhotse audio equal to the extracted audio.
    import pyarrow.parquet as pq
    from lhotse import RecordingSet

    from vox3d.media.extract_shard import ExtractShard
    from vox3d.report.export_layout import utterance_id

    exp = out / "voxceleb3d"
    utts = pq.read_table(exp / "hf" / "utterances.parquet").to_pylist()
    with open(out / "train" / "split.tsv", newline="") as fh:
        split = {r["identity"]: r["set"] for r in csv.DictReader(fh, delimiter="\t")}
    assert utts and {u["identity"]: u["split"] for u in utts} == split
    recs = RecordingSet.from_file(exp / "lhotse" / "recordings.jsonl.gz").with_path_prefix(exp)
    assert sorted(recs.ids) == [u["utterance_id"] for u in utts]
    # Every utterance of the first extract shard that has a voice (not in the features'
    # rejects) and a shape (its identity is in identities.h5) must be exported, with the
    # extracted audio; the others must not be.
    with open(out / "features" / "rejects.tsv", newline="") as fh:
        no_voice = {r["path"] for r in csv.DictReader(fh, delimiter="\t")}
    with ExtractShard(out / "extract" / "shard-00000.h5") as sh:
        wanted = [
            i
            for i, v in enumerate(sh.videos)
            if v["video"] not in no_voice and v["identity"] in fitted
        ]
        assert wanted, "no utterance of extract/shard-00000.h5 has both a voice and a shape"
        exported = set(recs.ids)
        for i, v in enumerate(sh.videos):
            uid = utterance_id(v["video"])
            assert (uid in exported) == (i in wanted), (uid, i in wanted)
        for i in wanted:
            uid = utterance_id(sh.videos[i]["video"])
            # the default extract shard stores no samples (extract.keep_audio false): the
            # export decoded them again from the video, as video_audio does
            assert not sh.audio_stored and not sh.frames_stored
            audio = sh.video_audio(i, out / "synthetic" / "videos")
            assert (recs[uid].load_audio()[0] == audio).all(), uid
    card = (exp / "README.md").read_text()
    assert "## Accuracy of the 3D shapes" in card and "Measured on this build" in card

    # A second run has nothing to do.
    again = _snakemake([*common, "-n"], tmp_path)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # A new regressor (same path, newer file) refits every shard (on the default path a
    # stream job per shard: decode, fit and features together) and the identities.
    later = time.time() + 10  # newer than every output (copy2 kept the source's old mtime)
    os.utime(reg, (later, later))
    refit = _snakemake([*common, "-n", "--quiet", "rules"], tmp_path)
    assert refit.returncode == 0, refit.stderr[-4000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", refit.stdout + refit.stderr, re.M))
    n_fit = len(list((out / "fit").glob("shard-*.h5")))
    assert int(jobs.get("stream_shard", 0)) == n_fit > 0 and "fit_shard" not in jobs, jobs
    assert int(jobs.get("fit_identities", 0)) == 1, jobs
    # ... and the unsupervised variant, whose teacher it is
    assert int(jobs.get("train_unsupervised", 0)) == 1, jobs

    report = tmp_path / "report.html"
    rep = _snakemake([*common, "--report", str(report)], tmp_path)
    assert rep.returncode == 0, rep.stderr[-4000:]
    html = report.read_text(errors="replace")
    assert "<html" in html.lower() and len(html) > 50_000
    for name in ("are_bars.png", "identities.png", "metrics.tsv", "comparisons.tsv",
                 "comparisons.png", "unsupervised_faces.png", "gan_curves.png"):  # fmt: skip
        assert name in html, name


@pytest.mark.slow
def test_unsupervised_mode_alone_trains_and_scores_only_that_variant(tmp_path):
    """train.mode: unsupervised: no supervised model is trained; the evaluation, its split
    and the figures come from the unsupervised variant (rows unsupervised, its shuffled
    control and the baselines)."""
    out = tmp_path / "out"
    cfg = tmp_path / "tiny.yaml"
    train = {**TINY["train"], "mode": "unsupervised"}
    cfg.write_text(yaml.safe_dump({**TINY, "train": train, "out_dir": str(out)}))
    common = ["--cores", "2", "--configfile", str(ROOT / "config.yaml"), str(cfg)]
    run = _snakemake(["evaluate", "figures", "unsupervised_figures", *common], tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    assert not (out / "train" / "model.pt").exists()
    with open(out / "evaluate" / "metrics.tsv", newline="") as fh:
        methods = {r["method"] for r in csv.DictReader(fh, delimiter="\t")}
    assert methods == {
        "unsupervised", "unsupervised_shuffled", "population_mean", "train_mean", "gender_mean",
    }  # fmt: skip
    with open(out / "train" / "unsupervised_split.tsv", newline="") as fh:
        held = {r["identity"] for r in csv.DictReader(fh, delimiter="\t") if r["set"] == "val"}
    from vox3d.voice.predictions import Predictions

    assert set(Predictions.read(out / "evaluate" / "predictions.h5").identities) <= held
    for name in ("identities", "training_curves", "unsupervised_faces", "gan_curves"):
        assert (out / "evaluate" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
