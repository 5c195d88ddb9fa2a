"""Training the ICT regressor and writing its checkpoint.

:func:`train_from_cache` trains the MobileNet on a render cache of the corpus's renderer
(:mod:`vox3d.fitting.regressor_cache`; the command line is :mod:`vox3d.fitting.regressor_data`),
with a loss that adds the identity error after similarity alignment
(:func:`identity_form`, :func:`identity_geometry_form`).  :func:`save_checkpoint` writes
the ``.pth`` and its json (read back by :mod:`vox3d.fitting.ict_checkpoint`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vox3d.config import setting
from vox3d.fitting.ict_checkpoint import sha256_file
from vox3d.fitting.ict_generator import GenConfig, GenModel
from vox3d.fitting.regressor_cache import load_cache
from vox3d.io import save_torch_atomic, write_text_atomic
from vox3d.params import ict_layout
from vox3d.safeload import load_torch

# --------------------------------------------------------------------------------------
# training


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train_from_cache` (the checkpoint json records them all as
    ``training``; ``workers`` and ``max_minutes`` are recorded only, as the first
    checkpoints carried them: nothing reads them)."""

    steps: int = setting("fit.regressor.steps")
    batch_size: int = setting("fit.regressor.batch_size")
    lr: float = setting("fit.regressor.lr")
    weight_decay: float = 1e-4
    vertex_weight: float = 0.02  # per crop pixel of mean posed-vertex distance
    n_loss_vertices: int = 600
    widen: float = setting("fit.regressor.widen")
    workers: int = setting("fit.regressor.workers")
    device: str = setting("fit.regressor.device")
    threads: int = 1
    max_minutes: float = 0.0
    id_weight: float = setting(
        "fit.regressor.id_weight"
    )  # x identity error after similarity removal (mean sq., mm^2)
    warmup_frac: float = 0.03  # linear warm-up (fraction of steps), then cosine to lr/100
    amp: bool = True  # CUDA: bf16 autocast
    seed: int = setting("fit.regressor.seed")  # torch init and batch draws


def _loss_vertex_index(gm: GenModel, n: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    face = np.sort(rng.choice(gm.face_idx, min(n, len(gm.face_idx)), replace=False))
    return np.unique(np.concatenate([face, gm.landmarks68]))


class _PosedVertices:
    """Torch: parameters (B, P) -> posed vertices (B, M, 3) in crop coordinates of a fixed
    vertex subset."""

    def __init__(self, gm: GenModel, idx: np.ndarray, device) -> None:
        import torch

        self.mean = torch.from_numpy(gm.mean[idx]).to(device)
        self.idb = torch.from_numpy(gm.id_basis[:, idx].reshape(gm.n_id, -1)).to(device)
        self.exb = torch.from_numpy(gm.exp_basis[:, idx].reshape(gm.n_exp, -1)).to(device)
        self.n_id, self.n_exp = gm.n_id, gm.n_exp

    def __call__(self, p):
        b = p.shape[0]
        P = p[:, :12].reshape(b, 3, 4)
        a = p[:, 12 : 12 + self.n_id]
        e = p[:, 12 + self.n_id : 12 + self.n_id + self.n_exp]
        v = (a @ self.idb + e @ self.exb).reshape(b, -1, 3) + self.mean
        return v @ P[:, :, :3].transpose(1, 2) + P[:, None, :, 3]


def _training_device(tc: TrainConfig):
    """``torch.device(tc.device)`` set up for a deterministic training run: ``tc.threads``
    CPU threads, or cuDNN without autotuning and with deterministic kernels."""
    import torch

    dev = torch.device(tc.device)
    if dev.type == "cpu":
        torch.set_num_threads(max(1, tc.threads))
    else:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return dev


# --------------------------------------------------------------------------------------
# identity geometry after similarity alignment


def similarity_tangent(ref: np.ndarray) -> np.ndarray:
    """Orthonormal basis ``(3M, 7)`` of the tangent space of similarity transforms at the
    points ``ref (M, 3)``: translations (3), rotations about the centroid (3), scaling
    about the centroid (1)."""
    x = np.asarray(ref, np.float64)
    c = x - x.mean(0)
    cols = []
    for a in range(3):
        t = np.zeros_like(x)
        t[:, a] = 1.0
        cols.append(t.reshape(-1))
    for a in range(3):
        w = np.zeros(3)
        w[a] = 1.0
        cols.append(np.cross(w, c).reshape(-1))
    cols.append(c.reshape(-1))
    q, _ = np.linalg.qr(np.stack(cols, 1))
    return q


def identity_geometry_form(basis: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``Q (K, K) = B^T P_perp B / M`` (float64): for an identity-coefficient error ``d
    (K,)``, ``d^T Q d`` is the mean squared vertex error (units of the basis squared, cm^2
    for ICT) of ``B d`` after removing its similarity component at ``ref``.

    basis ``(K, M, 3)`` identity modes on the M points; ref ``(M, 3)`` the mean shape there.
    """
    k, m = basis.shape[:2]
    B = np.asarray(basis, np.float64).reshape(k, -1).T  # (3M, K)
    T = similarity_tangent(ref)
    TB = T.T @ B  # (7, K)
    return (B.T @ B - TB.T @ TB) / m


def vertex_geometry_error(dv: np.ndarray, ref: np.ndarray) -> float:
    """Mean squared per-point displacement of ``dv (M, 3)`` after removing its similarity
    component at ``ref (M, 3)`` (the vertex-space form of :func:`identity_geometry_form`)."""
    T = similarity_tangent(ref)
    v = np.asarray(dv, np.float64).reshape(-1)
    r = v - T @ (T.T @ v)
    return float(r @ r / len(ref))


# --------------------------------------------------------------------------------------
# training from a render cache (vox3d.fitting.regressor_cache)


def identity_form(gm: GenModel) -> np.ndarray:
    """``(n_id, n_id)`` float64 quadratic form of the identity-geometry loss, in mm^2:
    ``d^T Q d`` = mean squared narrow-face vertex error of an identity-coefficient error
    ``d`` after removing its similarity component at the mean face
    (:func:`identity_geometry_form`)."""
    fi = gm.face_idx
    return identity_geometry_form(gm.id_basis[:, fi], gm.mean[fi]) * 100.0  # cm^2 -> mm^2


def lr_at(step: int, tc: TrainConfig) -> float:
    """Learning rate of `step`: linear warm-up from lr/10 over ``warmup_frac`` of the
    steps, then a cosine down to lr/100 at the last step."""
    w = max(1, int(tc.warmup_frac * tc.steps))
    if step < w:
        return tc.lr * (0.1 + 0.9 * step / w)
    t = (step - w) / max(1, tc.steps - w)
    return tc.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def batch_indices(seed: int, step: int, n: int, batch: int) -> np.ndarray:
    """Sample indices (batch,) of training step `step`: uniform with replacement, drawn
    from ``default_rng([seed, step])`` alone (resuming gives the same batches)."""
    return np.random.default_rng([seed, step]).integers(0, n, batch)


def _losses(model, crops, y, mean_t, std_t, posed, qform, tc, amp_dtype):
    """(total, whitened-parameter MSE, posed-vertex px, identity mm^2) of one batch."""
    import torch

    from vox3d.face.regressor import normalize_crops

    x = normalize_crops(crops)
    if amp_dtype is not None:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=amp_dtype):
            out = model(x)
        out = out.float()
    else:
        out = model(x)
    loss_p = torch.mean((out - (y - mean_t) / std_t) ** 2)
    pred = out * std_t + mean_t
    loss_v = torch.mean(torch.linalg.norm(posed(pred) - posed(y), dim=-1))
    k = qform.shape[0]
    d = pred[:, 12 : 12 + k] - y[:, 12 : 12 + k]
    loss_id = torch.mean(torch.einsum("bi,ij,bj->b", d, qform, d))
    total = loss_p + tc.vertex_weight * loss_v + tc.id_weight * loss_id
    return total, loss_p, loss_v, loss_id


def train_from_cache(
    gm: GenModel,
    cache: str | os.PathLike,
    tc: TrainConfig,
    state_path: str | os.PathLike,
    time_budget: float | None = None,
    progress: bool = True,
    log=None,
):
    """Train on the valid samples of a render cache (:mod:`vox3d.fitting.regressor_cache`).

    The whole cache sits on the device (uint8 crops); step ``k`` draws its batch with
    :func:`batch_indices`; loss = whitened-parameter MSE + ``vertex_weight`` x mean posed
    face-vertex distance (crop px, VDC-like) + ``id_weight`` x :func:`identity_form`
    (mm^2).  Whitening mean/std are measured on the cache's targets.  Every call resumes
    from `state_path` when it exists (model, optimiser, step, curve) and writes it when it
    stops: after `time_budget` seconds or at ``tc.steps``.

    Returns ``(model (eval), mean (P,), std (P,), curve, finished)``; curve rows are
    ``[step, param_mse, vertex_px, identity_mm2, lr, elapsed_s]`` every 100 steps.
    """
    import torch
    from tqdm import tqdm

    from vox3d.face.regressor import build_mobilenet

    t0 = time.time()
    dev = _training_device(tc)
    data = load_cache(cache, keys=("crops", "params"))
    y64 = data["params"].astype(np.float64)
    n = len(y64)
    mean, std = y64.mean(0), y64.std(0)
    std = np.where(std < 1e-6, 1.0, std)
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    crops = torch.from_numpy(data["crops"]).to(dev)
    ys = torch.from_numpy(data["params"]).to(dev)
    del data
    torch.manual_seed(tc.seed)
    n_params = ict_layout(gm.n_id, gm.n_exp).n
    model = build_mobilenet(tc.widen, n_params).to(dev)
    amp_dtype = torch.bfloat16 if (tc.amp and dev.type == "cuda") else None
    if amp_dtype is not None:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    step0, curve = 0, []
    state_path = Path(state_path)
    cfg_key = json.dumps(asdict(tc) | {"device": "", "threads": 0, "workers": 0}, sort_keys=True)
    if state_path.is_file():
        st = load_torch(state_path, map_location=str(dev))
        if st["config"] != cfg_key or int(st["n"]) != n:
            raise RuntimeError(
                f"{state_path}: a training state of other settings or data; remove it to restart"
            )
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step0, curve = int(st["step"]), [list(r) for r in st["curve"]]
        print(f"resuming at step {step0} of {tc.steps}", file=sys.stderr)
    mean_t, std_t = torch.from_numpy(mean).to(dev), torch.from_numpy(std).to(dev)
    posed = _PosedVertices(gm, _loss_vertex_index(gm, tc.n_loss_vertices), dev)
    qform = torch.from_numpy(identity_form(gm).astype(np.float32)).to(dev)
    model.train()
    bar = tqdm(range(step0, tc.steps), initial=step0, total=tc.steps, disable=not progress,
               desc="train ict regressor", file=sys.stderr)  # fmt: skip
    acc = np.zeros(4)
    n_acc = 0
    step = step0
    finished = True
    for step in bar:
        lr = lr_at(step, tc)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.from_numpy(batch_indices(tc.seed, step, n, tc.batch_size)).to(dev)
        loss, lp, lv, li = _losses(model, crops[idx], ys[idx], mean_t, std_t, posed, qform, tc,
                                   amp_dtype)  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0:  # a host sync every 10 steps only
            acc += [
                float(loss.detach()),
                float(lp.detach()),
                float(lv.detach()),
                float(li.detach()),
            ]
            n_acc += 1
        if (step + 1) % 100 == 0 or step + 1 == tc.steps:
            m = acc / max(n_acc, 1)
            curve.append([step + 1, float(m[1]), float(m[2]), float(m[3]), lr, time.time() - t0])
            bar.set_postfix(param=f"{m[1]:.3f}", vdc_px=f"{m[2]:.2f}", id_mm2=f"{m[3]:.2f}")
            if log is not None:
                log.write("\t".join(f"{v:.6g}" for v in curve[-1]) + "\n")
                log.flush()
            acc[:] = 0
            n_acc = 0
        if time_budget is not None and time.time() - t0 > time_budget and step + 1 < tc.steps:
            finished = False
            break
    steps_done = step + 1 if tc.steps > step0 else step0
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": steps_done,
             "curve": curve, "config": cfg_key, "n": n}  # fmt: skip
    save_torch_atomic(state_path, state)
    model.steps_done = steps_done
    if not finished:
        print(f"stopped at step {steps_done} of {tc.steps} (time budget); rerun to resume",
              file=sys.stderr)  # fmt: skip
    return model.eval().float(), mean, std, curve, finished


# --------------------------------------------------------------------------------------
# the checkpoint (its readers: vox3d.fitting.ict_checkpoint)


def save_checkpoint(
    model,
    out: str | os.PathLike,
    gen: GenConfig,
    tc: TrainConfig,
    mean: np.ndarray,
    std: np.ndarray,
    accuracy: dict | None = None,
    extra: dict | None = None,
    gm: GenModel | None = None,
) -> dict:
    """Write ``out`` (.pth, a plain state_dict, loadable with weights_only=True) and its
    ``.json`` sidecar (layout, generator and training config, mean/std, sha256)."""
    import torch

    out = Path(out)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_torch_atomic(out, state)
    lay = ict_layout(gen.n_id, gen.n_exp)
    meta = {
        "format": "vox3d ict regressor 1",
        "network": "MobileNet-V1 (vox3d.face.regressor.build_mobilenet)",
        "widen": tc.widen,
        "face_model": "ict",
        "n_id": gen.n_id,
        "n_exp": gen.n_exp,
        "layout": lay.as_attrs(),
        "num_params": lay.n,
        "input": "120x120 BGR uint8 crop, (x - 127.5) / 128, NCHW",
        "param_mean": [float(x) for x in mean],
        "param_std": [float(x) for x in std],
        "data_seed": gen.seed,
        "generator": gen.as_dict(),
        "training": asdict(tc),
        "steps": tc.steps,
        "steps_done": int(getattr(model, "steps_done", tc.steps)),
        "device": tc.device,
        "torch": torch.__version__,
        "sha256": sha256_file(out),
    }
    if accuracy is not None:
        meta["heldout_accuracy"] = accuracy
    if gm is not None:
        meta["gen_model_sha256"] = gm.digest()
    if extra:
        meta.update(extra)
    write_text_atomic(out.with_suffix(".json"), json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return meta
