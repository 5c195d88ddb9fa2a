"""Parity of our detector, crop and regressor with the original 3DDFA-V2 code, measured.

    python bench/parity_3ddfa.py

On the upstream demo photographs and ``3ddfa_v2/reference_mb05.npz`` (outputs of the
original code: FaceBoxes + mb05 on CPU, box crop policy; see the shared data README),
prints the largest differences of our CPU path (one thread) from the original's:
FaceBoxes boxes (pixels) and scores, ROI boxes (pixels), the 120x120 crops (grey levels),
the regressor's raw output on the original's crops and the parameters of the whole
detect -> ROI -> crop -> regress path (both in whitened units, the network's own scale).
The tests (``tests/test_detector.py``, ``test_crop.py``, ``test_regressor.py``) assert
bounds on the same differences; this prints the values.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    import cv2
    import torch

    from vox3d import paths
    from vox3d.face.crop import crop_image, roi_box_from_bbox
    from vox3d.face.detector import FaceBoxes
    from vox3d.face.regressor import Regressor

    torch.set_num_threads(1)
    ref = np.load(paths.TDDFA_DIR / "reference_mb05.npz")
    fb, reg = FaceBoxes(), Regressor()
    box = score = roi = crop = full = 0.0
    n_faces = 0
    for k, name in enumerate(paths.TDDFA_EXAMPLES):
        img = cv2.imread(str(paths.TDDFA_DIR / "examples" / f"{name}.jpg"))
        dets = fb.detect(img)
        want = ref[f"{name}/boxes"]
        if dets.shape != want.shape:
            raise SystemExit(f"{name}: {len(dets)} faces found, the original found {len(want)}")
        n_faces += len(dets)
        box = max(box, float(np.abs(dets[:, :4] - want[:, :4]).max()))
        score = max(score, float(np.abs(dets[:, 4] - want[:, 4]).max()))
        rois = np.stack([roi_box_from_bbox(b) for b in dets])
        roi = max(roi, float(np.abs(rois - ref[f"{name}/roi_boxes"]).max()))
        c0 = crop_image(img, ref[f"{name}/roi_boxes"][0])
        crop = max(crop, float(np.abs(c0.astype(int) - ref["crops_bgr_uint8"][k]).max()))
        params = reg.predict(np.stack([crop_image(img, r) for r in rois]))
        full = max(full, float((np.abs(params - ref[f"{name}/params"]) / reg.std).max()))
    raw = float(np.abs(reg.raw(ref["crops_bgr_uint8"]) - ref["crops_raw_output"]).max())
    print(f"photographs: {len(paths.TDDFA_EXAMPLES)}, faces: {n_faces} (the original's count)")
    print(f"FaceBoxes boxes, max abs difference: {box:.2e} px")
    print(f"FaceBoxes scores, max abs difference: {score:.2e}")
    print(f"ROI boxes, max abs difference: {roi:.2e} px")
    print(f"crops of the original's ROIs, max abs difference: {crop:.0f} grey levels")
    print(f"regressor raw output on the original's crops, max abs difference: {raw:.2e}")
    print(f"detect -> crop -> regress parameters, max abs difference: {full:.2e} (whitened)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
