"""Voice encoder layer facts and the real CMP features through the encoder."""

from __future__ import annotations

import numpy as np
import torch

from vox3d.paths import CMP_DIR
from vox3d.voice.voice_model import ModelConfig, VoiceEncoder, VoiceToShape, load_model


def test_encoder_layers_match_cmp():
    enc = VoiceEncoder()
    convs = [m for m in enc.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (64, 256),
        (256, 384),
        (384, 576),
        (576, 864),
        (864, 64),
    ]
    assert all(c.kernel_size == (3,) and c.stride == (2,) and c.padding == (1,) for c in convs)
    assert [c.bias is not None for c in convs] == [False] * 4 + [True]
    bns = [m for m in enc.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert [b.num_features for b in bns] == [256, 384, 576, 864]
    # time axis halves five times, then is averaged: any length works
    for t in (17, 300, 801):
        assert enc(torch.randn(2, 64, t)).shape == (2, 64)


def test_real_cmp_features_through_encoder():
    files = sorted((CMP_DIR / "preprocessed_MFCC").rglob("*.npy"))
    assert len(files) == 15
    model = VoiceToShape(ModelConfig(n_out=40)).eval()
    with torch.no_grad():
        for f in files:
            x = np.load(f)
            assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 64
            assert x.shape[0] >= 1000
            e = model.embed(torch.from_numpy(x)[None])
            assert e.shape == (1, 64)
            assert torch.isfinite(e).all()
            assert abs(float(e.norm()) - 1.0) < 1e-5
            assert model(torch.from_numpy(x)[None]).shape == (1, 40)


def test_destandardise_roundtrip_and_load(tmp_path):
    from vox3d.voice.train_checkpoints import save_checkpoint

    m = VoiceToShape(ModelConfig(n_out=5, hidden=[16]))
    m.target_mean.copy_(torch.arange(5.0))
    m.target_std.copy_(torch.full((5,), 2.0))
    c = torch.randn(3, 5)
    torch.testing.assert_close(m.destandardise(m.standardise(c)), c)
    save_checkpoint(
        tmp_path / "m.pt",
        {"model": m.state_dict(), "model_config": m.cfg.to_dict(), "identities": ["a", "b"]},
    )
    m2, meta = load_model(tmp_path / "m.pt")
    assert meta["identities"] == ["a", "b"]
    x = torch.randn(2, 120, 64)
    m.eval()
    torch.testing.assert_close(m2.coefficients(x), m.coefficients(x))


def test_real_cmp_features_through_reader_and_encoder(tmp_path):
    """preprocessed_MFCC -> feature shard -> FeatureStore (eval and train) -> encoder."""
    from vox3d.audio.features import features_from_cmp_npy
    from vox3d.audio.featurestore import FeatureStore, load_utterances

    root = CMP_DIR / "preprocessed_MFCC"
    shard = tmp_path / "cmp.h5"
    assert features_from_cmp_npy(root, shard) == 15
    utts = load_utterances([shard])
    assert sorted(utts) == sorted(p.name for p in root.iterdir())
    # the reader gives back CMP's stored arrays exactly
    first = sorted((root / sorted(utts)[0]).rglob("*.npy"))[0]
    assert any(np.array_equal(u, np.load(first)) for u in utts[sorted(utts)[0]])
    model = VoiceToShape(ModelConfig(n_out=40)).eval()
    store = FeatureStore([shard], crop=(300, 800), mode="train", seed=0)
    x, label = store[0]
    assert 300 <= x.shape[0] <= 800 and x.shape[1] == 64
    with torch.no_grad():
        z = model(torch.as_tensor(x)[None])
    assert z.shape == (1, 40) and torch.isfinite(z).all()
    assert 0 <= int(label) < len(store.identities)
