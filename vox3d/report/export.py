"""Export the finished Voxceleb-3D: lhotse manifests, Hugging Face parquet tables, audio files.

Layout of the export folder (``OUT/voxceleb3d/`` in the workflow; ``vox3d export
--format {lhotse,hf} OUT_DIR [--dest DIR]`` on the command line)::

    audio/<identity>/<youtube-id>/<utt>.wav    the extract stage's audio, one file per utterance
    lhotse/recordings.jsonl.gz                 lhotse RecordingSet
    lhotse/supervisions.jsonl.gz               lhotse SupervisionSet (speaker = identity, shape)
    lhotse/cuts.jsonl.gz                       lhotse CutSet (one MonoCut per utterance)
    hf/utterances.parquet                      one row per utterance (``datasets``-loadable)
    hf/identities.parquet                      one row per identity
    rejects.tsv                                utterances not exported by this stage (path, stage, reason)
    README.md                                  the dataset card (:mod:`vox3d.report.card`)

**What is exported.**  One row per utterance (one mp4 of the manifest) that the extract
stage extracted, that the features stage kept (enough voiced, unclipped audio), and whose
identity has a fitted 3D shape in ``OUT/fit/identities.h5``.  An utterance whose identity
has no shape (every frame of every video of that identity failed the fit filters, so
``fit_identities`` rejected it) is *not* exported: it would be a voice without a face.  It
becomes a row of the export's ``rejects.tsv`` (stage ``export``) and is counted in the card.
Videos that the fit stage rejected (no usable frame) keep their audio in the export as long
as their identity has a shape from its other videos: the shape belongs to the identity.

**Audio.**  ``audio`` (config ``export.audio``) chooses how the 16 kHz mono float32 audio of
the extract stage is stored:

* ``wav`` (default): IEEE-float 32-bit WAV, a bit-exact copy (64 kB per second of audio);
  loading it gives exactly the samples the features stage saw.
* ``flac``: 24-bit FLAC, about half the size (53.1% on the default corpus,
  ``bench/results/cpu_export.txt``), every sample within 2**-23 (1.2e-7) of the extracted
  one: half a 24-bit step (2**-24) except at +1.0 full scale, which 24-bit PCM cannot hold.

Pointing lhotse at the source videos instead (its ``AudioSource`` of type ``file`` on the
mp4) writes nothing, but lhotse then decodes them itself, and measured on the default
corpus that gives other samples: 512 more per clip (the AAC end padding that extract cuts
to the stream's declared duration), 16-bit quantised (max difference 1.5e-5), and its own
resampler and down-mix for sources that are not 16 kHz mono.  The exported voices would no
longer be the ones the features (and the model) were computed from, so it is not offered.

Paths in every manifest (lhotse sources, ``audio_path``) are relative to the export
folder, so the folder can be moved and two exports of the same inputs are byte-identical
wherever they are written.  Load lhotse manifests with
``RecordingSet.from_file(p).with_path_prefix(root)`` (or
:func:`vox3d.report.export_formats.load_lhotse`).

**Determinism.**  Rows are sorted by utterance id; gzip streams carry no name and mtime 0;
parquet is written with the fixed settings of :data:`vox3d.report.export_formats.PARQUET_SETTINGS`
by the pinned pyarrow; WAV headers are written by hand
(:func:`vox3d.report.export_formats.wav_float32_bytes`: libsndfile's float WAV has a PEAK chunk
with a timestamp).  Every file is written atomically (:mod:`vox3d.io`).

**Modules.**  This one reads the stage outputs and joins them into the export's rows
(:func:`collect`) and runs the export (:func:`export`, :func:`cli`); the folder's names,
the tables' columns and the rows (:class:`vox3d.report.export_layout.Collected`) are
:mod:`vox3d.report.export_layout`; the writers of the audio files, manifests, tables and rejects
table are :mod:`vox3d.report.export_formats`.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vox3d.audio.features import read_index
from vox3d.config import default
from vox3d.fitting.fit_shard import FitShard, FitShardError
from vox3d.fitting.identities import IdentitiesFile, IdentitiesFileError
from vox3d.io import read_tsv
from vox3d.media.extract_shard import ExtractShard
from vox3d.media.split import IdentityMeta, split_identities
from vox3d.report.export_formats import write_audio, write_hf, write_lhotse, write_rejects
from vox3d.report.export_layout import (
    AUDIO_FORMATS,
    EXPORT_DIR,
    REJECTS_FILE,
    Collected,
    ExportError,
    audio_relpath,
    utterance_id,
)

STAGE = "export"
FORMATS = ("lhotse", "hf")
#: Reason written to the export's rejects table for an utterance whose identity has no shape.
NO_SHAPE = "identity {identity} has no fitted 3D shape (see fit/rejects.tsv); voice not exported"


# --------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class StageInputs:
    """The workflow outputs the export reads (all paths).

    manifest: ``OUT/manifest.tsv``; extract/fit/features: per-shard HDF5 files (same shard
    names); identities: ``OUT/fit/identities.h5``; features_rejects: ``OUT/features/rejects.tsv``.
    """

    manifest: Path
    extract: tuple[Path, ...]
    fit: tuple[Path, ...]
    features: tuple[Path, ...]
    identities: Path
    features_rejects: Path

    @classmethod
    def from_out_dir(cls, out_dir: str | os.PathLike) -> StageInputs:
        """The standard layout under `out_dir`; raises :class:`ExportError` naming what is
        missing."""
        out = Path(out_dir)
        if not out.is_dir():
            raise ExportError(f"{out}: not a folder (expected a vox3d out_dir)")
        extract = tuple(sorted(Path(p) for p in glob.glob(str(out / "extract" / "shard-*.h5"))))
        if not extract:
            raise ExportError(
                f"{out / 'extract'}: no extract shards (shard-*.h5); run the workflow first"
            )
        return cls(
            manifest=out / "manifest.tsv",
            extract=extract,
            fit=tuple(out / "fit" / p.name for p in extract),
            features=tuple(out / "features" / p.name for p in extract),
            identities=out / "fit" / "identities.h5",
            features_rejects=out / "features" / "rejects.tsv",
        )

    def check(self) -> None:
        """Raise :class:`ExportError` naming the first missing input file."""
        files = [self.manifest, self.identities, self.features_rejects]
        files += [*self.extract, *self.fit, *self.features]
        for p in files:
            if not Path(p).is_file():
                raise ExportError(f"{p}: missing input of the export (run the workflow up to it)")
        names = [[Path(p).name for p in group] for group in (self.extract, self.fit, self.features)]
        if not names[0] == names[1] == names[2]:
            raise ExportError(
                f"extract, fit and features shards differ: {names[0]} / {names[1]} / {names[2]}"
            )


def _gender(g: str | None) -> str | None:
    """``m`` / ``f`` from metadata text (``m``, ``male``, ``F`` ...); None when unknown."""
    g = (g or "").strip().lower()[:1]
    return g if g in ("m", "f") else None


@dataclass(frozen=True)
class IdentityShape:
    """One identity's row of ``identities.h5``: shape and spread (K,) float32 in the face
    model's coefficient units (ICT: 1.0 = the shipped identity mode), frame/video counts."""

    shape: np.ndarray
    spread: np.ndarray
    n_frames: int
    n_videos: int
    n_outliers: int


def read_identity_shapes(path: str | os.PathLike) -> tuple[dict[str, IdentityShape], dict]:
    """``identities.h5`` -> ``({identity: IdentityShape}, {"face_model", "n_id", "rejects"})``
    (:class:`vox3d.fitting.identities.IdentitiesFile`; ExportError naming the file)."""
    try:
        f = IdentitiesFile.read(path)
    except IdentitiesFileError as e:
        raise ExportError(str(e)) from e
    if f.missing:
        raise ExportError(f"{path}: not a vox3d identities file (no {', '.join(f.missing)})")
    info = {"face_model": f.face_model, "n_id": f.n_id, "rejects": [p for p, _ in f.rejects]}
    out = {
        i: IdentityShape(
            f.shape[j], f.spread[j], int(f.n_frames[j]), int(f.n_videos[j]), int(f.n_outliers[j])
        )
        for j, i in enumerate(f.ids)
    }
    return out, info


def _read_manifest(path: Path) -> dict[str, dict[str, str]]:
    try:
        rows = read_tsv(path)
    except FileNotFoundError as e:
        raise ExportError(f"{path}: missing input of the export") from e
    if rows and "path" not in rows[0]:
        raise ExportError(f"{path}: not a vox3d manifest (no 'path' column)")
    return {r["path"]: r for r in rows}


# --------------------------------------------------------------------------------------
# the rows


def _shape_fields(s) -> dict:
    """The per-identity shape columns of a row (the robust shape of identities.h5)."""
    return {
        "shape": s.shape,
        "shape_spread": s.spread,
        "shape_n_frames": s.n_frames,
        "shape_n_videos": s.n_videos,
        "shape_n_outliers": s.n_outliers,
    }


def collect(
    inputs: StageInputs,
    split_method: str = "auto",
    val_fraction: float = default("train.val_fraction"),
    audio_format: str = "wav",
) -> Collected:
    """Join the stage outputs into the export's rows (see the module doc for what is kept).

    The split is :func:`vox3d.media.split.split_identities` (config ``train.split`` /
    ``train.val_fraction``) over the exported identities, which are exactly the identities
    the train stage uses (a fitted shape and at least one utterance with features), so it
    equals ``train/split.tsv``.
    """
    if audio_format not in AUDIO_FORMATS:
        raise ValueError(f"unknown audio format {audio_format!r}; choose one of {AUDIO_FORMATS}")
    inputs.check()
    manifest = _read_manifest(Path(inputs.manifest))
    shapes, info = read_identity_shapes(inputs.identities)
    try:
        feat_rejects = {r["path"]: r["reason"] for r in read_tsv(inputs.features_rejects)}
    except KeyError as e:
        raise ExportError(f"{inputs.features_rejects}: not a rejects table ({e})") from e
    col = Collected(face_model=info["face_model"], n_id=info["n_id"], audio_format=audio_format)
    rows: list[dict] = []
    for ex_p, fit_p, ft_p in zip(inputs.extract, inputs.fit, inputs.features, strict=True):
        try:
            with ExtractShard(ex_p) as es:
                sr, vids = es.sample_rate, list(es.videos)
        except (OSError, ValueError, KeyError) as e:
            raise ExportError(f"{ex_p}: not a vox3d extract shard ({e})") from e
        videos = [v["video"] for v in vids]
        idents = [v["identity"] for v in vids]
        lengths = [v["audio_length"] for v in vids]
        nframes = [v["frame_count"] for v in vids]
        col.sample_rate = sr
        try:
            fs = FitShard.read(fit_p, fields=())
        except FitShardError as e:
            raise ExportError(str(e)) from e
        kept = dict(zip(fs.video_paths, fs.n_kept, strict=True))
        try:
            voiced = set(read_index(ft_p)["video"])
        except (OSError, ValueError, KeyError) as e:
            raise ExportError(f"{ft_p}: not a vox3d feature shard ({e})") from e
        for i, (video, ident) in enumerate(zip(videos, idents, strict=True)):
            if video not in kept:
                raise ExportError(f"{fit_p}: has no row for {video} of {ex_p} (stale fit shard?)")
            if video in feat_rejects:
                col.feature_rejected.append(video)
                continue
            if video not in voiced:
                raise ExportError(
                    f"{ft_p}: {video} of {ex_p} is neither in the features nor in "
                    f"{inputs.features_rejects} (stale feature shard?)"
                )
            if ident not in shapes:
                col.rejects.append(
                    {"path": video, "stage": STAGE, "reason": NO_SHAPE.format(identity=ident)}
                )
                continue
            m = manifest.get(video)
            if m is None:
                raise ExportError(f"{inputs.manifest}: has no row for {video} of {ex_p}")
            s = shapes[ident]
            rows.append(
                {
                    "utterance_id": utterance_id(video),
                    "identity": ident,
                    "youtube_id": m.get("youtube_id", ""),
                    "utterance": m.get("utterance", ""),
                    "gender": _gender(m.get("gender")),
                    "split": "",
                    "duration_s": float(lengths[i]) / sr,
                    "num_samples": int(lengths[i]),
                    "sample_rate": sr,
                    "audio_path": audio_relpath(video, audio_format),
                    "source_video": video,
                    "frames_extracted": int(nframes[i]),
                    "frames_kept": int(kept[video]),
                    "face_model": info["face_model"],
                    **_shape_fields(s),
                    "_shard": str(ex_p),
                    "_index": i,
                    "_meta": m,
                }
            )
    rows.sort(key=lambda r: r["utterance_id"])
    dup = [k for k, n in Counter(r["utterance_id"] for r in rows).items() if n > 1]
    if dup:
        raise ExportError(f"utterance ids occur in several shards: {dup[:5]}")
    meta: dict[str, IdentityMeta] = {}
    for r in rows:
        m = r["_meta"]
        meta.setdefault(
            r["identity"],
            IdentityMeta(
                identity=r["identity"],
                name=m.get("name", ""),
                gender=r["gender"] or "",
                nationality=m.get("nationality", ""),
                set=m.get("set", ""),
            ),  # fmt: skip
        )
    train, val, how = split_identities(sorted(meta), meta, split_method, val_fraction)
    side = {**dict.fromkeys(train, "train"), **dict.fromkeys(val, "val")}
    for r in rows:
        r["split"] = side[r["identity"]]
    col.split_method = how
    col.utterances = rows
    col.rejects.sort(key=lambda r: r["path"])
    col.feature_rejected.sort()
    by_id: dict[str, list[dict]] = {}
    for r in rows:
        by_id.setdefault(r["identity"], []).append(r)
    for ident in sorted(by_id):
        rs, m, s = by_id[ident], meta[ident], shapes[ident]
        col.identities.append(
            {
                "identity": ident,
                "name": m.name,
                "gender": m.gender or None,
                "nationality": m.nationality,
                "vox1_set": m.set,
                "split": side[ident],
                "n_utterances": len(rs),
                "n_youtube_ids": len({r["youtube_id"] for r in rs}),
                "duration_s": float(sum(r["num_samples"] for r in rs)) / col.sample_rate,
                "face_model": info["face_model"],
                **_shape_fields(s),
            }
        )
    return col


# --------------------------------------------------------------------------------------
# one call, and the CLI


def export(
    out_dir: str | os.PathLike,
    formats: Sequence[str] = FORMATS,
    dest: str | os.PathLike | None = None,
    audio_format: str = "wav",
    split_method: str = "auto",
    val_fraction: float = default("train.val_fraction"),
    write_audio_files: bool = True,
    videos_dir: str | os.PathLike | None = None,
) -> dict:
    """Export the workflow outputs under `out_dir` into `dest` (default
    ``out_dir/voxceleb3d``): the audio, the manifests of each of `formats` and the
    rejects table.  Returns a summary (counts, files, audio bytes).  `videos_dir`: where
    the videos are, for extract shards that keep no audio (default: the embedded corpus's
    ``out_dir/synthetic/videos``)."""
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r}; choose from {FORMATS}")
    dest = Path(dest) if dest is not None else Path(out_dir) / EXPORT_DIR
    col = collect(StageInputs.from_out_dir(out_dir), split_method, val_fraction, audio_format)
    summary: dict = {
        "utterances": len(col.utterances),
        "identities": len(col.identities),
        "not_exported": len(col.rejects),
        "files": [],
    }
    if write_audio_files:
        if videos_dir is None:
            videos_dir = Path(out_dir) / "synthetic" / "videos"
        summary["audio"] = write_audio(col, dest, videos_dir)
    if "lhotse" in formats:
        summary["files"] += [str(p) for p in write_lhotse(col, dest)]
    if "hf" in formats:
        summary["files"] += [str(p) for p in write_hf(col, dest)]
    summary["files"].append(str(write_rejects(col, dest)))
    return summary


def cli(argv: Sequence[str]) -> int:
    """``vox3d export --format {lhotse,hf} OUT_DIR [--dest DIR] [--audio {wav,flac}]
    [--videos-dir DIR]``."""
    ap = argparse.ArgumentParser(prog="vox3d export", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", help="a finished workflow's out_dir")
    ap.add_argument("--format", choices=FORMATS, action="append", required=True,
                    help="lhotse manifests or Hugging Face parquet (repeat for both)")  # fmt: skip
    ap.add_argument("--dest", default=None, help=f"export folder (default OUT_DIR/{EXPORT_DIR})")
    ap.add_argument("--audio", choices=AUDIO_FORMATS, default=default("export.audio"),
                    help="wav: float32, bit-exact; flac: 24-bit, about half the size "
                    "(default: config export.audio)")  # fmt: skip
    ap.add_argument("--split", choices=("auto", "names", "hash"), default=default("train.split"),
                    help="identity split rule (default: config train.split)")  # fmt: skip
    ap.add_argument("--val-fraction", type=float, default=default("train.val_fraction"),
                    help="default: config train.val_fraction")  # fmt: skip
    ap.add_argument("--videos-dir", default=None,
                    help="the workflow's videos_dir, to decode audio its extract shards do not "
                    "keep (default: OUT_DIR/synthetic/videos)")  # fmt: skip
    a = ap.parse_args(list(argv))
    try:
        s = export(
            a.out_dir, sorted(set(a.format)), a.dest, a.audio, a.split, a.val_fraction,
            videos_dir=a.videos_dir,
        )  # fmt: skip
    except ExportError as e:
        print(f"vox3d export: {e}", file=sys.stderr)
        return 1
    print(
        f"{s['utterances']} utterances of {s['identities']} identities exported "
        f"({s['not_exported']} not exported, see {REJECTS_FILE}); audio: "
        f"{s['audio']['written']} written, {s['audio']['unchanged']} unchanged, "
        f"{s['audio']['bytes'] / 1e6:.1f} MB"
    )
    for p in s["files"]:
        print(p)
    return 0
