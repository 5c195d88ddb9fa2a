"""Mesh export (OBJ, PLY with vertex colours) and the `vox3d mesh` command.

``vox3d mesh --params P.npy --face-model {ict,bfm} --out mesh.obj [--png render.png]``
turns a parameter vector (layout of :mod:`vox3d.params`) into a mesh file in model units
(pose dropped, unless ``--posed``) and optionally a lit render of it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from vox3d import paths
from vox3d.config import default
from vox3d.face.face_model import load_face_model, model_layout
from vox3d.io import atomic_path
from vox3d.params import ict_layout, split, transform_vertices
from vox3d.safeload import BadModelFileError


def _check(vertices, triangles, colors):
    v = np.asarray(vertices, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {v.shape}")
    if t.ndim != 2 or t.shape[1] != 3:
        raise ValueError(f"triangles must be (F, 3), got {t.shape}")
    if len(t) and (t.min() < 0 or t.max() >= len(v)):
        raise ValueError("triangle index out of range")
    c = None
    if colors is not None:
        c = np.clip(np.asarray(colors, dtype=np.float64), 0, 1)
        if c.shape != v.shape:
            raise ValueError(f"colors must be {v.shape}, got {c.shape}")
    return v, t, c


def obj_bytes(vertices, triangles, colors=None) -> bytes:
    """Wavefront OBJ text: ``v x y z [r g b]`` (colours in [0, 1], the common extension
    read by MeshLab / trimesh / Blender) and 1-based ``f a b c``."""
    v, t, c = _check(vertices, triangles, colors)
    if c is None:
        vl = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
    else:
        vl = [
            f"v {x:.6f} {y:.6f} {z:.6f} {r:.4f} {g:.4f} {b:.4f}"
            for (x, y, z), (r, g, b) in zip(v, c, strict=True)
        ]
    fl = [f"f {a + 1} {b + 1} {cc + 1}" for a, b, cc in t]
    return ("\n".join(["# vox3d mesh", *vl, *fl]) + "\n").encode("ascii")


def ply_bytes(vertices, triangles, colors=None) -> bytes:
    """Binary little-endian PLY: float32 x y z [+ uchar red green blue], int32 faces."""
    v, t, c = _check(vertices, triangles, colors)
    head = ["ply", "format binary_little_endian 1.0", "comment vox3d mesh"]
    head += [f"element vertex {len(v)}", "property float x", "property float y", "property float z"]
    fields = [("xyz", "<f4", (3,))]
    if c is not None:
        head += ["property uchar red", "property uchar green", "property uchar blue"]
        fields.append(("rgb", "u1", (3,)))
    head += [f"element face {len(t)}", "property list uchar int vertex_indices", "end_header"]
    vert = np.empty(len(v), dtype=fields)
    vert["xyz"] = v
    if c is not None:
        vert["rgb"] = np.floor(c * 255 + 0.5).astype(np.uint8)
    face = np.empty(len(t), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face["n"] = 3
    face["idx"] = t
    return ("\n".join(head) + "\n").encode("ascii") + vert.tobytes() + face.tobytes()


def save_obj(path: str | os.PathLike, vertices, triangles, colors=None) -> None:
    """Write an OBJ atomically (see :func:`obj_bytes`)."""
    data = obj_bytes(vertices, triangles, colors)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_ply(path: str | os.PathLike, vertices, triangles, colors=None) -> None:
    """Write a binary PLY atomically (see :func:`ply_bytes`)."""
    data = ply_bytes(vertices, triangles, colors)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_mesh(path: str | os.PathLike, vertices, triangles, colors=None) -> None:
    """OBJ or PLY by the file suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".obj":
        save_obj(path, vertices, triangles, colors)
    elif suffix == ".ply":
        save_ply(path, vertices, triangles, colors)
    else:
        raise ValueError(f"{path}: unknown mesh format {suffix!r} (use .obj or .ply)")


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG atomically."""
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def cli(argv: list[str] | None = None) -> int:
    """``vox3d mesh``: parameters -> mesh file (+ optional PNG render)."""
    from vox3d.face.render import render_shape

    ap = argparse.ArgumentParser(prog="vox3d mesh", description=__doc__.splitlines()[0])
    ap.add_argument("--params", required=True, help=".npy with (n,) or (B, n) parameters")
    ap.add_argument("--index", type=int, default=0, help="row of a (B, n) array")
    ap.add_argument("--face-model", choices=("ict", "bfm"), default=default("face_model.name"))
    ap.add_argument(
        "--model-path",
        default=None,
        help="ICT-FaceKit archive/folder or bfm_noneck_v3.pkl (default: vox3d.paths)",
    )
    ap.add_argument(
        "--subset",
        default=default("face_model.subset"),
        help="ICT subset: head | face_neck | face | narrow_face",
    )
    ap.add_argument("--n-id", type=int, default=None, help="ICT identity modes (default: from n)")
    ap.add_argument(
        "--n-exp", type=int, default=default("face_model.n_exp"),
        help="ICT expression modes in the params",
    )  # fmt: skip
    ap.add_argument("--out", required=True, help="mesh file (.obj or .ply)")
    ap.add_argument("--posed", action="store_true", help="apply the pose (3DDFA-V2 crop coords)")
    ap.add_argument("--png", default=None, help="also write a lit render")
    ap.add_argument("--size", type=int, default=512, help="render size in pixels")
    a = ap.parse_args(argv)
    try:
        params = np.load(a.params, allow_pickle=False)
    except (OSError, ValueError) as e:
        print(f"vox3d mesh: {a.params}: cannot read parameters ({e})", file=sys.stderr)
        return 1
    params = np.asarray(params, dtype=np.float32)
    if params.ndim == 2:
        if not 0 <= a.index < len(params):
            print(f"vox3d mesh: {a.params}: no row {a.index} (has {len(params)})", file=sys.stderr)
            return 1
        params = params[a.index]
    if params.ndim != 1:
        print(
            f"vox3d mesh: {a.params}: expected (n,) or (B, n), got {params.shape}", file=sys.stderr
        )
        return 1
    n = params.shape[0]
    try:
        if a.face_model == "ict":
            n_id = a.n_id if a.n_id is not None else n - 12 - a.n_exp
            layout = ict_layout(n_id, a.n_exp)
            model = load_face_model(
                "ict",
                path=a.model_path or paths.ICT_FACEKIT,
                subset=a.subset,
                n_id=layout.n_id,
                n_exp=layout.n_exp,
            )
        else:
            model = load_face_model("bfm", path=a.model_path)
            layout = model_layout(model)
        if n != layout.n:
            raise ValueError(f"{a.params}: {n} parameters, {a.face_model} layout needs {layout.n}")
    except (BadModelFileError, ValueError) as e:
        print(f"vox3d mesh: {e}", file=sys.stderr)
        return 1
    P, a_id, a_exp = split(params, layout)
    verts = model.vertices(a_id, a_exp)
    if a.posed:
        verts = transform_vertices(verts, P)
    save_mesh(a.out, verts, model.triangles)
    print(f"wrote {a.out} ({len(verts)} vertices, {len(model.triangles)} triangles)")
    if a.png:
        img = render_shape(model.vertices(a_id, a_exp), model.triangles, size=a.size)
        save_png(a.png, img)
        print(f"wrote {a.png}")
    return 0
