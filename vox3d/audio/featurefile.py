"""One audio or video file's CMP voice features, and the ``vox3d features`` command.

:func:`file_features` decodes a file (:func:`vox3d.audio.pcm.load_audio`) and computes its
features (:func:`vox3d.audio.fbank.utterance_features`); :func:`cli` writes them as the float32
``(frames, bands)`` ``.npy`` of CMP's ``preprocessed_MFCC/``.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from vox3d.audio.fbank import (
    FeatureConfig,
    UtteranceFeatures,
    keep_freed_memory,
    utterance_features,
)
from vox3d.audio.pcm import SAMPLE_RATE, BadAudio, load_audio
from vox3d.io import atomic_path


def file_features(path: str | os.PathLike, cfg: FeatureConfig | None = None) -> UtteranceFeatures:
    """:func:`utterance_features` of a file (any audio or video)."""
    audio, sr = load_audio(path)
    try:
        return utterance_features(audio, sr, cfg)
    except BadAudio as e:
        raise BadAudio(f"{path}: {e}") from None


def cli(argv: list[str]) -> int:
    """``vox3d features AUDIO --out X.npy [--kind logmel|mfcc] [--n-mfcc N]``."""
    ap = argparse.ArgumentParser(
        prog="vox3d features",
        description="One utterance's CMP voice features (VAD + 64-band log-mel, normalised "
        "per band, repeated to >= 1000 frames) as a float32 (frames, bands) .npy, the format "
        "of CMP's preprocessed_MFCC/.  AUDIO: wav, flac or any video/audio ffmpeg reads.",
    )
    ap.add_argument("audio", help="input audio or video file")
    ap.add_argument("--out", required=True, help="output .npy")
    ap.add_argument("--kind", choices=("logmel", "mfcc"), default=FeatureConfig.kind)
    ap.add_argument("--n-mfcc", type=int, default=FeatureConfig.n_mfcc)
    ap.add_argument(
        "--no-repeat", action="store_true", help="do not repeat to 1000 frames (raw length)"
    )
    ap.add_argument("--min-voiced-s", type=float, default=FeatureConfig.min_voiced_s)
    ap.add_argument(
        "--precision", choices=("float64", "float32"), default=FeatureConfig.precision,
        help="float64 (bit-identical to the original's stored arrays) or float32 (faster, "
        "within ~1e-4); default: config.yaml's features.precision, "
        f"{FeatureConfig.precision}",
    )  # fmt: skip
    args = ap.parse_args(argv)
    keep_freed_memory()

    try:
        cfg = FeatureConfig(
            kind=args.kind, n_mfcc=args.n_mfcc, min_voiced_s=args.min_voiced_s,
            precision=args.precision,
        )  # fmt: skip
        feats = file_features(args.audio, cfg)
    except (BadAudio, ValueError) as e:
        print(f"vox3d features: {e}", file=sys.stderr)
        return 1
    arr = feats.frames if args.no_repeat else feats.stored()
    with atomic_path(args.out, suffix=".npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(arr, dtype=np.float32))
    print(
        f"{args.out}: {arr.shape[0]} frames x {arr.shape[1]} ({feats.frames.shape[0]} voiced "
        f"frames, {feats.voiced_samples / SAMPLE_RATE:.2f} s voiced)"
        + ("; " + "; ".join(feats.notes) if feats.notes else "")
    )
    return 0


__all__ = ["cli", "file_features"]
