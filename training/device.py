"""Where training runs and in which precision: an NVIDIA GPU, then Apple's GPU (MPS), then the CPU.

bf16 autocast needs tensor cores that compute in bf16 (compute capability 8.0, Ampere, and newer).
Older GPUs (a T4 is 7.5, a V100 7.0) would emulate it slowly or refuse, so they train in FP32 and the
trainer says so in one line.
"""

from __future__ import annotations

import torch

from autoencoded.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "mps")
BF16_MIN_CAPABILITY = (8, 0)


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(name: str) -> torch.device:
    """--device NAME -> a torch device; "auto" takes CUDA, then MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    if name not in DEVICES:
        raise UserError(f"--device {name!r}: choose {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device available (use --device cpu or auto)")
    if name == "mps" and not mps_available():
        raise UserError("--device mps: Apple's Metal backend is not available here (use --device cpu or auto)")
    return torch.device(name)


def autocast_dtype(device_type: str, amp: bool, capability: tuple[int, int] | None = None,
                   gpu_name: str = "this GPU") -> tuple[torch.dtype | None, str | None]:
    """-> (dtype to autocast to, or None for FP32; a one-line note when bf16 was wanted but not used).

    Only CUDA autocasts (MPS and the CPU train in FP32). `capability` is the GPU's compute capability.
    """
    if device_type != "cuda" or not amp:
        return None, None
    if capability is not None and tuple(capability) < BF16_MIN_CAPABILITY:
        major, minor = capability
        need = ".".join(map(str, BF16_MIN_CAPABILITY))
        return None, (f"bf16 autocast needs compute capability {need} or newer; {gpu_name} is "
                      f"{major}.{minor}: training in FP32")
    return torch.bfloat16, None
