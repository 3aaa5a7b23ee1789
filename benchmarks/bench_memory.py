"""The memory control's lookup on a film-sized bank: time a frame, and the recall of the approximate index.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_memory.py [--rows 170000] [--dim 128] [--queries 200]

A synthetic bank shaped like a film's latents: shots of 1-10 s at 24 fps, each a slow drift from a random
start, squashed by tanh like the lite encoder's means (a 2-hour feature is about 170k frames). Two kinds of
query: "film" (a frame of the bank, moved a little: the film itself, or footage like it) and "foreign" (a
weaker latent, nearer the film's centre, with its own direction: footage the model never saw, as measured on
the demo model). For the exact search (numpy) and the faiss index the bank uses past EXACT_MAX rows:
- build: CPU seconds to index the bank (when a model opens);
- search: CPU ms a lookup, p50 and p99, on one thread;
- a frame: CPU ms of the memory effect on a frame that must look again (search, weights, the blend), p50/p99.
Times are this thread's CPU time (OMP_NUM_THREADS=1 keeps numpy's BLAS on it; the index searches on one
thread), so the figures hold on a busy machine, where wall time would measure the other processes.
- recall@5: the share of the exact 5 nearest the index finds, and the nearest distance it finds over the exact
  nearest (1.000: as near as exact search).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoencoded.live.control.memory import K, Recall  # noqa: E402
from autoencoded.live.engines import memory_index  # noqa: E402
from autoencoded.live.engines.memory_bank import MemoryBank  # noqa: E402


def film_latents(rows: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((rows, dim), np.float32)
    i = 0
    while i < rows:
        length = int(rng.integers(24, 240))
        x, v = rng.standard_normal(dim) * 1.2, rng.standard_normal(dim) * 0.02
        for _ in range(min(length, rows - i)):
            x = x + v + rng.standard_normal(dim) * 0.01
            out[i] = np.tanh(x)
            i += 1
    return out


def bank_of(latents: np.ndarray, exact_max: int) -> tuple[MemoryBank, float]:
    """A bank as a pack's loads (its index built here), and the seconds that took."""
    t0 = time.thread_time()
    bank = MemoryBank(latents=latents, frames=np.arange(len(latents)), step=0.05, info={}, exact_max=exact_max)
    return bank, time.thread_time() - t0


def ms(samples: list[float]) -> str:
    return f"{np.percentile(samples, 50) * 1e3:.3f} / {np.percentile(samples, 99) * 1e3:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=170_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    latents = film_latents(args.rows, args.dim, rng)
    centre = latents.mean(axis=0)
    picks = latents[rng.integers(0, args.rows, args.queries)]
    queries = {
        "film": picks + rng.standard_normal(picks.shape).astype(np.float32) * 0.02,
        "foreign": centre + 0.75 * (np.tanh(rng.standard_normal(picks.shape) * 1.2).astype(np.float32) - centre),
    }
    banks = {"exact (numpy)": bank_of(latents, exact_max=args.rows + 1)}
    if memory_index.faiss_available():
        banks["faiss"] = bank_of(latents, exact_max=memory_index.EXACT_MAX)
    else:
        print(f"faiss is not installed ({memory_index.FAISS_HINT}): exact search only")
    exact_bank = banks["exact (numpy)"][0]
    print(f"bank: {args.rows} x {args.dim} latents, {args.queries} queries of each kind\n")
    print("| search | build CPU s | query kind | search CPU ms p50 / p99 | a frame CPU ms p50 / p99 | recall@5 | nearest found / exact |")
    print("|---|---|---|---|---|---|---|")
    for name, (bank, build_s) in banks.items():
        for kind, qs in queries.items():
            search_t, frame_t, found, ratio = [], [], [], []
            recall = Recall(bank)
            recall.radius = -1.0  # every frame looks again: the worst case
            for q in qs:
                t0 = time.thread_time()
                d2, idx = bank.search(q, K + 1)
                search_t.append(time.thread_time() - t0)
                t0 = time.thread_time()
                remembered = recall(q)
                _ = 0.5 * q + 0.5 * remembered
                frame_t.append(time.thread_time() - t0)
                e2, eidx = exact_bank.search(q, 5)
                a2, aidx = bank.search(q, 5)
                found.append(len(set(aidx.tolist()) & set(eidx.tolist())) / 5)
                ratio.append(np.sqrt(a2[0] / max(e2[0], 1e-12)))
            print(f"| {name}{' (' + bank.index.kind + ')' if name == 'faiss' else ''} | {build_s:.2f} | {kind} | "
                  f"{ms(search_t)} | {ms(frame_t)} | {np.mean(found):.3f} | {np.mean(ratio):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
