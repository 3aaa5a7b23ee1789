"""Speed measurement of an Engine: batch-1 latency (p50, p99, fps) and throughput at the best batch.

Used by `autoencoded bench`. Frames are structured synthetic frames at the model size; the timed call
is reconstruct() (the live path: preprocess, fused encode->decode, postprocess), its output checked
(`Engine.checked_reconstruct`: EngineFault for NaN or a picture other than the declared one), so a model
that computes something unusable is never timed as if it worked.
"""

from __future__ import annotations

import time

import numpy as np

from autoencoded.live.engines.base import Engine


def _frames(n: int, width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)),
                     ((xx + yy) * 3) % 256], -1).astype(np.uint8)
    return np.stack([np.roll(base, 7 * i, axis=1) for i in range(n)])


def latency(engine: Engine, seconds: float, warmup: int = 5) -> dict:
    """Batch-1 reconstruct() calls for `seconds`: p50/p99 in ms and fps (1 / mean latency)."""
    frames = _frames(8, engine.width, engine.height)
    for i in range(warmup):
        engine.checked_reconstruct(frames[i % 8: i % 8 + 1])
    times = []
    end = time.perf_counter() + seconds
    i = 0
    while True:
        t0 = time.perf_counter()
        engine.checked_reconstruct(frames[i % 8: i % 8 + 1])
        t1 = time.perf_counter()
        times.append(t1 - t0)
        i += 1
        if t1 >= end and len(times) >= 10:
            break
    ms = np.array(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "fps": float(1000 / ms.mean()), "calls": len(times)}


def throughput(engine: Engine, seconds: float, batches: tuple[int, ...] = (1, 4, 8, 16, 32, 64)) -> dict:
    """Frames per second of reconstruct() at each batch size until it stops improving."""
    per_batch: dict[int, float] = {}
    budget = seconds / max(1, min(len(batches), 4))
    worse = 0
    for b in batches:
        frames = _frames(b, engine.width, engine.height)
        engine.checked_reconstruct(frames)  # warm-up (allocations, TensorRT shape switch)
        n, t0 = 0, time.perf_counter()
        while True:
            engine.checked_reconstruct(frames)
            n += b
            elapsed = time.perf_counter() - t0
            if elapsed >= budget and n >= 3 * b:
                break
        per_batch[b] = n / elapsed
        best = max(per_batch.values())
        worse = worse + 1 if per_batch[b] < best * 1.02 else 0
        if worse >= 2:
            break
    best_batch = max(per_batch, key=per_batch.get)
    return {"best_batch": best_batch, "fps": per_batch[best_batch],
            "per_batch": {str(k): v for k, v in per_batch.items()}}
