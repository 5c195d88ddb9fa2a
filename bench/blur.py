"""The blur measure on real VoxCeleb2 faces, sharp and Gaussian-blurred (calibrates
``fit.min_blur``).

    python bench/blur.py [--frames-per-clip 6]

For every real clip of ``../shared/data/real/voxceleb`` (or ``VOX3D_DATA``): one frame a
second, FaceBoxes' best face, the 3DDFA-V2 crop; then the variance of the Laplacian of the
crop (:func:`vox3d.fitting.quality.laplacian_variance`) over the in-frame part of the crop (what the
fit stage uses) and over the whole crop (the padding included), for the frame as decoded
and blurred with a Gaussian of sigma 1-4 frame pixels.  Prints min / median / max per sigma.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIGMAS = (0.0, 1.0, 1.5, 2.0, 3.0, 4.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames-per-clip", type=int, default=6)
    a = ap.parse_args(argv)
    import av
    import cv2

    from vox3d import paths
    from vox3d.face.crop import crop_image, roi_box_from_bbox
    from vox3d.face.detector import FaceBoxes
    from vox3d.fitting.quality import crop_windows, laplacian_variance

    clips = sorted((paths.DATA_ROOT / "real" / "voxceleb").glob("*/*/*.mp4"))
    if not clips:
        print(f"no clips under {paths.DATA_ROOT / 'real' / 'voxceleb'}", file=sys.stderr)
        return 1
    det = FaceBoxes()
    inside: dict[float, list[float]] = {s: [] for s in SIGMAS}
    whole: dict[float, list[float]] = {s: [] for s in SIGMAS}
    for c in clips:
        with av.open(str(c)) as f:
            frames = [
                x.to_ndarray(format="bgr24") for i, x in enumerate(f.decode(video=0)) if i % 25 == 0
            ][: a.frames_per_clip]
        for im in frames:
            d = det.detect(im)
            if not len(d):
                continue
            roi = np.asarray(roi_box_from_bbox(d[0]))
            win = crop_windows(roi[None], im.shape[:2])
            for s in SIGMAS:
                b = cv2.GaussianBlur(im, (0, 0), s) if s else im
                crop = crop_image(b, roi)[None]
                inside[s].append(float(laplacian_variance(crop, win)[0]))
                whole[s].append(float(laplacian_variance(crop)[0]))
    print(f"{len(clips)} real VoxCeleb2 clips, {len(inside[0.0])} faces")
    print(
        f"{'sigma (px)':>10}  {'in-frame min / median / max':>28}  {'whole crop min / median / max':>30}"
    )
    for s in SIGMAS:
        i, w = np.array(inside[s]), np.array(whole[s])
        print(
            f"{s:>10g}  {i.min():8.0f} {np.median(i):8.0f} {i.max():8.0f}    "
            f"{w.min():8.0f} {np.median(w):8.0f} {w.max():8.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
