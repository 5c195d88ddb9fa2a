"""Are the regressor's training crops the same on every run?  (rule train_regressor's data)

Renders shards ``0 .. K-1`` of the training cache (data seed 0, the rule's settings) with
``--workers`` spawned processes, then detects and crops them on CUDA several times, with
cuDNN's defaults (TF32 convolutions, heuristic algorithms, non-deterministic kernels
allowed) and with :class:`vox3d.fitting.regressor_cache.Cropper`'s deterministic flags.  Prints, per
setting, how many samples' boxes, crops and valid/invalid verdicts differ between passes,
and writes per-sample digests to ``--json`` so that a second process (a second call of this
script) can be compared with the first (``--compare``): the two full rule runs that gave
246,686 and 246,677 valid crops were separate processes.

    python bench/gpu_crop_determinism.py --ict ICT.tar.xz --shards 32 --workers 15 \
        --json run1.json [--compare run0.json]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vox3d.fitting import regressor_cache as rc  # noqa: E402
from vox3d.fitting.regressor_render import RenderConfig, resolve_codec  # noqa: E402


def _render(job):
    k, seed, codec = job
    kit = rc._KIT["kit"]
    ss = kit.cfg.shard_size
    return k, rc.render_frames(kit, seed, range(k * ss, (k + 1) * ss), codec)


def render(cfg: RenderConfig, shards: int, workers: int) -> dict[int, dict]:
    jobs = [(k, cfg.seed, resolve_codec(cfg.codec)) for k in range(shards)]
    with cf.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=rc._worker_init,
        initargs=(cfg, shards * cfg.shard_size, None),
    ) as pool:
        return dict(pool.map(_render, jobs))


def digests(raw: dict[int, dict], crop: dict[int, dict], min_score: float) -> dict:
    """Per sample: frame, box, crop digests and the verdict."""
    out = {"frame": [], "box": [], "crop": [], "valid": []}
    for k in sorted(raw):
        ss = len(raw[k]["frames"])
        done = rc.finish_shard(raw[k], crop[k], range(k * ss, (k + 1) * ss), min_score)
        for j in range(ss):
            out["frame"].append(hashlib.sha1(raw[k]["frames"][j].tobytes()).hexdigest()[:12])
            out["box"].append(hashlib.sha1(crop[k]["box"][j].tobytes()).hexdigest()[:12])
            out["crop"].append(hashlib.sha1(crop[k]["crops"][j].tobytes()).hexdigest()[:12])
            out["valid"].append(bool(done["valid"][j]))
    return out


def differ(a: dict, b: dict) -> str:
    n = len(a["box"])
    parts = [f"{key} {sum(x != y for x, y in zip(a[key], b[key], strict=True))}" for key in a]
    return (
        f"differing of {n}: " + ", ".join(parts) + f"; valid {sum(a['valid'])} vs {sum(b['valid'])}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ict", required=True)
    ap.add_argument("--shards", type=int, default=32)
    ap.add_argument("--workers", type=int, default=15)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--json", required=True)
    ap.add_argument("--compare", default=None, help="the --json of an earlier process")
    ap.add_argument("--device", default="cuda", help="cuda (cpu: a smoke test of this script)")
    ap.add_argument("--shard-size", type=int, default=RenderConfig.shard_size)
    a = ap.parse_args()
    import torch

    cfg = RenderConfig(
        n_id=40,
        n_exp=10,
        seed=0,
        codec="jpeg",
        face_model_path=a.ict,
        shard_size=a.shard_size,
    )
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"{torch.cuda.get_device_name(0) if a.device == 'cuda' else 'cpu'}; {a.shards} shards x {cfg.shard_size}", flush=True)  # fmt: skip
    t0 = time.time()
    raw = render(cfg, a.shards, a.workers)
    print(f"rendered {a.shards * cfg.shard_size} frames in {time.time() - t0:.1f} s", flush=True)
    runs: dict[str, list[dict]] = {}
    for name, det in (("cudnn_defaults", False), ("deterministic", True)):
        for p in range(a.passes):
            cropper = rc.Cropper(a.device, min_score=cfg.min_score, deterministic=det)
            t1 = time.time()
            crop = {k: cropper(raw[k]["frames"]) for k in sorted(raw)}
            d = digests(raw, crop, cfg.min_score)
            runs.setdefault(name, []).append(d)
            print(f"{name} pass {p}: {time.time() - t1:.1f} s, valid {sum(d['valid'])}", flush=True)
        for p in range(1, a.passes):
            print(f"  {name}: pass 0 vs pass {p}: {differ(runs[name][0], runs[name][p])}")
    print(
        f"cudnn_defaults vs deterministic: {differ(runs['cudnn_defaults'][0], runs['deterministic'][0])}"
    )
    Path(a.json).write_text(json.dumps({k: v[0] for k, v in runs.items()}))
    if a.compare and Path(a.compare).is_file():
        old = json.loads(Path(a.compare).read_text())
        for name in runs:
            print(f"process 1 vs process 0, {name}: {differ(old[name], runs[name][0])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
