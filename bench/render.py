"""Benchmark of the Sim3DR rasterizer through vox3d.face.render.

Renders the full ICT-FaceKit head (26,719 vertices, 52,220 triangles) at 512x512 and
prints milliseconds per render (best and median of the repeats) without lighting, with
Lambert and with Phong lighting, on 1 and 2 threads, and meshes per second for a batch.

    PYTHONPATH=. python bench/render.py [--repeats 50] [--size 512] [--batch 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from vox3d import params as P
from vox3d.face.face_model import load_face_model
from vox3d.face.render import Light, Mesh, render_batch, render_full


def head_in_image(size: int, yaw_deg: float = 20.0):
    """The ICT neutral head posed and projected to fill ~80% of a size x size image."""
    m = load_face_model("ict", subset="head")
    v = m.mean
    s = 0.8 * size / float(v[:, 1].max() - v[:, 1].min())
    R = P.euler_to_rotation(np.deg2rad(yaw_deg), np.deg2rad(5.0), 0.0)
    pose = P.srt_to_pose(s * P.CROP_SIZE / size, R, [P.CROP_SIZE / 2, P.CROP_SIZE / 2, 0])
    crop = P.transform_vertices(v, pose)
    img_v = P.to_image(crop, [0, 0, size, size])
    colors = np.tile(np.float32([0.85, 0.7, 0.6]), (len(v), 1))
    return img_v, m.triangles, colors


def time_ms(fn, repeats: int) -> tuple[float, float, float]:
    """(best wall ms, median wall ms, median CPU ms of the calling thread).  On a shared,
    loaded machine the CPU time of one-thread renders is the robust figure."""
    fn()  # warm up
    ts, cs = [], []
    for _ in range(repeats):
        c0 = time.thread_time()
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
        cs.append((time.thread_time() - c0) * 1e3)
    return min(ts), statistics.median(ts), statistics.median(cs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args(argv)
    v, t, c = head_in_image(a.size)
    print(f"ICT head: {len(v)} vertices, {len(t)} triangles, {a.size}x{a.size} pixels")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    cases = {
        "unlit": None,
        "lambert": Light.lambert(),
        "phong": Light.phong(),
        "gouraud": Light.phong(shading="gouraud"),
    }
    for threads in (1, 2):
        for name, light in cases.items():
            best, med, cpu = time_ms(
                lambda light=light, threads=threads: render_full(
                    v, t, c, size=(a.size, a.size), light=light, threads=threads
                ),
                a.repeats,
            )
            extra = f", CPU {cpu:6.2f} ms" if threads == 1 else ""
            print(
                f"render {name:8s} threads={threads}: best {best:6.2f} ms, "
                f"median {med:6.2f} ms{extra}"
            )
    cov = render_full(v, t, c, size=(a.size, a.size)).mask.mean()
    print(f"(head covers {100 * cov:.1f}% of the image)")
    for threads in (1, 2):
        meshes = [Mesh(v, t, c)] * a.batch
        for name in ("unlit", "phong"):
            light = cases[name]
            best, med, cpu = time_ms(
                lambda meshes=meshes, light=light, threads=threads: render_batch(
                    meshes, sizes=(a.size, a.size), light=light, threads=threads
                ),
                max(3, a.repeats // 10),
            )
            print(
                f"batch of {a.batch} {name:6s} threads={threads}: "
                f"{a.batch / (med / 1e3):7.1f} meshes/s (median {med:.1f} ms per batch)"
                + (f", CPU {cpu / a.batch:.2f} ms per mesh" if threads == 1 else "")
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
