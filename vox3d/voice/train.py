"""Training loop of the voice -> identity shape model (CMP supervised variant).

Batches are a pure function of ``(seed, step)`` (:class:`vox3d.voice.train_data.UtteranceBank`):
identity drawn uniformly, then one of its utterances, then a random crop of
``crop_min..crop_max`` frames (one length per batch, as CMP's collate does; utterances
shorter than the crop are repeated cyclically, as CMP pads).  Dropout is seeded per step
too.  Hence a run resumed from a checkpoint continues bit-for-bit like an uninterrupted one
(on CPU, where ``torch.use_deterministic_algorithms(True)`` holds), with no data-loader
state to save.

Loss (supervised): parameter + face-area vertex (+ face-ratio) terms, in
:mod:`vox3d.voice.train_loss` (:class:`vox3d.voice.train_loss.ShapeLoss`).

Parameter space (``train.target: params``, or ``auto`` for a face model without a basis,
such as BFM without ``bfm_noneck_v3.pkl``): the loss is ``param_weight * MSE`` on the
standardised identity coefficients alone (vertex and ratio weights are 0) and no face
model is loaded; the model file records ``target_space`` and ``notes`` for evaluation.

The unsupervised / knowledge-distillation variant (CMP sec. 3.2) lives in
:mod:`vox3d.voice.distill` (its voice encoder's pretraining in :mod:`vox3d.voice.speaker`);
``train.mode`` picks which variants the workflow trains.

Checkpoints (plain dicts of tensors / numbers / strings, loadable with
``weights_only=True``; :mod:`vox3d.voice.train_checkpoints`) are written atomically every
``checkpoint_every`` steps; a rerun resumes from the newest checkpoint whose ``run_key``
(hash of config + data, :func:`run_key`) matches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from vox3d.audio.fbank import CMP_INPUT_NORM
from vox3d.audio.featurestore import load_utterances
from vox3d.config import Settings, default, preset_setting, setting
from vox3d.face.face_model import face_model_from_config
from vox3d.media.split import read_meta, small_data_note, split_identities, write_split
from vox3d.torch_setup import resolve_device
from vox3d.voice.targets import read_identity_targets, resolve_target_space, target_stats
from vox3d.voice.train_checkpoints import (
    _summary_writer,
    _write_log_csv,
    latest_checkpoint,
    list_checkpoints,
    save_checkpoint,
)
from vox3d.voice.train_data import Targets, UtteranceBank, selection_identities
from vox3d.voice.train_loss import ShapeLoss, evaluate_loss, ratio_pair_vertices
from vox3d.voice.train_presets import PRESETS
from vox3d.voice.voice_model import ModelConfig, build_model


def _preset(key: str):
    """A run setting whose default is the default preset's (``PRESETS[train.preset]``)."""
    return preset_setting(PRESETS, "train.preset", key)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (plain values; stored in checkpoints): the preset's
    schedule (:data:`vox3d.voice.train_presets.PRESETS`) with the ``train`` section's values over
    it (:meth:`from_preset`, :meth:`TrainSettings.run_config`).  Defaults: config.yaml's,
    and for the schedule the default preset's."""

    steps: int = _preset("steps")
    batch_size: int = _preset("batch_size")
    lr: float = _preset("lr")
    betas: Sequence[float] = _preset("betas")
    weight_decay: float = setting("train.weight_decay")
    crop_min: int = _preset("crop_min")
    crop_max: int = _preset("crop_max")
    param_weight: float = setting("train.param_weight")
    vertex_weight: float = setting("train.vertex_weight")
    ratio_weight: float = setting("train.ratio_weight")
    checkpoint_every: int = _preset("checkpoint_every")
    eval_every: int = _preset("eval_every")
    log_every: int = _preset("log_every")
    keep_checkpoints: int = 2
    seed: int = setting("train.seed")
    mode: str = setting("train.mode")
    amp: bool = setting("train.amp")  # bf16 autocast on CUDA
    eval_max_frames: int = 1000
    #: ``constant`` or ``cosine`` (from ``lr`` at step 0 to ``lr * lr_min_ratio`` at the
    #: last step; a pure function of the step, so a resumed run keeps the same rates).
    lr_schedule: str = _preset("lr_schedule")
    lr_min_ratio: float = 0.05
    #: ``best``: the model file holds the weights of the evaluation step with the lowest
    #: loss on the selection identities (carved out of the training side, never the
    #: held-out ones); ``last``: the weights of the last step.
    select: str = _preset("select")
    model: dict = field(default_factory=dict)  # ModelConfig overrides (hidden, dropout ...)

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> TrainConfig:
        if preset not in PRESETS:
            raise ValueError(f"unknown train preset {preset!r} (choose from {sorted(PRESETS)})")
        d = dict(PRESETS[preset])
        d.update({k: v for k, v in overrides.items() if v is not None})
        # log windows must end on checkpoint steps (exact resume of the logged means)
        d["log_every"] = math.gcd(int(d["log_every"]), int(d["checkpoint_every"]))
        return cls(**d)

    def validate(self) -> None:
        if self.mode != "supervised":
            raise ValueError(
                f"TrainConfig describes the supervised model, not {self.mode!r} (the "
                "unsupervised variant: vox3d.voice.distill.DistillConfig)"
            )
        if not 1 <= self.crop_min <= self.crop_max:
            raise ValueError(
                f"need 1 <= crop_min <= crop_max, got {self.crop_min}, {self.crop_max}"
            )
        if self.checkpoint_every % self.log_every:
            raise ValueError("checkpoint_every must be a multiple of log_every")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"train.lr_schedule {self.lr_schedule!r}: choose from {sorted(LR_SCHEDULES)}"
            )
        if not 0.0 <= self.lr_min_ratio <= 1.0:
            raise ValueError(f"train.lr_min_ratio must be in [0, 1], got {self.lr_min_ratio}")
        if self.select not in ("best", "last"):
            raise ValueError(f"train.select {self.select!r}: choose best or last")
        for k in ("steps", "batch_size", "checkpoint_every", "eval_every", "log_every"):
            if getattr(self, k) < 1:
                raise ValueError(f"train.{k} must be >= 1")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = [float(b) for b in d["betas"]]
        return d

    def lr_at(self, step: int) -> float:
        """Learning rate of the update that takes the model from ``step`` to ``step + 1``."""
        if self.lr_schedule == "constant" or self.steps <= 1:
            return float(self.lr)
        t = min(max(step, 0), self.steps - 1) / (self.steps - 1)
        low = self.lr * self.lr_min_ratio
        return float(low + 0.5 * (self.lr - low) * (1.0 + math.cos(math.pi * t)))


#: Learning-rate schedules of :meth:`TrainConfig.lr_at`.
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainSettings(Settings):
    """The config's ``train`` section as the supervised run reads it (defaults:
    config.yaml's).  The schedule keys (``steps`` ... ``select``) are null for "the
    preset's"; :meth:`run_config` resolves them into the run's :class:`TrainConfig`."""

    SECTION = "train"
    OTHER_KEYS = ("voice_encoder", "unsupervised")  # the unsupervised variant's settings

    preset: str = setting("train.preset")
    device: str = setting("train.device")
    mode: str = setting("train.mode")
    split: str = setting("train.split")
    val_fraction: float = setting("train.val_fraction")
    select_fraction: float = setting("train.select_fraction")
    select: str | None = setting("train.select")
    lr_schedule: str | None = setting("train.lr_schedule")
    vertex_set: str = setting("train.vertex_set")
    target: str = setting("train.target")
    hidden: list[int] = setting("train.hidden")
    steps: int | None = setting("train.steps")
    batch_size: int | None = setting("train.batch_size")
    lr: float | None = setting("train.lr")
    crop_min: int | None = setting("train.crop_min")
    crop_max: int | None = setting("train.crop_max")
    checkpoint_every: int | None = setting("train.checkpoint_every")
    param_weight: float = setting("train.param_weight")
    vertex_weight: float = setting("train.vertex_weight")
    ratio_weight: float = setting("train.ratio_weight")
    weight_decay: float = setting("train.weight_decay")
    dropout: float | None = setting("train.dropout")
    input_norm: str = setting("train.input_norm")
    amp: bool = setting("train.amp")
    seed: int = setting("train.seed")

    def run_config(self, space: str = "mesh") -> TrainConfig:
        """The run's :class:`TrainConfig`: the preset's schedule with this section's values
        over it (nulls keep the preset's).  ``space`` ``params`` (the loss on standardised
        coefficients only) turns the vertex and ratio losses off."""
        over = {
            k: getattr(self, k)
            for k in TrainConfig.__dataclass_fields__
            if k in self.__dataclass_fields__ and k != "mode"
        }
        model = {}
        if self.hidden:
            model["hidden"] = [int(h) for h in self.hidden]
        if self.dropout is not None:
            model["dropout"] = float(self.dropout)
        if self.input_norm != CMP_INPUT_NORM:  # CMP's is the model's default
            model["input_norm"] = str(self.input_norm)
        if model:
            over["model"] = model
        if space == "params":
            over["vertex_weight"] = 0.0
            over["ratio_weight"] = 0.0
        return TrainConfig.from_preset(self.preset, **over)


# --------------------------------------------------------------------------------------
# the run's key
# --------------------------------------------------------------------------------------


def run_key(cfg: TrainConfig, model_cfg: ModelConfig, data_fp: str, target_fp: str) -> str:
    blob = json.dumps(
        {
            "train": cfg.to_dict(),
            "model": model_cfg.to_dict(),
            "data": data_fp,
            "targets": target_fp,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    bank: UtteranceBank,
    targets: Targets,
    out_dir: str | os.PathLike,
    val_bank: UtteranceBank | None = None,
    val_coef: np.ndarray | None = None,
    device: str = default("train.device"),
    meta: Mapping | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> dict:
    """Train (or resume) a model; return the final model file dict.

    Writes into ``out_dir``: ``checkpoints/step-NNNNNNN.pt``, ``log.csv``, ``tb/``
    (TensorBoard) and ``model.pt`` (weights + metadata, no optimizer state).
    ``meta`` (plain values) is stored in the model file (identities, face model ...).
    ``val_coef``: ``(n_val_identities, K)`` targets indexed like ``val_bank.ids``.
    """
    cfg.validate()
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    dev = torch.device(resolve_device(device, "train.device"))
    if threads:
        torch.set_num_threads(threads)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    if dev.type == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        return _train_loop(
            cfg, bank, targets, out, ckpt_dir, dev, val_bank, val_coef, meta, progress
        )
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _train_loop(cfg, bank, targets, out, ckpt_dir, dev, val_bank, val_coef, meta, progress) -> dict:
    from tqdm import tqdm

    coef = np.asarray(targets.coef, dtype=np.float32)
    used = np.unique(bank.ids)
    mean, std = target_stats(coef[used])
    model_cfg = ModelConfig(n_bands=bank.n_bands, n_out=coef.shape[1], **cfg.model)

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg)
    model.target_mean.copy_(torch.from_numpy(mean))
    model.target_std.copy_(torch.from_numpy(std))
    model.to(dev)
    coef_t = torch.from_numpy(coef)
    coef_z = model.standardise(coef_t.to(dev)).detach()
    basis = (
        None if targets.basis is None else torch.from_numpy(np.asarray(targets.basis, np.float32))
    )
    rmean = (
        None
        if targets.ratio_mean is None
        else torch.from_numpy(np.asarray(targets.ratio_mean, np.float32))
    )
    rbasis = (
        None
        if targets.ratio_basis is None
        else torch.from_numpy(np.asarray(targets.ratio_basis, np.float32))
    )
    loss_fn = ShapeLoss(
        basis,
        torch.from_numpy(std),
        coef_t[torch.from_numpy(used)],
        cfg.param_weight,
        cfg.vertex_weight,
        rmean,
        rbasis,
        cfg.ratio_weight,
        torch.from_numpy(mean),
    ).to(dev)
    opt = torch.optim.Adam(
        model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
    )
    val_z = None
    if val_bank is not None and val_coef is not None:
        val_z = model.standardise(torch.from_numpy(np.asarray(val_coef, np.float32)).to(dev))

    tfp = hashlib.sha256(
        coef.tobytes() + (b"" if basis is None else basis.numpy().tobytes())
    ).hexdigest()
    key = run_key(cfg, model_cfg, bank.fingerprint(), tfp)
    step, history = 0, []
    best: dict | None = None  # {"step", "loss", "model"}: the selected weights so far
    state = latest_checkpoint(ckpt_dir, key, log=lambda m: tqdm.write(m))
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, history = int(state["step"]), list(state["history"])
        best = state.get("best")
        tqdm.write(f"resuming from {ckpt_dir}/step-{step:07d}.pt")
    selecting = cfg.select == "best" and val_z is not None

    tb = _summary_writer(out / "tb", purge_step=step + 1 if step else None)
    use_amp = cfg.amp and dev.type == "cuda"
    model.train()
    window: dict[str, torch.Tensor] = {}
    n_window = 0
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="it", disable=not progress)
    while step < cfg.steps:
        x, who = bank.batch(step, cfg.batch_size, cfg.crop_min, cfg.crop_max, cfg.seed)
        x, who = x.to(dev, non_blocking=True), who.to(dev)
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout of this step
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            z = model(x)
        losses = loss_fn(z.float(), coef_z[who])
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        lr_now = cfg.lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr_now
        opt.step()
        step += 1
        for k, v in losses.items():  # summed on the device: no host sync per step
            window[k] = window.get(k, 0.0) + v.detach()
        n_window += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            row = {"step": step, "lr": lr_now}
            row.update({k: float(v) / n_window for k, v in window.items()})
            window, n_window = {}, 0
            if val_z is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
                vl = evaluate_loss(model, loss_fn, val_bank, val_z, dev, cfg.eval_max_frames)
                row.update({f"val_{k}": v for k, v in vl.items()})
                if selecting and (best is None or vl["loss"] < best["loss"]):
                    best = {
                        "step": step,
                        "loss": float(vl["loss"]),
                        "model": {
                            k: v.detach().cpu().clone() for k, v in model.state_dict().items()
                        },
                    }
            history.append(row)
            for k, v in row.items():
                if k != "step" and v is not None:
                    tb.add_scalar(
                        k.replace("val_", "val/") if k.startswith("val_") else f"train/{k}", v, step
                    )
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(
                ckpt_dir / f"step-{step:07d}.pt",
                {
                    "run_key": key,
                    "step": step,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "history": history,
                    "model_config": model_cfg.to_dict(),
                    "best": best,
                },
            )
            for _, old in list_checkpoints(ckpt_dir)[: -cfg.keep_checkpoints]:
                old.unlink(missing_ok=True)
            _write_log_csv(out / "log.csv", history)
    bar.close()
    tb.flush()
    tb.close()
    _write_log_csv(out / "log.csv", history)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    selected = step
    if selecting and best is not None:
        weights, selected = best["model"], int(best["step"])
        tqdm.write(
            f"model.pt: the weights of step {selected} (lowest loss on the selection "
            f"identities, {best['loss']:.4f}), of {step} steps"
        )
    final = {
        "model": weights,
        "model_config": model_cfg.to_dict(),
        "train_config": cfg.to_dict(),
        "step": step,
        "selected_step": selected,
        "run_key": key,
        "history": history,
    }
    final.update(dict(meta or {}))
    save_checkpoint(out / "model.pt", final)
    return final


# --------------------------------------------------------------------------------------
# I/O edge: files of the other stages -> in-memory data; the `train` rule
# --------------------------------------------------------------------------------------


def run_train(
    settings: TrainSettings | Mapping,
    feature_paths: Sequence[str | os.PathLike],
    identities_h5: str | os.PathLike,
    meta_csv: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    face_model: Mapping | None = None,
    threads: int | None = None,
) -> dict:
    """The `train` rule: split identities, load features and targets, train, write
    ``split.tsv``, ``model.pt``, checkpoints and logs under ``out_dir``.

    settings: the config's ``train`` section, as :class:`TrainSettings` or the mapping it is
    built from (``preset`` plus overrides, ``device``, ``split``, ``val_fraction``,
    ``vertex_set``, ``target`` ...).  ``target`` picks the
    space of the loss (:func:`vox3d.voice.targets.resolve_target_space`): ``mesh`` (parameter +
    face-area vertex + ratio losses through the face model's basis), ``params`` (the MSE on
    standardised identity coefficients only; no basis needed) or ``auto`` (mesh when the
    face model's basis is available: always for ICT, for BFM when ``assets.bfm`` is set).
    face_model: the config's ``face_model`` section plus asset paths
    (:func:`vox3d.face.face_model.face_model_settings`).
    """
    st = settings if isinstance(settings, TrainSettings) else TrainSettings.from_section(settings)
    preset, device, split_method = st.preset, st.device, st.split
    val_fraction, select_fraction = float(st.val_fraction), float(st.select_fraction)
    vertex_set = st.vertex_set

    ids, coef, attrs = read_identity_targets(identities_h5)
    fm_name = str(
        attrs.get("face_model") or (face_model or {}).get("name") or default("face_model.name")
    )
    fcfg = dict(face_model or {})
    fcfg["name"] = fm_name
    space, space_note = resolve_target_space(st.target, fcfg)
    cfg = st.run_config(space)
    if space == "params" and cfg.param_weight <= 0:
        raise ValueError(
            "train.param_weight is 0 with a parameter-space target: the loss would be empty "
            "(set train.param_weight > 0)"
        )
    if space_note:
        print(space_note, file=sys.stderr)

    meta = read_meta(meta_csv)
    utts = load_utterances(feature_paths, norm=st.input_norm)
    usable = sorted(set(ids) & set(utts))
    if len(usable) < 2:
        raise ValueError(
            f"need at least 2 identities with both features and fitted shape; got {len(usable)} "
            f"({len(ids)} in {identities_h5}, {len(utts)} with features)"
        )
    train_ids, val_ids, how = split_identities(usable, meta, split_method, val_fraction)
    out = Path(out_dir)
    write_split(out / "split.tsv", train_ids, val_ids, meta)
    row = {i: r for r, i in enumerate(ids)}
    note = small_data_note(len(train_ids), len(val_ids))
    fit_ids, select_ids = selection_identities(train_ids, select_fraction)
    select_note = ""
    if cfg.select == "best" and not select_ids:
        cfg = dataclasses.replace(cfg, select="last")
        select_note = (
            f"no selection identities (train.select_fraction {select_fraction}, "
            f"{len(train_ids)} training identities): model.pt holds the last step's weights"
        )
        print(select_note, file=sys.stderr)
    if note:
        print(note, file=sys.stderr)

    def bank_for(which):
        feats, lab = [], []
        for j, ident in enumerate(which):
            for f in utts[ident]:
                feats.append(f)
                lab.append(j)
        return UtteranceBank(feats, lab), np.stack([coef[row[i]] for i in which])

    # the held-out identities (val_ids) are never read here: the loop's validation losses
    # and the checkpoint selection use the selection identities, a part of the training side
    bank, tcoef = bank_for(fit_ids)
    vbank, vcoef = bank_for(select_ids) if select_ids else (None, None)
    basis = rmean = rbasis = None
    if space == "mesh" and (cfg.vertex_weight > 0 or cfg.ratio_weight > 0):
        fm = face_model_from_config(fcfg, n_id=coef.shape[1])
        idx = fm.vertex_sets.get(vertex_set) if vertex_set else None
        b = fm.id_basis[: coef.shape[1]]
        basis = np.ascontiguousarray(b if idx is None else b[:, idx])
        pidx = ratio_pair_vertices(fm.are_pairs)
        rmean, rbasis = fm.mean[pidx], np.ascontiguousarray(b[:, pidx])
    meta_out = {
        "identities": list(fit_ids),
        "select_identities": list(select_ids),
        "val_identities": list(val_ids),
        "split_method": how,
        "face_model": fm_name,
        "n_id": int(coef.shape[1]),
        "preset": preset,
        "vertex_set": str(vertex_set),
        "target_space": space,
        "notes": [n for n in (space_note, note, select_note) if n],
    }
    return train(
        cfg,
        bank,
        Targets(tcoef, basis, rmean, rbasis),
        out,
        val_bank=vbank,
        val_coef=vcoef,
        device=device,
        meta=meta_out,
        threads=threads,
    )
