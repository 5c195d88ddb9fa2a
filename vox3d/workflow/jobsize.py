"""Job sizes of the workflow (the ``resources:`` of rules/*.smk): the measured rates behind
the runtime requests and the functions that turn them into minutes.  rules/common.smk calls
them with the run's config; docs/cluster.md has the table of measured against requested.
Light (no torch, no numpy): the Snakefile imports it while building the DAG."""

from __future__ import annotations

import math
from collections.abc import Mapping

from vox3d.voice.train_presets import PRESETS

#: Seconds per video a shard job is sized for (VoxCeleb2's mean utterance: 2,442 h /
#: 1,128,246 = 7.8 s): a shard holds ``shard_size`` videos of ``VIDEO_S`` seconds.
VIDEO_S = 8.0

#: Wall seconds per second of video (of audio for the features) that the per-shard jobs are
#: sized for (:func:`shard_minutes`).  Measured on the default run, 2 loaded cores, shard_size
#: 128 (bench/results/cpu_resources.txt): extract 0.028 on a full shard, 0.032 on a 32-clip
#: one; fit on CPU 0.050 and 0.063 (model loading weighs most on the small shard; a GPU is
#: faster); features 0.002 and 0.006 (start-up included).  The figures asked for come from
#: the earlier run the rules were sized on; with the margin of 10 each request is still 9 to
#: 50 times a full shard's measured time.
EXTRACT_S_PER_S = 0.034
FIT_S_PER_S = 0.057
FEATURES_S_PER_S = 0.010
#: ``stream_shard`` (decode + fit in one job, no frames written): not measured apart; the
#: two stages it replaces bound it.
STREAM_S_PER_S = EXTRACT_S_PER_S + FIT_S_PER_S

#: ``fit_identities`` holds the kept frames' identity coefficients (n_id float64 + a path
#: reference): KB a frame.
IDENTITY_KB_PER_FRAME = 0.4
#: ``fit_identities`` seconds a shard (an earlier 3-shard run: 1.25 s;
#: bench/results/cpu_resources.txt: 0.67 s a shard over 2 shards, start-up included).
IDENTITY_S_PER_SHARD = 0.42

#: Training speeds (iterations a second) behind the ``train`` job's runtime request.
#: Paper preset on one H100 with amp bf16: 200 iterations in 4.11 s
#: (bench/results/h100_train.txt).
TRAIN_IT_S_GPU = 48.7
#: Paper preset on one CPU core (bench/results/cpu_throughput.txt: 1.35 iterations a second
#: per core), taken as linear in the job's threads.
TRAIN_IT_S_CPU_CORE = 1.35
#: Demo preset, on CPU or GPU (not measured on a GPU; a GPU is not slower): 600 steps in
#: 316 s on 2 loaded cores, when the rule was sized.  bench/results/cpu_resources.txt now
#: measures 6.51 steps a second (600 steps in 92.2 s on 2 cores at load 2.87, start-up
#: included): the default run's request (16 min) is 10.4 x its wall time, not the 3 asked.
TRAIN_IT_S_DEMO = 1.9


#: Unsupervised variant, demo preset (batch 16) on 2 CPU cores: 600 steps in 248.7 s, 0.41 s a
#: step (bench/results/cpu_unsupervised.txt); sized per sample-step at the 0.60 s a step of an
#: earlier run on 2 loaded cores (300 steps in 178.6 s); the paper preset's wider networks
#: and any GPU are not measured here.
UNSUP_S_PER_SAMPLE_CPU = 0.60 / 16


def unsupervised_minutes(train: Mapping, margin: float = 3.0, floor: int = 10) -> int:
    """Runtime request in minutes of ``train_unsupervised``: steps x batch of the config's
    ``train.unsupervised`` (:func:`vox3d.voice.distill.distill_config`) at
    :data:`UNSUP_S_PER_SAMPLE_CPU`, times `margin`; at least `floor` minutes."""
    from vox3d.voice.distill import distill_config

    c = distill_config(train.get("unsupervised"))
    return max(floor, math.ceil(c.steps * c.batch_size * UNSUP_S_PER_SAMPLE_CPU * margin / 60))


def shard_minutes(
    s_per_video_s: float, shard_size: int, margin: float = 10.0, floor: int = 5
) -> int:
    """Runtime request in minutes of a per-shard job that took `s_per_video_s` seconds of wall
    time per second of video (measured), for `shard_size` videos of :data:`VIDEO_S` seconds,
    times `margin`; at least `floor` minutes."""
    need_s = s_per_video_s * VIDEO_S * shard_size * margin
    return max(floor, math.ceil(need_s / 60))


def fit_identities_mem_mb(
    n_shards: int, shard_size: int, frame_rate: float, base_mb: int = 1000
) -> int:
    """Memory request in MB of ``fit_identities``: `base_mb` plus
    :data:`IDENTITY_KB_PER_FRAME` for every frame of `n_shards` shards of `shard_size` videos
    of :data:`VIDEO_S` seconds at `frame_rate` (~18 GB for VoxCeleb2's 1.13M utterances,
    whatever the shard size)."""
    frames = n_shards * shard_size * VIDEO_S * frame_rate
    return base_mb + math.ceil(frames * IDENTITY_KB_PER_FRAME / 1024)


def fit_identities_minutes(n_shards: int, margin: float = 3.0, floor: int = 10) -> int:
    """Runtime request in minutes of ``fit_identities`` over `n_shards` shards:
    :data:`IDENTITY_S_PER_SHARD` a shard, times `margin`; at least `floor` minutes."""
    return max(floor, math.ceil(n_shards * IDENTITY_S_PER_SHARD * margin / 60))


def train_steps(train: Mapping) -> int:
    """Steps of a training run from the ``train`` config: ``train.steps``, else its preset's
    (:data:`vox3d.voice.train_presets.PRESETS`)."""
    return int(train["steps"] or PRESETS[train["preset"]]["steps"])


def train_it_s(train: Mapping, threads: int) -> float:
    """Iterations a second the ``train`` job is sized for: the paper preset at
    :data:`TRAIN_IT_S_GPU` on ``cuda``, else :data:`TRAIN_IT_S_CPU_CORE` x `threads`; the
    demo preset at :data:`TRAIN_IT_S_DEMO` on any device."""
    if train["preset"] != "paper":
        return TRAIN_IT_S_DEMO
    return TRAIN_IT_S_GPU if train["device"] == "cuda" else TRAIN_IT_S_CPU_CORE * threads


def train_minutes(train: Mapping, threads: int, margin: float = 3.0, floor: int = 10) -> int:
    """Runtime request in minutes of the ``train`` job: its steps (:func:`train_steps`) at
    :func:`train_it_s`, times `margin`; at least `floor` minutes."""
    return max(floor, math.ceil(train_steps(train) / train_it_s(train, threads) * margin / 60))
