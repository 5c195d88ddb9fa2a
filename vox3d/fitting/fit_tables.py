"""The fit's rejects and stats: per shard (:func:`video_rejects`, :func:`shard_stats`:
written into the fit shard by :func:`vox3d.fitting.fit.fit_source` and
:func:`vox3d.fitting.multigpu.fit_shard_multi`) and the stage's aggregate tables over all shards,
``OUT/fit/rejects.tsv`` and ``OUT/fit/stats.tsv`` (:func:`write_fit_tables`, rule
``fit_rejects``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vox3d.fitting.fit_shard import FitShard
from vox3d.fitting.identities import read_identity_rejects
from vox3d.fitting.quality import REASONS, count_reasons
from vox3d.io import write_rejects, write_tsv

STAGE = "fit"


def shard_stats(videos: list, frames_out: dict, rejects: list) -> dict:
    """A fit shard's stats: ``videos``, ``videos_rejected``, ``frames``, ``kept`` and a
    count per reason (:data:`vox3d.fitting.quality.REASONS`)."""
    return {
        "videos": len(videos),
        "videos_rejected": len(rejects),
        "frames": int(len(frames_out["video"])),
        "kept": int(frames_out["keep"].sum()),
        **count_reasons(frames_out["reason"]),
    }


def video_rejects(
    videos: list[dict], frames: dict[str, np.ndarray], read_errors: dict[int, str]
) -> list[dict[str, str]]:
    """One rejects row per video with no kept frame, the reason naming the counts."""
    rows = []
    for vi, v in enumerate(videos):
        path = str(v.get("video", v.get("path", vi)))
        if vi in read_errors:
            rows.append(
                {"path": path, "stage": STAGE, "reason": f"frames unreadable ({read_errors[vi]})"}
            )
            continue
        sel = frames["video"] == vi
        n = int(sel.sum())
        if n == 0:
            rows.append({"path": path, "stage": STAGE, "reason": "no frames to fit"})
            continue
        if frames["keep"][sel].any():
            continue
        counts = count_reasons(frames["reason"][sel])
        parts = ", ".join(
            f"{c} {r.replace('_', ' ')}" for r, c in counts.items() if c and r != "ok"
        )
        rows.append(
            {
                "path": path,
                "stage": STAGE,
                "reason": f"no usable frame: {n} frames rejected ({parts})",
            }
        )
    return rows


# --------------------------------------------------------------------------------------
# aggregate tables

STATS_COLUMNS = ("shard", "videos", "videos_rejected", "frames", "kept", *REASONS[1:])


def write_fit_tables(
    shard_paths: list[str | os.PathLike],
    identities_path: str | os.PathLike | None,
    rejects_out: str | os.PathLike,
    stats_out: str | os.PathLike,
) -> None:
    """``OUT/fit/rejects.tsv`` (every shard's video rejects + identities without a usable
    frame) and ``OUT/fit/stats.tsv`` (one row per shard and a ``total`` row, frames counted
    by reason)."""
    rows, stats = [], []
    for sp in sorted(str(p) for p in shard_paths):
        shard = FitShard.read(sp, fields=())
        rows += [{"path": p, "stage": STAGE, "reason": r} for p, r in shard.rejects]
        stats.append({"shard": Path(sp).stem, **shard.stats})
    if identities_path is not None:
        rows += read_identity_rejects(identities_path)
    total = {"shard": "total"}
    for c in STATS_COLUMNS[1:]:
        total[c] = sum(int(s.get(c, 0)) for s in stats)
    write_rejects(rejects_out, rows)
    write_tsv(stats_out, [*stats, total], STATS_COLUMNS)
