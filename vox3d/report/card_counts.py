"""What the dataset card (:mod:`vox3d.report.card`) counts: the per-stage tables it reads
(:class:`StageTables`), the export's contents per subset (:func:`counts`) and every filter
of every stage with its rejects counted by reason, beside the build's thresholds.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vox3d.io import read_tsv
from vox3d.report.export_layout import Collected, ExportError

# --------------------------------------------------------------------------------------
# stage tables


@dataclass(frozen=True)
class StageTables:
    """The per-stage tables the card counts (paths; all written by the workflow)."""

    extract_stats: Path
    extract_rejects: Path
    fit_stats: Path
    fit_rejects: Path
    features_rejects: Path

    @classmethod
    def from_out_dir(cls, out_dir: str | os.PathLike) -> StageTables:
        o = Path(out_dir)
        return cls(
            o / "extract" / "stats.tsv",
            o / "extract" / "rejects.tsv",
            o / "fit" / "stats.tsv",
            o / "fit" / "rejects.tsv",
            o / "features" / "rejects.tsv",
        )


def _table(path: Path) -> list[dict[str, str]]:
    try:
        return read_tsv(path)
    except FileNotFoundError as e:
        raise ExportError(f"{path}: missing input of the dataset card") from e


def _total(path: Path) -> dict[str, str]:
    rows = _table(path)
    tot = [r for r in rows if r.get("shard") == "total"]
    if not tot:
        raise ExportError(f"{path}: no 'total' row (not a vox3d stats table)")
    return tot[0]


def reason_kind(reason: str) -> str:
    """The general part of a rejects reason: ``"no usable frame: 20 frames rejected
    (...)"`` -> ``"no usable frame"`` (the same grouping as the report's figure)."""
    return reason.split(":")[0].split("(")[0].strip()


def _count_reasons(rows: Sequence[Mapping[str, str]]) -> list[tuple[str, int]]:
    c = Counter(reason_kind(r.get("reason", "")) for r in rows)
    return sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))


# --------------------------------------------------------------------------------------
# counts


def counts(utterances: Sequence[Mapping]) -> dict[str, int | float]:
    """Identities, videos (distinct identity + YouTube id), utterances, hours of audio,
    frames extracted and frames kept by the fit, of `utterances` (export rows)."""
    return {
        "identities": len({u["identity"] for u in utterances}),
        "videos": len({(u["identity"], u["youtube_id"]) for u in utterances}),
        "utterances": len(utterances),
        "hours": sum(u["num_samples"] / u["sample_rate"] for u in utterances) / 3600.0,
        "frames": sum(int(u["frames_extracted"]) for u in utterances),
        "frames_kept": sum(int(u["frames_kept"]) for u in utterances),
    }


def _counts_table(col: Collected) -> str:
    groups: list[tuple[str, list]] = [("all", col.utterances)]
    for side in ("train", "val"):
        groups.append((f"split {side}", [u for u in col.utterances if u["split"] == side]))
    for g, label in (("m", "male"), ("f", "female"), (None, "gender unknown")):
        groups.append((label, [u for u in col.utterances if u["gender"] == g]))
    lines = [
        "| subset | identities | videos | utterances | hours of audio | frames | frames kept by fit |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, us in groups:
        c = counts(us)
        lines.append(
            f"| {name} | {c['identities']:,} | {c['videos']:,} | {c['utterances']:,} | "
            f"{c['hours']:.3f} | {c['frames']:,} | {c['frames_kept']:,} |"
        )
    return "\n".join(lines)


def _filters_section(col: Collected, tables: StageTables) -> str:
    ex = _total(tables.extract_stats)
    fit = _total(tables.fit_stats)
    fit_rej = _table(tables.fit_rejects)
    feat_rej = _table(tables.features_rejects)
    id_rej = [
        r for r in fit_rej if r["path"].count("/") == 0 and r["reason"].startswith("identity ")
    ]
    vid_rej = [r for r in fit_rej if r not in id_rej]
    out = ["| stage | filter | input | rejected |", "|---|---|---|---:|"]
    codes = [k for k in ex if k.startswith("rejected_")]
    out.append(
        f"| extract | (all reasons) | {int(ex['videos']):,} videos | {int(ex['rejected']):,} |"
    )
    for k in codes:
        out.append(f"| extract | {k[len('rejected_') :].replace('_', ' ')} | | {int(ex[k]):,} |")
    skip = {"shard", "videos", "videos_rejected", "frames", "kept"}
    out.append(
        f"| fit (frames) | (all reasons) | {int(fit['frames']):,} frames | "
        f"{int(fit['frames']) - int(fit['kept']):,} |"
    )
    for k in [k for k in fit if k not in skip]:
        out.append(f"| fit (frames) | {k.replace('_', ' ')} | | {int(fit[k]):,} |")
    out.append(
        f"| fit (videos) | no kept frame (the voice stays if the identity has a shape) | "
        f"{int(fit['videos']):,} videos | {len(vid_rej):,} |"
    )
    for reason, n in _count_reasons(vid_rej):
        out.append(f"| fit (videos) | {reason} | | {n:,} |")
    out.append(f"| fit (identities) | no usable frame in any video | | {len(id_rej):,} |")
    n_voice = len(col.utterances) + len(col.rejects) + len(feat_rej)
    out.append(f"| features | (all reasons) | {n_voice:,} utterances | {len(feat_rej):,} |")
    for reason, n in _count_reasons(feat_rej):
        out.append(f"| features | {reason} | | {n:,} |")
    out.append(
        f"| export | identity has no fitted 3D shape | "
        f"{len(col.utterances) + len(col.rejects):,} utterances | {len(col.rejects):,} |"
    )
    return "\n".join(out)


def _settings(config: Mapping) -> str:
    ex, fit, feat = (dict(config.get(k, {})) for k in ("extract", "fit", "features"))
    return "\n".join(
        [
            f"- extract: `min_duration` {ex.get('min_duration')} s",
            f"- fit: `min_score` {fit.get('min_score')}, `min_face_px` {fit.get('min_face_px')}, "
            f"`max_yaw_deg` {fit.get('max_yaw_deg')}, `min_blur` {fit.get('min_blur')}, "
            f"`face_margin` {fit.get('face_margin')}, `landmarks` {fit.get('landmarks')}, "
            f"`identity_min_frames` {fit.get('identity_min_frames')}",
            f"- features: `min_voiced_s` {feat.get('min_voiced_s')} s, `max_clipped` "
            f"{feat.get('max_clipped')}",
        ]
    )
