"""Training and evaluation reader of feature shards (:mod:`vox3d.audio.features`).

CMP's training scheme (facts of CMP's ``dataset.py``/``utils.py``, shared with
reconstructing-faces-from-voices; ``nframe_range = [300, 800]``):

- every stored utterance is at least 1000 frames (shorter ones tiled, see
  :func:`vox3d.audio.fbank.repeat_frames`); our shards store the unrepeated frames and this
  reader tiles them on the fly, so reads give exactly CMP's arrays;
- an item is a window of ``crop_max`` = 800 frames at a uniform random offset;
- the collate function draws ONE length ``L ~ U{300..800}`` and ONE shift
  ``pt ~ U{0..800-L}`` per batch and cuts every item to ``[pt, pt + L)``;
- CMP's loader shuffles utterances uniformly (``sampling="utterance"``); the default here
  is ``sampling="identity"`` (an identity uniformly, then one of its utterances), which
  balances identities with different numbers of utterances.

Determinism: all randomness comes from plans drawn for a whole epoch at once,
``numpy.random.default_rng((seed, epoch))`` for the items and (with ``batch_size``)
``default_rng((seed, epoch, 1))`` for the per-batch length and shift; nothing depends on the worker that reads an item,
so any number of DataLoader workers gives the same batches.  Use the DataLoader's default
sequential sampler (the plan is already random) with the same ``batch_size``.

Speed: each process (main or DataLoader worker) opens the HDF5 files lazily on its first
read and, with ``cache=True`` (default), loads the ``frames`` of every shard into memory
once (shards are small: tens of MB; the whole default corpus a few hundred MB, held once
per process, shared copy-on-write with forked workers when the main process loaded it
first); a crop is then one numpy slice.  ``cache=False`` reads every crop from the file
(chunked): for corpora larger than memory.

Training batches: :class:`vox3d.audio.batch_loader.BatchLoader` yields one ``(B, L, D)`` tensor
per batch through reused buffers (shared memory with workers).  The map-style
``DataLoader(store, batch_size=B, collate_fn=collate)`` path gives the same batches and
stays supported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from vox3d.audio.fbank import CMP_INPUT_NORM, MIN_STORED_FRAMES, model_input
from vox3d.audio.features import read_index
from vox3d.config import default


class FeatureStore(Dataset):
    """Voice features of one or more feature shards as a torch Dataset.

    paths: feature shard files (``OUT/features/<shard>.h5``).
    identities: the identity list that defines label indices (e.g. the training split);
        utterances of other identities are left out.  None: every identity in the files,
        sorted.
    crop: (min, max) frames of a training crop (config ``train.crop_min/crop_max``).
    mode: ``train`` (random crops; ``len`` = ``items_per_epoch``) or ``eval`` (whole
        utterances in file order, tiled to ``repeat_to`` frames like CMP's stored arrays).
    seed: seed of every random choice.
    items_per_epoch: items per epoch in train mode (default: number of utterances).
    batch_size: when given (train mode), items of the same batch (``i // batch_size``)
        share one random length and shift (CMP's collate); else every item is ``crop[1]``
        frames and :func:`collate` / :class:`CMPCollate` cut the batch.
    sampling: ``identity`` (identity, then utterance) or ``utterance`` (CMP's uniform).
    repeat_to: tile utterances shorter than this (CMP: 1000); 0 disables in eval mode.
    cache: hold the frames in memory per process (fast) or read crops from the files.

    Items: ``(feats, identity_index)``, feats a float32 tensor (T, D).  With ``cache`` a
    feats tensor may share memory with the cache: copy it before modifying it in place
    (``collate`` copies).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        identities: Sequence[str] | None = None,
        crop: tuple[int, int] = (300, 800),
        mode: str = "train",
        seed: int = default("train.seed"),
        items_per_epoch: int | None = None,
        batch_size: int | None = None,
        sampling: str = "identity",
        repeat_to: int = MIN_STORED_FRAMES,
        cache: bool = True,
    ) -> None:
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', not {mode!r}")
        if sampling not in ("identity", "utterance"):
            raise ValueError(f"sampling must be 'identity' or 'utterance', not {sampling!r}")
        lo, hi = int(crop[0]), int(crop[1])
        if not 1 <= lo <= hi:
            raise ValueError(f"crop must satisfy 1 <= min <= max, got {crop}")
        self.paths = [str(p) for p in paths]
        self.crop = (lo, hi)
        self.mode = mode
        self.seed = int(seed)
        self.batch_size = int(batch_size) if batch_size else None
        self.sampling = sampling
        self.repeat_to = int(repeat_to)
        self.cache = bool(cache)
        self.epoch = 0

        file_idx, offsets, lengths, utt_ids, utt_idents = [], [], [], [], []
        means, stds = [], []
        self.n_features: int | None = None
        for fi, p in enumerate(self.paths):
            ix = read_index(p)
            d = int(ix["attrs"]["n_features"])
            if self.n_features is None:
                self.n_features = d
            elif d != self.n_features:
                raise ValueError(f"{p}: {d} features per frame, other files {self.n_features}")
            n = len(ix["utterance"])
            file_idx += [fi] * n
            offsets.append(ix["offset"])
            lengths.append(ix["length"])
            utt_ids += ix["utterance"]
            utt_idents += ix["identity"]
            means.append(ix.get("mean", np.full((n, d), np.nan, np.float32)))
            stds.append(ix.get("std", np.full((n, d), np.nan, np.float32)))
        if identities is None:
            self.identities = sorted(set(utt_idents))
        else:
            self.identities = list(identities)
            if len(set(self.identities)) != len(self.identities):
                raise ValueError("identities contains duplicates")
        self.identity_to_index = {name: i for i, name in enumerate(self.identities)}
        keep = np.array([x in self.identity_to_index for x in utt_idents], bool)
        sel = np.nonzero(keep)[0]
        self._file = np.asarray(file_idx, np.int64)[sel]
        self._offset = (np.concatenate(offsets) if offsets else np.zeros(0, np.int64))[sel]
        self._length = (np.concatenate(lengths) if lengths else np.zeros(0, np.int64))[sel]
        self.utterances = [utt_ids[i] for i in sel]
        d = self.n_features or 0
        #: (U, D) each utterance's per-band mean and std before normalisation (the index's)
        self.norm_mean = (np.concatenate(means) if means else np.zeros((0, d), np.float32))[sel]
        self.norm_std = (np.concatenate(stds) if stds else np.zeros((0, d), np.float32))[sel]
        self.labels = np.array(
            [self.identity_to_index[utt_idents[i]] for i in sel], np.int64
        ).reshape(-1)
        if len(self.utterances) == 0:
            raise ValueError(f"no utterances of the requested identities in {len(paths)} file(s)")
        # utterances per identity (for identity-first sampling)
        order = np.argsort(self.labels, kind="stable")
        self._by_id_order = order
        counts = np.bincount(self.labels, minlength=len(self.identities))
        self._id_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._id_count = counts.astype(np.int64)
        self._ids_present = np.nonzero(counts)[0]
        self.items_per_epoch = int(items_per_epoch or len(self.utterances))
        self._plan_epoch: int | None = None
        self._plan: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._pid: int | None = None
        self._h5: list | None = None
        self._frames: list[np.ndarray] | None = None

    # ---------------------------------------------------------------- bookkeeping
    def __len__(self) -> int:
        return self.items_per_epoch if self.mode == "train" else len(self.utterances)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose random plan train mode reads (call before iterating)."""
        self.epoch = int(epoch)

    def __getstate__(self) -> dict:
        st = self.__dict__.copy()
        st["_h5"] = None
        st["_frames"] = None
        st["_pid"] = None
        return st

    def _open(self) -> None:
        """Open files / load caches in this process (lazily, once per process).  A cache
        inherited through fork is plain memory and is reused; HDF5 handles are not."""
        if self._frames is not None:
            return
        if self._h5 is not None and self._pid == os.getpid():
            return
        import h5py

        self._pid = os.getpid()
        self._h5 = [h5py.File(p, "r", rdcc_nbytes=16 << 20) for p in self.paths]
        if self.cache:
            self._frames = [np.asarray(h["frames"][()], np.float32) for h in self._h5]
            for h in self._h5:
                h.close()
            self._h5 = None

    def close(self) -> None:
        """Close files and drop caches of this process."""
        for h in self._h5 or []:
            h.close()
        self._h5 = None
        self._frames = None
        self._pid = None

    def identity_of(self, i: int) -> str:
        """Identity name of utterance i (eval order)."""
        return self.identities[int(self.labels[i])]

    # ---------------------------------------------------------------- plans
    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The random choices of an epoch, drawn at once (vectorised).

        Returns (utterance index, window start) per item, (N,) int64 each, and the
        per-batch (length, shift), (ceil(N / batch_size),) int64 each (empty without
        ``batch_size``).  Draws: ``default_rng((seed, epoch))`` for the items,
        ``default_rng((seed, epoch, 1))`` for the batches.
        """
        if self._plan_epoch == epoch and self._plan is not None:
            return self._plan
        rng = np.random.default_rng((self.seed, epoch))
        n = self.items_per_epoch
        if self.sampling == "identity":
            ids = self._ids_present[rng.integers(0, self._ids_present.size, n)]
            within = (rng.random(n) * self._id_count[ids]).astype(np.int64)
            within = np.minimum(within, self._id_count[ids] - 1)
            utt = self._by_id_order[self._id_start[ids] + within]
        else:
            utt = rng.integers(0, len(self.utterances), n)
        virt = self._virtual_length(self._length[utt])
        start = (rng.random(n) * (virt - self.crop[1] + 1)).astype(np.int64)
        lengths = shifts = np.zeros(0, np.int64)
        if self.batch_size:
            lo, hi = self.crop
            nb = -(-n // self.batch_size)
            brng = np.random.default_rng((self.seed, epoch, 1))
            lengths = brng.integers(lo, hi + 1, nb).astype(np.int64)
            shifts = (brng.random(nb) * (hi - lengths + 1)).astype(np.int64)
        self._plan_epoch = epoch
        self._plan = (utt.astype(np.int64), start, lengths, shifts)
        return self._plan

    def _virtual_length(self, length: np.ndarray) -> np.ndarray:
        """Length of the tiled utterance CMP crops from: max(T, repeat_to, crop_max)."""
        return np.maximum(np.maximum(length, self.repeat_to), self.crop[1])

    # ---------------------------------------------------------------- reading
    def read(self, u: int, start: int, n: int) -> np.ndarray:
        """Rows [start, start + n) of utterance u tiled end to end, (n, D) float32."""
        self._open()
        f = int(self._file[u])
        off = int(self._offset[u])
        t = int(self._length[u])
        if self._frames is not None:
            src = self._frames[f]
            if start + n <= t:
                return src[off + start : off + start + n]
            idx = off + (np.arange(start, start + n) % t)
            return src[idx]
        ds = self._h5[f]["frames"]
        if start + n <= t:
            return ds[off + start : off + start + n].astype(np.float32)
        whole = ds[off : off + t].astype(np.float32)
        return whole[np.arange(start, start + n) % t]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = int(i)
        if self.mode == "eval":
            t = int(self._length[i])
            n = max(t, self.repeat_to) if self.repeat_to else t
            return torch.from_numpy(self.read(i, 0, n)), int(self.labels[i])
        if not 0 <= i < self.items_per_epoch:
            raise IndexError(i)
        utt, start, lengths, shifts = self.plan(self.epoch)
        u, s = int(utt[i]), int(start[i])
        if self.batch_size:
            b = i // self.batch_size
            x = self.read(u, s + int(shifts[b]), int(lengths[b]))
        else:
            x = self.read(u, s, self.crop[1])
        return torch.from_numpy(x), int(self.labels[u])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        """Batched fetch (used by DataLoader): with ``batch_size`` and indices of one batch,
        every crop is copied straight into one (B, L, D) tensor (shared memory inside a
        worker); :func:`collate` then returns it without another copy."""
        idx = np.asarray(indices, np.int64)
        if self.mode != "train" or not self.batch_size or idx.size == 0:
            return [self[int(i)] for i in idx]
        b = idx // self.batch_size
        if b.min() != b.max() or idx.min() < 0 or idx.max() >= self.items_per_epoch:
            return [self[int(i)] for i in idx]
        utt, start, lengths, shifts = self.plan(self.epoch)
        length, shift = int(lengths[b[0]]), int(shifts[b[0]])
        u = utt[idx]
        s = start[idx] + shift
        out = _new_tensor((idx.size, length, int(self.n_features or 0)))
        dst = out.numpy()
        for k in range(idx.size):
            dst[k] = self.read(int(u[k]), int(s[k]), length)
        labels = torch.from_numpy(self.labels[u].copy())
        batch = _Batch((out[k], int(labels[k])) for k in range(idx.size))
        batch.feats, batch.labels = out, labels
        return batch

    # ---------------------------------------------------------------- whole batches
    def n_batches(self) -> int:
        """Batches per epoch in train mode with ``batch_size``: ceil(items / batch_size)."""
        if self.mode != "train" or not self.batch_size:
            raise ValueError("whole batches need mode='train' and batch_size")
        return -(-self.items_per_epoch // self.batch_size)

    def batch_shape(self, b: int) -> tuple[int, int, int]:
        """(items, length L, D) of batch b of the current epoch (the last may be short)."""
        n = self.n_batches()
        if not 0 <= b < n:
            raise IndexError(b)
        lengths = self.plan(self.epoch)[2]
        items = min(self.batch_size, self.items_per_epoch - b * self.batch_size)
        return items, int(lengths[b]), int(self.n_features or 0)

    def batch_labels(self, b: int) -> torch.Tensor:
        """(items,) int64 identity indices of batch b of the current epoch."""
        items = self.batch_shape(b)[0]
        utt = self.plan(self.epoch)[0]
        i0 = b * self.batch_size
        return torch.from_numpy(self.labels[utt[i0 : i0 + items]])

    def fill_batch(self, b: int, out: np.ndarray) -> None:
        """Write the crops of batch b of the current epoch into ``out``.

        out: (items, L, D) float32 array (:meth:`batch_shape`), e.g. a view of a reused
        buffer.  Crop k is rows ``[start_k + pt, start_k + pt + L)`` of its utterance tiled
        end to end (the same numbers as ``store[b * batch_size + k]``); each crop is one
        slice copy from the in-memory frames (a gather only where it wraps around a
        short utterance).
        """
        items, length, d = self.batch_shape(b)
        if out.shape != (items, length, d):
            raise ValueError(f"out has shape {out.shape}, batch {b} is {(items, length, d)}")
        utt, start, _, shifts = self.plan(self.epoch)
        i0 = b * self.batch_size
        us = utt[i0 : i0 + items].tolist()
        ss = (start[i0 : i0 + items] + shifts[b]).tolist()
        self._open()
        if self._frames is None:
            for k in range(items):
                out[k] = self.read(us[k], ss[k], length)
            return
        files, offs, lens = self._file, self._offset, self._length
        frames = self._frames
        for k in range(items):
            u, s0 = us[k], ss[k]
            t, off = int(lens[u]), int(offs[u])
            src = frames[int(files[u])]
            if s0 + length <= t:
                out[k] = src[off + s0 : off + s0 + length]
            else:
                np.take(src, off + (np.arange(s0, s0 + length) % t), axis=0, out=out[k])

    @classmethod
    def worker_init_fn(cls, worker_id: int) -> None:
        """DataLoader ``worker_init_fn``: seeds numpy/random from torch's per-worker seed
        (the store itself needs none: its draws do not depend on the worker)."""
        import random

        s = torch.initial_seed() % (2**32)
        np.random.seed(s)
        random.seed(s)


def load_utterances(
    feature_paths: Sequence[str | os.PathLike],
    identities: Sequence[str] | None = None,
    norm: str = CMP_INPUT_NORM,
) -> dict[str, list[np.ndarray]]:
    """Whole utterances ``{identity: [(T, bands) float32, ...]}`` from feature shards, read
    through :class:`FeatureStore` (eval mode), in store order, as the voice model reads them
    (:func:`vox3d.audio.fbank.model_input`): ``norm`` ``utterance`` (CMP's normalised frames,
    as stored) or ``none`` (before normalisation, from each utterance's index statistics)."""
    paths = sorted(str(p) for p in feature_paths)
    store = FeatureStore(paths, identities=list(identities) if identities else None, mode="eval")
    names = list(store.identities)
    out: dict[str, list[np.ndarray]] = {}
    for i in range(len(store)):
        item = store[i]
        feats, ident = item[0], item[1]
        name = names[int(ident)] if not isinstance(ident, str) else ident
        f = np.asarray(feats, np.float32)
        if norm != CMP_INPUT_NORM:
            if not np.isfinite(store.norm_mean[i]).all():
                raise ValueError(
                    f"{store.paths[store._file[i]]}: utterance {store.utterances[i]} has no "
                    f"normalisation statistics in its index (needed for input_norm {norm!r})"
                )
            f = model_input(f, store.norm_mean[i], store.norm_std[i], norm)
        out.setdefault(name, []).append(f)
    return out


class _Batch(list):
    """Items of one batch that already live in one (B, L, D) tensor (``feats``)."""

    feats: torch.Tensor
    labels: torch.Tensor


def _new_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An empty float32 tensor; in shared memory inside a DataLoader worker."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=torch.float32)
    numel = int(np.prod(shape))
    storage = torch.UntypedStorage._new_shared(numel * 4)
    return torch.empty(0, dtype=torch.float32).new(storage).view(-1)[:numel].view(shape)


def collate(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack items into ``(B, L, D) float32, (B,) int64``, cutting every item to the
    shortest length in the batch (its first L frames): deterministic; with ``batch_size`` on
    the store all items already share CMP's random length."""
    if isinstance(batch, _Batch):
        return batch.feats, batch.labels
    length = min(int(x.shape[0]) for x, _ in batch)
    return _stack([x[:length] for x, _ in batch]), _labels(batch)


def _labels(batch: Sequence[tuple[torch.Tensor, int]]) -> torch.Tensor:
    return torch.as_tensor([int(y) for _, y in batch], dtype=torch.int64)


def _stack(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """torch.stack; inside a DataLoader worker straight into shared memory (as PyTorch's
    default_collate does), so the batch crosses to the main process without another copy."""
    out = None
    if torch.utils.data.get_worker_info() is not None:
        x0 = xs[0]
        numel = len(xs) * x0.numel()
        storage = x0.untyped_storage()._new_shared(numel * x0.element_size())
        out = x0.new(storage).view(-1)[:numel].view(len(xs), *x0.shape)
    return torch.stack(list(xs), out=out)


class CMPCollate:
    """CMP's collate: one random length L ~ U{min..max} and shift pt ~ U{0..max-L} per batch,
    every item cut to ``[pt, pt + L)``.  Items must be ``crop[1]`` frames (a store without
    ``batch_size``).  Its generator is seeded with ``seed`` and the DataLoader worker id, so
    batches depend on the number of workers; prefer ``FeatureStore(batch_size=...)``."""

    def __init__(
        self, crop: tuple[int, int] = (300, 800), seed: int = default("train.seed")
    ) -> None:
        self.crop = (int(crop[0]), int(crop[1]))
        self.seed = int(seed)
        self._rng: np.random.Generator | None = None
        self._worker: int | None = None

    def __call__(
        self, batch: Sequence[tuple[torch.Tensor, int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else -1
        if self._rng is None or self._worker != wid:
            self._rng = np.random.default_rng((self.seed, wid + 1))
            self._worker = wid
        lo, hi = self.crop
        length = int(self._rng.integers(lo, hi + 1))
        shift = int(self._rng.integers(0, hi - length + 1))
        return _stack([x[shift : shift + length] for x, _ in batch]), _labels(batch)
