"""The k nearest latents of a memory bank to one query latent, in squared Euclidean distance.

Two ways, one interface (`NearestIndex.search`):
- exact: one matrix-vector product over the whole bank (numpy, float32) and a partial sort. Used for banks
  up to EXACT_MAX rows, where it stays well under a millisecond a query, and wherever faiss is missing.
- faiss (the `memory` extra, faiss-cpu): an inverted-file index (IVF-Flat: k-means cells, the query's
  NPROBE nearest cells scanned exactly) for larger banks. Its recall against exact search is measured by
  benchmarks/bench_memory.py. The index is built when the model opens (on the loader's thread for a model
  swapped in live), never from a file: nothing in a pack is deserialised by faiss.

Searches run on the engine thread with faiss held to one thread: a single query gains nothing from more,
and the model's own threads need the cores.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from autoencoded.extras import pip_install

EXACT_MAX = 32768  # 32k x 128 float32 is 16 MiB scanned a query: about half a millisecond on one core
NPROBE = 32  # IVF cells scanned a query (benchmarks/bench_memory.py: recall and time per setting)
TRAIN_PER_CELL = 40  # k-means training points per cell (faiss asks for at least 39)
FAISS_HINT = pip_install("memory")


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


class NearestIndex:
    """Nearest-neighbour search over `latents` (float32 N x z). `kind` says which search in words."""

    def __init__(self, latents: np.ndarray, exact_max: int = EXACT_MAX, seed: int = 0) -> None:
        self.latents = np.ascontiguousarray(latents, dtype=np.float32)
        n, dim = self.latents.shape
        self._faiss = None
        if n > exact_max and faiss_available():
            self._faiss = _ivf(self.latents, seed)
            self.kind = f"faiss IVF-Flat, {self._faiss.nlist} cells, {self._faiss.nprobe} probed"
        else:
            self._norms = np.einsum("ij,ij->i", self.latents, self.latents)
            self.kind = "exact" if n <= exact_max else f"exact (faiss not installed: {FAISS_HINT})"

    def __len__(self) -> int:
        return len(self.latents)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (squared distances ascending, row indices), min(k, N) of each, for one query latent (z,)."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        k = min(int(k), len(self.latents))
        if self._faiss is not None:
            d2, idx = self._faiss.search(q, k)
            keep = idx[0] >= 0  # fewer than k in the probed cells: only the real hits
            return d2[0][keep].astype(np.float64), idx[0][keep].astype(np.int64)
        return exact_search(self.latents, self._norms, q[0], k)


def exact_search(latents: np.ndarray, norms: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of `latents` (with their squared norms) to q: |b|^2 - 2 b.q + |q|^2."""
    d2 = norms - 2.0 * (latents @ q) + float(q @ q)
    part = np.argpartition(d2, k - 1)[:k] if k < len(d2) else np.arange(len(d2))
    order = part[np.argsort(d2[part], kind="stable")]
    return np.maximum(d2[order], 0.0).astype(np.float64), order.astype(np.int64)


def _ivf(latents: np.ndarray, seed: int):
    import faiss

    n, dim = latents.shape
    nlist = int(min(4096, max(64, round(2 * np.sqrt(n)))))
    rng = np.random.default_rng(seed)
    train = latents[np.sort(rng.choice(n, size=min(n, nlist * TRAIN_PER_CELL), replace=False))]
    quantizer = faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_L2)
    index.cp.seed = seed
    index.cp.niter = 10
    index.train(train)
    index.add(latents)
    index.nprobe = min(NPROBE, nlist)
    faiss.omp_set_num_threads(1)
    return index
