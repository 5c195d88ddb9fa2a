"""The dataset card of the exported Voxceleb-3D (``OUT/voxceleb3d/README.md``).

Sections: what it is and how it was made (vox3d version, git commit, config hash), counts
(identities, videos, utterances, frames, hours of audio; per split and per gender), the
exported files, every filter of every stage with its rejects counted by reason, the
accuracy of the 3D shapes (fitted against the ground truth when the corpus is the
synthetic one; otherwise no accuracy figure, only what this build's own fit outputs say:
frames kept, frames and videos per identity, the spread of an identity's frames), licences
and provenance of every input.  Every figure on the card is computed from the build's own
outputs; none is quoted from another run.  The counts and the filters come from
:mod:`vox3d.report.card_counts`.

Everything in the card is a function of the inputs and the config, never of the time or of
where the files are: two builds of the same inputs give the same card (the config hash
leaves out ``out_dir``, see :func:`config_hash`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vox3d import __version__
from vox3d.config import default, with_defaults
from vox3d.face.are_selection import select_are_pairs
from vox3d.face.face_model import face_model_from_config, face_model_settings
from vox3d.io import write_text_atomic
from vox3d.paths import REPO_ROOT
from vox3d.report.card_counts import (
    StageTables,
    _counts_table,
    _filters_section,
    _settings,
    _total,
    counts,
)
from vox3d.report.export_layout import AUDIO_DIR, CARD_FILE, Collected
from vox3d.synthetic.ground_truth import GroundTruth
from vox3d.voice.evaluate import evaluate_predictions, mesh_vertices
from vox3d.voice.targets import read_identity_targets
from vox3d.workflow.projection import projection_markdown

#: Config keys left out of the config hash: they say where files go, not what they hold.
HASH_EXCLUDED_KEYS = ("out_dir",)


# --------------------------------------------------------------------------------------
# provenance


def config_hash(config: Mapping) -> str:
    """sha256 (hex) of the canonical JSON of the validated `config` (keys sorted, no
    whitespace, UTF-8), without :data:`HASH_EXCLUDED_KEYS`."""
    cfg = {k: v for k, v in config.items() if k not in HASH_EXCLUDED_KEYS}
    text = json.dumps(cfg, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def git_commit(repo: str | os.PathLike | None = None) -> str | None:
    """The commit checked out in `repo` (default: the vox3d checkout), read from ``.git``
    without running git; None when it is not a git checkout or the ref cannot be read."""
    root = Path(repo) if repo is not None else REPO_ROOT
    git = root / ".git"
    try:
        if git.is_file():  # worktree / submodule: "gitdir: <path>"
            line = git.read_text(encoding="utf-8").strip()
            if not line.startswith("gitdir:"):
                return None
            git = (root / line.split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref:"):
            return head if _is_sha(head) else None
        ref = head.split(":", 1)[1].strip()
        common = git
        if (git / "commondir").is_file():
            common = (git / (git / "commondir").read_text(encoding="utf-8").strip()).resolve()
        for base in (git, common):
            p = base / ref
            if p.is_file():
                sha = p.read_text(encoding="utf-8").strip()
                return sha if _is_sha(sha) else None
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref and _is_sha(parts[0]):
                    return parts[0]
    except OSError:
        return None
    return None


def _is_sha(s: str) -> bool:
    return len(s) in (40, 64) and all(c in "0123456789abcdef" for c in s)


# --------------------------------------------------------------------------------------
# accuracy of the fitted shapes


def fit_accuracy(
    identities_h5: str | os.PathLike,
    ground_truth_h5: str | os.PathLike,
    face_model: Mapping,
    vertex_set: str = default("evaluate.vertex_set"),
    n_boot: int = 1000,
    seed: int = default("evaluate.seed"),
    are_pairs: str = default("evaluate.are_pairs"),
) -> dict:
    """Fitted identity shapes (``fit/identities.h5``) against the synthetic ground truth.

    Reuses the evaluation code (:func:`vox3d.voice.evaluate.evaluate_predictions` with the readers
    :func:`vox3d.voice.targets.read_identity_targets` / :class:`vox3d.synthetic.ground_truth.GroundTruth`):
    methods ``fitted`` (the robust per-identity shape) and ``population_mean`` (coefficients
    0, the face model's mean face, as the baseline; the evaluation's method of that name),
    target ``ground_truth`` (its first K coefficients), on every identity in both files.
    ARE pairs: :func:`vox3d.face.are_selection.select_are_pairs` with `are_pairs` (config
    ``evaluate.are_pairs``).  Metrics: the four ARE ratios and their mean, RMSE
    after rigid alignment on `vertex_set` (face-model units; ICT cm), vertex R^2 (of the
    truth's variance around the mean face) with 95% bootstrap intervals; plus ``vertex_mm``,
    the mean per-vertex distance without alignment on the ``narrow_face`` set in mm (the
    figure of ``bench/fit_synthetic.py``); ``coef_corr``, the Pearson correlation across
    identities of fitted and true coefficients, averaged over the first 10 modes.

    face_model: the config's ``face_model`` section with ``path`` / ``tri_path`` (see
    :func:`vox3d.face.face_model.face_model_settings`).  Returns ``{"n_identities", "coef_corr",
    "n_corr_modes", "face_model", "vertex_set", "are_pairs" (the pair set's name),
    "rows": {method: summary row}, "vertex_mm": {method: mm}}``; raises
    ValueError when the fit is not an ICT fit (the ground truth is ICT coefficients).
    """
    ids, coef, attrs = read_identity_targets(identities_h5)
    fm_name = str(attrs.get("face_model", ""))
    if fm_name != "ict":
        raise ValueError(
            f"{identities_h5}: face model {fm_name!r}; the synthetic ground truth is ICT "
            "coefficients, so only an ICT fit can be compared with it"
        )
    gt = GroundTruth.read(ground_truth_h5).coefficients()
    k = coef.shape[1]
    common = sorted(set(ids) & set(gt))
    if not common:
        raise ValueError(f"{identities_h5} and {ground_truth_h5} share no identity")
    row = {i: r for r, i in enumerate(ids)}
    fitted = {i: coef[row[i]].astype(np.float64)[None] for i in common}
    zeros = np.zeros(k)
    targets = {"ground_truth": {i: np.asarray(gt[i][:k], np.float64) for i in common}}
    fm = face_model_from_config({**dict(face_model), "name": "ict"}, n_id=k)
    idx = fm.vertex_sets.get(vertex_set) if vertex_set else None
    sel = select_are_pairs(fm, are_pairs)
    preds = {"fitted": fitted, "population_mean": {i: zeros[None] for i in common}}
    summary, _ = evaluate_predictions(
        preds, targets, fm.mean, fm.id_basis, sel.pairs, idx, zeros, False, n_boot, seed
    )
    narrow = fm.vertex_sets.get("narrow_face")
    nidx = np.asarray(narrow) if narrow is not None else slice(None)
    mm: dict[str, float] = {}
    for method, pred in preds.items():
        d = []
        for i in common:
            pv = mesh_vertices(fm.mean, fm.id_basis, pred[i][0])[nidx]
            tv = mesh_vertices(fm.mean, fm.id_basis, targets["ground_truth"][i])[nidx]
            d.append(float(np.linalg.norm(pv - tv, axis=1).mean()) * 10.0)  # cm -> mm
        mm[method] = float(np.mean(d))
    n_modes = min(10, k)
    a = np.stack([fitted[i][0] for i in common])
    t = np.stack([targets["ground_truth"][i] for i in common])
    corr = [
        float(np.corrcoef(a[:, m], t[:, m])[0, 1])
        for m in range(n_modes)
        if len(common) > 2 and a[:, m].std() > 0 and t[:, m].std() > 0
    ]
    return {
        "n_identities": len(common),
        "coef_corr": float(np.mean(corr)) if corr else float("nan"),
        "n_corr_modes": n_modes,
        "face_model": fm_name,
        "vertex_set": vertex_set,
        "are_pairs": sel.name,
        "rows": {r["method"]: r for r in summary},
        "vertex_mm": mm,
    }


def fit_precision(col: Collected, fit_stats: str | os.PathLike) -> dict:
    """What the build's own fit outputs say of the shapes when no ground truth exists.

    From ``fit/stats.tsv`` (its ``total`` row): ``frames`` fitted and ``frames_kept`` by the
    fit filters.  From the exported identities (`col`): ``n_identities``, the medians over
    identities of the kept frames (``frames_per_identity``) and videos
    (``videos_per_identity``) pooled into a shape, ``frame_spread``: the median over
    identities of the robust std of the identity's frames (``shape_spread``) averaged over
    the K coefficients, and ``between_spread``: the std over identities of the shapes,
    averaged over the K coefficients (NaN with fewer than two identities).  A precision of
    the fit (how consistently it reads one person), not an accuracy.
    """
    fit = _total(Path(fit_stats))
    ids = col.identities
    out: dict = {
        "frames": int(fit["frames"]),
        "frames_kept": int(fit["kept"]),
        "n_identities": len(ids),
        "frames_per_identity": float("nan"),
        "videos_per_identity": float("nan"),
        "frame_spread": float("nan"),
        "between_spread": float("nan"),
    }
    if ids:
        out["frames_per_identity"] = float(np.median([int(r["shape_n_frames"]) for r in ids]))
        out["videos_per_identity"] = float(np.median([int(r["shape_n_videos"]) for r in ids]))
        spread = [float(np.mean(np.asarray(r["shape_spread"], np.float64))) for r in ids]
        out["frame_spread"] = float(np.median(spread))
    if len(ids) > 1:
        shapes = np.stack([np.asarray(r["shape"], np.float64) for r in ids])
        out["between_spread"] = float(shapes.std(axis=0, ddof=1).mean())
    return out


# --------------------------------------------------------------------------------------
# the card


SYNTHETIC_NOTE = (
    "This build's videos are the embedded synthetic corpus, generated by vox3d "
    "(`vox3d.synthetic.synth`: ICT-FaceKit heads rendered by Sim3DR, synthesised voices): it holds no "
    "VoxCeleb data and no real person.\n\n"
)

LICENCES = """| input | upstream | licence | used for |
|---|---|---|---|
| VoxCeleb1/2 videos and metadata (`vox1_meta.csv`) | robots.ox.ac.uk/~vgg/data/voxceleb (metadata via github.com/choyingw/Cross-Modal-Perceptionist) | CC BY 4.0 | the voices, the faces fitted, names, gender, split |
| ICT-FaceKit "Face Model Light" (`FaceXModel/`) | github.com/ICT-VGL/ICT-FaceKit | MIT | face model `ict` (identity basis of the shapes), synthetic corpus |
| 3DDFA-V2 weights (`mb05_120x120.pth`, `param_mean_std_62d_120x120.pkl`, `FaceBoxesProd.pth`, `tri.pkl`) | github.com/cleardusk/3DDFA_V2 | MIT | face detection (FaceBoxes), face model `bfm` regressor |
| Basel Face Model (`bfm_noneck_v3.pkl`), optional | 3DDFA-V2 `configs/` (user supplied) | BFM academic licence (not redistributable) | face model `bfm` meshes only |
| Cross-Modal Perceptionist (features, ARE, split) | github.com/choyingw/Cross-Modal-Perceptionist | MIT | voice features, metric, split rule |
| ICT regressor `vox3d/data/ict_regressor.pth` | this repository (trained on Sim3DR renders of ICT-FaceKit) | as vox3d | face model `ict` regressor |"""


def card_markdown(
    col: Collected,
    tables: StageTables,
    config: Mapping,
    accuracy: dict | None = None,
    files: Mapping[str, int] | None = None,
    commit: str | None = None,
    synthetic: bool = False,
) -> str:
    """The card as Markdown.

    col: the export's rows (:func:`vox3d.report.export.collect`); tables: the stages' stats and
    rejects; config: the validated workflow config; accuracy: :func:`fit_accuracy` of a
    synthetic corpus (None: no accuracy figure, the fit's own figures of
    :func:`fit_precision` instead); files: exported file ->
    size in bytes; commit: the git commit (None: not recorded); synthetic: whether the
    videos are the embedded synthetic corpus.
    """
    config = with_defaults(config)
    c = counts(col.utterances)
    fm = dict(config.get("face_model", {}))
    frame_rate = config.get("extract", {}).get("frame_rate", "")
    n_id = col.n_id
    audio_desc = {
        "wav": "IEEE-float 32-bit WAV, a bit-exact copy of the extract stage's audio",
        "flac": "24-bit FLAC, every sample within 2^-23 of the extract stage's audio (half a 24-bit step, 2^-24, except at full scale)",
    }[col.audio_format]
    corpus = (
        "the embedded synthetic VoxCeleb-format corpus (`OUT/synthetic/`, card "
        "`synthetic/README.md`), not real people"
        if synthetic
        else f"the videos of `videos_dir` ({config.get('videos_dir')})"
    )
    parts = [
        f"""# Voxceleb-3D (vox3d export)

Voices paired with 3D face shape: every utterance's 16 kHz mono audio with the 3D face
shape of its speaker, fitted from the speaker's video frames with a 3D morphable model
(face model `{col.face_model}`, {n_id} identity coefficients). Built by vox3d from \
{corpus}. Loading, columns and layout: `docs/export.md` of vox3d.

| | |
|---|---|
| vox3d version | {__version__} |
| git commit | {commit or "not recorded (not a git checkout)"} |
| config hash | `{config_hash(config)}` (sha256 of the canonical JSON of the validated config, `out_dir` left out) |
| face model | `{col.face_model}`, {n_id} identity modes (`face_model.n_id`), subset `{fm.get("subset", "")}` |
| split | `{col.split_method}` (config `train.split`; names A-E = validation when every identity has a name, else a hash of the identity) |
| audio | {audio_desc}, {col.sample_rate} Hz mono (`export.audio: {col.audio_format}`) |

## Contents

{c["identities"]:,} identities, {c["videos"]:,} videos, {c["utterances"]:,} utterances, \
{c["hours"]:.3f} hours of audio, {c["frames"]:,} frames sampled at {frame_rate} fps of \
which {c["frames_kept"]:,} passed the fit filters. A video is one YouTube id of an identity; an utterance is one clip (one mp4).

{_counts_table(col)}

Each identity has one shape (`shape`, K = {n_id} coefficients in face-model units; ICT:
1.0 = the shipped identity mode, prior N(0, 1)): the robust pool of the identity
coefficients of every kept frame of every video (Mahalanobis outlier rejection, per-video
medians, Huber mean over videos; `vox3d/fitting/identities.py`), with its spread (robust std of the
frames) and the frames and videos used. Every utterance of an identity carries that shape.
"""
    ]
    if files:
        lines = ["| file | bytes |", "|---|---:|"]
        lines += [f"| `{name}` | {size:,} |" for name, size in sorted(files.items())]
        parts.append("## Files\n\n" + "\n".join(lines) + "\n")
    parts.append(
        f"""## Filters and rejects

Every file or frame removed on the way, by stage and reason (from `extract/stats.tsv`,
`extract/rejects.tsv`, `fit/stats.tsv`, `fit/rejects.tsv`, `features/rejects.tsv` and this
folder's `rejects.tsv`). An utterance is exported when it was extracted, the features stage
kept its voice, and its identity has a fitted shape; a video whose frames all failed the fit
filters keeps its voice when its identity has a shape from other videos.

{_filters_section(col, tables)}

Thresholds of this build:

{_settings(config)}
"""
    )
    precision = None if accuracy is not None else fit_precision(col, tables.fit_stats)
    parts.append(_accuracy_section(accuracy, precision, synthetic))
    parts.append(
        "## Build-time projection\n\nHow long the same workflow takes on VoxCeleb2 at "
        "cluster scale, from measured per-stage throughputs (`vox3d/workflow/projection.py`, "
        "`vox3d/data/throughput.json`, `docs/cluster.md`).\n\n"
        + projection_markdown(stream=not config["extract"]["keep_frames"])
    )
    parts.append(
        f"""## Licences and provenance

{LICENCES}

{SYNTHETIC_NOTE if synthetic else ""}Asset paths of this build (config `assets`): ICT-FaceKit `{config.get("assets", {}).get("ict_facekit")}`,
FaceBoxes `{config.get("assets", {}).get("faceboxes")}`, 3DDFA-V2 regressor
`{config.get("assets", {}).get("tddfa_weights")}`, BFM `{config.get("assets", {}).get("bfm")}`.
The exported audio and shapes derive from the videos, so they carry the videos' licence
(VoxCeleb: CC BY 4.0, attribution to the VoxCeleb authors); the shapes are coefficients of
the face model named above and need that model (ICT-FaceKit: MIT) to become meshes.
"""
    )
    return "\n".join(parts)


def _fmt_ci(row: Mapping, col: str, scale: float = 1.0, digits: int = 4) -> str:
    v, lo, hi = (float(row[c]) * scale for c in (col, f"{col}_lo", f"{col}_hi"))
    if np.isfinite(lo) and np.isfinite(hi):
        return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    return f"{v:.{digits}f}"


def _verdict(fit: float, base: float, lower_is_better: bool = True) -> str:
    better = fit < base if lower_is_better else fit > base
    return "better than" if better else ("equal to" if fit == base else "worse than")


def _accuracy_section(accuracy: dict | None, precision: dict | None, synthetic: bool) -> str:
    head = "## Accuracy of the 3D shapes\n\n"
    if accuracy is not None:
        rows = accuracy["rows"]
        lines = [
            "| shape | mean ARE [95% CI] | RMSE mm, rigid alignment [95% CI] | vertex R^2 | "
            "mean vertex error mm (narrow face, no alignment) |",
            "|---|---|---|---|---|",
        ]
        for method, label in (
            ("fitted", "fitted (this dataset)"),
            ("population_mean", "mean face"),
        ):
            r = rows[method]
            lines.append(
                f"| {label} | {_fmt_ci(r, 'are_mean')} | {_fmt_ci(r, 'rmse', 10.0, 2)} | "
                f"{float(r['r2_vertex']):.3f} | {accuracy['vertex_mm'][method]:.2f} |"
            )
        f, m = rows["fitted"], rows["population_mean"]
        mm = accuracy["vertex_mm"]
        verdict = (
            f"The fitted shapes are {_verdict(f['are_mean'], m['are_mean'])} the mean face on "
            f"ARE, {_verdict(f['rmse'], m['rmse'])} it on RMSE and "
            f"{_verdict(mm['fitted'], mm['population_mean'])} it on vertex error; across "
            f"identities the fitted and true coefficients correlate by "
            f"{accuracy['coef_corr']:.2f} (Pearson, mean of the first "
            f"{accuracy['n_corr_modes']} modes)."
        )
        return head + (
            f"Measured on this build: the fitted identity shapes against the synthetic corpus's "
            f"true coefficients (`synthetic/ground_truth.h5`), {accuracy['n_identities']} "
            f"identities, vertex set `{accuracy['vertex_set']}`, ARE pairs "
            f"`{accuracy['are_pairs']}` (config `evaluate.are_pairs`; "
            "`vox3d.report.card.fit_accuracy`, which scores with `vox3d.voice.evaluate`; intervals: "
            "bootstrap over identities). The mean face (all coefficients 0, the evaluation's "
            "`population_mean`) is the baseline.\n\n" + "\n".join(lines) + "\n\n" + verdict + "\n"
        )
    where = (
        "This corpus is synthetic, but the fit was not scored against its ground truth (the "
        "card was given no ground truth, or the face model is not `ict`, the truth's model)"
        if synthetic
        else "Real videos have no true 3D shape"
    )
    text = (
        f"{where}, so this card states no accuracy for the shapes: it quotes no figure "
        "measured on another build. The accuracy of the fit is measured against a ground "
        "truth, on a build of the embedded synthetic corpus (its card, "
        "`vox3d.report.card.fit_accuracy`) and per frame by `bench/fit_synthetic.py`.\n"
    )
    if precision is None:
        return head + text

    def num(x: float, digits: int) -> str:
        return f"{x:.{digits}f}" if np.isfinite(x) else "n/a"

    p = precision
    share = 100.0 * p["frames_kept"] / p["frames"] if p["frames"] else float("nan")
    lines = [
        "| figure (this build) | value |",
        "|---|---:|",
        f"| frames kept by the fit filters (`fit/stats.tsv`) | {p['frames_kept']:,} of "
        f"{p['frames']:,} ({num(share, 1)}%) |",
        f"| identities with a shape | {p['n_identities']:,} |",
        f"| kept frames pooled per identity (median) | {num(p['frames_per_identity'], 1)} |",
        f"| videos pooled per identity (median) | {num(p['videos_per_identity'], 1)} |",
        "| spread of an identity's frames (robust std of the frames' coefficients, mean "
        f"over the K modes, median over identities) | {num(p['frame_spread'], 3)} |",
        "| spread of the shapes across identities (std over identities, mean over the K "
        f"modes) | {num(p['between_spread'], 3)} |",
    ]
    return head + (
        text + "\nWhat this build's own fit outputs say (`fit/stats.tsv`, the exported shapes; "
        "`vox3d.report.card.fit_precision`; spreads in face-model coefficient units):\n\n"
        + "\n".join(lines)
        + "\n\nThe frame spread says how consistently the fit reads one person across "
        "frames (precision), not how close the shapes are to the true faces (accuracy).\n"
    )


def write_card(
    path: str | os.PathLike,
    col: Collected,
    tables: StageTables,
    config: Mapping,
    ground_truth_h5: str | os.PathLike | None = None,
    identities_h5: str | os.PathLike | None = None,
    export_dir: str | os.PathLike | None = None,
    n_boot: int = 1000,
) -> str:
    """Compute what the card needs and write it atomically to `path`; returns the text.

    ground_truth_h5 + identities_h5: the synthetic corpus's truth and the fit (accuracy is
    measured when both are given and the fit is ICT); export_dir: the export folder whose
    files (audio summed, manifests one by one) are listed with their sizes.
    """
    config = with_defaults(config)
    accuracy = None
    synthetic = config.get("videos_dir") in (None, "")
    if ground_truth_h5 and identities_h5 and col.face_model == "ict":
        accuracy = fit_accuracy(
            identities_h5,
            ground_truth_h5,
            face_model_settings(config.get("face_model", {}), config.get("assets", {})),
            vertex_set=str(config["evaluate"]["vertex_set"]),
            n_boot=n_boot,
            seed=int(config["evaluate"]["seed"]),
            are_pairs=str(config["evaluate"]["are_pairs"]),
        )
    files = None
    if export_dir is not None:
        files = _file_sizes(Path(export_dir))
    text = card_markdown(col, tables, config, accuracy, files, git_commit(), synthetic)
    write_text_atomic(path, text)
    return text


def _file_sizes(root: Path) -> dict[str, int]:
    """Sizes of the export's files: every file but the audio and the card itself, and the
    audio folder as one entry (``audio/ (N files)``)."""
    sizes: dict[str, int] = {}
    n_audio = audio_bytes = 0
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.startswith(".") or p.name == CARD_FILE:
            continue
        rel = p.relative_to(root).as_posix()
        if rel.startswith(f"{AUDIO_DIR}/"):
            n_audio += 1
            audio_bytes += p.stat().st_size
        else:
            sizes[rel] = p.stat().st_size
    if n_audio:
        sizes[f"{AUDIO_DIR}/ ({n_audio:,} files)"] = audio_bytes
    return sizes
