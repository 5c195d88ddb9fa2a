"""The supervised loss of the voice -> shape model (:class:`ShapeLoss`) and its mean over
whole utterances (:func:`evaluate_loss`: the validation losses and the checkpoint selection
of :mod:`vox3d.voice.train`).

Loss (supervised): ``param_weight * MSE(z_pred, z_target)`` on standardised identity
coefficients plus ``vertex_weight * mean ||v_pred - v_target||^2 / s2`` over the face-area
vertices of the face model, where ``s2`` is the mean squared distance of the training
targets' face-area vertices from their mean mesh (so the vertex term is unit free and
equals ~1 for always predicting the mean face).  Vertices are linear in the coefficients
(``v = mean + sum_k c_k B_k``), so only the identity basis of the face area is needed.
The optional ratio term is the mean absolute error of the ARE face ratios, computed at the
vertex pairs of :func:`ratio_pair_vertices`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from vox3d.config import default
from vox3d.face.metrics import OICD_KEY, RATIO_PAIR_KEY, RATIOS
from vox3d.voice.train_data import UtteranceBank
from vox3d.voice.voice_model import VoiceToShape


class ShapeLoss(torch.nn.Module):
    """Parameter + face-area vertex (+ optional face-ratio) loss (see module docstring)."""

    def __init__(
        self,
        basis: torch.Tensor | None,
        target_std: torch.Tensor,
        train_coef: torch.Tensor,
        param_weight: float = 1.0,
        vertex_weight: float = default("train.vertex_weight"),
        ratio_mean: torch.Tensor | None = None,
        ratio_basis: torch.Tensor | None = None,
        ratio_weight: float = 0.0,
        target_mean: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.param_weight = param_weight
        self.ratio_weight = ratio_weight if ratio_basis is not None else 0.0
        if self.ratio_weight > 0:
            self.register_buffer("ratio_mean", ratio_mean.reshape(-1, 3))  # (10, 3)
            self.register_buffer("ratio_basis", ratio_basis.reshape(ratio_basis.shape[0], -1))
            tm = torch.zeros_like(target_std) if target_mean is None else target_mean
            self.register_buffer("target_mean", tm)
        self.vertex_weight = vertex_weight if basis is not None else 0.0
        if basis is not None:
            self.register_buffer("basis", basis.reshape(basis.shape[0], -1))  # (K, Vf*3)
            dev = (train_coef - train_coef.mean(0, keepdim=True)) @ self.basis  # (N, Vf*3)
            s2 = dev.pow(2).reshape(len(train_coef), -1, 3).sum(-1).mean()
            self.register_buffer("s2", torch.clamp(s2, min=1e-12))
        else:
            self.basis = None
        self.register_buffer("target_std", target_std)

    def forward(self, z_pred: torch.Tensor, z_true: torch.Tensor) -> dict[str, torch.Tensor]:
        lp = F.mse_loss(z_pred, z_true)
        out = {"loss_param": lp}
        total = self.param_weight * lp
        if self.vertex_weight > 0:
            d = ((z_pred - z_true) * self.target_std) @ self.basis  # (B, Vf*3)
            lv = d.pow(2).reshape(len(d), -1, 3).sum(-1).mean() / self.s2
            out["loss_vertex"] = lv
            total = total + self.vertex_weight * lv
        if self.ratio_weight > 0:
            lr = (self.ratios(z_pred) - self.ratios(z_true)).abs().mean()
            out["loss_ratio"] = lr
            total = total + self.ratio_weight * lr
        out["loss"] = total
        return out

    def ratios(self, z: torch.Tensor) -> torch.Tensor:
        """ARE face ratios ``(B, 4)`` (ear, forehead, mid, cheek over OICD) of standardised
        coefficients ``z (B, K)``."""
        c = z * self.target_std + self.target_mean
        v = (self.ratio_mean.reshape(1, -1) + c @ self.ratio_basis).reshape(len(z), -1, 2, 3)
        d = (v[:, :, 0] - v[:, :, 1]).norm(dim=-1)  # (B, 5)
        return d[:, 1:] / d[:, :1]


@torch.no_grad()
def evaluate_loss(
    model: VoiceToShape,
    loss_fn: ShapeLoss,
    bank: UtteranceBank,
    coef_z: torch.Tensor,
    device: torch.device,
    max_frames: int = 1000,
) -> dict[str, float]:
    """Mean loss over whole utterances (first ``max_frames`` frames), model in eval mode."""
    was = model.training
    model.eval()
    sums: dict[str, float] = {}
    for f, i in zip(bank.feats, bank.ids, strict=True):
        x = torch.from_numpy(f[:max_frames])[None].to(device)
        out = loss_fn(model(x), coef_z[int(i)][None].to(device))
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    model.train(was)
    return {k: v / len(bank) for k, v in sums.items()}


def ratio_pair_vertices(pairs: Mapping[str, object]) -> np.ndarray:
    """``(10,)`` vertex indices of the ARE pairs: oicd, ear, forehead, mid, cheek (the
    order :class:`ShapeLoss` and :data:`vox3d.face.metrics.RATIOS` use)."""
    keys = [OICD_KEY] + [RATIO_PAIR_KEY[r] for r in RATIOS]
    return np.array([int(i) for k in keys for i in np.asarray(pairs[k]).reshape(2)], np.int64)
