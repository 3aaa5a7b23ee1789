"""The one small interface every inference backend implements (tensorrt, onnxruntime, torch).

Frames in and out are uint8 N x H x W x 3 RGB at the model's size; latents are float32 N x z_dim
numpy arrays, so the live latent effects work the same whatever the backend. Pre- and
post-processing go through autoencoded.live.engines.frames.to_model_input / from_model_output (or their torch twins in
autoencoded.training.model), never through private copies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from autoencoded.posterior import LatentPlan


class EngineFault(RuntimeError):
    """The model produced something unusable (NaN/Inf, wrong shape). The live loop bypasses that frame."""


def finite_images(images):
    """The model's raw float output (numpy array or torch tensor), checked before it becomes uint8.

    Post-processing maps NaN to mid-grey, so this is the last place where a NaN image can be told apart
    from a grey one. Raises EngineFault.
    """
    if not bool(images.isfinite().all() if hasattr(images, "isfinite") else np.isfinite(images).all()):
        raise EngineFault("model output contains NaN/Inf")
    return images


class Engine(ABC):
    #: e.g. "onnxruntime (CPUExecutionProvider, 2 threads)", "tensorrt fp16", "torch cpu"
    name: str = "engine"
    #: what was opened, for messages: "demo" or the pack or checkpoint path as given (set by hot swaps)
    label: str = ""
    width: int
    height: int
    z_dim: int
    #: which latent entries are learned and at what scale live noise plays them (autoencoded.posterior);
    #: None: every entry at scale 1, as packs before the record
    plan: LatentPlan | None = None
    #: the pack's memory bank (autoencoded.live.engines.memory_bank.MemoryBank), set by open_engine(memory=True)
    memory = None

    @abstractmethod
    def encode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N,H,W,3) RGB at the model size -> (mu, log_sigma), float32 (N, z_dim) each."""

    @abstractmethod
    def decode(self, z: np.ndarray) -> np.ndarray:
        """float32 (N, z_dim) -> uint8 (N,H,W,3) RGB."""

    def latent_plan(self) -> LatentPlan:
        return self.plan if self.plan is not None else LatentPlan(self.z_dim)

    def check_frames(self, frames: np.ndarray) -> np.ndarray:
        """Validate a frame or batch at the model size -> C-contiguous uint8 (N,H,W,3); ValueError otherwise."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"expected uint8 frames N x {self.height} x {self.width} x 3, "
                             f"got {frames.dtype} {frames.shape}")
        return np.ascontiguousarray(frames)

    def check_latents(self, z: np.ndarray) -> np.ndarray:
        """Validate one latent or a batch -> C-contiguous float32 (N, z_dim); ValueError otherwise."""
        z = np.ascontiguousarray(z, dtype=np.float32)
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"expected latents N x {self.z_dim}, got {z.shape}")
        return z

    def reconstruct(self, frames: np.ndarray) -> np.ndarray:
        """Fused encode -> decode of the mean (noise 0). Backends may override with one graph call."""
        mu, _ = self.encode(frames)
        return self.decode(mu)

    def checked_reconstruct(self, frames: np.ndarray) -> np.ndarray:
        """reconstruct(), its output held to the shape the model declares: a pack can declare N x 3 x H x W
        and compute another picture, which onnxruntime returns with a warning. EngineFault then (as for
        NaN), for the commands that score or time the output (eval, bench)."""
        out = self.reconstruct(frames)
        want = (len(frames), self.height, self.width, 3)
        if tuple(getattr(out, "shape", ())) != want:
            got = "x".join(map(str, getattr(out, "shape", ()))) or type(out).__name__
            raise EngineFault(f"model output is {got} (N x H x W x 3), not the {self.width}x{self.height} "
                              "it declares")
        return out

    def interrupt(self) -> bool:
        """Make an inference running on another thread give up (it then raises). True where the backend
        can do that (onnxruntime); False where it cannot, and the call then runs on to its end."""
        return False

    def close(self) -> None:  # noqa: B027
        """Release device memory, sessions and threads. Safe to call twice."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
