"""Fit one shard with one worker process per device (the fit rule with ``resources: gpu=N``).

:func:`fit_shard_multi` cuts the shard's videos into ``N`` contiguous parts, runs each part
in its own process (``spawn`` start method; the process sets its device before any CUDA
call: ``CUDA_VISIBLE_DEVICES`` is narrowed to the one card, so ``cuda`` inside the worker
is that card) and merges the parts, in video order, into the one shard file written by
:func:`vox3d.fitting.fit_shard.write_fit_shard`.

Same bytes as :func:`vox3d.fitting.fit.fit_shard` in one process: the per-frame outputs depend on
which frames are regressed together (batch composition changes float rounding), so the
parts are cut only where the single-process run's batching is empty anyway
(:func:`clean_boundaries`):

* the host (cv2) path flushes a chunk after the first video that brings the pending frame
  count to ``batch_size`` or more, so every such video end is a clean cut;
* the tensor path (CUDA) cuts batches of exactly ``batch_size`` same-sized frames across
  video ends, so a cut is clean only where the frame count since the last frame-size
  change is a multiple of ``batch_size``, or where the frame size changes.

Cuts are placed at the clean boundary nearest to an equal share of frames; where a part
would be empty the part is dropped (fewer processes than devices).  When the tensor path
has no clean boundary near a share, the cut falls on the nearest video end: the batches on
both sides of it then differ from the single-process run's, and the parameters of those
frames equal the single-process ones to float rounding (the other fields are identical;
see the parity notes in :mod:`vox3d.fitting.fit`).  The boundaries are computed from the shard's
index (``frame_count``, ``height``, ``width``); a video whose frames turn out unreadable
shifts the batching after it in both runs alike only if it sits inside one part.

One-GPU jobs on a node of several GPUs: a local run (``snakemake --cores 128 --resources
gpu=8``) starts up to eight one-GPU jobs at once, but Snakemake gives no job a card, so
each would take ``cuda:0``.  :func:`pin_one_gpu` (called by ``stream_shard`` and
``fit_shard`` jobs with ``gpu=1``) takes the first card no other job holds, by an exclusive
lock on a node-local file per card, and narrows ``CUDA_VISIBLE_DEVICES`` to it before any
CUDA call; under a scheduler that hands the job one card (SLURM's ``--gpus=1``) it sees
one card and does nothing.

Device list: :func:`devices_for` maps ``gpu=N`` to ``cuda:0 .. cuda:N-1``; the test hook
``VOX3D_FIT_DEVICES=cpu,cpu`` (comma separated, any of ``cpu`` / ``cuda:<i>``) replaces
that list, so the multi-process path runs and is tested on a machine without GPUs.
"""

from __future__ import annotations

import bisect
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vox3d.fitting.fit import Fitter
from vox3d.fitting.fit_loop import _concat_fields, _run_shard
from vox3d.fitting.fit_shard import write_fit_shard
from vox3d.fitting.fit_tables import shard_stats, video_rejects
from vox3d.io import main_not_reimported
from vox3d.media.extract_shard import ExtractShard

DEVICES_ENV = "VOX3D_FIT_DEVICES"
#: folder of the per-card lock files of :func:`pin_one_gpu` (node-local; default under the
#: temporary folder, one per user)
LOCK_DIR_ENV = "VOX3D_GPU_LOCK_DIR"


def visible_cards(env: dict[str, str] | None = None) -> list[str]:
    """Ids of the NVIDIA cards this process may use, without a CUDA call (CUDA reads
    ``CUDA_VISIBLE_DEVICES`` once, at its first call): the ``CUDA_VISIBLE_DEVICES`` list when
    it is set (``""``: none), else one id per GPU that ``nvidia-smi -L`` lists, else none."""
    import shutil
    import subprocess

    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        return [v.strip() for v in env["CUDA_VISIBLE_DEVICES"].split(",") if v.strip()]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    n = sum(line.startswith("GPU ") for line in out.splitlines())
    return [str(i) for i in range(n)]


def pin_one_gpu(
    cards: Sequence[str] | None = None,
    lock_dir: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
    wait: bool = True,
):
    """Give a one-GPU job a card of its own on a node where it sees several.

    ``cards``: the ids it sees (default :func:`visible_cards`).  With at most one, returns
    ``None`` and changes nothing.  Else takes the first card whose lock file
    ``<lock_dir>/card-<id>.lock`` it can lock (``fcntl.flock``, exclusive; the kernel drops
    the lock when the process ends, killed or not), sets ``env["CUDA_VISIBLE_DEVICES"]``
    (default ``os.environ``) to that id and returns ``(id, open lock file)``: keep the file
    open for the job's life.  When every card is held (more jobs than cards), waits for
    one (``wait``) or raises ``RuntimeError`` naming the lock folder.
    """
    import fcntl
    import tempfile
    import time

    env = os.environ if env is None else env
    cards = list(visible_cards(env) if cards is None else cards)
    if len(cards) <= 1:
        return None
    folder = Path(
        lock_dir
        or env.get(LOCK_DIR_ENV)
        or Path(tempfile.gettempdir()) / f"vox3d-gpu-locks-{os.getuid()}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        for card in cards:
            fh = open(folder / f"card-{card}.lock", "a+")  # noqa: SIM115 - held by the caller
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            env["CUDA_VISIBLE_DEVICES"] = card
            return card, fh
        if not wait:
            raise RuntimeError(
                f"all {len(cards)} cards ({','.join(cards)}) are held by other jobs "
                f"(lock files in {folder})"
            )
        time.sleep(1.0)


def devices_for(n_gpu: int, env: dict[str, str] | None = None) -> list[str]:
    """Worker devices for a fit job given ``n_gpu`` GPUs (the rule's ``resources.gpu``).

    ``VOX3D_FIT_DEVICES`` (in ``env``, default ``os.environ``) overrides: a comma-separated
    list such as ``cpu,cpu`` or ``cuda:0,cuda:1``.  Otherwise ``cuda:0 .. cuda:n-1`` for
    ``n_gpu > 1`` and ``[]`` (= one process, the plain :func:`vox3d.fitting.fit.fit_shard`) else.
    """
    env = os.environ if env is None else env
    spec = env.get(DEVICES_ENV, "").strip()
    if spec:
        devs = [d.strip() for d in spec.split(",") if d.strip()]
        for d in devs:
            if d != "cpu" and not (d.startswith("cuda:") and d[5:].isdigit()):
                raise ValueError(f"{DEVICES_ENV}: {d!r} is not 'cpu' or 'cuda:<index>'")
        return devs
    return [f"cuda:{i}" for i in range(n_gpu)] if n_gpu > 1 else []


# --------------------------------------------------------------------------------------
# where to cut


def clean_boundaries(
    frame_counts: Sequence[int],
    sizes: Sequence[tuple[int, int]],
    batch_size: int,
    tensor_path: bool,
) -> list[int]:
    """Video indices ``k`` (0 < k < n) before which the single-process batching is empty.

    frame_counts: frames per video (the extract index's ``frame_count``); sizes: ``(height,
    width)`` per video; batch_size: ``fit.batch_size``; tensor_path: whether the fitter
    runs :meth:`vox3d.fitting.fit.Fitter.fit_batch_tensor` (CUDA) or the host path.  Videos without
    frames add nothing to a batch (both paths skip them).
    """
    bs = max(1, int(batch_size))
    out: list[int] = []
    pending = 0
    prev_size = None
    for k, (n, hw) in enumerate(zip(frame_counts, sizes, strict=True)):
        n = int(n)
        if tensor_path:
            hw = tuple(int(x) for x in hw)
            if n > 0 and prev_size is not None and hw != prev_size:
                pending = 0  # a new frame size closes the batch before video k
                if k > 0 and (not out or out[-1] != k):
                    out.append(k)
            if n > 0:
                prev_size = hw
            pending = (pending + n) % bs
            if pending == 0 and k + 1 < len(frame_counts):
                out.append(k + 1)
        else:
            pending += n
            if pending >= bs:
                pending = 0
                if k + 1 < len(frame_counts):
                    out.append(k + 1)
    return sorted(set(out))


def split_videos(
    frame_counts: Sequence[int], clean: Sequence[int], n_parts: int
) -> list[tuple[int, int]]:
    """Cut videos ``0..n-1`` into at most ``n_parts`` contiguous ``(start, stop)`` ranges of
    about equal frame counts, each cut at the clean boundary (else any video end) nearest
    to its share.  Empty ranges are dropped; the ranges cover every video in order."""
    n = len(frame_counts)
    if n == 0:
        return []
    cum = np.concatenate([[0], np.cumsum(np.asarray(frame_counts, np.int64))])
    total = int(cum[-1])
    clean = sorted(set(int(c) for c in clean if 0 < c < n))
    cuts: list[int] = []
    for p in range(1, max(1, n_parts)):
        target = total * p / n_parts
        pool = clean or list(range(1, n))
        if not pool:
            break
        j = bisect.bisect_left([int(cum[c]) for c in pool], target)
        cands = [pool[i] for i in (j - 1, j) if 0 <= i < len(pool)]
        best = min(cands, key=lambda c: (abs(int(cum[c]) - target), c))
        if clean and abs(int(cum[best]) - target) > total / (2 * n_parts):
            # no clean cut within half a share: the nearest video end instead (see module doc)
            best = min(range(1, n), key=lambda c: (abs(int(cum[c]) - target), c))
        cuts.append(best)
    edges = [0, *sorted(set(cuts)), n]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


# --------------------------------------------------------------------------------------
# the workers


class _ShardSlice:
    """Videos ``start..stop-1`` of an :class:`vox3d.media.extract_shard.ExtractShard`, indexed from 0
    (a frame source of :mod:`vox3d.fitting.frame_source`: ``videos`` and ``frames(i, start, stop)``)."""

    def __init__(self, shard, start: int, stop: int) -> None:
        self._shard, self._start = shard, start
        self.videos = list(shard.videos)[start:stop]

    def frames(self, i: int, start: int = 0, stop: int | None = None):
        return self._shard.frames(self._start + i, start, stop)


@dataclass(frozen=True)
class _Part:
    """What one worker returns: per-frame fields (``video`` already shifted to shard
    indices), unreadable videos ``{shard index: error}``, and the fitter's model file."""

    frames: dict
    read_errors: dict
    model_file: str


def _init_device(device: str) -> None:
    """Worker initializer: make ``device`` the only CUDA device this process sees (before any
    CUDA call), so the fitter's ``cuda`` is that card; ``cpu`` hides every GPU."""
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return
    index = int(device.split(":", 1)[1])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:  # e.g. slurm's allocation "3,5": cuda:1 is card 5
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if index >= len(ids):
            raise RuntimeError(f"{device}: only {len(ids)} visible devices ({visible})")
        os.environ["CUDA_VISIBLE_DEVICES"] = ids[index]
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index)


def _fit_part(extract_path: str, cfg, start: int, stop: int) -> _Part:
    """Worker: fit videos ``start..stop-1`` of one shard (the device is already set)."""
    fitter = Fitter(cfg)
    shard = ExtractShard(extract_path)
    try:
        part = _ShardSlice(shard, start, stop)
        frames, errors = _run_shard(part, fitter, cfg, Path(extract_path).stem, False)
    finally:
        shard.close()
    frames["video"] = (frames["video"] + np.int32(start)).astype(np.int32)
    return _Part(frames, {start + k: v for k, v in errors.items()}, str(fitter.model_file))


@dataclass(frozen=True)
class _WriterInfo:
    """The attributes of a :class:`vox3d.fitting.fit.Fitter` that :func:`write_fit_shard` reads."""

    cfg: object
    layout: object
    model_file: str


def fit_shard_multi(
    extract_path: str | os.PathLike,
    out_path: str | os.PathLike,
    cfg,
    devices: Sequence[str],
) -> dict:
    """:func:`vox3d.fitting.fit.fit_shard` with one process per entry of ``devices``.

    devices: e.g. ``["cuda:0", "cuda:1"]`` (or ``["cpu", "cpu"]`` for tests).  Each process
    fits one contiguous part of the shard's videos (cut as the module docstring says) on
    its device; the parts are merged in video order and written once.  Returns the same
    stats dict as :func:`vox3d.fitting.fit.fit_shard`.
    """
    devices = list(devices)
    if not devices:
        raise ValueError("fit_shard_multi needs at least one device")
    with ExtractShard(extract_path) as shard:
        videos = list(shard.videos)
    counts = [int(v.get("frame_count", 0)) for v in videos]
    sizes = [(int(v.get("height", 0)), int(v.get("width", 0))) for v in videos]
    tensor_path = devices[0].startswith("cuda")
    clean = clean_boundaries(counts, sizes, cfg.batch_size, tensor_path)
    parts = split_videos(counts, clean, len(devices)) or [(0, 0)]
    ctx = multiprocessing.get_context("spawn")
    pools = []
    try:
        futures = []
        with main_not_reimported():  # the processes start in submit()
            for (a, b), dev in zip(parts, devices, strict=False):
                pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_device,
                                           initargs=(dev,))  # fmt: skip
                pools.append(pool)
                wcfg = replace(cfg, device="cpu" if dev == "cpu" else "cuda")
                futures.append(pool.submit(_fit_part, str(extract_path), wcfg, a, b))
        results: list[_Part] = [f.result() for f in futures]
    finally:
        for pool in pools:
            pool.shutdown(cancel_futures=True)
    chunks = {k: [r.frames[k] for r in results] for k in results[0].frames}
    with_landmarks = "landmark_nme" in results[0].frames
    frames_out = _concat_fields(chunks, cfg.layout.n, with_landmarks)
    read_errors = {k: v for r in results for k, v in r.read_errors.items()}
    rejects = video_rejects(videos, frames_out, read_errors)
    stats = shard_stats(videos, frames_out, rejects)
    info = _WriterInfo(cfg, cfg.layout, results[0].model_file)
    write_fit_shard(out_path, videos, frames_out, rejects, stats, info)
    return stats


def describe_parts(extract_path: str | os.PathLike, cfg, devices: Sequence[str]) -> str:
    """One line naming the video ranges each device gets (for the job log)."""
    with ExtractShard(extract_path) as shard:
        videos = list(shard.videos)
    counts = [int(v.get("frame_count", 0)) for v in videos]
    sizes = [(int(v.get("height", 0)), int(v.get("width", 0))) for v in videos]
    clean = clean_boundaries(counts, sizes, cfg.batch_size, devices[0].startswith("cuda"))
    parts = split_videos(counts, clean, len(devices))
    return f"{Path(extract_path).name}: " + ", ".join(
        f"{d} videos {a}-{b - 1} ({sum(counts[a:b])} frames)"
        for (a, b), d in zip(parts, devices, strict=False)
    )
