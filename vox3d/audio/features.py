"""The features stage: one extract shard's audio -> one HDF5 file of voice features.

Layout of ``OUT/features/<shard>.h5`` (format :data:`vox3d.audio.fbank.FORMAT`):

- ``frames``: (T_total, D) float32 (or float16 with ``features.float16``), the normalised
  features of every kept utterance, concatenated in shard order, *not* repeated to 1000
  frames (the reader repeats, see :mod:`vox3d.audio.featurestore`).  Chunked
  (:data:`CHUNK_FRAMES`, D); filter ``features.compression`` (default none,
  :data:`COMPRESSION`), chosen by ``bench/features.py``.
- ``index/utterance`` (U,) str ``<id>/<youtube-id>/<utt>``; ``index/video`` (U,) str the
  manifest path; ``index/identity`` (U,) str; ``index/offset``, ``index/length`` (U,) int64
  rows of ``frames``; ``index/voiced_samples`` (U,) int64; ``index/mean``,
  ``index/std`` (U, D) float32 of the normalisation (``prenorm = x * (std + eps) + mean``);
  ``index/dc_offset``, ``index/clipped`` (U,) float32.
- ``rejects/path``, ``rejects/reason`` (R,) str: utterances without features.
- attributes: every setting of :meth:`vox3d.audio.fbank.FeatureConfig.attrs`, package versions,
  ``source`` (input file name), ``n_utterances``, ``n_rejected``, ``chunk_frames``,
  ``compression``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vox3d.audio.fbank import (
    FORMAT,
    MIN_STORED_FRAMES,
    FeatureConfig,
    UtteranceFeatures,
    keep_freed_memory,
    repeat_frames,
    utterance_features,
)
from vox3d.audio.pcm import SAMPLE_RATE, BadAudio
from vox3d.config import default
from vox3d.io import atomic_path, h5_group, h5_new, write_rejects
from vox3d.media import extract_shard

_TUNED = False  # keep_freed_memory() applied in this process

#: Stage name in rejects tables.
STAGE = "features"
#: Rows per HDF5 chunk of ``frames``: 128 x 64 x 4 B = 32 KiB.  bench/features.py: with
#: a filter a crop read from the file decompresses the fewest extra rows with small chunks
#: (128-row chunks read ~2-3x more crops/s than 512 or 2048); sizes are within 5%.
CHUNK_FRAMES = 128
#: Default HDF5 compression of ``frames`` (config ``features.compression``): none.
#: bench/features.py on real log-mel: gzip level 1 + shuffle makes the file 15 % smaller but
#: takes ~4x longer to write than no filter (a quarter of the whole stage's time); lzf
#: without shuffle saves nothing, with shuffle 11 % and is ~3x slower.  No filter is read
#: by every HDF5 tool.  gzip uses level :data:`COMPRESSION_OPTS` (level 4: 1 % smaller).
COMPRESSION = None
COMPRESSION_OPTS = 1
#: Byte-shuffle filter before compression (helps float data).
SHUFFLE = True


@dataclass
class Utterance:
    """One kept utterance: ids and its features."""

    video: str
    identity: str
    feats: UtteranceFeatures

    @property
    def utterance(self) -> str:
        return utterance_id(self.video)


def utterance_id(video: str) -> str:
    """``<id>/<yt>/<utt>.mp4`` -> ``<id>/<yt>/<utt>`` (the extension dropped)."""
    return re.sub(r"\.[A-Za-z0-9]{1,5}$", "", video)


def _one(args: tuple[np.ndarray, int, FeatureConfig]) -> UtteranceFeatures | str:
    """Features of one utterance, or the reject reason (worker function)."""
    global _TUNED
    if not _TUNED:
        _TUNED = True
        keep_freed_memory()
    audio, sr, cfg = args
    try:
        return utterance_features(audio, sr, cfg)
    except BadAudio as e:
        return str(e)


def compute(
    items: Iterable[tuple[str, str, np.ndarray]],
    cfg: FeatureConfig,
    sr: int = SAMPLE_RATE,
    total: int | None = None,
    progress: bool = True,
    workers: int = 1,
) -> tuple[list[Utterance], list[dict[str, str]]]:
    """Features of utterances; bad audio becomes a rejects row, never an exception.

    items: ``(video path, identity, audio)`` with audio (S,) float32 in [-1, 1] at `sr`.
    workers: processes (> 1: a fork pool; results and their order do not depend on it).
    Returns (kept utterances in input order, rejects rows ``path, stage, reason``).
    """
    from tqdm import tqdm

    keys: list[tuple[str, str]] = []

    def jobs():
        for video, identity, audio in items:
            keys.append((video, identity))
            yield audio, sr, cfg

    pool = None
    if workers > 1:
        import multiprocessing as mp

        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        pool = mp.get_context(method).Pool(workers)
        results = pool.imap(_one, jobs(), chunksize=2)
    else:
        results = map(_one, jobs())
    kept: list[Utterance] = []
    rejects: list[dict[str, str]] = []
    try:
        for k, res in enumerate(
            tqdm(
                results,
                total=total,
                desc="features",
                unit="utt",
                disable=not progress,
                file=sys.stderr,
            )
        ):
            video, identity = keys[k]
            if isinstance(res, str):
                rejects.append({"path": video, "stage": STAGE, "reason": res})
            else:
                kept.append(Utterance(video, identity, res))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return kept, rejects


def write(
    path: str | os.PathLike,
    kept: Sequence[Utterance],
    rejects: Sequence[dict[str, str]],
    cfg: FeatureConfig,
    source: str = "",
    chunk_frames: int = CHUNK_FRAMES,
    compression: str | None = "config",
    compression_opts: int | None = None,
) -> None:
    """Write a feature shard atomically (layout in the module doc); deterministic bytes.

    compression: an h5py filter name (``gzip``, ``lzf``) or None; ``"config"`` (default)
    takes ``cfg.compression`` (gzip at level :data:`COMPRESSION_OPTS`).  ``frames`` is
    written in one call from one contiguous array.
    """
    import h5py

    if compression == "config":
        compression = None if cfg.compression == "none" else cfg.compression
        compression_opts = COMPRESSION_OPTS if compression == "gzip" else None

    d = cfg.n_features
    lengths = np.array([u.feats.frames.shape[0] for u in kept], np.int64)
    offsets = np.zeros(len(kept), np.int64)
    if len(kept):
        offsets[1:] = np.cumsum(lengths)[:-1]
    dtype = np.float16 if cfg.float16 else np.float32
    frames = np.empty((int(lengths.sum()), d), dtype)
    for u, o, n in zip(kept, offsets, lengths, strict=True):
        frames[o : o + n] = u.feats.frames  # one copy (and cast) into the contiguous array
    s = h5py.string_dtype("utf-8")
    with atomic_path(path, suffix=".h5") as tmp, h5_new(tmp) as h:
        for k, v in cfg.attrs().items():
            h.attrs[k] = v
        h.attrs["source"] = source
        h.attrs["n_utterances"] = len(kept)
        h.attrs["n_rejected"] = len(rejects)
        h.attrs["chunk_frames"] = chunk_frames
        h.attrs["compression"] = f"{compression}:{compression_opts}" if compression else "none"
        h.attrs["dtype"] = np.dtype(dtype).name
        h.create_dataset(
            "frames",
            data=frames,
            maxshape=(None, d),
            chunks=(chunk_frames, d),
            compression=compression,
            compression_opts=compression_opts,
            shuffle=SHUFFLE and compression is not None,
            track_times=False,
        )
        g = h5_group(h, "index")
        g.create_dataset("utterance", data=[u.utterance for u in kept], dtype=s, track_times=False)
        g.create_dataset("video", data=[u.video for u in kept], dtype=s, track_times=False)
        g.create_dataset("identity", data=[u.identity for u in kept], dtype=s, track_times=False)
        g.create_dataset("offset", data=offsets, track_times=False)
        g.create_dataset("length", data=lengths, track_times=False)
        g.create_dataset(
            "voiced_samples",
            data=np.array([u.feats.voiced_samples for u in kept], np.int64),
            track_times=False,
        )
        for name in ("mean", "std"):
            arr = np.array([getattr(u.feats, name) for u in kept], np.float32).reshape(-1, d)
            g.create_dataset(name, data=arr, track_times=False)
        for name in ("dc_offset", "clipped"):
            arr = np.array([getattr(u.feats, name) for u in kept], np.float32)
            g.create_dataset(name, data=arr, track_times=False)
        r = h5_group(h, "rejects")
        r.create_dataset("path", data=[x["path"] for x in rejects], dtype=s, track_times=False)
        r.create_dataset("reason", data=[x["reason"] for x in rejects], dtype=s, track_times=False)


def features_shard(
    extract_h5: str | os.PathLike,
    out_h5: str | os.PathLike,
    cfg: FeatureConfig | None = None,
    progress: bool = True,
    workers: int = 1,
) -> dict[str, int]:
    """The ``features_shard`` rule: ``OUT/extract/<shard>.h5`` -> ``OUT/features/<shard>.h5``.

    Opens the shard with :class:`vox3d.media.extract_shard.ExtractShard` (checks its format) and reads
    the audio of consecutive videos in few large reads (``ExtractShard.audio_blocks``); `workers`
    processes (the rule's threads).  Returns counts.
    """
    cfg = cfg or FeatureConfig()
    with extract_shard.ExtractShard(extract_h5) as sh:
        sr = int(getattr(sh, "sample_rate", SAMPLE_RATE))
        videos = list(sh.videos)

        def items():
            for i, audio in sh.audio_blocks():
                v = videos[i]
                yield str(v["video"]), str(v["identity"]), audio

        kept, rejects = compute(
            items(), cfg, sr=sr, total=len(videos), progress=progress, workers=workers
        )
    write(out_h5, kept, rejects, cfg, source=Path(extract_h5).name)
    return {"utterances": len(kept), "rejected": len(rejects)}


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------
def _str_list(ds) -> list[str]:
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in ds[()]]


def read_index(path: str | os.PathLike) -> dict[str, object]:
    """The index of a feature shard: ``utterance``, ``video``, ``identity`` (lists of str),
    ``offset``, ``length`` (int64 arrays), ``attrs`` (dict) and, where the shard has them,
    ``mean``, ``std`` ((U, D) float32: each utterance's per-band statistics before the
    normalisation)."""
    import h5py

    with h5py.File(path, "r") as h:
        if h.attrs.get("format") != FORMAT:
            raise ValueError(f"{path}: not a vox3d feature file (format {h.attrs.get('format')!r})")
        g = h["index"]
        return {
            "utterance": _str_list(g["utterance"]),
            "video": _str_list(g["video"]) if "video" in g else _str_list(g["utterance"]),
            "identity": _str_list(g["identity"]),
            "offset": g["offset"][()].astype(np.int64),
            "length": g["length"][()].astype(np.int64),
            "attrs": {k: (v.item() if hasattr(v, "item") else v) for k, v in h.attrs.items()},
            **{k: g[k][()].astype(np.float32) for k in ("mean", "std") if k in g},
        }


def read_utterance(path: str | os.PathLike, i: int, repeat: bool = False) -> np.ndarray:
    """Utterance i of a feature shard, (T, D) float32; ``repeat`` tiles to 1000 frames
    (the array CMP stores)."""
    import h5py

    with h5py.File(path, "r") as h:
        o = int(h["index/offset"][i])
        n = int(h["index/length"][i])
        x = h["frames"][o : o + n].astype(np.float32)
    return repeat_frames(x, MIN_STORED_FRAMES) if repeat else x


def read_rejects(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rejects rows stored in a feature shard."""
    import h5py

    with h5py.File(path, "r") as h:
        if "rejects" not in h:
            return []
        paths = _str_list(h["rejects/path"])
        reasons = _str_list(h["rejects/reason"])
    return [{"path": p, "stage": STAGE, "reason": r} for p, r in zip(paths, reasons, strict=True)]


def collect_rejects(shards: Iterable[str | os.PathLike], out_tsv: str | os.PathLike) -> int:
    """The ``features_rejects`` rule: every shard's rejects into one table; returns rows."""
    rows = [r for p in sorted(str(s) for s in shards) for r in read_rejects(p)]
    write_rejects(out_tsv, rows)
    return len(rows)


# --------------------------------------------------------------------------------------
# CMP's own stored arrays
# --------------------------------------------------------------------------------------
def untile(arr: np.ndarray, n: int = MIN_STORED_FRAMES) -> np.ndarray:
    """Undo CMP's repeat: a (n, D) array that is an exact tiling of its first p rows -> the
    first p rows; any other array is returned unchanged (real speech never repeats rows
    exactly)."""
    a = np.asarray(arr)
    if a.shape[0] != n:
        return a
    cands = np.nonzero(np.all(a[1:] == a[0], axis=1))[0] + 1
    for p in cands:
        if np.array_equal(a[p:], a[: n - p]):
            return a[:p]
    return a


def features_from_cmp_npy(
    root: str | os.PathLike, out_h5: str | os.PathLike, float16: bool = default("features.float16")
) -> int:
    """Build a feature shard from a folder of CMP ``<id>/<yt>/<utt>.npy`` arrays.

    The arrays are CMP's stored format (normalised, repeated to >= 1000 frames); the
    repeat is undone (:func:`untile`) so the file has our layout and the reader's repeat
    gives back the original arrays exactly.  mean/std are unknown (stored as NaN).
    Returns the number of utterances.
    """
    root = Path(root)
    files = sorted(root.glob("*/*/*.npy"))
    if not files:
        raise FileNotFoundError(f"{root}: no <id>/<yt>/<utt>.npy files")
    kept: list[Utterance] = []
    d = None
    for f in files:
        a = np.load(f, allow_pickle=False)
        if a.ndim != 2:
            raise ValueError(f"{f}: expected (frames, bands), got shape {a.shape}")
        d = d or a.shape[1]
        if a.shape[1] != d:
            raise ValueError(f"{f}: {a.shape[1]} bands, others have {d}")
        x = untile(a.astype(np.float32))
        nan = np.full(d, np.nan, np.float32)
        uf = UtteranceFeatures(x, nan, nan, voiced_samples=-1)
        rel = f.relative_to(root).as_posix()
        kept.append(Utterance(rel, f.relative_to(root).parts[0], uf))
    kind = "logmel" if d == 64 else "mfcc"
    cfg = FeatureConfig(kind=kind, n_mfcc=d if kind == "mfcc" else 20, float16=float16)
    write(out_h5, kept, [], cfg, source=f"cmp-npy:{root.name}")
    return len(kept)
