"""Frames per second of the fit stage's tensor path (vox3d.fitting.fit), reading included.

    python bench/fit_stage.py --quick                    # CPU here (1 thread)
    python bench/fit_stage.py --device cuda              # H100: batch 1024, fp32 and bf16
    python bench/fit_stage.py --device cuda --face-model ict   # the ICT regressor instead of mb05

What runs is the stage's own loop minus HDF5: an in-memory stand-in for the extract
shard (videos of 224x224 RGB frames made from the 3 reference crops of
``reference_mb05.npz``, flipped and shifted, one in ``--black-every`` videos black) goes
through :class:`vox3d.fitting.frame_source.BatchPrefetcher` (background thread, pinned staging, copy on a
side stream) into :meth:`vox3d.fitting.fit.Fitter.fit_batch_tensor`, which returns every per-frame
field the stage writes.  Parity rows compare the device's fields with the CPU reference
(:meth:`Fitter.fit_frames`, cv2 crops; or the tensor path on the CPU when cv2 is missing)
on the first ``--parity-frames`` frames: boxes (px), parameters (whitened units), keep
and reason.

Needs only torch + numpy + vox3d (cv2 optional); assets from ``VOX3D_DATA`` / ``--data``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--quick", action="store_true", help="few frames (CPU)")
    ap.add_argument("--batch", type=int, default=0, help="frames per batch (0: 1024 GPU, 32 CPU)")
    ap.add_argument("--frames", type=int, default=0, help="frames in all (0 = auto)")
    ap.add_argument("--per-video", type=int, default=40, help="frames per video")
    ap.add_argument("--black-every", type=int, default=10, help="every n-th video is black")
    ap.add_argument("--precisions", default="", help="comma list (default fp32 CPU, fp32,bf16 GPU)")
    ap.add_argument("--parity-frames", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (torch)")
    ap.add_argument("--data", help="folder laid out like ../shared/data (sets VOX3D_DATA)")
    ap.add_argument(
        "--face-model",
        default="bfm",
        choices=("bfm", "ict"),
        help="bfm: the original mb05; ict: the ICT regressor (the default workflow's)",
    )
    ap.add_argument(
        "--ict-regressor", help="ICT checkpoint (default: vox3d/data/ict_regressor.pth)"
    )
    return ap.parse_args(argv)


class MemoryShard:
    """Duck-typed :class:`vox3d.media.extract_shard.ExtractShard`: ``videos`` and ``frames(i)``."""

    def __init__(self, videos: list[np.ndarray], fps: float = 5.0) -> None:
        self._frames = videos
        self._fps = fps
        self.videos = [
            {"video": f"bench/{i:05d}.mp4", "identity": "bench", "frame_count": len(v),
             "height": v.shape[1], "width": v.shape[2]}
            for i, v in enumerate(videos)
        ]  # fmt: skip

    def frames(
        self, i: int, start: int = 0, stop: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``start:stop`` of video ``i`` (RGB uint8) and their times (s)."""
        stop = len(self._frames[i]) if stop is None else stop
        return self._frames[i][start:stop], np.arange(start, stop) / self._fps


def make_videos(n_frames: int, per_video: int, black_every: int) -> list[np.ndarray]:
    """224x224 RGB frames (one face each; every ``black_every``-th video black)."""
    from vox3d import paths
    from vox3d.face.crop import resize_uint8_torch

    ref = np.load(paths.TDDFA_DIR / "reference_mb05.npz")["crops_bgr_uint8"]
    base = resize_uint8_torch(torch.from_numpy(ref), 224, 224).numpy()[..., ::-1]
    frames = []
    for i in range(n_frames):
        f = base[i % len(base)]
        if (i // len(base)) % 2:
            f = f[:, ::-1]
        frames.append(np.roll(f, (i % 7) * 3 - 9, axis=1))
    frames = np.ascontiguousarray(np.stack(frames))
    videos = [frames[s : s + per_video].copy() for s in range(0, n_frames, per_video)]
    for v in range(black_every - 1, len(videos), max(1, black_every)):
        videos[v][:] = 0
    return videos


def run_stage(fitter, shard, batch: int) -> dict[str, np.ndarray]:
    """The stage's tensor loop (vox3d.fitting.fit_loop._run_shard_tensor without tqdm/HDF5)."""
    from vox3d.fitting.frame_source import BatchPrefetcher

    out: dict[str, list] = {}
    for item in BatchPrefetcher(shard, batch, fitter.device):
        if item[0] == "error":
            raise RuntimeError(item[2])
        b = item[1]
        if b.ready is not None:
            stream = torch.cuda.current_stream(fitter.detector.device)
            stream.wait_event(b.ready)
            b.frames_dev.record_stream(stream)
        for k, v in fitter.fit_batch_tensor(b.frames_dev, b.frames).items():
            out.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    if a.data:
        os.environ["VOX3D_DATA"] = a.data
    from vox3d.fitting.fit import FitConfig, Fitter

    dev = a.device
    gpu = dev == "cuda"
    torch.set_num_threads(max(1, a.threads))
    bsz = a.batch or (1024 if gpu else 32)
    n = a.frames or (bsz * 16 if gpu else (64 if a.quick else 256))
    precs = a.precisions.split(",") if a.precisions else (["fp32", "bf16"] if gpu else ["fp32"])
    try:
        import cv2  # noqa: F401

        have_cv2 = True
    except ImportError:
        have_cv2 = False
    name = torch.cuda.get_device_name(0) if gpu else f"CPU ({torch.get_num_threads()} thread(s))"
    print(f"device: {name}; torch {torch.__version__}; cv2 {'yes' if have_cv2 else 'no'}")
    videos = make_videos(n, a.per_video, a.black_every)
    n = sum(len(v) for v in videos)
    shard = MemoryShard(videos)

    # reference: CPU, fp32, cv2 path if cv2 is there
    k = min(a.parity_frames, n)
    par_shard = MemoryShard([np.concatenate(videos)[:k]])
    fm = {"face_model": a.face_model, "ict_regressor": a.ict_regressor}
    ref_cfg = FitConfig(**fm, device="cpu", batch_size=32)
    ref_fitter = Fitter(ref_cfg, tensor_path=not have_cv2)
    print(f"regressor: {a.face_model}, {os.path.relpath(ref_fitter.model_file)}")
    if have_cv2:
        ref = ref_fitter.fit_frames(list(par_shard.frames(0)[0]))
    else:
        ref = run_stage(ref_fitter, par_shard, 32)
    std = ref_fitter.regressor.std
    print(f"\nparity on {k} frames vs CPU {'cv2 path' if have_cv2 else 'tensor path'}")
    rows = []
    for p in precs:
        cfg = FitConfig(**fm, device=dev, batch_size=bsz, precision=p)
        fitter = Fitter(cfg, tensor_path=True)
        got = run_stage(fitter, par_shard, bsz)
        same = ~np.isnan(ref["score"])
        dbox = np.abs(got["box"][same] - ref["box"][same]).max() if same.any() else 0.0
        dpar = np.abs(got["params"][same] - ref["params"][same]) / std
        print(
            f"  {p}: keep equal {np.array_equal(got['keep'], ref['keep'])}, reason equal "
            f"{np.array_equal(got['reason'], ref['reason'])}, n_faces equal "
            f"{np.array_equal(got['n_faces'], ref['n_faces'])}, boxes max abs {dbox:.2e} px, "
            f"params max abs {dpar.max() if dpar.size else 0:.2e} (whitened), blur max rel "
            f"{np.nanmax(np.abs(got['blur'] / ref['blur'] - 1)) if same.any() else 0:.1e}"
        )
        run_stage(fitter, shard, bsz)  # warm-up (cuDNN, allocator, pinned pool)
        ts = []
        for _ in range(a.repeats):
            if gpu:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            res = run_stage(fitter, shard, bsz)
            if gpu:
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        rows.append((p, bsz, n, int(res["keep"].sum()), n / min(ts), n / np.median(ts)))
    print(f"\nfit stage tensor path on {name} (frames/s, host frames -> per-frame fields)")
    print("precision  batch  frames   kept  best frames/s  median frames/s")
    for p, b, nn, kept, best, med in rows:
        print(f"{p:9s}  {b:5d}  {nn:6d}  {kept:5d}  {best:13,.0f}  {med:15,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
