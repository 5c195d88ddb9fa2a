"""Faces per second of the fit stage: the original one-face-at-a-time loop vs our batches.

    python bench/fit.py --quick                      # CPU here (1 thread)
    python bench/fit.py --device cuda                # H100: batch >= 1024, fp32/fp16/bf16

Measured (each row: warm-up, then timed repeats, synchronised):

* ``regressor / batch-1 loop``: 3DDFA-V2's design, one face at a time: a uint8 crop in
  host memory -> tensor -> normalise -> device -> MobileNet -> parameters back on the host.
* ``regressor / batched``: crops already on the device (uint8), normalise + MobileNet in
  batches; fp32 / fp16 / bf16, NCHW or channels-last, eager or one CUDA graph, optionally
  ``torch.compile``.  ``+h2d`` rows copy the uint8 crops from pinned host memory each batch.
* ``det+crop+reg / batch-1 loop``: per frame: FaceBoxes (batch 1, NMS on the host), ROI,
  crop (cv2 when installed, else our torch crop on the host), regress one face.
* ``det+crop+reg / batched``: decoded 224x224 uint8 frames (VoxCeleb size) -> FaceBoxes
  in batches on the device -> batched NMS -> best face per frame -> ROI -> batched torch
  crop (cv2-exact integer bilinear) -> regressor; frames resident on the device, or
  ``+h2d`` from pinned host memory.

Parity rows: our fp32 raw output vs the original's ``crops_raw_output`` (max abs, whitened
units), fp16/bf16 vs fp32 on the same crops and on the bench frames' crops, device crops vs
host crops (grey levels), device boxes vs host boxes (pixels).

Inputs: the 3 reference crops of ``reference_mb05.npz`` (real faces, the original's
crops) and 224x224 frames made from them (flips, shifts), so every frame holds one face.
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
    ap.add_argument("--quick", action="store_true", help="small batches and few repeats (CPU)")
    ap.add_argument("--batch", type=int, default=0, help="faces/frames per batch (0 = auto)")
    ap.add_argument("--precisions", default="", help="comma list (default fp32 on CPU, all on GPU)")
    ap.add_argument("--seconds", type=float, default=0.0, help="time per measurement (0 = auto)")
    ap.add_argument("--compile", action="store_true", help="also try torch.compile")
    ap.add_argument("--profile", action="store_true", help="print the CUDA kernels of the best")
    ap.add_argument("--no-graphs", action="store_true", help="skip CUDA-graph rows")
    ap.add_argument("--skip-pipeline", action="store_true", help="regressor rows only")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (torch)")
    ap.add_argument("--data", help="folder laid out like ../shared/data (sets VOX3D_DATA)")
    ap.add_argument("--widen", type=float, default=0.5, help="0.5 = mb05 (1.0: random mb1 weights)")
    return ap.parse_args(argv)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev, seconds: float, min_reps: int = 3) -> float:
    """Seconds per call of `fn` (after 2 warm-up calls), at least `min_reps` calls."""
    for _ in range(2):
        fn()
    _sync(dev)
    reps, t0 = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        if reps >= min_reps:
            _sync(dev)
            el = time.perf_counter() - t0
            if el >= seconds:
                return el / reps


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, *row) -> None:
        self.rows.append(row)
        print("  " + " | ".join(str(c) for c in row), file=sys.stderr, flush=True)

    def print(self, title: str) -> None:
        hdr = ("pipeline", "path", "precision", "layout", "batch", "items/s", "vs loop")
        rows = [hdr] + [tuple(str(c) for c in r) for r in self.rows]
        w = [max(len(r[i]) for r in rows) for i in range(len(hdr))]
        print(f"\n{title}")
        for k, r in enumerate(rows):
            print("  ".join(c.ljust(w[i]) if i < 4 else c.rjust(w[i]) for i, c in enumerate(r)))
            if k == 0:
                print("  ".join("-" * x for x in w))


def make_frames(crops: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` 224x224 BGR frames, one face each, from the reference crops (host)."""
    from vox3d.face.crop import resize_uint8_torch

    base = resize_uint8_torch(crops, 224, 224)
    frames = []
    for i in range(n):
        f = base[i % len(base)]
        if (i // len(base)) % 2:
            f = f.flip(1)
        frames.append(torch.roll(f, shifts=(i % 7) * 3 - 9, dims=1))
    return torch.stack(frames).contiguous()


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    if a.data:
        os.environ["VOX3D_DATA"] = a.data
    from vox3d import paths
    from vox3d.face.crop import crop_batch_torch, roi_box_from_bbox, roi_boxes_torch
    from vox3d.face.detector import FaceBoxes
    from vox3d.face.regressor import Regressor, build_mobilenet

    dev = torch.device(a.device)
    torch.set_num_threads(max(1, a.threads))
    gpu = dev.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    precs = (
        a.precisions.split(",") if a.precisions else (["fp32", "fp16", "bf16"] if gpu else ["fp32"])
    )
    seconds = a.seconds or (0.3 if a.quick else (1.0 if gpu else 2.0))
    bsz = a.batch or (1024 if gpu else (32 if a.quick else 128))
    n_loop = 20 if a.quick else (200 if gpu else 100)
    try:
        import cv2  # noqa: F401

        have_cv2 = True
    except ImportError:
        have_cv2 = False
    ref = np.load(paths.TDDFA_DIR / "reference_mb05.npz")
    ref_crops = torch.from_numpy(ref["crops_bgr_uint8"])
    dev_name = (
        torch.cuda.get_device_name(dev) if gpu else f"CPU ({torch.get_num_threads()} thread(s))"
    )
    print(f"device: {dev_name}; torch {torch.__version__}; cv2 {'yes' if have_cv2 else 'no'}")

    weights = paths.MB05_WEIGHTS
    if a.widen != 0.5:  # no official mb1 weights here: random weights of the mb1 shape
        sd = build_mobilenet(a.widen).state_dict()
        weights = {"state_dict": sd}

    def variant(**layout) -> dict:
        """One regressor per precision with the given layout options."""
        return {
            p: Regressor(weights, widen=a.widen, device=dev, precision=p, **layout) for p in precs
        }

    regs = variant()
    regs_cl = variant(channels_last=True)
    # BN folded into the convs, ReLU a separate in-place pass
    regs_fused = variant(channels_last=True, fuse_bn=True)
    # ... and an 8-channel first convolution
    regs_pad = variant(channels_last=True, fuse_bn=True, pad_input=True)
    # ... with cuDNN's fused conv+bias+ReLU where it runs and agrees
    regs_cudnn = variant(channels_last=True, fuse_bn=True, cudnn_relu=True)
    det = FaceBoxes(device=dev)
    det_half = {p: FaceBoxes(device=dev, precision=p, fuse_bn=True) for p in precs if p != "fp32"}
    print(f"cuDNN fused conv+ReLU available: { {p: r.cudnn_relu for p, r in regs_cudnn.items()} }")

    # ------------------------------------------------------------------ parity
    print("\nparity")
    frames = make_frames(ref_crops, max(bsz, 64))
    r32 = regs.get("fp32") or Regressor(weights, widen=a.widen, device=dev)
    if a.widen == 0.5:
        d = np.abs(r32.raw(ref["crops_bgr_uint8"]) - ref["crops_raw_output"]).max()
        print(f"  regressor fp32 vs original crops_raw_output: max abs {d:.2e} (whitened)")
    dets_host = FaceBoxes().detect_batch(list(frames[:64].numpy()))
    dets_dev, keep_dev = det.detect_tensor(frames[:64].to(dev))
    dd = max(
        float(np.abs(dets_dev[i][keep_dev[i]].cpu().numpy() - dets_host[i]).max())
        for i in range(64)
        if len(dets_host[i]) == int(keep_dev[i].sum())
    )
    same_n = sum(len(dets_host[i]) == int(keep_dev[i].sum()) for i in range(64))
    print(
        f"  detector {a.device} batched vs CPU loop: {same_n}/64 same face count, boxes max abs {dd:.2e} px"
    )
    rois = np.stack([roi_box_from_bbox(d[0]) for d in dets_host])
    crops_host = crop_batch_torch(frames[:64], rois)
    if have_cv2:
        from vox3d.face.crop import crop_image

        cv = np.stack([crop_image(frames[i].numpy(), rois[i]) for i in range(64)])
        print(
            f"  torch crop (CPU) vs cv2 crop: max abs {np.abs(cv.astype(int) - crops_host.numpy()).max()} grey levels"
        )
    crops_dev = crop_batch_torch(frames[:64].to(dev), torch.from_numpy(rois).to(dev))
    print(
        f"  torch crop on {a.device} vs on CPU: max abs {(crops_dev.cpu().int() - crops_host.int()).abs().max().item()} grey levels"
    )
    raw32 = r32.raw_tensor(crops_dev)
    if a.widen == 0.5:
        d = np.abs(regs_fused[precs[0]].raw(ref["crops_bgr_uint8"]) - ref["crops_raw_output"])
        print(
            f"  regressor {precs[0]} BN-folded ch-last vs original: max abs {d.max():.2e} (whitened)"
        )
    for p in precs:
        if p == "fp32":
            continue
        for tag, rr in (
            ("", regs[p]),
            (" BN-folded ch-last", regs_fused[p]),
            (" BN-folded ch-last pad8", regs_pad[p]),
        ):
            d = (rr.raw_tensor(crops_dev) - raw32).abs()
            print(
                f"  regressor {p}{tag} vs fp32 on 64 frame crops: max abs {d.max().item():.2e}, "
                f"mean {d.mean().item():.2e} (whitened)"
            )
        dh, kh = det_half[p].detect_tensor(frames[:64].to(dev))
        ok = [i for i in range(64) if int(kh[i].sum()) == len(dets_host[i])]
        bd = np.array([np.abs(dh[i][0].cpu().numpy() - dets_host[i][0])[:4].max() for i in ok])
        print(
            f"  detector {p}: {len(ok)}/64 same face count, best box max abs {bd.max():.2f} px, "
            f"median {np.median(bd):.3f} px"
        )

    # ------------------------------------------------------------------ regressor
    tab = Table()
    print("\nregressor alone (faces/s)", file=sys.stderr)
    host_crop = ref["crops_bgr_uint8"]

    def loop_reg():
        for i in range(n_loop):
            c = torch.from_numpy(host_crop[i % 3][None]).to(dev)
            r32.predict_tensor(c).cpu()

    t = timed(loop_reg, dev, seconds, min_reps=1)
    loop_rate = n_loop / t
    tab.add("regressor", "batch-1 loop", "fp32", "nchw", 1, f"{loop_rate:,.0f}", "1.0x")
    crops_b = crops_dev[torch.arange(bsz, device=dev) % 64].contiguous()
    best = 0.0

    def row(name, fn, p, layout, n):
        nonlocal best
        t = timed(fn, dev, seconds)
        if name.startswith("batched"):
            best = max(best, n / t)
        tab.add("regressor", name, p, layout, n, f"{n / t:,.0f}", f"{n / t / loop_rate:,.0f}x")
        return n / t

    variants = [("nchw", regs), ("ch-last", regs_cl), ("ch-last+folded", regs_fused),
                ("ch-last+folded+pad8", regs_pad)]  # fmt: skip
    if gpu:
        variants.append(("ch-last+cudnn-fused", regs_cudnn))
    rates: dict[tuple[str, str], float] = {}
    for p in precs:
        for layout, rs in variants:
            rr = rs[p]
            if layout == "ch-last+cudnn-fused" and not rr.cudnn_relu:
                continue
            rates[(p, layout)] = row(
                "batched", lambda rr=rr: rr.raw_tensor(crops_b), p, layout, bsz
            )
            if gpu and not a.no_graphs and layout != "nchw":
                try:
                    run = rr.cuda_graph(bsz)
                    row("batched+graph", lambda run=run: run(crops_b), p, layout, bsz)
                except Exception as e:  # report, keep benchmarking
                    print(f"  cuda graph {p} {layout}: failed ({type(e).__name__}: {e})")
    if gpu:
        big = 4 * bsz
        crops_big = crops_dev[torch.arange(big, device=dev) % 64].contiguous()
        pin_big = crops_big.cpu().pin_memory()
        lowp = [q for q in precs if q != "fp32"]
        for p in lowp:
            for layout, rs in variants[2:4]:
                rr = rs[p]
                row("batched", lambda rr=rr: rr.raw_tensor(crops_big), p, layout, big)
                if not a.no_graphs:
                    try:
                        run = rr.cuda_graph(big)
                        row("batched+graph", lambda run=run: run(crops_big), p, layout, big)
                        row(
                            "batched+graph+h2d",
                            lambda run=run: run(pin_big.to(dev, non_blocking=True)),
                            p,
                            layout,
                            big,
                        )
                    except Exception as e:
                        print(f"  cuda graph {p} batch {big}: failed ({type(e).__name__}: {e})")
        if a.compile:
            for p in lowp:
                for mode in ("default",):
                    rr = regs_pad[p]
                    try:
                        from vox3d.face.regressor import PAD_CHANNELS, normalize_crops_padded

                        t0 = time.perf_counter()
                        cm = torch.compile(rr.model, mode=mode, dynamic=False)

                        def fc(cm=cm, rr=rr):
                            with torch.inference_mode():
                                x = normalize_crops_padded(crops_big, rr.dtype, PAD_CHANNELS)
                                return cm(x).float()

                        fc()
                        print(
                            f"  torch.compile {p} {mode}: compiled in {time.perf_counter() - t0:.0f} s"
                        )
                        row(f"batched+compile({mode})", fc, p, "ch-last+folded+pad8", big)
                    except Exception as e:
                        print(
                            f"  torch.compile {p} {mode}: failed ({type(e).__name__}: {str(e)[:300]})"
                        )
        if a.profile:
            # where the time goes: the CUDA kernels of the fastest eager variant
            p, layout = max(rates, key=rates.get)
            rr = dict(variants)[layout][p]
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    rr.raw_tensor(crops_b)
                _sync(dev)
            print(f"\nCUDA kernels of {p} {layout}, batch {bsz}, 5 calls:")
            print(
                prof.key_averages().table(
                    sort_by="cuda_time_total", row_limit=14, max_name_column_width=70
                )
            )

    # ------------------------------------------------------------------ det + crop + reg
    if a.skip_pipeline:
        tab.print(f"regressor throughput on {dev_name} (faces/s)")
        print(f"\nbest regressor: {best:,.0f} faces/s = {best / loop_rate:,.0f}x the batch-1 loop")
        return 0
    print("\ndetector + crop + regressor (frames/s)", file=sys.stderr)
    host_frames = [frames[i].numpy() for i in range(64)]
    if have_cv2:
        from vox3d.face.crop import crop_image as _crop

        def crop_one(img, roi):
            return torch.from_numpy(_crop(img, roi)[None])
    else:

        def crop_one(img, roi):
            return crop_batch_torch(torch.from_numpy(img)[None], np.asarray(roi)[None])

    n_loop_f = max(5, n_loop // 4)

    def loop_full():
        for i in range(n_loop_f):
            img = host_frames[i % 64]
            d = det.detect(img)
            if len(d):
                c = crop_one(img, roi_box_from_bbox(d[0])).to(dev)
                r32.predict_tensor(c).cpu()

    t = timed(loop_full, dev, seconds, min_reps=1)
    loop_f = n_loop_f / t
    tab.add("det+crop+reg", "batch-1 loop", "fp32", "nchw", 1, f"{loop_f:,.0f}", "1.0x")
    fr_dev = frames[torch.arange(bsz) % len(frames)].to(dev)
    fr_pin = fr_dev.cpu().pin_memory() if gpu else fr_dev.cpu()

    def pipeline(fr, dt, rr):
        dets, keep = dt.detect_tensor(fr)
        has = keep[:, 0]
        idx = torch.nonzero(has).squeeze(1)
        rois = roi_boxes_torch(dets[idx, 0])
        crops = crop_batch_torch(fr, rois, image_index=idx)
        return rr.raw_tensor(crops), idx

    for p in precs:
        dt = det if p == "fp32" else det_half[p]
        for layout, rr in (
            ("nchw", regs[p]),
            ("ch-last+folded", regs_fused[p]),
            ("ch-last+folded+pad8", regs_pad[p]),
        ):
            if layout == "ch-last":
                dt.net.to(memory_format=torch.channels_last)
            t = timed(lambda dt=dt, rr=rr: pipeline(fr_dev, dt, rr), dev, seconds)
            tab.add(
                "det+crop+reg",
                "batched",
                p,
                layout,
                bsz,
                f"{bsz / t:,.0f}",
                f"{bsz / t / loop_f:,.0f}x",
            )
            if gpu:
                t = timed(
                    lambda dt=dt, rr=rr: pipeline(fr_pin.to(dev, non_blocking=True), dt, rr),
                    dev,
                    seconds,
                )
                tab.add(
                    "det+crop+reg",
                    "batched+h2d",
                    p,
                    layout,
                    bsz,
                    f"{bsz / t:,.0f}",
                    f"{bsz / t / loop_f:,.0f}x",
                )
            dt.net.to(memory_format=torch.contiguous_format)

    tab.print(
        f"fit throughput on {dev_name} (items/s: faces for the regressor, frames for det+crop+reg)"
    )
    print(f"\nbest regressor: {best:,.0f} faces/s = {best / loop_rate:,.0f}x the batch-1 loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
