"""Voice -> face image -> 3D shape without 3D labels: the unsupervised framework of the
Cross-Modal Perceptionist (Wu et al. 2022, section 3.2), networks, losses and training.

Structure (facts from the paper and "Reconstructing faces from voices", Wen et al. 2019;
code written here):

* **voice encoder** (:class:`vox3d.voice.voice_model.VoiceEncoder`), pretrained as a speaker
  classifier (:mod:`vox3d.voice.speaker`) and frozen; its 64-d embedding is L2-normalised,
  jittered with Gaussian noise (std :data:`JITTER_STD`) and normalised again;
* **generator** (:class:`Generator`): embedding ``(B, 64)`` -> face image ``(B, 3, 64, 64)``
  in [-1, 1] (BGR, the fit's colour order): a 4x4 transposed convolution from 1x1, then
  four stride-2 transposed convolutions (kernel 4) doubling the size to 64, ReLU between,
  and a 1x1 transposed convolution to 3 channels (tanh);
* **image trunk** (:class:`FaceTrunk`) shared by the discriminator (real / fake logit) and
  the identity classifier (one logit per training identity), trained on the fit stage's
  real face crops of the training identities (``fit.keep_crops``): a 1x1 convolution, four
  stride-2 convolutions (kernel 4, LeakyReLU 0.2) and a 4x4 convolution to a 64-d vector;
* **student** image -> 3DMM network, the teacher's MobileNet architecture started from the
  teacher's weights, trained jointly with the generator on the generated images
  (bilinearly upsampled to 120x120); the **teacher** is the fit stage's own regressor
  (:func:`vox3d.fitting.fit.build_regressor`: ICT or BFM), frozen.  Student losses: parameter MSE
  on whitened outputs (weight :data:`PARAM_WEIGHT` 0.5), PKT (probabilistic knowledge
  transfer, Passalis and Tefas 2018; :func:`pkt_loss`) on a middle block's and the last
  block's pooled features (weight :data:`PKT_WEIGHT` 1e4, summed), and a triplet margin
  loss on the student's whitened identity coefficients (weight :data:`TRIPLET_WEIGHT`
  1.5): two utterances of one speaker are anchor and positive, another speaker's
  positive is the negative.  Adam, lr 2e-4, betas (0.5, 0.999) for every network.

No 3D label is read: the inputs are voice features, identity *names* (the speaker and face
classes) and face crops; the teacher's calibration (fitted on its own renders, shipped in
its json) maps its raw shape outputs to posterior means, for the teacher and the student
alike.  Choices of this implementation (the sources leave them open): the student's
BatchNorm statistics stay the teacher's (eval mode); the triplet margin is 1.0 in whitened
units; the model file keeps the last step (no selection on held-out identities).

Training: :mod:`vox3d.voice.distill_train`; its ``run_train_unsupervised`` (the
``train_unsupervised`` rule) reads feature shards, fit shards' crops, the metadata and
``train/voice_encoder.pt`` and writes ``train/unsupervised.pt``, ``unsupervised_log.csv``
and ``unsupervised_split.tsv``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vox3d.config import section, setting
from vox3d.face.regressor import build_mobilenet
from vox3d.fitting.fit import build_regressor
from vox3d.fitting.identities import calibrated_gain, load_identity_calibration
from vox3d.io import save_torch_atomic, write_step_log
from vox3d.params import CROP_SIZE
from vox3d.safeload import BadModelFileError, load_torch
from vox3d.voice.voice_model import EMBED_DIM, VoiceEncoder, unit_embedding

#: Model file format tag (``train/unsupervised.pt``).
MODEL_FORMAT = "vox3d unsupervised voice2face 1"
#: Generated image side (pixels) and the embedding jitter (std, in unit-norm units).
IMAGE_SIZE = 64
JITTER_STD = 0.05
#: Loss weights of the student (CMP's training script).
PARAM_WEIGHT, PKT_WEIGHT, TRIPLET_WEIGHT = 0.5, 1e4, 1.5
TRIPLET_MARGIN = 1.0
#: MobileNet block whose pooled activations are the PKT's intermediate features.
PKT_MID_BLOCK = "dw4_1"
LOG_COLUMNS = (
    "step", "loss_d", "loss_g", "loss_param", "loss_pkt", "loss_triplet",
    "d_real", "d_fake", "cls_real", "cls_fake",
)  # fmt: skip


@dataclass(frozen=True)
class DistillConfig:
    """Settings of one unsupervised training run (stored in the model file): the ``demo``
    preset's values unless a preset or ``train.unsupervised`` says otherwise."""

    steps: int = 600
    batch_size: int = 16
    lr: float = 2e-4
    betas: Sequence[float] = (0.5, 0.999)
    crop_min: int = 100
    crop_max: int = 300
    generator_channels: Sequence[int] = (256, 128, 64, 32, 16)
    trunk_channels: Sequence[int] = (16, 32, 64, 128, 256)
    checkpoint_every: int = 50
    seed: int = setting("train.unsupervised.seed")

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("betas", "generator_channels", "trunk_channels"):
            d[k] = [float(x) if k == "betas" else int(x) for x in d[k]]
        return d

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 2 or self.checkpoint_every < 1:
            raise ValueError(
                "train.unsupervised: need steps >= 1, batch_size >= 2, checkpoint_every >= 1"
            )
        if not 1 <= self.crop_min <= self.crop_max:
            raise ValueError(
                f"need 1 <= crop_min <= crop_max, got {self.crop_min}, {self.crop_max}"
            )
        if len(self.generator_channels) != 5 or len(self.trunk_channels) != 5:
            raise ValueError(
                "generator_channels and trunk_channels need 5 widths each (64x64 images)"
            )


#: ``train.unsupervised.preset``: ``demo`` (CPU, the embedded corpus) and ``paper`` (the
#: network widths, batch 128 and 300-800-frame voice crops of "Reconstructing faces from
#: voices", CMP's 50,000 iterations).
PRESETS: dict[str, dict] = {
    "demo": {},
    "paper": {
        "steps": 50000, "batch_size": 128, "checkpoint_every": 2000,
        "crop_min": 300, "crop_max": 800,
        "generator_channels": (1024, 512, 256, 128, 64),
        "trunk_channels": (32, 64, 128, 256, 512),
    },
}  # fmt: skip


def distill_config(settings: Mapping | None) -> DistillConfig:
    """A :class:`DistillConfig` from config ``train.unsupervised`` (preset + non-null overrides)."""
    s = section("train.unsupervised", settings)
    preset = s.pop("preset")
    if preset not in PRESETS:
        raise ValueError(f"train.unsupervised.preset {preset!r}: choose from {sorted(PRESETS)}")
    d = dict(PRESETS[preset])
    d.update(
        {k: v for k, v in s.items() if v is not None and k in DistillConfig.__dataclass_fields__}
    )
    cfg = DistillConfig(**d)
    cfg.validate()
    return cfg


# --------------------------------------------------------------------------------------
# networks


class Generator(nn.Module):
    """Embedding ``(B, E)`` -> image ``(B, 3, 64, 64)`` in [-1, 1]."""

    def __init__(
        self, embed_dim: int = EMBED_DIM, channels: Sequence[int] = (256, 128, 64, 32, 16)
    ):
        super().__init__()
        c = [int(x) for x in channels]
        layers: list[nn.Module] = [nn.ConvTranspose2d(embed_dim, c[0], 4, 1, 0), nn.ReLU(True)]
        for a, b in zip(c[:-1], c[1:], strict=True):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.ReLU(True)]
        layers.append(nn.ConvTranspose2d(c[-1], 3, 1, 1, 0))
        self.net = nn.Sequential(*layers)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(e[:, :, None, None]))


class FaceTrunk(nn.Module):
    """Image ``(B, 3, 64, 64)`` -> 64-d vector, with the real/fake and identity heads."""

    def __init__(self, n_classes: int, channels: Sequence[int] = (16, 32, 64, 128, 256)):
        super().__init__()
        c = [int(x) for x in channels]
        layers: list[nn.Module] = [nn.Conv2d(3, c[0], 1, 1, 0), nn.LeakyReLU(0.2, True)]
        for a, b in zip(c[:-1], c[1:], strict=True):
            layers += [nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(c[-1], EMBED_DIM, 4, 1, 0))
        self.net = nn.Sequential(*layers)
        self.real_fake = nn.Linear(EMBED_DIM, 1)
        self.identity = nn.Linear(EMBED_DIM, n_classes)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(real/fake logit (B,), identity logits (B, n_classes))``."""
        h = F.leaky_relu(self.net(img).flatten(1), 0.2)
        return self.real_fake(h).squeeze(1), self.identity(h)


def jittered(e: torch.Tensor, gen: torch.Generator | None, std: float = JITTER_STD) -> torch.Tensor:
    """Unit embeddings ``(B, E)`` plus Gaussian noise of std `std`, normalised again."""
    noise = torch.randn(e.shape, generator=gen, dtype=e.dtype).to(e.device)
    return F.normalize(e + std * noise, dim=1)


def to_regressor_input(img: torch.Tensor) -> torch.Tensor:
    """Images ``(B, 3, S, S)`` in [-1, 1] (BGR) -> the regressor's input ``(B, 3, 120, 120)``:
    bilinear upsampling, then pixel ``p = (x + 1) 127.5`` normalised as ``(p - 127.5) / 128``."""
    up = F.interpolate(img, size=(CROP_SIZE, CROP_SIZE), mode="bilinear", align_corners=False)
    return up * (127.5 / 128.0)


def crops_to_images(crops_bgr: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Crops ``(N, 120, 120, 3) uint8`` BGR -> ``(N, size, size, 3) uint8`` (cv2 INTER_AREA)."""
    import cv2

    out = np.empty((len(crops_bgr), size, size, 3), np.uint8)
    for i, c in enumerate(crops_bgr):
        out[i] = cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA)
    return out


def images_to_tensor(img_u8: np.ndarray) -> torch.Tensor:
    """``(N, S, S, 3) uint8`` -> ``(N, 3, S, S)`` float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img_u8)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def tensor_to_images(img: torch.Tensor) -> np.ndarray:
    """``(N, 3, S, S)`` in [-1, 1] -> ``(N, S, S, 3) uint8`` (BGR kept)."""
    x = ((img.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


# --------------------------------------------------------------------------------------
# losses


def pkt_loss(student: torch.Tensor, teacher: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Probabilistic knowledge transfer between features ``(B, C_s)`` and ``(B, C_t)``: the
    rows' cosine similarities mapped to [0, 1], normalised per row into conditional
    probabilities, and the mean over all ``B x B`` entries of ``p_t log(p_t / p_s)``."""
    s = F.normalize(student.flatten(1), dim=1, eps=eps)
    t = F.normalize(teacher.flatten(1), dim=1, eps=eps)
    ps = (s @ s.T + 1.0) / 2.0
    pt = (t @ t.T + 1.0) / 2.0
    ps = ps / ps.sum(1, keepdim=True)
    pt = pt / pt.sum(1, keepdim=True)
    return torch.mean(pt * torch.log((pt + eps) / (ps + eps)))


def triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    labels: torch.Tensor,
    margin: float = TRIPLET_MARGIN,
) -> torch.Tensor:
    """Triplet margin loss with the next item's positive as the negative (items of the
    same speaker as the anchor are left out): ``(B, D)`` anchors and positives, ``(B,)``
    speaker labels."""
    neg = positive.roll(-1, 0)
    ok = labels != labels.roll(-1, 0)
    if not bool(ok.any()):
        return anchor.sum() * 0.0
    per = F.triplet_margin_loss(anchor, positive, neg, margin=margin, reduction="none")
    return per[ok].mean()


# --------------------------------------------------------------------------------------
# the trained model


class UnsupervisedVoiceModel(nn.Module):
    """Voice -> face image -> parameters, for inference (``train/unsupervised.pt``).

    :meth:`coefficients` gives the identity coefficients ``(B, n_id)`` in face-model
    units (the teacher's calibration applied, as for the fitted shapes), so the evaluation
    treats it like :class:`vox3d.voice.voice_model.VoiceToShape`."""

    def __init__(self, encoder: nn.Module, generator: Generator, student: nn.Module, meta: dict):
        super().__init__()
        self.encoder, self.generator, self.student = encoder, generator, student
        self.meta = meta
        self.register_buffer("param_mean", torch.tensor(meta["param_mean"], dtype=torch.float32))
        self.register_buffer("param_std", torch.tensor(meta["param_std"], dtype=torch.float32))
        n_pose, n_id = int(meta["n_pose"]), int(meta["n_id"])
        self.id_slice = slice(n_pose, n_pose + n_id)
        self.cfg = type("Shape", (), {"n_out": n_id, "n_bands": int(meta["n_bands"])})()

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        """feats ``(B, T, n_bands)`` -> unit embeddings ``(B, 64)``."""
        return unit_embedding(self.encoder, feats)

    @torch.no_grad()
    def faces(self, feats: torch.Tensor) -> torch.Tensor:
        """Generated images ``(B, 3, 64, 64)`` in [-1, 1] (BGR)."""
        return self.generator(self.embed(feats))

    @torch.no_grad()
    def params(self, feats: torch.Tensor) -> torch.Tensor:
        """De-whitened parameters ``(B, n_params)`` the student reads from the faces."""
        return (
            self.student(to_regressor_input(self.faces(feats))) * self.param_std + self.param_mean
        )

    @torch.no_grad()
    def coefficients(self, feats: torch.Tensor) -> torch.Tensor:
        raw = self.params(feats)[:, self.id_slice].double()
        cal = self.meta.get("calibration")
        if cal:
            bias = torch.tensor(cal["bias"], dtype=torch.float64, device=raw.device)
            gain = torch.from_numpy(calibrated_gain(cal, 1)).to(raw.device)
            raw = (raw - bias) * gain
        return raw.float()


def save_unsupervised(
    path: str | os.PathLike, encoder: Mapping, states: Mapping, meta: dict
) -> None:
    """Write ``train/unsupervised.pt`` atomically: the encoder's, ``states["generator"]``,
    ``["student"]`` and ``["trunk"]`` weights, and `meta` as json (read by
    :func:`load_unsupervised`: ``n_bands``, ``config.generator_channels``, ``widen``,
    ``num_params``, ``n_pose``, ``n_id``, ``param_mean``, ``param_std``, ``calibration``,
    ``identities`` ...)."""
    save_torch_atomic(path, {
        "format": MODEL_FORMAT, "encoder": dict(encoder), "generator": states["generator"],
        "student": states["student"], "trunk": states["trunk"], "meta": json.dumps(meta, sort_keys=True),
    })  # fmt: skip


def load_unsupervised(
    path: str | os.PathLike, map_location: str = "cpu", blob=None
) -> UnsupervisedVoiceModel:
    """Load ``train/unsupervised.pt`` safely (``weights_only``), in eval mode; `blob`: the
    file's contents already loaded that way (`path` then only names it in errors)."""
    if blob is None:
        blob = load_torch(path, map_location=map_location)
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise BadModelFileError(f"{path}: not a {MODEL_FORMAT!r} file")
    try:
        meta = json.loads(blob["meta"])
        enc = VoiceEncoder(int(meta["n_bands"]), meta["encoder_channels"], EMBED_DIM)
        enc.load_state_dict(blob["encoder"])
        gen = Generator(EMBED_DIM, meta["config"]["generator_channels"])
        gen.load_state_dict(blob["generator"])
        student = build_mobilenet(float(meta["widen"]), int(meta["num_params"]))
        student.load_state_dict(blob["student"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise BadModelFileError(f"{path}: bad unsupervised model file ({e})") from e
    return UnsupervisedVoiceModel(enc, gen, student, meta).eval()


# --------------------------------------------------------------------------------------
def write_log_csv(path: str | os.PathLike, rows: Sequence[Mapping]) -> None:
    """``unsupervised_log.csv``: one row per step (:data:`LOG_COLUMNS`), written atomically."""
    write_step_log(path, rows, LOG_COLUMNS)


def read_log_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of ``unsupervised_log.csv`` as float arrays (``step`` int)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or set(LOG_COLUMNS) - set(rows[0]):
        raise ValueError(f"{path}: not an unsupervised training log (columns {LOG_COLUMNS})")
    return {k: np.asarray([float(r[k]) for r in rows]) for k in LOG_COLUMNS}


@dataclass
class Teacher:
    """The fit stage's regressor as the student's teacher.

    model: its MobileNet (``(B, 3, 120, 120)`` -> whitened ``(B, P)``); mean, std: ``(P,)``
    whitening; layout: the parameter layout; calibration: the identity calibration of an
    ICT regressor's json (None for BFM); file, sha256: the weights read."""

    model: nn.Module
    mean: np.ndarray
    std: np.ndarray
    layout: object
    calibration: dict | None
    file: str
    sha256: str
    face_model: str


def load_teacher(fit_cfg) -> Teacher:
    """The teacher of a :class:`vox3d.fitting.fit.FitConfig` (the fit's own regressor, on CPU, fp32);
    a missing file fails with its path."""
    path = Path(fit_cfg.regressor_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the teacher (the fit's regressor) is missing")
    reg = build_regressor(fit_cfg, "cpu", "fp32")
    cal = load_identity_calibration(path) if fit_cfg.face_model == "ict" else None
    return Teacher(
        reg.model.float().eval(), np.asarray(reg.mean, np.float32), np.asarray(reg.std, np.float32),
        fit_cfg.layout, cal, str(path), hashlib.sha256(path.read_bytes()).hexdigest(),
        fit_cfg.face_model,
    )  # fmt: skip


def load_for_evaluation(
    path: str | os.PathLike, val_ids: Sequence[str], n_id: int
) -> UnsupervisedVoiceModel:
    """:func:`load_unsupervised`, refusing a model trained on any of the held-out
    identities `val_ids` or predicting another number of identity coefficients than the
    targets' `n_id` (errors name the file)."""
    model = load_unsupervised(path)
    leak = sorted(set(model.meta["identities"]) & set(val_ids))
    if leak:
        raise ValueError(f"{path}: trained on held-out identities {leak[:5]} (another split)")
    if int(model.meta["n_id"]) != int(n_id):
        raise ValueError(
            f"{path}: predicts {model.meta['n_id']} identity coefficients, the targets have {n_id}"
        )
    return model
