"""Training: the loss falls on a tiny synthetic dataset; a killed run resumes to the same
weights as an uninterrupted one; checkpoints load with weights_only=True."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vox3d.safeload import load_torch
from vox3d.voice.train import TrainConfig, train
from vox3d.voice.train_data import Targets, UtteranceBank

SMALL_MODEL = {"channels": [32, 32, 32, 32], "dropout": 0.1}


def toy_data(n_ids: int = 12, utts: int = 3, k: int = 4, seed: int = 0):
    """Identities whose log-mel 'timbre' is a linear function of their shape coefficients."""
    rng = np.random.default_rng(seed)
    coef = rng.normal(size=(n_ids, k)).astype(np.float32)
    mix = rng.normal(size=(k, 64)).astype(np.float32)
    feats, ids = [], []
    for i in range(n_ids):
        for _ in range(utts):
            t = int(rng.integers(150, 400))
            f = coef[i] @ mix + rng.normal(size=(t, 64)).astype(np.float32)
            feats.append(f.astype(np.float32))
            ids.append(i)
    basis = rng.normal(size=(k, 50, 3)).astype(np.float32)
    return feats, ids, coef, basis


def test_batches_deterministic_and_cropped():
    feats, ids, _, _ = toy_data()
    bank = UtteranceBank(feats, ids)
    a, ia = bank.batch(7, 8, 50, 120, seed=3)
    b, ib = bank.batch(7, 8, 50, 120, seed=3)
    c, _ = bank.batch(8, 8, 50, 120, seed=3)
    assert torch.equal(a, b) and torch.equal(ia, ib)
    assert 50 <= a.shape[1] <= 120 and a.shape[2] == 64
    assert not (a.shape == c.shape and torch.equal(a, c))
    # short utterances are repeated to the crop length
    short = UtteranceBank([np.arange(10 * 64, dtype=np.float32).reshape(10, 64)], [0])
    x, _ = short.batch(0, 1, 25, 25)
    assert torch.equal(x[0, 10:20], x[0, :10])


def test_loss_falls_on_toy_data(tmp_path):
    feats, ids, coef, basis = toy_data()
    cfg = TrainConfig(
        steps=60,
        batch_size=16,
        lr=2e-3,
        crop_min=40,
        crop_max=80,
        checkpoint_every=20,
        eval_every=20,
        log_every=10,
        model=SMALL_MODEL,
    )
    final = train(
        cfg,
        UtteranceBank(feats, ids),
        Targets(coef, basis),
        tmp_path,
        device="cpu",
        progress=False,
        threads=1,
    )
    h = final["history"]
    assert h[-1]["loss"] < 0.5 * h[0]["loss"], [r["loss"] for r in h]
    assert h[-1]["loss_vertex"] < h[0]["loss_vertex"]
    assert (tmp_path / "log.csv").read_text().startswith("step,loss,")
    assert any((tmp_path / "tb").iterdir())
    blob = load_torch(tmp_path / "model.pt")  # weights_only=True
    assert blob["step"] == 60 and "optimizer" not in blob


def test_the_supervised_config_refuses_another_variant():
    """TrainConfig is the supervised model's; the unsupervised one has vox3d.voice.distill's."""
    with pytest.raises(ValueError, match="DistillConfig"):
        TrainConfig(mode="unsupervised").validate()


RUNNER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import torch
    from test_train import SMALL_MODEL, toy_data
    from vox3d.voice.train import TrainConfig, train
    from vox3d.voice.train_data import Targets, UtteranceBank
    feats, ids, coef, basis = toy_data()
    cfg = TrainConfig(steps=400, batch_size=8, lr=1e-3, crop_min=40, crop_max=80,
                      checkpoint_every=10, eval_every=10, log_every=10, keep_checkpoints=3,
                      model=SMALL_MODEL)
    train(cfg, UtteranceBank(feats, ids), Targets(coef, basis), sys.argv[1],
          device="cpu", progress=False, threads=1)
    """
)


@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RUNNER.format(tests=str(Path(__file__).parent)))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    py = sys.executable
    killed = tmp_path / "killed"
    proc = subprocess.Popen([py, str(script), str(killed)], env=env)
    deadline = time.time() + 120
    ck = killed / "checkpoints"
    while time.time() < deadline:
        done = sorted(ck.glob("step-*.pt")) if ck.is_dir() else []
        if len(done) >= 2:  # wait for a couple of checkpoints, then SIGKILL mid-run
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.pt").exists(), "run finished before it could be killed"
    n_before = max(int(p.stem.split("-")[1]) for p in ck.glob("step-*.pt"))
    assert 0 < n_before < 400
    subprocess.run([py, str(script), str(killed)], env=env, check=True)
    clean = tmp_path / "clean"
    subprocess.run([py, str(script), str(clean)], env=env, check=True)
    a, b = load_torch(killed / "model.pt"), load_torch(clean / "model.pt")
    assert a["step"] == b["step"] == 400
    for k in b["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["history"] == b["history"]
    assert (killed / "log.csv").read_bytes() == (clean / "log.csv").read_bytes()
    # same content, same bytes (no object sharing or temporary names leak into the file)
    assert (killed / "model.pt").read_bytes() == (clean / "model.pt").read_bytes()


def test_ratio_loss_matches_are_metric():
    """ShapeLoss.ratios on the pair vertices equals vox3d.face.metrics.face_ratios of the mesh."""
    from vox3d.face.metrics import face_ratios
    from vox3d.voice.train_loss import ShapeLoss, ratio_pair_vertices

    rng = np.random.default_rng(0)
    mean = rng.normal(size=(30, 3)) * 5
    basis = rng.normal(size=(4, 30, 3)) * 0.5
    pairs = {"oicd": (0, 1), "ear": (2, 3), "forehead": (4, 5), "mid": (6, 7), "cheek": (8, 9)}
    idx = ratio_pair_vertices(pairs)
    std, tmean = np.array([1.0, 2, 0.5, 1]), np.array([0.1, 0, -0.2, 0.3])
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    loss = ShapeLoss(
        None,
        t(std),
        t(rng.normal(size=(5, 4))),
        ratio_mean=t(mean[idx]),
        ratio_basis=t(basis[:, idx]),
        ratio_weight=1.0,
        target_mean=t(tmean),
    )
    z = rng.normal(size=(3, 4))
    coef = z * std + tmean
    mesh = mean + np.einsum("bk,kvc->bvc", coef, basis)
    np.testing.assert_allclose(loss.ratios(t(z)).numpy(), face_ratios(mesh, pairs), rtol=1e-10)
    out = loss(t(z), t(z[::-1].copy()))
    assert out["loss_ratio"] > 0 and torch.isclose(
        out["loss"], out["loss_param"] + out["loss_ratio"]
    )


def test_cosine_schedule_ends_at_the_floor_and_is_a_function_of_the_step():
    cfg = TrainConfig(steps=101, lr=1e-3, lr_schedule="cosine", lr_min_ratio=0.05)
    rates = [cfg.lr_at(s) for s in range(101)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(5e-5)
    assert rates[50] == pytest.approx(0.5 * (1e-3 + 5e-5))
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))
    assert TrainConfig(steps=101, lr=1e-3, lr_schedule="constant").lr_at(100) == 1e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step").validate()


def test_best_selection_keeps_the_weights_of_the_lowest_selection_loss(tmp_path):
    """model.pt holds the weights of the evaluation step with the lowest loss on the
    selection identities, and the log row of that step has that loss; the selection
    identities' targets are pure noise here, so the run overfits them: with this seed the
    best step is the first evaluation (20), not the last."""
    feats, ids, coef, basis = toy_data(n_ids=12)
    sel = [i for i in range(12) if i >= 9]
    fit_feats = [f for f, i in zip(feats, ids, strict=True) if i not in sel]
    fit_ids = [i for i in ids if i not in sel]
    val_feats = [f for f, i in zip(feats, ids, strict=True) if i in sel]
    val_ids = [sel.index(i) for i in ids if i in sel]
    rng = np.random.default_rng(1)
    val_coef = rng.normal(size=(len(sel), coef.shape[1])).astype(np.float32)
    cfg = TrainConfig(
        steps=120, batch_size=8, lr=3e-3, crop_min=40, crop_max=80, checkpoint_every=20,
        eval_every=20, log_every=10, model=SMALL_MODEL, select="best", lr_schedule="cosine",
        param_weight=1.0, vertex_weight=1.0, ratio_weight=0.0,  # the ShapeLoss below
    )  # fmt: skip
    final = train(
        cfg, UtteranceBank(fit_feats, fit_ids), Targets(coef[:9], basis), tmp_path,
        val_bank=UtteranceBank(val_feats, val_ids), val_coef=val_coef, device="cpu",
        progress=False, threads=1,
    )  # fmt: skip
    evals = [r for r in final["history"] if r.get("val_loss") is not None]
    assert [r["step"] for r in evals] == [20, 40, 60, 80, 100, 120]
    best = min(evals, key=lambda r: r["val_loss"])
    assert final["selected_step"] == best["step"] != 120 and final["step"] == 120
    # the model file's weights are those of the best step: its checkpoint file still
    # exists only if it is one of the last two, so compare through the selection loss
    from vox3d.voice.train_loss import ShapeLoss, evaluate_loss
    from vox3d.voice.voice_model import load_model

    model, _ = load_model(tmp_path / "model.pt")
    loss_fn = ShapeLoss(
        torch.from_numpy(basis), model.target_std, torch.from_numpy(coef[:9]), 1.0, 1.0
    )
    vz = model.standardise(torch.from_numpy(val_coef)).detach()
    got = evaluate_loss(model, loss_fn, UtteranceBank(val_feats, val_ids), vz, torch.device("cpu"))
    assert got["loss"] == pytest.approx(best["val_loss"], rel=1e-5)
    last = load_torch(sorted((tmp_path / "checkpoints").glob("step-*.pt"))[-1])
    differs = any(not torch.equal(last["model"][k], final["model"][k]) for k in last["model"])
    assert differs == (best["step"] != 120)
    rates = [r["lr"] for r in final["history"]]
    assert rates[0] > rates[-1] == pytest.approx(cfg.lr_at(119))


def test_selection_identities_come_from_the_training_side_only():
    from vox3d.voice.train_data import selection_identities

    train_ids = [f"id{k:05d}" for k in range(200)]
    fit, sel = selection_identities(train_ids, 0.15)
    assert sorted(fit + sel) == train_ids and not set(fit) & set(sel)
    assert 15 <= len(sel) <= 45  # 30 expected
    assert selection_identities(train_ids, 0.15) == (fit, sel)  # deterministic
    assert selection_identities(train_ids, 0.0) == (train_ids, [])
    assert selection_identities(["a", "b"], 0.01)[1] and selection_identities(["a", "b"], 0.99)[0]
