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

import sys

import numpy as np


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
