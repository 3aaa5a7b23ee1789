"""The data order of a run: which frames each step reads, as a function of the step.

Each epoch's order is a permutation seeded by (seed, epoch, rollbacks), so a resumed run reads what the
uninterrupted one read, and a rolled-back run reads a new order (not the batches that collapsed it). Each
process takes its contiguous share of the global batch; the next step's frames are read ahead on a thread.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

_MASK = (1 << 63) - 1


def seed_hash(*parts: int) -> int:
    """A 63-bit seed from integers (FNV-1a over them): each random stream's seed is one of its coordinates."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & _MASK)) * 1099511628211) & _MASK
    return h


class DataOrder:
    def __init__(self, dataset, batch: int, seed: int, rank: int, world: int, total: int) -> None:
        self.ds = dataset
        self.batch = batch  # global: all processes together
        self.seed = seed
        self.rank, self.world = rank, world
        self.total = total
        self.steps_per_epoch = len(dataset) // batch
        self._perm_cache: tuple[tuple[int, int], np.ndarray] | None = None
        self._pool = ThreadPoolExecutor(1)
        self._prefetch: dict[tuple[int, int], Future] = {}

    def _perm(self, epoch: int, rollbacks: int) -> np.ndarray:
        key = (epoch, rollbacks)
        if self._perm_cache is None or self._perm_cache[0] != key:
            g = torch.Generator().manual_seed(seed_hash(self.seed, epoch, rollbacks, 1))
            self._perm_cache = (key, torch.randperm(len(self.ds), generator=g).numpy())
        return self._perm_cache[1]

    def batch_indices(self, step: int, rollbacks: int) -> np.ndarray:
        """The global batch of `step` (all processes), then each process takes its contiguous share."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        return self._perm(epoch, rollbacks)[pos * self.batch:(pos + 1) * self.batch]

    def _read(self, step: int, rollbacks: int) -> np.ndarray:
        idx = self.batch_indices(step, rollbacks)
        share = len(idx) // self.world
        return self.ds.batch(idx[self.rank * share:(self.rank + 1) * share])

    def frames(self, step: int, rollbacks: int) -> np.ndarray:
        """This process's frames of `step`, and the next step's read ahead."""
        fut = self._prefetch.pop((step, rollbacks), None)
        frames = fut.result() if fut is not None else self._read(step, rollbacks)
        self._prefetch.clear()
        if step + 1 < self.total:
            self._prefetch[(step + 1, rollbacks)] = self._pool.submit(self._read, step + 1, rollbacks)
        return frames

    def forget_read_ahead(self) -> None:
        """After a rollback: the step read ahead is not the one that comes next."""
        self._prefetch.clear()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
