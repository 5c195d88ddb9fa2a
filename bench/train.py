"""Time the paper preset of the voice -> shape training step.

    python bench/train.py --device cuda [--iters 300] [--amp] [--compile] [--source gpu|host]

Prints iterations per second and the projected time of the 48k iterations of the paper
preset (CMP: Adam 2e-4, betas 0.5/0.999, batch 64, random crops of 300-800 frames of
64-band log-mel, loss on parameters + face-area vertices).  Needs only torch, numpy and
vox3d's pure-Python modules (no h5py, no tqdm, no tensorboard), so it runs on a bare GPU box.

Data: random in-memory features of the real shapes (utterances of 1000 frames x 64 bands,
as CMP stores them; 40 identity coefficients; an identity basis over the 9,409 face-area
vertices of ICT-FaceKit).  ``--source gpu`` keeps all utterances on the device and crops
there (no host work per step); ``--source host`` uses :class:`vox3d.voice.train_data.UtteranceBank`
(numpy crops, copied to the device each step), the path the CPU trainer uses.  The real
run reads its utterances from the HDF5 feature shards into memory once before training,
so neither includes HDF5 reading time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vox3d.voice.train_data import UtteranceBank  # noqa: E402
from vox3d.voice.train_loss import ShapeLoss  # noqa: E402
from vox3d.voice.train_presets import PRESETS  # noqa: E402
from vox3d.voice.voice_model import ModelConfig, VoiceToShape  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--source", default="gpu", choices=["gpu", "host"])
    ap.add_argument("--identities", type=int, default=1000)
    ap.add_argument("--utterances", type=int, default=4, help="per identity")
    ap.add_argument("--n-id", type=int, default=40)
    ap.add_argument("--vertices", type=int, default=9409)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    p = PRESETS["paper"]
    dev = torch.device(args.device)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n_utt = args.identities * args.utterances
    T = 1000
    labels = np.repeat(np.arange(args.identities), args.utterances)
    coef = rng.normal(size=(args.identities, args.n_id)).astype(np.float32)
    basis = torch.from_numpy(
        rng.normal(size=(args.n_id, args.vertices, 3)).astype(np.float32) * 0.1
    )

    model = VoiceToShape(ModelConfig(n_out=args.n_id)).to(dev)
    loss_fn = ShapeLoss(basis, model.target_std.cpu(), torch.from_numpy(coef)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=p["lr"], betas=tuple(p["betas"]))
    fwd = torch.compile(model) if args.compile else model
    coef_z = torch.from_numpy(coef).to(dev)
    B, cmin, cmax = p["batch_size"], p["crop_min"], p["crop_max"]

    if args.source == "gpu":
        feats = torch.randn(n_utt, T, 64, device=dev)
        lab = torch.from_numpy(labels).to(dev)
        gen = torch.Generator(device=dev).manual_seed(0)

        def batch(step):
            L = int(torch.randint(cmin, cmax + 1, (1,)).item())
            u = torch.randint(0, n_utt, (B,), device=dev, generator=gen)
            s = torch.randint(0, T - L + 1, (B,), device=dev, generator=gen)
            idx = s[:, None] + torch.arange(L, device=dev)[None]
            return feats[u[:, None], idx], lab[u]
    else:
        bank = UtteranceBank(
            [rng.normal(size=(T, 64)).astype(np.float32) for _ in range(n_utt)], labels
        )

        def batch(step):
            x, w = bank.batch(step, B, cmin, cmax)
            return x.to(dev, non_blocking=True), w.to(dev)

    def step_fn(step):
        x, w = batch(step)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.amp):
            z = fwd(x)
        loss = loss_fn(z.float(), coef_z[w])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for i in range(args.warmup):
        step_fn(i)
    sync()
    t0 = time.perf_counter()
    for i in range(args.iters):
        loss = step_fn(args.warmup + i)
    sync()
    dt = time.perf_counter() - t0
    ips = args.iters / dt
    total = p["steps"] / ips
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(
        f"device: {name}; torch {torch.__version__}; amp bf16: {args.amp}; compile: {args.compile}; "
        f"data: {args.source}"
    )
    print(f"paper preset: batch {B}, crops {cmin}-{cmax} frames, Adam {p['lr']} betas {p['betas']}")
    print(
        f"{args.iters} iterations in {dt:.2f} s: {ips:.1f} it/s ({1000 / ips:.2f} ms/it); "
        f"final loss {float(loss.detach()):.4f}"
    )
    print(f"projected {p['steps']} iterations: {total / 60:.1f} min (target <= 20 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
