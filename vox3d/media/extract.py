"""Extract stage: per shard, 16 kHz mono audio and frames at ``frame_rate`` into one HDF5 file.

Decoding rules (which samples, which frames, which timestamps) are in :mod:`vox3d.media.video`.
Default decoder: ``pyav``, chosen by measurement. ``bench/extract.py`` on the 17 shared real
clips (103 s of H.264/AAC, VP9/Opus, MPEG-1/MP2, MJPEG/PCM; one decoder thread; this 2-core
machine; HDF5 writing included) extracts at a real-time factor of about 58 per core with
PyAV against about 21 with the ``ffmpeg`` command, 2.8x less CPU: the command pays for an
``ffprobe`` and an ``ffmpeg`` process per video and converts every frame to RGB, not only
the kept ones. (With PyAV, decoding is about half of the time, gzip of the frames the rest.)
The two give identical outputs: frames and timestamps always, audio bit for bit for PCM and
MPEG audio; AAC differs by at most 3e-7 and Opus by a few ms of length, because the ``av``
wheel bundles a newer libavcodec (8.x) than the system ``ffmpeg`` (5.1).

The shard's HDF5 layout, its writer and its reader ``ExtractShard``:
:mod:`vox3d.media.extract_shard`.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from vox3d.config import Settings, default, setting
from vox3d.io import write_rejects, write_tsv
from vox3d.media.extract_shard import ExtractShard, ShardWriter, _float
from vox3d.media.manifest import BAD_NAME, NO_IDENTITY, read_shard
from vox3d.media.video import DECODERS, MIN_DECODED_FRACTION, SAMPLE_RATE, decode
from vox3d.media.video_probe import MediaError

log = logging.getLogger(__name__)

__all__ = ["SAMPLE_RATE", "ExtractSettings", "extract_shard", "aggregate"]


@dataclass(frozen=True)
class ExtractSettings(Settings):
    """The config's ``extract`` section (defaults: config.yaml's)."""

    SECTION = "extract"
    #: The keys that shape an extract shard's content (rule ``extract_shard``'s params, so
    #: that changing a stream-only key does not redo the extraction).
    SHARD_KEYS: ClassVar[tuple[str, ...]] = ("frame_rate", "min_duration", "decoder")

    frame_rate: float = setting("extract.frame_rate")  # sampled frames per second of video
    min_duration: float = setting("extract.min_duration")  # seconds; shorter: rejected
    decoder: str = setting("extract.decoder")  # pyav | ffmpeg
    keep_frames: bool = setting("extract.keep_frames")
    keep_audio: bool = setting("extract.keep_audio")
    hwaccel: str = setting("extract.hwaccel")  # none | cuda
    decode_workers: str = setting("extract.decode_workers")  # auto | threads | processes

    @classmethod
    def shard_params(cls, config: Mapping) -> dict:
        """The :data:`SHARD_KEYS` of a config's ``extract`` section."""
        st = cls.from_config(config)
        return {k: getattr(st, k) for k in cls.SHARD_KEYS}


STAGE = "extract"
#: Reject categories (counted per shard in ``stats.tsv``).
REJECT_CODES = (
    "bad_layout",
    "empty_file",
    "unreadable",
    "no_video",
    "no_audio",
    "too_short",
    "truncated",
    "decode_error",
)
STATS_COLUMNS = ("shard", "videos", "extracted", "rejected", "audio_s", "frames") + tuple(
    f"rejected_{c}" for c in REJECT_CODES
)


# ---------------------------------------------------------------------------------------
# writing one shard
# ---------------------------------------------------------------------------------------


def _code_of_manifest_error(msg: str) -> str:
    if msg.startswith("empty file"):
        return "empty_file"
    if msg == BAD_NAME:  # a tab or line break in the name (the manifest path is escaped)
        return "bad_layout"
    return "unreadable"


def check_row(row: dict[str, str], min_duration: float) -> None:
    """Reject from the manifest's probe alone (no decoding) where possible."""
    if row.get("probe_error"):
        raise MediaError(_code_of_manifest_error(row["probe_error"]), row["probe_error"])
    if row.get("has_video") == "0":
        raise MediaError("no_video", "no video stream (audio only)")
    if row.get("has_audio") == "0":
        raise MediaError("no_audio", "no audio stream (video only)")
    dur = _float(row.get("duration_s"))
    if dur is not None and dur < min_duration:
        raise MediaError("too_short", f"too short: {dur:.2f} s < min_duration {min_duration:.2f} s")
    if not row.get("identity"):
        raise MediaError("bad_layout", NO_IDENTITY)


def check_decoded(row: dict[str, str], dec, min_duration: float) -> None:
    """Reject a decoded video (:class:`vox3d.media.video.Decoded`) that is truncated against its
    manifest duration or has less than `min_duration` s of audio; log a kept partial
    decode.  Raises :class:`MediaError`."""
    dur = _float(row.get("duration_s"))
    fps = _float(row.get("fps")) or 25.0
    span = dec.last_frame_time + 1.0 / fps
    if dur and span < MIN_DECODED_FRACTION * dur:
        why = f" ({dec.extra['error']})" if dec.extra.get("error") else ""
        raise MediaError(
            "truncated",
            f"truncated or damaged: only {span:.2f} s of its {dur:.2f} s could be decoded{why}",
        )
    if dec.extra.get("error"):
        log.warning("%s: kept what decoded: %s", row["path"], dec.extra["error"])
    a_dur = dec.audio.size / SAMPLE_RATE
    if a_dur < min_duration:
        raise MediaError(
            "too_short",
            f"too short: {a_dur:.2f} s of audio < min_duration {min_duration:.2f} s",
        )


def extract_shard(
    shard_tsv: str | os.PathLike,
    videos_dir: str | os.PathLike,
    out_h5: str | os.PathLike,
    frame_rate: float = default("extract.frame_rate"),
    min_duration: float = default("extract.min_duration"),
    decoder: str = default("extract.decoder"),
    threads: int = 1,
    progress: bool = True,
) -> dict[str, int]:
    """Decode every video of a shard into `out_h5` (layout: module docstring), frames
    included (config ``extract.keep_frames: true``; else :func:`vox3d.fitting.stream.stream_shard`).

    Never raises for a bad video: each becomes a row of the file's ``rejects`` group.
    Returns counts ``{"videos", "extracted", "rejected"}``.
    """
    from tqdm import tqdm

    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")
    rows = sorted(read_shard(shard_tsv), key=lambda r: r["path"])
    videos_dir = Path(videos_dir)
    with ShardWriter(out_h5, frame_rate, min_duration, decoder) as w:
        bar = tqdm(rows, desc=f"extract {Path(shard_tsv).stem}", unit="video", disable=not progress)
        for row in bar:
            sink = w.frame_sink()
            try:
                check_row(row, min_duration)
                dec = decode(videos_dir / row["path"], frame_rate, decoder, threads, sink=sink)
                check_decoded(row, dec, min_duration)
            except MediaError as e:
                w.reject(row["path"], e, sink)
                continue
            w.add(row, dec, sink)
    return w.counts(len(rows))


# ---------------------------------------------------------------------------------------
# aggregation
# ---------------------------------------------------------------------------------------


def aggregate(
    shard_h5s: Iterable[str | os.PathLike],
    rejects_tsv: str | os.PathLike,
    stats_tsv: str | os.PathLike,
) -> dict[str, int]:
    """All shards' rejects into one table (``path, stage, reason``) and per-shard counts.

    ``stats.tsv`` has one row per shard (sorted) and a last row ``total``; columns
    :data:`STATS_COLUMNS` (``audio_s`` in seconds, ``frames`` the stored frames).
    """
    rejects, stats = [], []
    total = dict.fromkeys(STATS_COLUMNS[1:], 0)
    total["audio_s"] = 0.0
    for p in sorted(shard_h5s, key=lambda x: Path(x).name):
        with ExtractShard(p) as s:
            rj = s.rejects
            row: dict[str, object] = {
                "shard": Path(p).stem,
                "videos": len(s) + len(rj),
                "extracted": len(s),
                "rejected": len(rj),
                "audio_s": round(sum(v["audio_length"] for v in s.videos) / s.sample_rate, 3),
                "frames": sum(v["frame_count"] for v in s.videos),
            }
            for c in REJECT_CODES:
                row[f"rejected_{c}"] = sum(1 for r in rj if r["code"] == c)
            rejects += [{"path": r["path"], "stage": STAGE, "reason": r["reason"]} for r in rj]
        stats.append(row)
        for k in total:
            total[k] += row[k]
    total["audio_s"] = round(total["audio_s"], 3)
    write_rejects(rejects_tsv, rejects)
    write_tsv(stats_tsv, stats + [{"shard": "total", **total}], STATS_COLUMNS)
    return {k: int(v) for k, v in total.items() if k != "audio_s"}


def cli(argv: Sequence[str]) -> int:
    """``vox3d extract SHARD.tsv --videos-dir DIR --out OUT.h5 [options]``."""
    ap = argparse.ArgumentParser(prog="vox3d extract", description=__doc__.splitlines()[0])
    ap.add_argument("shard_tsv", help="a shard of the manifest (OUT/shards/shard-NNNNN.tsv)")
    ap.add_argument("--videos-dir", required=True, help="root the manifest paths are relative to")
    ap.add_argument("--out", required=True, help="output HDF5 file")
    ap.add_argument("--frame-rate", type=float, default=ExtractSettings.frame_rate)
    ap.add_argument("--min-duration", type=float, default=ExtractSettings.min_duration)
    ap.add_argument("--decoder", choices=DECODERS, default=ExtractSettings.decoder)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(list(argv))
    res = extract_shard(
        a.shard_tsv, a.videos_dir, a.out, a.frame_rate, a.min_duration, a.decoder, a.threads
    )
    print(
        f"{res['extracted']} of {res['videos']} videos extracted, {res['rejected']} rejected -> {a.out}"
    )
    return 0
