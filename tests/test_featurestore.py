"""FeatureStore: CMP's crops, identity sampling, determinism across DataLoader workers,
eval mode, cache and file reads agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vox3d.audio import fbank, features
from vox3d.audio.batch_loader import BatchLoader
from vox3d.audio.featurestore import CMPCollate, FeatureStore, collate


def _shard(path, spec, start_uid=0, float16=False):
    """spec: [(identity, length), ...]; frame t of utterance u is [u, t, 0, ...] (D=4)."""
    kept = []
    for j, (ident, length) in enumerate(spec):
        uid = start_uid + j
        x = np.zeros((length, 4), np.float32)
        x[:, 0] = uid
        x[:, 1] = np.arange(length)
        f = fbank.UtteranceFeatures(x, np.zeros(4, np.float32), np.ones(4, np.float32), length)
        kept.append(features.Utterance(f"{ident}/yt/{uid:05d}.mp4", ident, f))
    cfg = fbank.FeatureConfig(kind="mfcc", n_mfcc=4, float16=float16)
    features.write(path, kept, [], cfg, chunk_frames=64)
    return path


@pytest.fixture
def shards(tmp_path):
    a = _shard(tmp_path / "a.h5", [("idA", 1200), ("idA", 400), ("idB", 90), ("idC", 2500)])
    b = _shard(tmp_path / "b.h5", [("idB", 700)] + [("idD", 300 + 10 * k) for k in range(9)], 4)
    return [str(a), str(b)]


def _check_window(store, x, label):
    """Rows come from one utterance of the labelled identity, consecutive modulo its length."""
    x = x.numpy()
    u = int(x[0, 0])
    assert np.all(x[:, 0] == u)
    ui = [int(s.split("/")[-1]) for s in store.utterances].index(u)
    assert store.labels[ui] == label
    t = int(store._length[ui])
    assert np.all(np.diff(x[:, 1]) % t == 1 % t)


def test_train_items_are_cmp_crops(shards):
    store = FeatureStore(shards, mode="train", seed=1, items_per_epoch=256, batch_size=16)
    assert store.identities == ["idA", "idB", "idC", "idD"]
    assert store.identity_to_index["idC"] == 2 and len(store) == 256
    lengths = set()
    for b in range(4):
        items = [store[i] for i in range(16 * b, 16 * b + 16)]
        n = {int(x.shape[0]) for x, _ in items}
        assert len(n) == 1  # one length per batch
        lengths |= n
        for x, y in items:
            assert 300 <= x.shape[0] <= 800 and x.dtype == torch.float32
            _check_window(store, x, y)
        feats, labels = collate(items)
        assert feats.shape == (16, n.pop(), 4) and labels.dtype == torch.int64
        fast = collate(store.__getitems__(list(range(16 * b, 16 * b + 16))))
        assert torch.equal(fast[0], feats) and torch.equal(fast[1], labels)
    assert len(lengths) > 1
    # the short utterance (90 frames) is tiled like CMP's stored arrays
    free = FeatureStore(shards, mode="train", seed=2, items_per_epoch=400)
    seen_short = 0
    for i in range(400):
        x, y = free[i]
        assert x.shape[0] == 800
        _check_window(free, x, y)
        seen_short += int(x[0, 0]) == 2
    assert seen_short > 0


def test_identity_vs_utterance_sampling(shards):
    ids = FeatureStore(shards, seed=0, items_per_epoch=4000, sampling="identity")
    utt = FeatureStore(shards, seed=0, items_per_epoch=4000, sampling="utterance")
    for store, expect in ((ids, np.full(4, 0.25)), (utt, np.array([2, 2, 1, 9]) / 14)):
        u = store.plan(0)[0]
        freq = np.bincount(store.labels[u], minlength=4) / len(u)
        assert np.abs(freq - expect).max() < 0.03, freq


def test_deterministic_and_worker_independent(shards):
    def batches(workers, seed=5, epoch=0):
        store = FeatureStore(shards, seed=seed, items_per_epoch=64, batch_size=8)
        store.set_epoch(epoch)
        dl = DataLoader(
            store,
            batch_size=8,
            num_workers=workers,
            collate_fn=collate,
            worker_init_fn=FeatureStore.worker_init_fn,
        )
        return [(x.clone(), y.clone()) for x, y in dl]

    a, b, c = batches(0), batches(2), batches(0, seed=6)
    assert len(a) == len(b) == 8
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert any(
        xa.shape != xc.shape or not torch.equal(xa, xc)
        for (xa, _), (xc, _) in zip(a, c, strict=True)
    )
    d = batches(0, epoch=1)
    assert any(
        xa.shape != xd.shape or not torch.equal(xa, xd)
        for (xa, _), (xd, _) in zip(a, d, strict=True)
    )


def test_eval_mode_whole_utterances(shards):
    store = FeatureStore(shards, mode="eval")
    assert len(store) == 14
    for i in range(len(store)):
        x, y = store[i]
        t = int(store._length[i])
        assert x.shape[0] == max(t, 1000)
        assert np.array_equal(x[:, 1].numpy(), np.arange(x.shape[0]) % t)
        assert store.identities[y] == store.identity_of(i)
    raw = FeatureStore(shards, mode="eval", repeat_to=0)
    assert raw[2][0].shape[0] == 90
    sub = FeatureStore(shards, mode="eval", identities=["idD", "idB"])
    assert sub.identities == ["idD", "idB"] and len(sub) == 11
    assert {sub.identities[sub[i][1]] for i in range(len(sub))} == {"idD", "idB"}
    with pytest.raises(ValueError, match="no utterances"):
        FeatureStore(shards, identities=["nobody"])


def test_cache_and_file_reads_agree(shards, tmp_path):
    a = FeatureStore(shards, seed=9, items_per_epoch=50, cache=True)
    b = FeatureStore(shards, seed=9, items_per_epoch=50, cache=False)
    for i in range(50):
        xa, ya = a[i]
        xb, yb = b[i]
        assert ya == yb and torch.equal(xa, xb)
    h = _shard(tmp_path / "h.h5", [("idA", 1200), ("idB", 90)], float16=True)
    x, _ = FeatureStore([str(h)], mode="eval")[0]
    assert (
        x.dtype == torch.float32 and x[:, 1].max() == 1199
    )  # integers < 2048 are exact in float16


def test_cmp_collate_one_random_length(shards):
    store = FeatureStore(shards, seed=0, items_per_epoch=32)
    col = CMPCollate((300, 800), seed=0)
    shapes = set()
    for b in range(4):
        feats, labels = col([store[i] for i in range(8 * b, 8 * b + 8)])
        assert 300 <= feats.shape[1] <= 800 and labels.shape == (8,)
        shapes.add(feats.shape[1])
    assert len(shapes) > 1


def _map_style(store):
    """The map-style path's batches (per-item plan, the reference for BatchLoader)."""
    dl = DataLoader(store, batch_size=store.batch_size, collate_fn=collate)
    return [(x.clone(), y.clone()) for x, y in dl]


@pytest.mark.parametrize("cache", [True, False])
def test_batch_loader_same_batches_for_0_and_2_workers(shards, cache):
    """BatchLoader: one (B, L, D) tensor per batch; with a seed the batches are identical for
    0 and 2 workers and equal to the map-style path; every crop is 300-800 frames of one
    utterance of its labelled identity; batches may be kept (no clone) without being
    overwritten; another seed or epoch gives other batches."""
    n = 8 * 9 + 3  # a short last batch; 10 batches over 2 workers

    def run(workers, seed=11, epoch=0, slots=None):
        store = FeatureStore(shards, seed=seed, items_per_epoch=n, batch_size=8, cache=cache)
        loader = BatchLoader(store, num_workers=workers, slots=slots)
        loader.set_epoch(epoch)
        return list(loader), store  # kept without copying

    a, store = run(0)
    b, _ = run(2)
    c, _ = run(2, slots=1)  # buffers exhausted: fresh tensors, same numbers
    assert len(a) == len(b) == len(c) == 10
    ref_store = FeatureStore(shards, seed=11, items_per_epoch=n, batch_size=8, cache=cache)
    ref = _map_style(ref_store)
    lengths = set()
    for (xa, ya), (xb, yb), (xc, yc), (xr, yr) in zip(a, b, c, ref, strict=True):
        assert xa.dtype == torch.float32 and ya.dtype == torch.int64
        assert torch.equal(xa, xr) and torch.equal(ya, yr)
        assert torch.equal(xb, xr) and torch.equal(yb, yr)
        assert torch.equal(xc, xr) and torch.equal(yc, yr)
        assert 300 <= xa.shape[1] <= 800
        lengths.add(xa.shape[1])
        for x, y in zip(xa, ya, strict=True):
            _check_window(store, x, int(y))
    assert [x.shape[0] for x, _ in a] == [8] * 9 + [3]
    assert len(lengths) > 1
    for other in (run(0, seed=12)[0], run(2, epoch=1)[0]):
        assert any(
            xa.shape != xo.shape or not torch.equal(xa, xo)
            for (xa, _), (xo, _) in zip(a, other, strict=True)
        )


def test_batch_loader_reuses_buffers_only_when_released(shards):
    """Dropped batches' buffers are reused (no fresh memory); a kept batch, or a view of it,
    keeps its buffer from being written."""
    store = FeatureStore(shards, seed=3, items_per_epoch=8 * 12, batch_size=8)
    ref = _map_style(FeatureStore(shards, seed=3, items_per_epoch=8 * 12, batch_size=8))
    loader = BatchLoader(store, num_workers=0, slots=2)
    ptrs = set()
    kept = []
    for k, (x, y) in enumerate(loader):
        ptrs.add(x.data_ptr())
        assert torch.equal(x, ref[k][0]) and torch.equal(y, ref[k][1])
        if k in (2, 5):
            kept.append((k, x[1:, 10:]))  # a view keeps the whole buffer in use
    assert len(ptrs) > 2  # buffers in use were not reused: fresh tensors took over
    for k, v in kept:
        assert torch.equal(v, ref[k][0][1:, 10:])
    loader2 = BatchLoader(FeatureStore(shards, seed=3, items_per_epoch=8 * 12, batch_size=8))
    ptrs2 = {x.data_ptr() for x, _ in loader2}
    assert len(ptrs2) <= 3  # every batch dropped in time: only the 3 buffers are used
    assert loader.fresh_batches > 0 and loader2.fresh_batches == 0
    store3 = FeatureStore(shards, seed=3, items_per_epoch=8 * 12, batch_size=8)
    loader3 = BatchLoader(store3, num_workers=2)
    for k, (x, y) in enumerate(loader3):  # workers write into released shared buffers
        assert torch.equal(x, ref[k][0]) and torch.equal(y, ref[k][1])
    assert loader3.fresh_batches == 0
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(FeatureStore(shards, seed=3))
