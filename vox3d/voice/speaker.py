"""The voice encoder of the unsupervised variant, pretrained as a speaker classifier.

CMP's unsupervised framework starts from a voice encoder trained to tell speakers apart
("Reconstructing faces from voices", Wen et al. 2019) and keeps it frozen.  Here:
:class:`vox3d.voice.voice_model.VoiceEncoder` (the supervised model's encoder architecture) and
a linear layer from its L2-normalised 64-d embedding, scaled by :data:`LOGIT_SCALE`, to
one logit per training identity; cross-entropy on random crops of the training
identities' utterances; Adam.  Only identity *names* are read (no 3D label).

I/O: :func:`run_pretrain_voice` (the ``pretrain_voice`` rule) reads feature shards and the
metadata and writes ``train/voice_encoder.pt`` and ``train/voice_encoder_log.csv``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vox3d.audio.featurestore import load_utterances
from vox3d.config import section, setting
from vox3d.io import save_torch_atomic, write_step_log
from vox3d.media.split import read_meta, split_identities
from vox3d.safeload import BadModelFileError, load_torch
from vox3d.voice.train_data import UtteranceBank
from vox3d.voice.voice_model import EMBED_DIM, ENCODER_CHANNELS, VoiceEncoder, unit_embedding

ENCODER_FORMAT = "vox3d speaker encoder 1"
#: Scale of the unit embedding before the classifier (a cosine-style classifier: unit
#: vectors need a scale for confident logits).
LOGIT_SCALE = 10.0


@dataclass(frozen=True)
class SpeakerConfig:
    """Settings of the speaker-classifier pretraining (config ``train.voice_encoder``;
    defaults: config.yaml's)."""

    steps: int = setting("train.voice_encoder.steps")
    batch_size: int = setting("train.voice_encoder.batch_size")
    lr: float = setting("train.voice_encoder.lr")
    crop_min: int = 100
    crop_max: int = 300
    seed: int = setting("train.voice_encoder.seed")

    @classmethod
    def from_settings(cls, settings: Mapping | None) -> SpeakerConfig:
        s = {k: v for k, v in dict(settings or {}).items() if v is not None}
        cfg = cls(**{k: s[k] for k in cls.__dataclass_fields__ if k in s})
        if cfg.steps < 1 or cfg.batch_size < 1 or not 1 <= cfg.crop_min <= cfg.crop_max:
            raise ValueError(f"train.voice_encoder: bad settings {asdict(cfg)}")
        return cfg


class SpeakerClassifier(nn.Module):
    """Encoder + linear layer over the unit embedding: ``(B, T, bands) -> (B, n_speakers)``."""

    def __init__(self, n_bands: int, n_speakers: int) -> None:
        super().__init__()
        self.encoder = VoiceEncoder(n_bands, ENCODER_CHANNELS[1:], EMBED_DIM)
        self.classify = nn.Linear(EMBED_DIM, n_speakers)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.classify(LOGIT_SCALE * unit_embedding(self.encoder, feats))


def pretrain_encoder(
    bank, cfg: SpeakerConfig, progress: bool = True
) -> tuple[SpeakerClassifier, list[dict]]:
    """Train a :class:`SpeakerClassifier` on ``bank`` (:class:`vox3d.voice.train_data.UtteranceBank`,
    labels 0..N-1), deterministic on CPU.  Returns the model (eval mode) and per-step rows
    ``{step, loss, accuracy}`` (training batches)."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    model = SpeakerClassifier(bank.n_bands, int(bank.identities.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rows = []
    model.train()
    for step in tqdm(range(cfg.steps), desc="pretrain voice encoder", unit="step",
                     disable=not progress, file=sys.stderr):  # fmt: skip
        x, y = bank.batch(step, cfg.batch_size, cfg.crop_min, cfg.crop_max, cfg.seed)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        acc = float((logits.argmax(1) == y).float().mean())
        rows.append({"step": step + 1, "loss": float(loss.detach()), "accuracy": acc})
    return model.eval(), rows


def top1_accuracy(logits, feats: Sequence[np.ndarray], labels: Sequence[int]) -> float:
    """Fraction of whole utterances ``(T_i, bands)`` whose ``logits(x (1, T_i, bands))``
    ``(1, n_classes)`` peak at their label (no gradients; NaN without utterances)."""
    if not len(feats):
        return float("nan")
    hits = 0
    with torch.no_grad():
        for f, y in zip(feats, labels, strict=True):
            x = torch.from_numpy(np.asarray(f, np.float32))[None]
            hits += int(logits(x).argmax(1)) == int(y)
    return hits / len(feats)


def utterance_accuracy(
    model: SpeakerClassifier, feats: Sequence[np.ndarray], labels: Sequence[int]
) -> float:
    """Top-1 speaker accuracy over whole utterances ``(T_i, bands)`` (eval mode)."""
    return top1_accuracy(model, feats, labels)


def save_encoder(path: str | os.PathLike, model: SpeakerClassifier, meta: dict) -> None:
    """``train/voice_encoder.pt``: the encoder's and classifier's weights + json meta."""
    save_torch_atomic(path, {
        "format": ENCODER_FORMAT, "encoder": model.encoder.state_dict(),
        "classifier": model.classify.state_dict(), "meta": json.dumps(meta, sort_keys=True),
    })  # fmt: skip


def load_encoder(path: str | os.PathLike) -> tuple[VoiceEncoder, dict]:
    """The frozen voice encoder (eval mode) and its meta from ``train/voice_encoder.pt``."""
    blob = load_torch(path)
    if not isinstance(blob, dict) or blob.get("format") != ENCODER_FORMAT:
        raise BadModelFileError(f"{path}: not a {ENCODER_FORMAT!r} file")
    try:
        meta = json.loads(blob["meta"])
        enc = VoiceEncoder(int(meta["n_bands"]), ENCODER_CHANNELS[1:], EMBED_DIM)
        enc.load_state_dict(blob["encoder"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise BadModelFileError(f"{path}: bad voice encoder file ({e})") from e
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc.eval(), meta


def split_voices(
    feature_paths: Sequence[str | os.PathLike],
    meta_csv,
    split: str,
    val_fraction: float,
    among: set[str] | None = None,
) -> tuple[dict[str, list[np.ndarray]], list[str], list[str], dict, str]:
    """Utterances by identity and the identity split of the unsupervised variant (the
    supervised one's rule, :func:`vox3d.media.split.split_identities`, on the identities with
    features, or those of them in `among`): ``(utts, train, val, meta, method)``."""
    meta = read_meta(meta_csv)
    utts = load_utterances(feature_paths)
    ids = sorted(i for i in utts if among is None or i in among)
    train_ids, val_ids, how = split_identities(ids, meta, split, val_fraction)
    return utts, train_ids, val_ids, meta, how


def run_pretrain_voice(
    settings: Mapping,
    feature_paths: Sequence[str | os.PathLike],
    meta_csv,
    out_model: str | os.PathLike,
    out_log: str | os.PathLike,
    threads: int = 1,
    progress: bool = True,
) -> dict:
    """The ``pretrain_voice`` rule (config ``train``: ``split``, ``val_fraction``,
    ``voice_encoder``).  One utterance of each training identity is held back to report
    whole-utterance accuracy beside the training batches'."""
    torch.set_num_threads(max(1, int(threads)))
    s = section("train", settings)
    cfg = SpeakerConfig.from_settings(s["voice_encoder"])
    utts, train_ids, val_ids, _, how = split_voices(
        feature_paths, meta_csv, s["split"], float(s["val_fraction"])
    )
    feats, labels, held, held_lab = [], [], [], []
    for j, ident in enumerate(train_ids):
        u = utts[ident]
        keep = u[:-1] if len(u) > 1 else u
        feats += keep
        labels += [j] * len(keep)
        if len(u) > 1:
            held.append(u[-1])
            held_lab.append(j)
    model, rows = pretrain_encoder(UtteranceBank(feats, labels), cfg, progress)
    acc = utterance_accuracy(model, held, held_lab)
    meta = {
        "identities": list(train_ids), "val_identities": list(val_ids), "split_method": how,
        "n_bands": int(feats[0].shape[1]), "config": asdict(cfg),
        "heldback_utterance_accuracy": acc, "n_heldback": len(held),
        "chance": 1.0 / len(train_ids),
    }  # fmt: skip
    save_encoder(out_model, model, meta)
    write_step_log(out_log, rows, ("step", "loss", "accuracy"))
    print(f"voice encoder: {len(train_ids)} speakers, held-back utterance accuracy {acc:.3f} "
          f"(chance {1 / len(train_ids):.3f})", file=sys.stderr)  # fmt: skip
    return meta
