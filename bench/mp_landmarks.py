"""MediaPipe face mesh (468 points, 3D) of decoded frames, for ``bench/real_identity.py``.

Runs in its own venv (mediapipe pins numpy/protobuf of its own)::

    python3.11 -m venv .venv-mp && .venv-mp/bin/pip install mediapipe==0.10.14
    .venv-mp/bin/python bench/mp_landmarks.py FRAMES.npz OUT.npz

FRAMES.npz: arrays ``clipN`` of ``(F, H, W, 3) uint8`` RGB frames.  OUT.npz: for each
``clipN`` an array ``(F, 468, 3) float32`` in pixels: x right, y down, z toward the
camera-negative as MediaPipe gives it (its normalised z times the frame width, the scale
MediaPipe documents as roughly that of x); NaN rows for a frame without a face.  Every
frame is processed on its own (``static_image_mode=True``: no tracking between frames),
so the output does not depend on frame order.  The model is the 468-point face mesh
inside the mediapipe 0.10.14 wheel (no download).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: The MediaPipe venv's interpreter (see the module docstring).
MP_PYTHON = Path(__file__).resolve().parents[1] / ".venv-mp" / "bin" / "python"


def run_in_venv(clips: Sequence[np.ndarray], work: Path) -> tuple[list[np.ndarray], str]:
    """From any interpreter: the meshes ``(F, 468, 3)`` of each clip's frames ``(F, H, W, 3)``
    and the MediaPipe version, by running this script in ``.venv-mp`` (files in `work`)."""
    src, dst = Path(work) / "mp_frames.npz", Path(work) / "mp_meshes.npz"
    np.savez(src, **{f"clip{i}": f for i, f in enumerate(clips)})
    subprocess.run(
        [str(MP_PYTHON), str(Path(__file__).resolve()), str(src), str(dst)],
        check=True,
        stdout=sys.stderr,
        env={**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    src.unlink()
    d = np.load(dst)
    return [d[f"clip{i}"] for i in range(len(clips))], str(d["mediapipe_version"])


def landmarks(frames: np.ndarray, face_mesh) -> np.ndarray:
    """``(F, 468, 3) float32`` pixels of ``frames (F, H, W, 3) uint8`` RGB (NaN: no face)."""
    f, h, w = frames.shape[:3]
    out = np.full((f, 468, 3), np.nan, np.float32)
    for i in range(f):
        res = face_mesh.process(np.ascontiguousarray(frames[i]))
        if not res.multi_face_landmarks:
            continue
        lm = res.multi_face_landmarks[0].landmark
        out[i] = np.array([(p.x * w, p.y * h, p.z * w) for p in lm[:468]], np.float32)
    return out


def main(argv: list[str]) -> int:
    """``mp_landmarks.py FRAMES.npz OUT.npz``; prints one line per clip."""
    import mediapipe as mp

    src, dst = argv
    data = np.load(src)
    result = {}
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=1, refine_landmarks=False
    ) as fm:
        for key in sorted(data.files, key=lambda k: int(k[4:])):
            result[key] = landmarks(data[key], fm)
            found = int(np.isfinite(result[key][:, 0, 0]).sum())
            print(f"{key}: {found}/{len(result[key])} frames with a face", flush=True)
    np.savez(dst, mediapipe_version=np.array(mp.__version__), **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
