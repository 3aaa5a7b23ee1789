"""Parity between two runs of the same model on the same real frames: max abs error, PSNR, NaN.

Frames come from a video file or a prepared dataset (--frames), else from synthetic structured frames
(moving gradients, edges and flat patches: the kind of content that exposes conv and FP16 errors, unlike
noise). Images compared are model outputs in [-1, 1], so PSNR uses a peak-to-peak range of 2.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from autoencoded.errors import UserError
from autoencoded.live.engines.frames import fit

#: torch vs onnxruntime, both FP32: differences are reordering noise, far below one grey level
FP32_MAX_ABS = 2e-3
FP32_MIN_PSNR = 60.0
#: TensorRT FP16 vs FP32 on real frames
FP16_MIN_PSNR = 40.0
#: PSNR reported for identical outputs (finite, so reports stay strict JSON)
PSNR_IDENTICAL = 200.0


def synthetic_frames(n: int, width: int, height: int) -> np.ndarray:
    """n uint8 RGB frames with structure: gradients, a moving bright square, stripes and a dark disc."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        r = (xx / max(width - 1, 1) * 255 + i * 11) % 256
        g = (yy / max(height - 1, 1) * 255 + i * 5) % 256
        b = 128 + 100 * np.sin((xx + 2 * yy) / 6.0 + i)
        img = np.stack([r, g, b], -1)
        s = max(2, min(width, height) // 5)
        x0, y0 = (i * 7) % max(1, width - s), (i * 3) % max(1, height - s)
        img[y0:y0 + s, x0:x0 + s] = 250
        cx, cy = width * (0.3 + 0.4 * ((i % 5) / 5)), height / 2
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < (min(width, height) / 6) ** 2] = 15
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def load_frames(spec: str | Path | None, width: int, height: int, n: int = 16) -> tuple[np.ndarray, str]:
    """-> (uint8 N x H x W x 3 RGB frames at the model size, a description of where they came from)."""
    if spec is None:
        return synthetic_frames(n, width, height), f"{n} synthetic structured frames"
    p = Path(spec)
    if p.is_dir():
        npy = p / "frames.npy"
        if not npy.is_file():
            raise UserError(f"{p}: not a prepared dataset (no frames.npy) and not a video file")
        try:
            arr = np.load(npy, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UserError(f"{npy}: unreadable frames ({exc})") from None
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or len(arr) == 0:
            raise UserError(f"{npy}: expected uint8 N x H x W x 3 frames, got {arr.dtype} {arr.shape}")
        idx = np.linspace(0, len(arr) - 1, min(n, len(arr))).round().astype(int)
        frames = [fit(np.asarray(arr[i]), width, height) for i in idx]
        return np.stack(frames), f"{len(frames)} frames of dataset {p}"
    if not p.is_file():
        raise UserError(f"{p}: no such video file or dataset folder")
    import cv2
    cap = cv2.VideoCapture(str(p))
    frames = []
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        step = max(1, total // n) if total > 0 else 1
        i = 0
        while len(frames) < n:
            ok, bgr = cap.read()
            if not ok:
                break
            if i % step == 0:
                frames.append(fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), width, height))
            i += 1
    finally:
        cap.release()
    if not frames:
        raise UserError(f"{p}: no frames could be read (not a video file, or damaged)")
    return np.stack(frames), f"{len(frames)} frames of {p.name}"


def compare(reference: np.ndarray, other: np.ndarray, peak_to_peak: float = 2.0) -> dict:
    """max abs error, PSNR (dB) of `other` against `reference`, and whether `other` has NaN/Inf."""
    a = np.asarray(reference, np.float64)
    b = np.asarray(other, np.float64)
    finite = bool(np.isfinite(b).all())
    if not finite:
        return {"max_abs": math.inf, "psnr_db": 0.0, "finite": False}
    diff = a - b
    mse = float(np.mean(diff * diff))
    psnr = PSNR_IDENTICAL if mse == 0 else min(PSNR_IDENTICAL, 10 * math.log10(peak_to_peak ** 2 / mse))
    return {"max_abs": float(np.max(np.abs(diff))), "psnr_db": psnr, "finite": True}


def verify_pack(model, pack_dir: Path, frames: np.ndarray) -> dict:
    """torch (the checkpoint) vs onnxruntime (the pack) on the same frames, FP32 on the CPU.

    Compares the latent mean, the decoded image of that mean, and the fused reconstruct() graph.
    -> {"mu": {...}, "image": {...}, "fused": {...}, "ok": bool, "reason": str | None, "tolerance": {...}}
    """
    import torch

    from autoencoded.live.engines.frames import to_model_input
    from autoencoded.live.engines.ort_backend import OnnxRuntimeEngine
    from autoencoded.live.engines.pack import FUSED_IN, FUSED_OUT, read_pack

    x = to_model_input(frames)
    with torch.no_grad():
        model = model.eval().cpu()
        mu_t, _ = model.encoder(torch.from_numpy(x))
        img_t = model.decoder(mu_t).numpy()
        mu_t = mu_t.numpy()
    engine = OnnxRuntimeEngine(read_pack(pack_dir), device="cpu")
    try:
        mu_o, _ = engine.enc.run(["mu", "log_sigma"], {"image": x})
        img_o = engine.dec.run(["image"], {"z": mu_o})[0]
        fused_o = engine.fused.run([FUSED_OUT], {FUSED_IN: x})[0]
    finally:
        engine.close()
    report = {"mu": compare(mu_t, mu_o), "image": compare(img_t, img_o), "fused": compare(img_t, fused_o),
              "tolerance": {"max_abs": FP32_MAX_ABS, "min_psnr_db": FP32_MIN_PSNR}, "n_frames": len(frames)}
    reason = None
    for part in ("mu", "image", "fused"):
        r = report[part]
        if not r["finite"]:
            reason = f"onnxruntime {part} has NaN/Inf"
        elif r["max_abs"] > FP32_MAX_ABS:
            reason = f"{part} max abs error {r['max_abs']:.2e} > {FP32_MAX_ABS:.0e}"
        elif part != "mu" and r["psnr_db"] < FP32_MIN_PSNR:
            reason = f"{part} PSNR {r['psnr_db']:.1f} dB < {FP32_MIN_PSNR:.0f} dB"
        if reason:
            break
    report["ok"] = reason is None
    report["reason"] = reason
    return report
