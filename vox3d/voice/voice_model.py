"""Voice -> 3D face shape model of the Cross-Modal Perceptionist (supervised variant).

Architecture facts (carried over from the papers, code written here):

* Voice encoder of "Reconstructing faces from voices" (Wen et al. 2019), as used by CMP
  (Wu et al. 2022): input 64-band log-mel frames ``(B, 64, T)``; four blocks of
  ``Conv1d(kernel 3, stride 2, padding 1, no bias) -> BatchNorm1d -> ReLU`` with
  64 -> 256 -> 384 -> 576 -> 864 channels, then ``Conv1d(864 -> 64, kernel 3, stride 2,
  padding 1, with bias)`` and average pooling over all remaining time steps: a 64-d
  embedding, L2-normalised before the regressor (CMP's inference path).
* Supervised head (CMP's "direct MLP"): dropout 0.2 then linear layers from the 64-d
  embedding to the identity shape coefficients; ``hidden`` adds hidden layers (ReLU).
  CMP also predicts scale and expression; identity shape is what Voxceleb-3D targets, so
  only the ``n_id`` identity coefficients are regressed here.
* Input: CMP's per-utterance normalised log-mel frames, or (``ModelConfig.input_norm``
  ``none``, not CMP's) the log-mel before that normalisation.  CMP pairs the head with a
  frozen voice encoder pretrained as a speaker classifier (its ``voice_embedding.pth``);
  here the supervised encoder is trained with the head.

The network predicts *standardised* coefficients ``z``; ``coef = z * target_std +
target_mean`` with the training-set statistics stored as buffers, so a checkpoint is
self-contained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vox3d.audio.fbank import CMP_INPUT_NORM, INPUT_NORMS
from vox3d.config import default, setting
from vox3d.safeload import BadModelFileError, load_torch

#: Channels of the voice encoder (input bands, four conv blocks), and embedding size.
ENCODER_CHANNELS: tuple[int, ...] = (64, 256, 384, 576, 864)
EMBED_DIM = 64


@dataclass
class ModelConfig:
    """Shape of a :class:`VoiceToShape` network (stored in checkpoints as a plain dict)."""

    n_bands: int = 64
    channels: Sequence[int] = field(default_factory=lambda: list(ENCODER_CHANNELS[1:]))
    embed_dim: int = EMBED_DIM
    n_out: int = 40
    hidden: Sequence[int] = field(default_factory=list)
    dropout: float = setting("train.dropout")
    #: the input it was trained on (:data:`vox3d.audio.fbank.INPUT_NORMS`; config
    #: ``train.input_norm``): feed it :func:`vox3d.audio.fbank.model_input` of this norm
    input_norm: str = CMP_INPUT_NORM

    def __post_init__(self) -> None:
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm {self.input_norm!r}: choose from {INPUT_NORMS}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = [int(c) for c in d["channels"]]
        d["hidden"] = [int(h) for h in d["hidden"]]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class VoiceEncoder(nn.Module):
    """1-D convolutional voice encoder: ``(B, n_bands, T) -> (B, embed_dim)`` (not normalised)."""

    def __init__(
        self, n_bands: int = 64, channels: Sequence[int] = (256, 384, 576, 864), embed_dim: int = 64
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = n_bands
        for c in channels:
            layers += [
                nn.Conv1d(c_in, c, 3, 2, 1, bias=False),
                nn.BatchNorm1d(c, affine=True),
                nn.ReLU(inplace=True),
            ]
            c_in = c
        layers.append(nn.Conv1d(c_in, embed_dim, 3, 2, 1, bias=True))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, n_bands, T)`` float -> ``(B, embed_dim)`` (mean over time)."""
        return self.net(x).mean(dim=2)


def unit_embedding(encoder: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    """The L2-normalised embedding ``(B, embed_dim)`` of a :class:`VoiceEncoder` for
    features ``(B, T, n_bands)`` (CMP's inference path; both voice models use it)."""
    return F.normalize(encoder(feats.transpose(1, 2)), dim=1)


class ShapeHead(nn.Module):
    """Regressor from the L2-normalised embedding to standardised shape coefficients."""

    def __init__(
        self,
        embed_dim: int,
        n_out: int,
        hidden: Sequence[int] = (),
        dropout: float = default("train.dropout"),
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = embed_dim
        for h in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(d, h), nn.ReLU(inplace=True)]
            d = h
        layers += [nn.Dropout(dropout), nn.Linear(d, n_out)]
        self.net = nn.Sequential(*layers)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(e)


class VoiceToShape(nn.Module):
    """Encoder + head.  ``forward(feats (B, T, n_bands)) -> z (B, n_out)`` standardised.

    :meth:`coefficients` returns de-standardised identity coefficients (face-model units).
    """

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig()
        c = self.cfg
        self.encoder = VoiceEncoder(c.n_bands, c.channels, c.embed_dim)
        self.head = ShapeHead(c.embed_dim, c.n_out, c.hidden, c.dropout)
        self.register_buffer("target_mean", torch.zeros(c.n_out))
        self.register_buffer("target_std", torch.ones(c.n_out))

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        """feats ``(B, T, n_bands)`` -> L2-normalised embedding ``(B, embed_dim)``."""
        if feats.ndim != 3 or feats.shape[2] != self.cfg.n_bands:
            raise ValueError(
                f"expected features (batch, frames, {self.cfg.n_bands}), got {tuple(feats.shape)}"
            )
        return unit_embedding(self.encoder, feats)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(feats))

    def destandardise(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.target_std + self.target_mean

    def standardise(self, coef: torch.Tensor) -> torch.Tensor:
        return (coef - self.target_mean) / self.target_std

    @torch.no_grad()
    def coefficients(self, feats: torch.Tensor) -> torch.Tensor:
        """Identity coefficients ``(B, n_out)`` for features ``(B, T, n_bands)`` (eval mode)."""
        return self.destandardise(self(feats))


def build_model(cfg: ModelConfig | dict) -> VoiceToShape:
    """A fresh model from a :class:`ModelConfig` or its dict form."""
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    return VoiceToShape(cfg)


def load_model(path, map_location: str = "cpu", blob=None) -> tuple[VoiceToShape, dict]:
    """Load a trained model file (``train/model.pt`` or a checkpoint) safely.

    Returns the model in eval mode and the file's metadata dict (``identities``,
    ``face_model``, ``n_id``, ``config`` ...).  Loaded with ``weights_only=True``; `blob`:
    the file's contents already loaded that way (`path` then only names it in errors).
    """
    if blob is None:
        blob = load_torch(path, map_location=map_location)
    if not isinstance(blob, dict) or "model" not in blob or "model_config" not in blob:
        raise BadModelFileError(f"{path}: not a vox3d voice model (keys 'model', 'model_config')")
    model = build_model(blob["model_config"])
    try:
        model.load_state_dict(blob["model"])
    except RuntimeError as e:
        raise BadModelFileError(f"{path}: weights do not fit the stored model config ({e})") from e
    model.eval()
    meta = {k: v for k, v in blob.items() if k not in ("model", "optimizer")}
    return model, meta
