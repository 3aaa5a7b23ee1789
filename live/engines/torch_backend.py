"""The torch backend: runs a training checkpoint directly (no export needed), on CUDA when present.

Weights load from safetensors only (autoencoded.training.weights), never from pickles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from autoencoded.live.engines.base import Engine, finite_images
from autoencoded.training.model import autoencoder_from_state, frames_to_input, output_to_frames
from autoencoded.training.weights import load_weights, resolve_checkpoint


class TorchEngine(Engine):
    """Encoder + decoder of a checkpoint in eval mode; uint8 frames in and out, float32 latents."""

    def __init__(self, checkpoint: str | Path, which: str = "best", device: str | None = None) -> None:
        path = resolve_checkpoint(checkpoint, which=which)
        cfg, state, meta = load_weights(path)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = autoencoder_from_state(cfg, state).to(self.device)
        self.checkpoint = path
        self.config = cfg
        self.metadata = meta
        self.width, self.height, self.z_dim = cfg.width, cfg.height, cfg.latent_dim
        self.plan = cfg.plan
        threads = torch.get_num_threads() if self.device.type == "cpu" else 0
        self.name = f"torch {self.device.type}" + (f" ({threads} threads)" if threads else "")

    def _frames(self, frames: np.ndarray) -> torch.Tensor:
        return frames_to_input(torch.from_numpy(self.check_frames(frames)).to(self.device))

    @torch.inference_mode()
    def encode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu, log_sigma = self.model.encoder(self._frames(frames))
        return (mu.float().cpu().numpy(), log_sigma.float().cpu().numpy())

    @torch.inference_mode()
    def decode(self, z: np.ndarray) -> np.ndarray:
        out = self.model.decoder(torch.from_numpy(self.check_latents(z)).to(self.device))
        return output_to_frames(finite_images(out)).cpu().numpy()

    @torch.inference_mode()
    def reconstruct(self, frames: np.ndarray) -> np.ndarray:
        return output_to_frames(finite_images(self.model(self._frames(frames)))).cpu().numpy()

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
