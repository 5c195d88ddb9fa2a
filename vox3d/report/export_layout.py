"""The exported Voxceleb-3D's layout and rows (:mod:`vox3d.report.export`): the export folder's
file names, the columns of its tables, the rows every writer writes (:class:`Collected`,
built by :func:`vox3d.report.export.collect`) and :class:`ExportError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from vox3d.audio.features import utterance_id as _uid

#: Export folder name under ``out_dir`` (the workflow writes ``OUT/voxceleb3d/``).
EXPORT_DIR = "voxceleb3d"
AUDIO_FORMATS = ("wav", "flac")
AUDIO_EXT = {"wav": ".wav", "flac": ".flac"}
#: lhotse manifest files (relative to the export folder).
LHOTSE_FILES = (
    "lhotse/recordings.jsonl.gz",
    "lhotse/supervisions.jsonl.gz",
    "lhotse/cuts.jsonl.gz",
)
#: Hugging Face parquet files (relative to the export folder).
HF_FILES = ("hf/utterances.parquet", "hf/identities.parquet")
#: The utterances not exported (path, stage, reason), relative to the export folder.
REJECTS_FILE = "rejects.tsv"
#: Folder of the exported audio files (relative to the export folder).
AUDIO_DIR = "audio"
#: The dataset card (:mod:`vox3d.report.card`), relative to the export folder.
CARD_FILE = "README.md"


def file_key(rel: str) -> str:
    """An export file's name without folder and extensions (``lhotse/cuts.jsonl.gz`` ->
    ``cuts``): the name of that output in the workflow's export rules."""
    return PurePosixPath(rel).name.split(".")[0]


class ExportError(ValueError):
    """An input of the export is missing, unreadable or inconsistent; the message names it."""


# --------------------------------------------------------------------------------------
# the table


@dataclass
class Collected:
    """Everything the exports write.

    utterances: one dict per exported utterance, sorted by ``utterance_id`` (columns:
    :data:`UTTERANCE_COLUMNS`; ``shape``/``shape_spread`` (K,) float32 arrays) plus the
    private keys ``_shard`` (extract shard path) and ``_index`` (row in it).
    identities: one dict per exported identity, sorted (columns :data:`IDENTITY_COLUMNS`).
    rejects: rows ``path, stage, reason`` of utterances this stage did not export.
    feature_rejected: utterances the features stage rejected (manifest paths).
    """

    utterances: list[dict] = field(default_factory=list)
    identities: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    feature_rejected: list[str] = field(default_factory=list)
    face_model: str = ""
    n_id: int = 0
    sample_rate: int = 16000
    audio_format: str = "wav"
    split_method: str = ""


#: Columns of ``hf/utterances.parquet`` (and of :attr:`Collected.utterances`), in order.
UTTERANCE_COLUMNS = (
    "utterance_id",  # <identity>/<youtube-id>/<utt> (manifest path without extension)
    "identity",
    "youtube_id",
    "utterance",
    "gender",  # m | f | null (unknown)
    "split",  # train | val
    "duration_s",  # seconds of audio (num_samples / sample_rate)
    "num_samples",
    "sample_rate",  # Hz (16000)
    "audio_path",  # relative to the export folder
    "source_video",  # manifest path, relative to videos_dir
    "frames_extracted",  # frames sampled at extract.frame_rate
    "frames_kept",  # of those, frames that passed the fit filters
    "face_model",  # ict | bfm
    "shape",  # (K,) float32 identity coefficients of the identity
    "shape_spread",  # (K,) float32 robust std of the identity's frames
    "shape_n_frames",  # frames pooled into the identity's shape
    "shape_n_videos",  # utterances (mp4s) pooled
    "shape_n_outliers",  # frames rejected as outliers
)
#: Columns of ``hf/identities.parquet``, in order.
IDENTITY_COLUMNS = (
    "identity",
    "name",
    "gender",
    "nationality",
    "vox1_set",  # the metadata's Set column (VoxCeleb1: dev | test)
    "split",
    "n_utterances",
    "n_youtube_ids",
    "duration_s",
    "face_model",
    "shape",
    "shape_spread",
    "shape_n_frames",
    "shape_n_videos",
    "shape_n_outliers",
)


def utterance_id(video: str) -> str:
    """``<id>/<yt>/<utt>.mp4`` -> ``<id>/<yt>/<utt>`` (the id the features stage uses)."""
    return _uid(video)


def audio_relpath(video: str, audio_format: str = "wav") -> str:
    """Path of an utterance's audio file relative to the export folder."""
    if audio_format not in AUDIO_EXT:
        raise ValueError(f"unknown audio format {audio_format!r}; choose one of {AUDIO_FORMATS}")
    return str(PurePosixPath(AUDIO_DIR) / (utterance_id(video) + AUDIO_EXT[audio_format]))
