"""Test helper: write an extract shard (vox3d.media.extract_shard's HDF5 layout) from frames in memory."""

from __future__ import annotations

import h5py
import numpy as np


def write_extract_shard(path, videos):
    """An extract shard in vox3d.media.extract_shard's format: videos = [(path, identity, frames RGB)]."""
    from vox3d.media.extract_shard import FORMAT, FORMAT_VERSION

    s = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.attrs.update(
            format=FORMAT, format_version=FORMAT_VERSION, sample_rate=16000, frame_rate=5.0,
            min_duration=1.0, decoder="pyav",
        )  # fmt: skip
        idx = {k: [] for k in ("video", "identity", "audio_offset", "audio_length",
                               "frame_offset", "frame_count", "height", "width")}  # fmt: skip
        times, off = [], 0
        for i, (name, ident, frames) in enumerate(videos):
            f.create_dataset(f"frames/{i:06d}", data=np.asarray(frames, np.uint8))
            n = len(frames)
            for k, v in (("video", name), ("identity", ident), ("audio_offset", 0),
                         ("audio_length", 0), ("frame_offset", off), ("frame_count", n),
                         ("height", frames.shape[1]), ("width", frames.shape[2])):  # fmt: skip
                idx[k].append(v)
            times += list(np.arange(n) / 5.0)
            off += n
        for k, v in idx.items():
            f.create_dataset(
                k, data=np.array(v, dtype=s if k in ("video", "identity") else "int64")
            )
        f.create_dataset("duration_s", data=np.ones(len(videos)))
        f.create_dataset("av_offset", data=np.zeros(len(videos)))
        f.create_dataset("audio", data=np.zeros(0, np.float32))
        f.create_dataset("frame_times", data=np.asarray(times, np.float64))
        for k in ("path", "code", "reason"):
            f.create_dataset(f"rejects/{k}", data=np.array([], dtype=s))
