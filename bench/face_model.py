"""Benchmark of the ICT-FaceKit loader and of params -> vertices.

Prints the time to parse the ICT-FaceKit archive (100 identity + 53 expression OBJs of
26,719 vertices) into an empty cache, the cached load time, and the time of a batched
``vertices`` call in numpy and torch (CPU, 1 thread); and the ARE ratios of the ICT mean
face under each pair set, beside CMP's.

    PYTHONPATH=. python bench/face_model.py [--archive PATH] [--batch 256]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def mean_face_ratios(model) -> dict[str, np.ndarray]:
    """ER/FR/MR/CR ``(4,)`` of `model`'s mean face under each ARE pair set
    (``evaluate.are_pairs``: :data:`vox3d.face.are_pairs.ARE_PAIR_SETS`)."""
    from vox3d.face.are_pairs import ARE_PAIR_SETS
    from vox3d.face.are_selection import select_are_pairs
    from vox3d.face.metrics import face_ratios

    mean = np.asarray(model.mean, np.float64)
    return {w: face_ratios(mean, select_are_pairs(model, w).pairs) for w in ARE_PAIR_SETS}


def print_mean_face_ratios(model) -> None:
    """:func:`mean_face_ratios` beside CMP's published mean-face ratios (BFM)."""
    from vox3d.face.are_pairs import CMP_MEAN_FACE_RATIOS as cmp
    from vox3d.face.metrics import RATIOS

    print(f"ARE ratios of the ICT mean face ({' / '.join(RATIOS)}):")
    for which, r in mean_face_ratios(model).items():
        print(f"  {which:<14} " + " / ".join(f"{x:.3f}" for x in r))
    print(
        "  CMP (BFM mean) "
        + " / ".join(f"{cmp[k]:.2f}" for k in ("ear", "forehead", "mid", "cheek"))
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", default=None, help="ICT-FaceKit archive or FaceXModel folder")
    ap.add_argument("--batch", type=int, default=256)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["VOX3D_CACHE"] = cache  # an empty cache: the first load parses
        from vox3d.face import face_model as fm
        from vox3d.face import ict_facekit

        t0 = time.perf_counter()
        arrays = ict_facekit.load_ict_arrays(a.archive)
        t_parse = time.perf_counter() - t0
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            ict_facekit.load_ict_arrays(a.archive)
            times.append(time.perf_counter() - t0)
        size = sum(f.stat().st_size for f in fm.paths.cache_dir().glob("*.npz"))
        print(f"ICT-FaceKit parse (archive -> arrays -> cache): {t_parse:.2f} s")
        print(
            f"ICT-FaceKit cached load (incl. sha256 of the source): best {min(times):.3f} s "
            f"({size / 1e6:.0f} MB cache)"
        )
        t0 = time.perf_counter()
        m = fm.load_face_model("ict", path=a.archive, subset="face")
        print(f"load_face_model('ict', subset='face') from cache: {time.perf_counter() - t0:.3f} s")
        del arrays
    print_mean_face_ratios(m)
    rng = np.random.default_rng(0)
    ids = rng.normal(size=(a.batch, m.n_id)).astype(np.float32)
    exps = rng.uniform(0, 1, (a.batch, m.n_exp)).astype(np.float32)
    for name, fn in (
        ("numpy", lambda: m.vertices(ids, exps)),
        ("torch", lambda: m.vertices_torch(torch.from_numpy(ids), torch.from_numpy(exps))),
    ):
        fn()
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        print(
            f"vertices {name} batch {a.batch} x {m.n_vertices} v: {min(ts) * 1e3:.1f} ms "
            f"({a.batch / min(ts):.0f} meshes/s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
