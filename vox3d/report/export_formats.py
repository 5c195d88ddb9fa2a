"""The exported Voxceleb-3D's files (:mod:`vox3d.report.export`): the audio files (IEEE-float WAV or
24-bit FLAC), the lhotse manifests, the Hugging Face parquet tables and the rejects table,
each written from the export's rows (:class:`vox3d.report.export_layout.Collected`).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from vox3d.io import write_bytes_atomic
from vox3d.io import write_rejects as _write
from vox3d.media.extract_shard import ExtractShard
from vox3d.report.export_layout import (
    AUDIO_DIR,
    AUDIO_FORMATS,
    HF_FILES,
    IDENTITY_COLUMNS,
    LHOTSE_FILES,
    REJECTS_FILE,
    UTTERANCE_COLUMNS,
    Collected,
    ExportError,
)

#: Fixed pyarrow.parquet.write_table settings (same table, same pyarrow -> same bytes).
PARQUET_SETTINGS: dict[str, object] = {
    "version": "2.6",
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "data_page_version": "1.0",
    "row_group_size": 65536,
    "store_schema": True,
}


# --------------------------------------------------------------------------------------
# audio


def wav_float32_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """A mono IEEE-float 32-bit WAV file (``fmt`` with format tag 3, ``fact``, ``data``)
    of `audio` ``(S,)`` float32, written here so the bytes depend only on the samples."""
    a = np.ascontiguousarray(audio, dtype="<f4").reshape(-1)
    data = a.tobytes()
    fmt = struct.pack("<HHIIHHH", 3, 1, sample_rate, sample_rate * 4, 4, 32, 0)
    fact = struct.pack("<I", a.size)
    body = (
        b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"fact" + struct.pack("<I", len(fact)) + fact
        + b"data" + struct.pack("<I", len(data)) + data
    )  # fmt: skip
    if len(body) + 8 > 0xFFFFFFFF:
        raise ValueError(f"audio too long for a WAV file ({a.size} samples)")
    return b"RIFF" + struct.pack("<I", len(body)) + body


def flac24_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """24-bit mono FLAC of `audio` ``(S,)`` float32 in [-1, 1] (libsndfile, no metadata
    besides the encoder's vendor string)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, np.float32), sample_rate, format="FLAC", subtype="PCM_24")
    return buf.getvalue()


def encode_audio(audio: np.ndarray, sample_rate: int, audio_format: str) -> bytes:
    """The file bytes of one utterance in `audio_format` (``wav`` | ``flac``)."""
    if audio_format == "wav":
        return wav_float32_bytes(audio, sample_rate)
    if audio_format == "flac":
        return flac24_bytes(audio, sample_rate)
    raise ValueError(f"unknown audio format {audio_format!r}; choose one of {AUDIO_FORMATS}")


def write_audio(
    col: Collected, dest: str | os.PathLike, videos_dir: str | os.PathLike | None = None
) -> dict[str, int]:
    """Write every exported utterance's audio under ``dest/audio/`` (atomically; a file that
    already has the right bytes is left alone).  Returns ``{"written", "unchanged", "bytes"}``.

    The audio is the extract shard's; a shard that keeps none (``extract.keep_audio:
    false``) has it decoded again from ``videos_dir`` (the same samples,
    :meth:`vox3d.media.extract_shard.ExtractShard.video_audio`)."""
    dest = Path(dest)
    (dest / AUDIO_DIR).mkdir(parents=True, exist_ok=True)  # exists even with nothing to export
    by_shard: dict[str, list[dict]] = {}
    for r in col.utterances:
        by_shard.setdefault(r["_shard"], []).append(r)
    res = {"written": 0, "unchanged": 0, "bytes": 0}
    for shard in sorted(by_shard):
        try:
            sh = ExtractShard(shard)
        except (OSError, ValueError) as e:
            raise ExportError(str(e)) from e
        with sh:
            for r in by_shard[shard]:
                try:
                    a = sh.video_audio(r["_index"], videos_dir)
                except (OSError, ValueError) as e:
                    raise ExportError(str(e)) from e
                if a.size != r["num_samples"]:
                    raise ExportError(f"{shard}: {r['source_video']} audio length changed")
                data = encode_audio(a, col.sample_rate, col.audio_format)
                target = dest / r["audio_path"]
                res["bytes"] += len(data)
                if (
                    target.is_file()
                    and target.stat().st_size == len(data)
                    and target.read_bytes() == data
                ):
                    res["unchanged"] += 1
                    continue
                write_bytes_atomic(target, data)
                res["written"] += 1
    return res


# --------------------------------------------------------------------------------------
# lhotse


def _floats(a: np.ndarray) -> list[float]:
    """float32 values as Python floats (exact; JSON round-trips them bit for bit)."""
    return [float(x) for x in np.asarray(a, np.float32)]


def lhotse_dicts(col: Collected) -> tuple[list[dict], list[dict], list[dict]]:
    """``(recordings, supervisions, cuts)`` as lhotse's own ``to_dict()`` gives them.

    Recording: id = utterance id, one ``file`` source (the audio file, relative path),
    16 kHz, mono.  Supervision: the whole recording; ``speaker`` = identity, ``gender``;
    ``custom``: ``youtube_id``, ``split``, ``face_model``, ``shape`` and ``shape_spread``
    (lists of K floats, the float32 values of identities.h5), ``shape_n_frames``,
    ``shape_n_videos``, ``shape_n_outliers``, ``frames_kept``.  Cut: one MonoCut each
    (``<utterance id>-0``, lhotse's id for a cut of a whole recording).
    """
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
    from lhotse.audio import AudioSource

    recs, sups = [], []
    for r in col.utterances:
        rec = Recording(
            id=r["utterance_id"],
            sources=[AudioSource(type="file", channels=[0], source=r["audio_path"])],
            sampling_rate=r["sample_rate"],
            num_samples=r["num_samples"],
            duration=r["duration_s"],
        )
        sup = SupervisionSegment(
            id=r["utterance_id"],
            recording_id=r["utterance_id"],
            start=0.0,
            duration=r["duration_s"],
            channel=0,
            speaker=r["identity"],
            gender=r["gender"],
            custom={
                "youtube_id": r["youtube_id"],
                "split": r["split"],
                "face_model": r["face_model"],
                "shape": _floats(r["shape"]),
                "shape_spread": _floats(r["shape_spread"]),
                "shape_n_frames": r["shape_n_frames"],
                "shape_n_videos": r["shape_n_videos"],
                "shape_n_outliers": r["shape_n_outliers"],
                "frames_kept": r["frames_kept"],
            },
        )
        recs.append(rec)
        sups.append(sup)
    cuts = CutSet.from_manifests(
        recordings=RecordingSet.from_recordings(recs),
        supervisions=SupervisionSet.from_segments(sups),
    )
    cut_dicts = sorted((c.to_dict() for c in cuts), key=lambda d: d["id"])
    return [x.to_dict() for x in recs], [x.to_dict() for x in sups], cut_dicts


def jsonl_gz_bytes(items: Iterable[Mapping]) -> bytes:
    """JSON lines (lhotse's serialisation: ``json.dumps(item, ensure_ascii=False)``),
    gzip-compressed with no file name and mtime 0, so equal items give equal bytes."""
    text = "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(text.encode("utf-8"))
    return buf.getvalue()


def write_lhotse(col: Collected, dest: str | os.PathLike) -> list[Path]:
    """Write :data:`LHOTSE_FILES` under `dest`; returns their paths."""
    dest = Path(dest)
    paths = []
    for rel, items in zip(LHOTSE_FILES, lhotse_dicts(col), strict=True):
        write_bytes_atomic(dest / rel, jsonl_gz_bytes(items))
        paths.append(dest / rel)
    return paths


def load_lhotse(root: str | os.PathLike):
    """``(RecordingSet, SupervisionSet, CutSet)`` of an export folder, audio paths resolved
    against `root` (lhotse's ``with_path_prefix``)."""
    from lhotse import CutSet, RecordingSet, SupervisionSet

    root = Path(root)
    recs = RecordingSet.from_file(root / LHOTSE_FILES[0]).with_path_prefix(root)
    sups = SupervisionSet.from_file(root / LHOTSE_FILES[1])
    cuts = CutSet.from_file(root / LHOTSE_FILES[2]).with_recording_path_prefix(root)
    return recs, sups, cuts


# --------------------------------------------------------------------------------------
# Hugging Face (parquet)


def _schemas():
    import pyarrow as pa

    vec = pa.list_(pa.float32())
    types = {
        "utterance_id": pa.string(), "identity": pa.string(), "youtube_id": pa.string(),
        "utterance": pa.string(), "gender": pa.string(), "split": pa.string(),
        "duration_s": pa.float64(), "num_samples": pa.int64(), "sample_rate": pa.int32(),
        "audio_path": pa.string(), "source_video": pa.string(),
        "frames_extracted": pa.int64(), "frames_kept": pa.int64(), "face_model": pa.string(),
        "shape": vec, "shape_spread": vec, "shape_n_frames": pa.int64(),
        "shape_n_videos": pa.int64(), "shape_n_outliers": pa.int64(),
        "name": pa.string(), "nationality": pa.string(), "vox1_set": pa.string(),
        "n_utterances": pa.int64(), "n_youtube_ids": pa.int64(),
    }  # fmt: skip
    utt = pa.schema([(c, types[c]) for c in UTTERANCE_COLUMNS])
    ident = pa.schema([(c, types[c]) for c in IDENTITY_COLUMNS])
    return utt, ident


def _table(rows: Sequence[Mapping], schema):
    import pyarrow as pa

    cols = {}
    for f in schema:
        vals = [r[f.name] for r in rows]
        if pa.types.is_list(f.type):
            vals = [np.asarray(v, np.float32) for v in vals]
        cols[f.name] = pa.array(vals, type=f.type)
    return pa.Table.from_pydict(cols, schema=schema)


def parquet_bytes(table) -> bytes:
    """`table` as parquet with :data:`PARQUET_SETTINGS`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_SETTINGS)
    return sink.getvalue().to_pybytes()


def write_hf(col: Collected, dest: str | os.PathLike) -> list[Path]:
    """Write :data:`HF_FILES` under `dest`; returns their paths."""
    dest = Path(dest)
    utt_schema, id_schema = _schemas()
    out = []
    for rel, rows, schema in zip(
        HF_FILES, (col.utterances, col.identities), (utt_schema, id_schema), strict=True
    ):
        write_bytes_atomic(dest / rel, parquet_bytes(_table(rows, schema)))
        out.append(dest / rel)
    return out


def write_rejects(col: Collected, dest: str | os.PathLike) -> Path:
    """The export's rejects table (``path, stage, reason``) at ``dest/rejects.tsv``."""
    _write(Path(dest) / REJECTS_FILE, col.rejects)
    return Path(dest) / REJECTS_FILE
