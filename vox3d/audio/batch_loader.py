"""Training batches of a :class:`vox3d.audio.featurestore.FeatureStore`: :class:`BatchLoader`.

``for feats, labels in BatchLoader(store, num_workers)`` yields one ``(B, L, D)`` tensor per
batch, each crop copied once straight into a reused buffer: in the main process (0 workers)
or, with workers, in buffers of shared memory created once per loader, so a batch crosses
between processes as three integers instead of a fresh 9 MB shared-memory segment (the cost
that dominated: bench/features.py).  A buffer is reused only after the batch tensor handed
out (and every view of it) has been dropped, checked with the storage's reference count;
when no buffer is free a fresh tensor is used, so holding batches is always safe.  Batches
are the same for any number of workers (every draw comes from the store's epoch plan).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset

from vox3d.audio.featurestore import FeatureStore, _new_tensor


def _use_count(t: torch.Tensor) -> int:
    """Strong references to the storage of ``t`` (tensors and views sharing it)."""
    return int(torch._C._storage_Use_Count(t.untyped_storage()._cdata))


class _BatchStream(IterableDataset):
    """The batches of one epoch, read inside DataLoader workers (see :class:`BatchLoader`).

    Worker w of W reads batches w, w + W, w + 2W, ... of ``store``'s current epoch (the
    DataLoader hands workers' results out round-robin, so they arrive in order 0, 1, 2,
    ...).  Each batch is written into a free buffer of ``ring[w]`` (shared memory) and
    announced as ``(b, w, slot, None)``; with no free buffer it goes into a fresh tensor,
    ``(b, w, -1, tensor)``.  ``free[w, slot]`` (shared int32) is 1 when the main process
    has released the buffer; only workers set it to 0 (claim), only the main process to 1.
    """

    def __init__(self, store: FeatureStore, ring: list[list[torch.Tensor]], free: torch.Tensor):
        self.store = store
        self.ring = ring
        self.free = free

    def __iter__(self) -> Iterator[tuple[int, int, int, torch.Tensor | None]]:
        info = torch.utils.data.get_worker_info()
        w, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        store = self.store
        flags = self.free[w].numpy() if w < self.free.shape[0] else np.zeros(0, np.int32)
        nslots = flags.size
        for j, b in enumerate(range(w, store.n_batches(), nw)):
            shape = store.batch_shape(b)
            slot = -1
            for q in range(nslots):
                cand = (j + q) % nslots
                if flags[cand] == 1:
                    flags[cand] = 0
                    slot = cand
                    break
            if slot < 0:
                out = _new_tensor(shape)
                store.fill_batch(b, out.numpy())
                yield b, w, -1, out
                continue
            numel = shape[0] * shape[1] * shape[2]
            buf = self.ring[w][slot].numpy()[:numel].reshape(shape)
            store.fill_batch(b, buf)
            yield b, w, slot, None


def _passthrough(x):
    """collate_fn of the batch stream: items are already whole batches."""
    return x


class BatchLoader:
    """Training batches of a :class:`FeatureStore` (train mode, ``batch_size`` set).

    ``for feats, labels in BatchLoader(store, num_workers=2):`` gives per batch ``feats``
    (B, L, D) float32 and ``labels`` (B,) int64, in batch order, identical for any
    ``num_workers`` (every draw comes from the store's epoch plan).  Call
    :meth:`set_epoch` per epoch.

    num_workers: 0 reads in this process; > 0 starts that many DataLoader worker processes
        per epoch (each opens the files and loads the frames itself when the store has no
        cache loaded in this process yet; ``fork`` shares a loaded cache copy-on-write).
    prefetch_factor: batches in flight per worker.
    slots: reused buffers per worker (default ``prefetch_factor + 2``) or in this process
        (default 3); each holds ``batch_size x crop_max x D`` float32 (13 MB for CMP's 64 x
        800 x 64), in shared memory when ``num_workers > 0``.
    multiprocessing_context: passed to the DataLoader (default: the platform's).

    A batch tensor is a view of a buffer; the buffer is written again only after that
    tensor and every view of it are gone (their storage reference count, checked before each
    batch), so batches may be kept; if all buffers are still in use a fresh tensor is used.
    """

    def __init__(
        self,
        store: FeatureStore,
        num_workers: int = 0,
        prefetch_factor: int = 2,
        slots: int | None = None,
        multiprocessing_context: object = None,
    ) -> None:
        store.n_batches()  # validates train mode + batch_size
        self.store = store
        self.num_workers = int(num_workers)
        self.prefetch_factor = int(prefetch_factor)
        if self.num_workers < 0 or self.prefetch_factor < 1:
            raise ValueError("num_workers must be >= 0 and prefetch_factor >= 1")
        nslot = int(slots) if slots else (self.prefetch_factor + 2 if self.num_workers else 3)
        if nslot < 1:
            raise ValueError("slots must be >= 1")
        numel = store.batch_size * store.crop[1] * int(store.n_features or 0)
        shared = self.num_workers > 0
        self._ring = [
            [_slot_tensor(numel, shared) for _ in range(nslot)]
            for _ in range(max(self.num_workers, 1))
        ]
        self._free = torch.ones((max(self.num_workers, 1), nslot), dtype=torch.int32)
        if shared:
            self._free.share_memory_()
        self._base = [[_use_count(t) for t in row] for row in self._ring]
        self._held: set[tuple[int, int]] = set()
        self.multiprocessing_context = multiprocessing_context
        self._dl_iter = None
        #: batches handed out in a fresh tensor because no buffer was free (diagnostics)
        self.fresh_batches = 0

    def __len__(self) -> int:
        return self.store.n_batches()

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose plan the next iteration reads (:meth:`FeatureStore.set_epoch`)."""
        self.store.set_epoch(epoch)

    def _sweep(self) -> None:
        """Release buffers whose batch tensors have all been dropped."""
        flags = self._free.numpy()
        for w, s in list(self._held):
            if _use_count(self._ring[w][s]) <= self._base[w][s]:
                flags[w, s] = 1
                self._held.discard((w, s))

    def _view(self, b: int, w: int, s: int) -> torch.Tensor:
        shape = self.store.batch_shape(b)
        self._held.add((w, s))
        return self._ring[w][s][: shape[0] * shape[1] * shape[2]].view(shape)

    def _stop_workers(self) -> None:
        it, self._dl_iter = self._dl_iter, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()  # a previous epoch left unfinished: its workers stop now
        # buffers claimed by workers that are gone and never handed out become free
        flags = self._free.numpy()
        for w in range(flags.shape[0]):
            for s in range(flags.shape[1]):
                if (w, s) not in self._held:
                    flags[w, s] = 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._stop_workers()
        store = self.store
        if store.cache or self.num_workers == 0:
            store._open()  # forked workers share this cache copy-on-write
        if self.num_workers == 0:
            flags = self._free.numpy()[0]
            for b in range(store.n_batches()):
                self._sweep()
                free = np.flatnonzero(flags == 1)
                if free.size:
                    flags[free[0]] = 0
                    x = self._view(b, 0, int(free[0]))
                else:
                    x = torch.empty(store.batch_shape(b), dtype=torch.float32)
                    self.fresh_batches += 1
                store.fill_batch(b, x.numpy())
                yield x, store.batch_labels(b)
                del x  # this frame must not keep the batch alive (reuse check)
            return
        from torch.utils.data import DataLoader

        dl = DataLoader(
            _BatchStream(store, self._ring, self._free),
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=_passthrough,
            prefetch_factor=self.prefetch_factor,
            multiprocessing_context=self.multiprocessing_context,
        )
        it = iter(dl)
        self._dl_iter = it
        expect = 0
        while True:
            self._sweep()
            try:
                b, w, s, x = next(it)
            except StopIteration:
                break
            if b != expect:  # pragma: no cover - DataLoader order is round-robin
                raise RuntimeError(f"batch {b} arrived, expected {expect}")
            expect += 1
            if s >= 0:
                yield self._view(b, w, s), store.batch_labels(b)
            else:
                self.fresh_batches += 1
                yield x, store.batch_labels(b)
            x = None  # this frame must not keep the batch alive (reuse check)
        self._dl_iter = None


def _slot_tensor(numel: int, shared: bool) -> torch.Tensor:
    """A reusable (numel,) float32 batch buffer, in shared memory when ``shared``."""
    t = torch.empty(numel, dtype=torch.float32)
    if shared:
        t.share_memory_()
    return t
