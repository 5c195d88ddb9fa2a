"""``vox3d image2mesh IMAGE``: single-image 3D face fitting (3DDFA-V2 style), CPU or GPU.

Pipeline: FaceBoxes (:mod:`vox3d.face.detector`) -> 3DDFA-V2 ROI and 120x120 crop
(:mod:`vox3d.face.crop`) -> MobileNet regressor (:mod:`vox3d.face.regressor`) -> parameters.

* ``--face-model bfm``: 3DDFA-V2's mb05 (or ``--weights`` mb1 / other) checkpoint, 62
  parameters in the original's order (12 pose | 40 shape | 10 expression).  Parameters
  need no BFM file; ``--out`` / ``--png`` need the BFM basis ``bfm_noneck_v3.pkl``
  (``--bfm PATH``; upstream github.com/cleardusk/3DDFA_V2 ``configs/``, BFM academic
  licence).
* ``--face-model ict`` (default): the ICT-FaceKit regressor checkpoint
  ``vox3d/data/ict_regressor.pth`` (+ its ``.json``; trained by the ``train_regressor``
  rule), parameters in ``vox3d.params.ict_layout(n_id, n_exp)`` order.

Outputs: ``--json`` (per face: ``box`` x1, y1, x2, y2, score in image pixels, ``roi_box``,
``params``), ``--out`` an OBJ with one mesh per detected face in image coordinates with
y pointing up (``x, H - y, z``, like 3DDFA-V2's OBJ export), ``--png`` the meshes drawn
over the image (Sim3DR, Lambert lighting, 60% opacity).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vox3d import paths
from vox3d.config import default
from vox3d.face.face_model import load_face_model
from vox3d.fitting.ict_checkpoint import read_checkpoint_meta
from vox3d.io import write_bytes_atomic, write_text_atomic
from vox3d.params import TDDFA_LAYOUT, ict_layout, split, to_image, transform_vertices
from vox3d.safeload import BadModelFileError

#: Default ICT regressor checkpoint (committed; trained by :mod:`vox3d.fitting.regressor_data`).
ICT_REGRESSOR = paths.PACKAGE_DATA / "ict_regressor.pth"
BFM_HELP = (
    "bfm_noneck_v3.pkl (the BFM basis of 3DDFA-V2: github.com/cleardusk/3DDFA_V2, "
    "configs/bfm_noneck_v3.pkl; Basel Face Model academic licence, not shipped)"
)


class Image2MeshError(RuntimeError):
    """A user-facing error (bad input file, missing asset)."""


def read_image_bgr(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` BGR; raise naming the file."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise Image2MeshError(f"{path}: image not found")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise Image2MeshError(f"{path}: not a readable image")
    return img


def make_regressor(face_model: str, args: argparse.Namespace):
    """``(Regressor, layout, model_info dict)`` for the chosen face model."""
    from vox3d.face.regressor import Regressor

    if face_model == "bfm":
        weights = Path(args.weights) if args.weights else paths.MB05_WEIGHTS
        widen = args.widen if args.widen else (1.0 if "mb1" in weights.name else 0.5)
        reg = Regressor(
            weights,
            args.param_mean_std or paths.PARAM_MEAN_STD,
            widen=widen,
            device=args.device,
            precision=args.precision,
        )
        return reg, TDDFA_LAYOUT, {"weights": str(weights), "widen": widen}
    ckpt = Path(args.ict_regressor) if args.ict_regressor else ICT_REGRESSOR
    if not ckpt.is_file():
        raise Image2MeshError(
            f"{ckpt}: ICT regressor checkpoint not found; train it with `snakemake "
            "train_regressor` (or `python -m vox3d.fitting.regressor_data all`, see its --help), "
            "pass --ict-regressor PATH, or use --face-model bfm"
        )

    meta = read_checkpoint_meta(ckpt)
    n_id, n_exp = int(meta["n_id"]), int(meta["n_exp"])
    reg = Regressor(
        ckpt,
        (np.asarray(meta["param_mean"], np.float32), np.asarray(meta["param_std"], np.float32)),
        widen=float(meta["widen"]),
        num_params=int(meta["num_params"]),
        device=args.device,
        precision=args.precision,
    )
    return reg, ict_layout(n_id, n_exp), {"weights": str(ckpt), "n_id": n_id, "n_exp": n_exp}


def fit_image(image_bgr: np.ndarray, detector, regressor) -> list[dict]:
    """Faces of one BGR image: list of ``{"box" (5,), "roi_box" (4,), "params" (P,)}``
    (numpy arrays), best detection first."""
    from vox3d.face.crop import crop_image, roi_box_from_bbox

    dets = detector.detect(image_bgr)
    if len(dets) == 0:
        return []
    rois = np.stack([roi_box_from_bbox(b) for b in dets])
    params = regressor.predict(np.stack([crop_image(image_bgr, r) for r in rois]))
    return [{"box": dets[i], "roi_box": rois[i], "params": params[i]} for i in range(len(dets))]


def faces_to_json(
    faces: list[dict], image: str, image_shape, face_model: str, info: dict, layout
) -> dict:
    """The ``--json`` document (plain floats, the original's parameter order)."""
    return {
        "image": str(image),
        "image_size": [int(image_shape[1]), int(image_shape[0])],
        "face_model": face_model,
        "regressor": info,
        "layout": {"pose": 12, "shape": layout.n_id, "exp": layout.n_exp},
        "faces": [
            {
                "box": [float(v) for v in f["box"]],
                "roi_box": [float(v) for v in f["roi_box"]],
                "params": [float(v) for v in f["params"]],
            }
            for f in faces
        ],
    }


def load_mesh_model(face_model: str, args: argparse.Namespace, layout):
    """The face model for ``--out`` / ``--png`` (clear error when its file is missing)."""
    if face_model == "bfm":
        if not args.bfm:
            raise Image2MeshError(
                f"--out/--png with --face-model bfm need {BFM_HELP}: pass --bfm PATH"
            )
        if not Path(args.bfm).is_file():
            raise Image2MeshError(f"{args.bfm}: not found; expected {BFM_HELP}")
        return load_face_model("bfm", path=args.bfm, n_id=layout.n_id, n_exp=layout.n_exp)
    kw = {"path": args.ict_facekit} if args.ict_facekit else {}
    return load_face_model("ict", subset=args.subset, n_id=layout.n_id, n_exp=layout.n_exp, **kw)


def face_vertices_image(fm, params: np.ndarray, roi_box, layout) -> np.ndarray:
    """Vertices ``(V, 3) float32`` of one face in image pixels (x right, y down, z near)."""
    P, a_shp, a_exp = split(np.asarray(params, np.float32), layout)
    v = fm.vertices(a_shp, a_exp)
    return to_image(transform_vertices(v, P), roi_box)


def write_obj(
    path: str | Path, meshes: list[np.ndarray], triangles: np.ndarray, height: int
) -> None:
    """One OBJ holding every face mesh, y up (``x, height - y, z``), atomically."""
    lines = [f"# vox3d image2mesh: {len(meshes)} face(s), image coordinates, y up"]
    tri = np.asarray(triangles, np.int64)
    off = 0
    for v in meshes:
        lines += [f"v {x:.3f} {height - y:.3f} {z:.3f}" for x, y, z in np.asarray(v, np.float64)]
    for v in meshes:
        lines += [f"f {a} {b} {c}" for a, b, c in (tri + off + 1)]
        off += len(v)
    write_text_atomic(path, "\n".join(lines) + "\n")


def render_overlay(image_bgr: np.ndarray, meshes: list[np.ndarray], triangles) -> np.ndarray:
    """Meshes drawn over the image (Sim3DR, Lambert, 60% opacity) -> BGR uint8."""
    try:
        from vox3d.face.render import Light, Mesh, render_meshes
    except ImportError as e:  # the compiled extension is missing
        raise Image2MeshError(
            f"--png needs the compiled Sim3DR renderer ({e}); build it with "
            "`python setup.py build_ext --inplace` (done by `make test` / `make run`)"
        ) from e
    rgb = np.ascontiguousarray(image_bgr[..., ::-1])
    res = render_meshes(
        [Mesh(v, triangles) for v in meshes], image=rgb, light=Light.lambert(), alpha=0.6
    )
    return np.ascontiguousarray(res.image[..., ::-1])


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="vox3d image2mesh",
        description="detect faces in an image and regress 3DMM parameters (3DDFA-V2 style)",
    )
    ap.add_argument("image", help="image file (jpg, png, ...)")
    ap.add_argument("--face-model", choices=["ict", "bfm"], default="ict")
    ap.add_argument("--out", help="OBJ with one mesh per face (needs the face model's basis)")
    ap.add_argument("--png", help="overlay of the meshes on the image")
    ap.add_argument("--json", help="per face: box, roi_box, params")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument(
        "--precision", default=default("fit.precision"), choices=["fp32", "fp16", "bf16"]
    )
    ap.add_argument("--faceboxes", default=str(paths.FACEBOXES_WEIGHTS), help="FaceBoxesProd.pth")
    ap.add_argument("--weights", help="bfm: regressor checkpoint (default mb05_120x120.pth)")
    ap.add_argument("--widen", type=float, help="bfm: MobileNet widen factor (default from name)")
    ap.add_argument("--param-mean-std", help="bfm: param_mean_std_62d_120x120.pkl")
    ap.add_argument("--bfm", help=f"bfm: {BFM_HELP}")
    ap.add_argument("--ict-regressor", help=f"ict: checkpoint (default {ICT_REGRESSOR})")
    ap.add_argument("--ict-facekit", help="ict: ICT-FaceKit archive or FaceXModel folder")
    ap.add_argument(
        "--subset", default=default("face_model.subset"), help="ict: vertex subset of the mesh"
    )
    return ap


def cli(argv: list[str]) -> int:
    """Entry point of ``vox3d image2mesh``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (Image2MeshError, BadModelFileError, ValueError, OSError) as e:
        print(f"vox3d image2mesh: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    import torch

    from vox3d.face.detector import FaceBoxes

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise Image2MeshError("--device cuda: no CUDA device available")
    img = read_image_bgr(args.image)
    # fail early on a missing mesh asset, before any network runs
    regressor, layout, info = make_regressor(args.face_model, args)
    fm = load_mesh_model(args.face_model, args, layout) if (args.out or args.png) else None
    detector = FaceBoxes(args.faceboxes, device=args.device)
    faces = fit_image(img, detector, regressor)
    if args.json:
        doc = faces_to_json(faces, args.image, img.shape, args.face_model, info, layout)
        write_text_atomic(args.json, json.dumps(doc, indent=1) + "\n")
    print(f"{args.image}: {len(faces)} face(s)")
    if fm is not None:
        if not faces:
            raise Image2MeshError(f"{args.image}: no face detected, no mesh written")
        meshes = [face_vertices_image(fm, f["params"], f["roi_box"], layout) for f in faces]
        if args.out:
            write_obj(args.out, meshes, fm.triangles, img.shape[0])
            print(f"{args.out}: {len(meshes)} mesh(es), {fm.n_vertices} vertices each")
        if args.png:
            import cv2

            ok, buf = cv2.imencode(".png", render_overlay(img, meshes, fm.triangles))
            if not ok:
                raise Image2MeshError(f"{args.png}: PNG encoding failed")
            write_bytes_atomic(args.png, buf.tobytes())
            print(f"{args.png}: overlay written")
    return 0
