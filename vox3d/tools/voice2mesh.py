"""``vox3d voice2mesh AUDIO --out mesh.obj [--checkpoint C | --out-dir OUT] [--unsupervised]
[--png render.png] [--face-png face.png]``.

The model is ``--checkpoint``, else the one the workflow trained: ``OUT/train/model.pt``
(``OUT/train/unsupervised.pt`` with ``--unsupervised``) with ``OUT`` = ``--out-dir``, else
config.yaml's ``out_dir`` (relative to the project root, where Snakemake runs:
``results/train/model.pt`` by default).  Either variant's file is served; which one it is
is read from the file.  ``--face-png`` writes the unsupervised variant's generated face
image (the voice -> image generator's output, 64x64, shown at 256x256).

AUDIO: a wav, flac or video file (anything :func:`vox3d.audio.pcm.load_audio` decodes).  The utterance's
log-mel features (voice activity detection + the CMP filterbank, as in training) go
through the trained voice model; the predicted identity coefficients become a neutral
mesh of the face model the model was trained for, written as OBJ (and an optional frontal
render as PNG).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from vox3d.audio import featurefile
from vox3d.audio.fbank import CMP_INPUT_NORM, model_input, repeat_frames
from vox3d.audio.pcm import BadAudio
from vox3d.config import default
from vox3d.face.face_model import face_model_from_config
from vox3d.face.mesh import save_obj
from vox3d.io import atomic_path
from vox3d.paths import REPO_ROOT
from vox3d.safeload import BadModelFileError, load_torch
from vox3d.torch_setup import resolve_device

#: Where the workflow's `train` rule writes the final model, under ``out_dir``.
TRAINED_MODEL = Path("train") / "model.pt"
#: ... and rule `train_unsupervised` the unsupervised variant.
UNSUPERVISED_MODEL = Path("train") / "unsupervised.pt"


def default_checkpoint(
    out_dir: str | os.PathLike | None = None, unsupervised: bool = False
) -> Path:
    """``<out_dir>/train/model.pt``; `out_dir` defaults to config.yaml's ``out_dir``, taken
    relative to the project root (the workflow's working folder) when it is relative."""
    if out_dir is None:
        out_dir = Path(default("out_dir"))
        if not out_dir.is_absolute():
            out_dir = REPO_ROOT / out_dir
    return Path(out_dir) / (UNSUPERVISED_MODEL if unsupervised else TRAINED_MODEL)


def load_voice_model(checkpoint: str | Path):
    """``(model, metadata, variant)`` of either variant's model file (``supervised``:
    :class:`vox3d.voice.voice_model.VoiceToShape`; ``unsupervised``:
    :class:`vox3d.voice.distill.UnsupervisedVoiceModel`), told apart by the file's format tag."""
    from vox3d.voice.distill import MODEL_FORMAT, load_unsupervised
    from vox3d.voice.voice_model import load_model

    blob = load_torch(checkpoint)
    if isinstance(blob, dict) and blob.get("format") == MODEL_FORMAT:
        model = load_unsupervised(checkpoint, blob=blob)
        return model, model.meta, "unsupervised"
    model, meta = load_model(checkpoint, blob=blob)
    return model, meta, "supervised"


def predict_coefficients(
    audio: str | Path, checkpoint: str | Path, device: str = "cpu", face_png: str | None = None
):
    """``(coefficients (K,) float64, model file metadata)`` for one recording; with
    `face_png` (unsupervised variant only) also the generated face image, written there."""
    import torch

    dev = torch.device(resolve_device(device, "--device"))
    model, meta, variant = load_voice_model(checkpoint)
    if face_png and variant != "unsupervised":
        raise ValueError(f"{checkpoint}: a supervised model generates no face image (--face-png)")
    uf = featurefile.file_features(str(audio))
    # the input the model was trained on: CMP's normalised frames, or the log-mel before
    # that normalisation (a supervised model with input_norm none)
    norm = model.cfg.input_norm if variant == "supervised" else CMP_INPUT_NORM
    feats = repeat_frames(model_input(uf.frames, uf.mean, uf.std, norm))
    if feats.ndim != 2 or feats.shape[1] != model.cfg.n_bands or len(feats) == 0:
        raise ValueError(f"{audio}: no usable voice features (shape {feats.shape})")
    model.to(dev)
    x = torch.from_numpy(feats)[None].to(dev)
    with torch.no_grad():
        coef = model.coefficients(x)[0].cpu().numpy()
    if face_png:
        from PIL import Image

        from vox3d.voice.distill import tensor_to_images

        img = tensor_to_images(model.faces(x))[0][..., ::-1]  # BGR -> RGB
        with atomic_path(face_png) as tmp:
            Image.fromarray(np.ascontiguousarray(img)).resize((256, 256), Image.NEAREST).save(
                tmp, format="PNG"
            )
    return coef.astype(np.float64), {**meta, "variant": variant}


def cli(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="vox3d voice2mesh", description="predict a 3D face mesh from a voice recording"
    )
    ap.add_argument("audio", help="wav, flac or video file")
    ap.add_argument(
        "--checkpoint", help="trained model (default: OUT/train/model.pt, OUT from --out-dir)"
    )
    ap.add_argument(
        "--out-dir",
        help="the workflow's out_dir whose train/model.pt is used (default: config.yaml out_dir)",
    )
    ap.add_argument("--out", required=True, help="output mesh (.obj)")
    ap.add_argument("--png", help="optional frontal render (.png)")
    ap.add_argument(
        "--unsupervised", action="store_true",
        help="use OUT/train/unsupervised.pt (the unsupervised variant) when no --checkpoint",
    )  # fmt: skip
    ap.add_argument("--face-png", help="unsupervised variant: the generated face image (.png)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument(
        "--face-model-path", help="ICT-FaceKit archive / BFM pickle (default: config assets)"
    )
    ap.add_argument(
        "--subset",
        default=default("face_model.subset"),
        help="face-model vertex subset of the mesh",
    )
    args = ap.parse_args(argv)

    checkpoint = (
        Path(args.checkpoint)
        if args.checkpoint
        else default_checkpoint(args.out_dir, args.unsupervised)
    )
    if not checkpoint.is_file():
        how = (
            "check --checkpoint"
            if args.checkpoint
            else "train it first (snakemake train, or train_unsupervised with train.mode: "
            "unsupervised / both), or give --checkpoint or --out-dir"
        )
        print(f"vox3d voice2mesh: no trained model at {checkpoint}: {how}", file=sys.stderr)
        return 1
    try:
        coef, meta = predict_coefficients(args.audio, checkpoint, args.device, args.face_png)
        fcfg = {"name": meta.get("face_model") or "ict", "subset": args.subset, "n_exp": 0}
        if args.face_model_path:
            fcfg["path"] = args.face_model_path
        fm = face_model_from_config(fcfg, n_id=len(coef))
    except (BadAudio, BadModelFileError, ValueError, OSError) as e:
        print(f"vox3d voice2mesh: {e}", file=sys.stderr)
        return 1
    verts = fm.vertices(coef.astype(np.float32))
    save_obj(args.out, verts, fm.triangles)
    if args.png:
        from PIL import Image

        from vox3d.report.figures import frontal_image_coords, render_mesh

        img = render_mesh(frontal_image_coords(verts, 512), fm.triangles, size=512)
        with atomic_path(args.png) as tmp:
            Image.fromarray(img).save(tmp, format="PNG")
    print(
        f"model {checkpoint} ({meta['variant']}); identity coefficients {np.round(coef[:5], 3)} ..."
    )
    print(f"mesh written to {Path(args.out).resolve()} ({len(verts)} vertices)")
    if args.png:
        print(f"render written to {Path(args.png).resolve()}")
    if args.face_png:
        print(f"generated face written to {Path(args.face_png).resolve()}")
    return 0
