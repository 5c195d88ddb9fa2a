"""Training of the unsupervised variant (:mod:`vox3d.voice.distill` holds the networks, the losses,
the model file and the teacher): the loop (:func:`train_distill`) and the
``train_unsupervised`` rule (:func:`run_train_unsupervised`).

One step (batch B, module :mod:`vox3d.voice.distill` for the pieces): two utterance crops of each
of B speakers -> frozen encoder -> unit embeddings, jittered; the generator makes 2B faces;
the discriminator + identity classifier step on B real crops (labels: the speakers') and
the detached fakes; then one step of the generator (adversarial + identity loss) and the
student (parameter MSE + PKT against the teacher on the upsampled fakes, triplet over the
two utterances of a speaker) together.  Every random draw is a pure function of
``(seed, step)``, so a run resumed from its state file (``train/unsupervised_state/
state.pt``, every ``checkpoint_every`` steps) ends with the bytes of an uninterrupted one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vox3d.config import section
from vox3d.fitting.fit_shard import FitShard
from vox3d.io import save_torch_atomic
from vox3d.media.split import write_split
from vox3d.safeload import BadModelFileError, load_torch
from vox3d.torch_setup import resolve_device
from vox3d.voice import distill as D
from vox3d.voice.distill import (
    EMBED_DIM,
    LOG_COLUMNS,
    PARAM_WEIGHT,
    PKT_MID_BLOCK,
    PKT_WEIGHT,
    TRIPLET_WEIGHT,
    DistillConfig,
    FaceTrunk,
    Generator,
    crops_to_images,
    distill_config,
    images_to_tensor,
    jittered,
    load_teacher,
    pkt_loss,
    save_unsupervised,
    to_regressor_input,
    write_log_csv,
)
from vox3d.voice.speaker import load_encoder, split_voices, top1_accuracy
from vox3d.voice.train_data import UtteranceBank
from vox3d.voice.train_data import crop as crop_frames
from vox3d.voice.voice_model import ENCODER_CHANNELS, unit_embedding


def _voice_pairs(bank, rng: np.random.Generator, batch: int, crop_min: int, crop_max: int):
    """Two utterance crops of each of `batch` speakers (a permutation, repeated when the
    batch is larger): ``(anchor (B, L, D), positive (B, L, D), speaker (B,))``."""
    length = int(rng.integers(crop_min, crop_max + 1))
    ids = bank.identities
    who = np.concatenate([rng.permutation(ids) for _ in range(math.ceil(batch / len(ids)))])[:batch]
    out = np.empty((2, batch, length, bank.n_bands), np.float32)
    for b, ident in enumerate(who):
        utts = bank.by_identity[int(ident)]
        pick = rng.choice(len(utts), size=2, replace=len(utts) < 2)
        for j in range(2):
            f = bank.feats[int(utts[pick[j]])]
            out[j, b] = crop_frames(f, length, int(rng.integers(0, max(1, len(f) - length + 1))))
    return (
        torch.from_numpy(out[0]),
        torch.from_numpy(out[1]),
        torch.from_numpy(who.astype(np.int64)),
    )


def _state_key(cfg: DistillConfig, data_fp: str) -> str:
    blob = json.dumps({"cfg": cfg.to_dict(), "data": data_fp}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_distill(
    cfg: DistillConfig,
    bank,
    images: np.ndarray,
    image_labels: np.ndarray,
    encoder: nn.Module,
    teacher,
    work_dir: str | os.PathLike,
    progress: bool = True,
    log=print,
    device: str = "cpu",
) -> tuple[dict, list[dict]]:
    """Train generator, trunk and student (module docstring) on `device`; deterministic
    on CPU (same bytes on a rerun).

    bank: :class:`vox3d.voice.train_data.UtteranceBank` of the training identities (labels 0..N-1);
    images: ``(M, 64, 64, 3) uint8`` BGR face crops with ``image_labels (M,)`` in the same
    label space; encoder: the frozen, pretrained voice encoder; teacher: the fit's
    :class:`vox3d.face.regressor.Regressor`.  Resumes from ``work_dir/state.pt`` when it was
    made with the same settings and data.  Returns (state dicts, log rows).
    """
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    dev = torch.device(device)
    n_cls = int(len(bank.identities))
    gen = Generator(EMBED_DIM, cfg.generator_channels).to(dev)
    trunk = FaceTrunk(n_cls, cfg.trunk_channels).to(dev)
    t_net = teacher.model.to(dev).eval()
    for p in t_net.parameters():
        p.requires_grad_(False)
    student = copy.deepcopy(t_net)
    for p in student.parameters():
        p.requires_grad_(True)
    student.eval()  # BatchNorm statistics stay the teacher's
    encoder = encoder.to(dev).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    betas = tuple(float(b) for b in cfg.betas)
    opt_d = torch.optim.Adam(trunk.parameters(), lr=cfg.lr, betas=betas)
    opt_g = torch.optim.Adam(
        list(gen.parameters()) + list(student.parameters()), lr=cfg.lr, betas=betas
    )
    id_slice = teacher.layout.shape
    by_label = {int(c): np.flatnonzero(image_labels == c) for c in np.unique(image_labels)}
    data_fp = hashlib.sha256(
        bank.fingerprint().encode() + images.tobytes() + image_labels.astype(np.int64).tobytes()
    ).hexdigest()
    key = _state_key(cfg, data_fp)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "state.pt"
    rows: list[dict] = []
    step = 0
    if state_path.is_file():
        try:
            st = load_torch(state_path)
            if st.get("key") == key:
                gen.load_state_dict(st["generator"])
                trunk.load_state_dict(st["trunk"])
                student.load_state_dict(st["student"])
                opt_d.load_state_dict(st["opt_d"])
                opt_g.load_state_dict(st["opt_g"])
                step, rows = int(st["step"]), json.loads(st["rows"])
                log(f"resuming the unsupervised training at step {step} ({state_path})")
            else:
                log(f"ignoring {state_path}: made with other settings or data")
        except BadModelFileError as e:
            log(f"ignoring an unreadable state file: {e}")
    bce = F.binary_cross_entropy_with_logits
    bar = tqdm(total=cfg.steps, initial=step, desc="train unsupervised", unit="step",
               disable=not progress, file=sys.stderr)  # fmt: skip
    while step < cfg.steps:
        rng = np.random.default_rng([cfg.seed, step])
        tg = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + step)
        xa, xp, who = _voice_pairs(bank, rng, cfg.batch_size, cfg.crop_min, cfg.crop_max)
        real_idx = np.array([by_label[int(c)][rng.integers(len(by_label[int(c)]))] if int(c) in by_label
                             else rng.integers(len(images)) for c in who.numpy()])  # fmt: skip
        real = images_to_tensor(images[real_idx]).to(dev)
        real_lab = torch.from_numpy(image_labels[real_idx].astype(np.int64)).to(dev)
        xa, xp, who = xa.to(dev), xp.to(dev), who.to(dev)
        with torch.no_grad():
            e = torch.cat([jittered(unit_embedding(encoder, x), tg) for x in (xa, xp)])
        lab2 = torch.cat([who, who])
        fake = gen(e)
        # discriminator + identity classifier on real crops
        rf_real, cls_real = trunk(real)
        rf_fake, _ = trunk(fake.detach())
        loss_d = (bce(rf_real, torch.ones_like(rf_real)) + bce(rf_fake, torch.zeros_like(rf_fake))
                  + F.cross_entropy(cls_real, real_lab))  # fmt: skip
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # generator + student
        rf_g, cls_g = trunk(fake)
        loss_g = bce(rf_g, torch.ones_like(rf_g)) + F.cross_entropy(cls_g, lab2)
        x_reg = to_regressor_input(fake)
        with torch.no_grad():
            t_taps, t_out = t_net.taps(x_reg.detach(), (PKT_MID_BLOCK,))
        s_taps, s_out = student.taps(x_reg, (PKT_MID_BLOCK,))
        loss_param = F.mse_loss(s_out, t_out)
        loss_pkt = sum(pkt_loss(a, b) for a, b in zip(s_taps, t_taps, strict=True))
        sid = s_out[:, id_slice]
        b = cfg.batch_size
        loss_tri = D.triplet_loss(sid[:b], sid[b:], who)
        loss = (
            loss_g + PARAM_WEIGHT * loss_param + PKT_WEIGHT * loss_pkt + TRIPLET_WEIGHT * loss_tri
        )
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        step += 1
        stats = torch.stack([
            loss_d.detach(), loss_g.detach(), loss_param.detach(), loss_pkt.detach(),
            loss_tri.detach(), (rf_real > 0).float().mean(), (rf_fake < 0).float().mean(),
            (cls_real.argmax(1) == real_lab).float().mean(), (cls_g.argmax(1) == lab2).float().mean(),
        ]).tolist()  # one device sync a step  # fmt: skip
        rows.append({"step": step, **dict(zip(LOG_COLUMNS[1:], stats, strict=True))})
        bar.update(1)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_torch_atomic(state_path, {
                "key": key, "step": step, "rows": json.dumps(rows),
                "generator": gen.state_dict(), "trunk": trunk.state_dict(),
                "student": student.state_dict(), "opt_d": opt_d.state_dict(),
                "opt_g": opt_g.state_dict(),
            })  # fmt: skip
    bar.close()
    cpu = lambda m: {k: v.detach().cpu() for k, v in m.state_dict().items()}  # noqa: E731
    return {"generator": cpu(gen), "trunk": cpu(trunk), "student": cpu(student)}, rows


# --------------------------------------------------------------------------------------
# I/O edge: the `train_unsupervised` rule


def read_crops_by_identity(fit_paths: Sequence[str | os.PathLike]) -> dict[str, list[np.ndarray]]:
    """The stored crops ``(120, 120, 3) uint8`` BGR of every identity, from fit shards
    written with ``fit.keep_crops`` (kept frames, at most ``fit.crops_per_video`` a video;
    sorted shards, frame order); a shard without crops fails with its path."""
    out: dict[str, list[np.ndarray]] = {}
    for p in sorted(str(x) for x in fit_paths):
        shard = FitShard.read(p, fields=("video",))
        rows, imgs = shard.crops()
        for r, img in zip(rows, imgs, strict=True):
            out.setdefault(shard.video_identities[int(shard.frames["video"][r])], []).append(img)
    return out


def generated_identity_accuracy(
    encoder: nn.Module,
    gen: Generator,
    trunk: FaceTrunk,
    feats: Sequence[np.ndarray],
    labels: Sequence[int],
) -> float:
    """How often the identity classifier names the speaker of a generated face: top-1 over
    whole utterances ``(T_i, bands)`` (unit embedding, no jitter), eval mode."""
    return top1_accuracy(lambda x: trunk(gen(unit_embedding(encoder, x)))[1], feats, labels)


def run_train_unsupervised(
    settings: Mapping,
    feature_paths: Sequence[str | os.PathLike],
    fit_paths: Sequence[str | os.PathLike],
    meta_csv,
    encoder_path: str | os.PathLike,
    fit_cfg,
    out_model: str | os.PathLike,
    out_log: str | os.PathLike,
    out_split: str | os.PathLike,
    threads: int = 1,
    progress: bool = True,
) -> dict:
    """The ``train_unsupervised`` rule (module docstring).  settings: config ``train``
    (``split``, ``val_fraction``, ``unsupervised``); fit_cfg: the fit's
    :class:`vox3d.fitting.fit.FitConfig` (its regressor is the teacher).  Reads no 3D label: not
    ``fit/identities.h5``, not the fitted parameters, not the ground truth."""
    torch.set_num_threads(max(1, int(threads)))
    s = section("train", settings)
    cfg = distill_config(s["unsupervised"])
    encoder, emeta = load_encoder(encoder_path)
    crops = read_crops_by_identity(fit_paths)
    utts, train_ids, val_ids, meta, how = split_voices(
        feature_paths, meta_csv, s["split"], float(s["val_fraction"]),
        among=set(crops),
    )  # fmt: skip
    leak = sorted(set(emeta.get("identities", [])) & set(val_ids))
    if leak:
        raise ValueError(
            f"{encoder_path}: the voice encoder was trained on held-out identities {leak[:5]} "
            "(another split): run pretrain_voice again"
        )
    feats, labels, images, image_labels = [], [], [], []
    for j, ident in enumerate(train_ids):
        feats += utts[ident]
        labels += [j] * len(utts[ident])
        images.append(crops_to_images(np.stack(crops[ident])))
        image_labels.append(np.full(len(crops[ident]), j, np.int64))
    bank = UtteranceBank(feats, labels)
    teacher = load_teacher(fit_cfg)
    work = Path(out_model).parent / "unsupervised_state"

    device = resolve_device(s["device"], "train.device")
    states, rows = train_distill(
        cfg, bank, np.concatenate(images), np.concatenate(image_labels), encoder, teacher,
        work, progress, device=device,
    )  # fmt: skip
    encoder = encoder.cpu()
    gen = Generator(EMBED_DIM, cfg.generator_channels)
    gen.load_state_dict(states["generator"])
    trunk = FaceTrunk(len(train_ids), cfg.trunk_channels)
    trunk.load_state_dict(states["trunk"])
    acc = generated_identity_accuracy(encoder, gen.eval(), trunk.eval(), feats, labels)
    layout = teacher.layout
    info = {
        "config": cfg.to_dict(), "identities": list(train_ids), "val_identities": list(val_ids),
        "split_method": how, "n_bands": int(bank.n_bands),
        "encoder_channels": [int(c) for c in emeta.get("encoder_channels", ENCODER_CHANNELS[1:])],
        "encoder_sha256": hashlib.sha256(Path(encoder_path).read_bytes()).hexdigest(),
        "widen": float(teacher.model.widen_factor), "num_params": int(layout.n),
        "n_pose": int(layout.n_pose), "n_id": int(layout.n_id), "n_exp": int(layout.n_exp),
        "param_mean": [float(x) for x in teacher.mean], "param_std": [float(x) for x in teacher.std],
        "calibration": teacher.calibration, "face_model": teacher.face_model,
        "teacher_file": Path(teacher.file).name, "teacher_sha256": teacher.sha256,
        "generated_identity_accuracy": acc, "chance": 1.0 / len(train_ids),
        "n_face_crops": int(sum(len(x) for x in image_labels)), "steps": int(cfg.steps),
        "device": device,
    }  # fmt: skip
    save_unsupervised(out_model, encoder.state_dict(), states, info)
    write_log_csv(out_log, rows)
    write_split(out_split, train_ids, val_ids, meta)
    print(f"unsupervised: {len(train_ids)} training identities, {info['n_face_crops']} face crops; "
          f"the identity classifier names the speaker of {acc:.1%} of generated faces "
          f"(chance {1 / len(train_ids):.1%})", file=sys.stderr)  # fmt: skip
    return info
