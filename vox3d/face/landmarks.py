"""Optional landmark check of the fit stage (config ``fit.landmarks: fan``).

face-alignment's 2D-FAN (Bulat & Tzimiropoulos, ICCV 2017; the ``face_alignment`` package,
network class ``face_alignment.models.fan.FAN``) predicts 68 landmark heatmaps on a
256x256 face crop; we compare its landmarks with the fitted model's 68 landmarks projected
into the frame and store the NME (mean point distance over ``sqrt(w * h)`` of the detector
box) as a quality field (``landmark_nme``; frames above ``fit.max_landmark_nme`` are
rejected with reason ``landmarks``).

Weights: the upstream 2DFAN-4 checkpoint, a plain ``state_dict`` (read here with
torch weights-only loading through :func:`vox3d.safeload.load_torch`):

* upstream URL :data:`FAN_URL` (the one face-alignment 1.5 downloads itself);
* looked up at ``fit.fan_weights`` when set, else ``$TORCH_HOME/hub/checkpoints/<file>``
  (``torch.hub.get_dir()``), where face-alignment caches it.  Nothing is downloaded here;
  a missing file is an error naming the path and the URL.

Crop facts (face-alignment): centre = box centre moved up by 0.12 x box height; scale =
(w + h) / 195; the square of side 200 x scale around the centre is resized to 256 x 256,
RGB / 255; heatmaps are 64 x 64; a peak at integer (j, i) is refined by a quarter pixel
towards the larger neighbour and taken at the pixel centre.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vox3d.params import split, to_image
from vox3d.safeload import BadModelFileError, check_state_dict, load_torch

#: Upstream 2DFAN-4 weights (face-alignment 1.5's ``models_urls['2DFAN-4']``).
FAN_URL = "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar"
FAN_FILE = FAN_URL.rsplit("/", 1)[1]
REFERENCE_SCALE = 195.0
SCALE_FACTOR = 200.0
CENTER_Y_OFFSET = 0.12
INPUT_SIZE = 256
HEATMAP_SIZE = 64


def default_fan_path() -> Path:
    """``$TORCH_HOME/hub/checkpoints/2DFAN4-....pth.tar`` (face-alignment's cache)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / FAN_FILE


def load_fan(path: str | os.PathLike | None = None, device: str = "cpu"):
    """The FAN network with weights from `path` (default :func:`default_fan_path`), eval.

    The number of hourglass modules is read from the state dict (2DFAN-4 has 4).
    """
    import re

    import torch
    from face_alignment.models.fan import FAN

    p = Path(path) if path else default_fan_path()
    if not p.is_file():
        raise FileNotFoundError(
            f"{p}: FAN landmark weights not found (fit.landmarks: fan). Download {FAN_URL} "
            f"to {default_fan_path()} (face-alignment's cache under TORCH_HOME) or set "
            "config fit.fan_weights to the file; or set fit.landmarks: none"
        )
    state = load_torch(p, map_location="cpu")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise BadModelFileError(f"{p}: not a FAN state_dict")
    mods = {int(m.group(1)) for k in state if (m := re.match(r"m(\d+)\.", k))}
    net = FAN(max(mods) + 1 if mods else 4)
    check_state_dict(state, {k: tuple(v.shape) for k, v in net.state_dict().items()}, str(p))
    net.load_state_dict(state)
    return net.to(device).eval()


def fan_crop_params(box) -> tuple[np.ndarray, float]:
    """Centre (2,) and square side (px) of FAN's crop for a box (x1, y1, x2, y2, ...)."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box)[:4])
    c = np.array([x2 - (x2 - x1) / 2.0, y2 - (y2 - y1) / 2.0])
    c[1] -= (y2 - y1) * CENTER_Y_OFFSET
    side = SCALE_FACTOR * (x2 - x1 + y2 - y1) / REFERENCE_SCALE
    return c, side


def crop_for_fan(image_rgb: np.ndarray, box) -> np.ndarray:
    """(256, 256, 3) uint8 RGB crop of `image_rgb` for FAN (bilinear, black outside)."""
    import cv2

    c, side = fan_crop_params(box)
    k = INPUT_SIZE / side
    M = np.array(
        [[k, 0, INPUT_SIZE * (0.5 - c[0] / side)], [0, k, INPUT_SIZE * (0.5 - c[1] / side)]]
    )
    return cv2.warpAffine(
        image_rgb, M, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR, borderValue=0
    )


def heatmap_peaks(hm: np.ndarray) -> np.ndarray:
    """(B, 68, 64, 64) heatmaps -> (B, 68, 2) x, y in heatmap pixels (pixel centres at +0.5,
    quarter-pixel refinement towards the larger neighbour)."""
    b, n, h, w = hm.shape
    flat = hm.reshape(b, n, -1).argmax(-1)
    y, x = np.divmod(flat, w)
    out = np.stack([x, y], -1).astype(np.float64) + 0.5
    bi, ni = np.meshgrid(np.arange(b), np.arange(n), indexing="ij")
    inner_x = (x > 0) & (x < w - 1)
    inner_y = (y > 0) & (y < h - 1)
    dx = hm[bi, ni, y, np.clip(x + 1, 0, w - 1)] - hm[bi, ni, y, np.clip(x - 1, 0, w - 1)]
    dy = hm[bi, ni, np.clip(y + 1, 0, h - 1), x] - hm[bi, ni, np.clip(y - 1, 0, h - 1), x]
    out[..., 0] += np.where(inner_x, 0.25 * np.sign(dx), 0)
    out[..., 1] += np.where(inner_y, 0.25 * np.sign(dy), 0)
    return out


class FanLandmarker:
    """FAN landmarks of detected faces and their NME against the fitted model landmarks.

    `face_model`: the :class:`vox3d.face.face_model.FaceModel` whose 68 landmarks the fitted
    parameters move (its mode counts must match `layout`).
    """

    def __init__(self, weights, device, face_model, layout) -> None:
        self.device = device
        self.net = load_fan(weights, device)
        li = np.asarray(face_model.landmarks68)
        k, e = layout.n_id, layout.n_exp
        self.mean = face_model.mean[li].astype(np.float64)
        self.idb = face_model.id_basis[:k][:, li].astype(np.float64).reshape(k, -1)
        self.exb = face_model.exp_basis[:e][:, li].astype(np.float64).reshape(e, -1)
        self.layout = layout

    def landmarks(self, frames_rgb, boxes: np.ndarray) -> np.ndarray:
        """(B, 68, 2) FAN landmarks in frame pixels for each frame's box (B, 4+)."""
        import torch

        crops = np.stack([crop_for_fan(f, b) for f, b in zip(frames_rgb, boxes, strict=True)])
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255.0).to(self.device)
        with torch.inference_mode():
            out = self.net(x)
        hm = (out[-1] if isinstance(out, list | tuple) else out).float().cpu().numpy()
        pk = heatmap_peaks(hm)
        res = np.empty_like(pk)
        for i, b in enumerate(boxes):
            c, side = fan_crop_params(b)
            res[i] = c + (pk[i] / HEATMAP_SIZE - 0.5) * side
        return res

    def model_landmarks(self, params: np.ndarray, rois: np.ndarray) -> np.ndarray:
        """(B, 68, 2) model landmarks of fitted params (B, P) in frame pixels."""
        P, a, e = split(np.asarray(params, np.float64), self.layout)
        out = np.empty((len(params), 68, 2))
        for i in range(len(params)):
            v = (self.mean.reshape(-1) + a[i] @ self.idb + e[i] @ self.exb).reshape(-1, 3)
            out[i] = to_image(v @ P[i, :, :3].T + P[i, :, 3], rois[i])[:, :2]
        return out

    def nme(self, frames_rgb, boxes, rois, params) -> np.ndarray:
        """(B,) mean FAN-vs-model landmark distance over sqrt(w * h) of the box."""
        boxes = np.asarray(boxes, np.float64)
        d = np.linalg.norm(
            self.landmarks(frames_rgb, boxes) - self.model_landmarks(params, rois), axis=-1
        ).mean(-1)
        wh = np.sqrt(
            np.clip(boxes[:, 2] - boxes[:, 0], 1, None)
            * np.clip(boxes[:, 3] - boxes[:, 1], 1, None)
        )
        return (d / wh).astype(np.float32)
