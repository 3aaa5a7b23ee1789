"""A run's own evaluation of its networks, at every checkpoint and sample grid: BatchNorm recalibrated over
the film, decode-the-mean reconstructions, prior samples, and the figures metrics.jsonl and the checkpoint
sidecars record. The sample grids it draws are written here too.

Beside training/evaluation.py, not in it: that module scores an exported engine on footage against
baselines (`autoencoded eval`); this one runs the training networks themselves (the averaged weights when
--ema is on) on the run's own dataset, in the trainer's device and precision.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autoencoded import metrics
from autoencoded.posterior import Posterior
from autoencoded.training.batchnorm import bn_momentum
from autoencoded.training.ema import WeightAverage
from autoencoded.training.foreign import foreign_frames
from autoencoded.training.model import ModelConfig, encode, output_to_frames
from autoencoded.training.order import seed_hash
from autoencoded.training.samples import grid, write_png

EVAL_FRAMES = 64
CALIBRATION_FRAMES = 1024  # frames that re-estimate BatchNorm statistics at each evaluation
# structure_foreign and colourfulness_foreign: of the shipped foreign frames (training/foreign.py), so a run
# shows whether footage it never saw keeps its composition while the film's PSNR climbs
# dream_change_foreign: the mean |difference| (0..255) that live noise amount 1 makes to those frames, and
# dream_sharpness_foreign their sharpness at amount 1 over the film's (above 1: static, not a picture)
EVAL_KEYS = ("recon_mse", "diversity", "psnr", "ssim", "psnr_minus_thumb", "structure_foreign",
             "colourfulness_foreign", "dream_change_foreign", "dream_sharpness_foreign")
CODER = ("encoder", "decoder")


class RunEvaluation:
    """The evaluation of one run's networks. `to_input` places uint8 frames on the device as the networks
    take them, `autocast` is the precision they run in, `batch` the micro-batch BatchNorm is recalibrated
    in (the trainer's, so the statistics are of batches of the training size)."""

    def __init__(self, model: nn.Module, model_cfg: ModelConfig, ds, ema: WeightAverage | None, seed: int,
                 sample_count: int, batch: int, to_input, autocast, device: torch.device) -> None:
        self.model, self.model_cfg, self.ds, self.ema = model, model_cfg, ds, ema
        self.nets = {k: getattr(model, k) for k in CODER}
        self.batch, self.to_input, self.autocast = batch, to_input, autocast
        n = len(ds)
        k = min(sample_count, n)
        self.fixed_idx = np.linspace(0, n - 1, k).round().astype(np.int64)
        # the frames scored at every evaluation (PSNR/SSIM against the 16x9 thumbnail): spread over the film
        self.eval_idx = np.unique(np.linspace(0, n - 1, min(n, EVAL_FRAMES)).round().astype(np.int64))
        g = torch.Generator().manual_seed(seed_hash(seed, 7777))
        # fixed weights that mix the evaluation frames' latents into prior samples (see evaluate)
        self.fixed_mix = torch.randn(k, len(self.eval_idx), generator=g).to(device)
        self.dream_eps = torch.randn(64, model_cfg.latent_dim, generator=g).to(device)
        self.film_sharpness = metrics.sharpness(ds.batch(self.eval_idx))

    @torch.no_grad()
    def recalibrate_bn(self, frames: int = CALIBRATION_FRAMES) -> None:
        """Re-estimate the encoder's and decoder's BatchNorm running statistics on decode-the-mean passes
        (what export and live run: z = mu, no noise) as a plain average over up to `frames` frames spread
        over the whole film, in batches of the training batch's size, each batch itself spread over the film.

        Training normalises with batch statistics of noisy latents, so an exponential average of those
        does not describe noise-free decoding. Running statistics never enter the training losses, so this
        changes nothing in the optimisation (resume stays exact). How many frames are enough:
        docs/models.md, "Figures behind the code's choices"."""
        n = len(self.ds)
        b = min(max(self.batch, 2), n)
        batches = max(1, min(n, frames) // b)
        picks = np.linspace(0, n - 1, batches * b).round().astype(int)
        with bn_momentum(list(self.nets.values()), None) as layers:  # None: a cumulative average
            for m in layers:
                m.reset_running_stats()
            for i in range(batches):
                x = self.to_input(self.ds.batch(picks[i::batches]))  # sorted, as picks is
                with self.autocast():
                    mu, _ = self.nets["encoder"](x)
                    self.nets["decoder"](mu)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Decode-the-mean reconstructions (eval mode, the averaged weights when --ema is on) of the fixed
        batch, prior samples, and PSNR/SSIM on the evaluation frames beside the 16x9 thumbnail."""
        swap = self.ema.swapped_in(self.nets) if self.ema is not None else contextlib.nullcontext()
        with swap:
            self.recalibrate_bn()
            self.model.eval()
            try:
                frames = self.ds.batch(self.fixed_idx)
                x = self.to_input(frames)
                xr = self._decode(self._encode(x).mode())
                scored = self.ds.batch(self.eval_idx)
                mus = [self._encode(self.to_input(scored[i:i + 32])).mode() for i in range(0, len(scored), 32)]
                recon = np.concatenate([output_to_frames(self._decode(mu).cpu()).numpy() for mu in mus])
                foreign = foreign_frames(self.model_cfg.width, self.model_cfg.height)
                post = self._encode(self.to_input(foreign))
                foreign_out = output_to_frames(self._decode(post.mode()).cpu()).numpy()
                # the dream: the same frames at live noise amount 1, one fixed pattern from run to run
                dreamt = output_to_frames(self._decode(post.sample(self.dream_eps[:len(foreign)])).cpu()).numpy()
                xp = self._decode(self._prior(torch.cat(mus)))
                averaged = WeightAverage.tensors(self.nets) if self.ema is not None else {}
            finally:
                self.model.train()
        mse = float(((xr - x.float()) ** 2).mean())
        diversity = float(xr.std(dim=0).mean()) if xr.shape[0] > 1 else 1.0
        model = metrics.compare(scored, recon)
        thumb = metrics.compare(scored, metrics.baselines(scored)["thumbnail 16x9"])
        return {"recon_mse": mse, "diversity": diversity, "frames": frames, "averaged": averaged,
                "psnr": model["psnr"], "ssim": model["ssim"], "psnr_minus_thumb": model["psnr"] - thumb["psnr"],
                "structure_foreign": metrics.structure(foreign, foreign_out),
                "colourfulness_foreign": metrics.colourfulness(foreign_out),
                "dream_change_foreign": metrics.change(foreign_out, dreamt),
                "dream_sharpness_foreign": metrics.sharpness(dreamt) / max(self.film_sharpness, 1e-6),
                "recon": output_to_frames(xr.cpu()).numpy(), "prior": output_to_frames(xp.cpu()).numpy()}

    def _prior(self, mu: torch.Tensor) -> torch.Tensor:
        """Prior samples from the latent distribution of the film's frames (`mu`, the evaluation frames'
        means): a Gaussian with their mean and covariance (the mean plus centred latents mixed by
        N(0, 1/(n-1)) weights), not N(0, noise^2). Late in a run the noise is small next to the spread of the
        latents, and z ~ N(0, noise^2) decodes to one average haze however the model is doing; the
        covariance keeps the dimensions' correlations, i.e. scenes rather than patches."""
        centred = mu - mu.mean(dim=0)
        mix = self.fixed_mix / max(mu.shape[0] - 1, 1) ** 0.5
        return mu.mean(dim=0) + mix @ centred

    def _encode(self, x: torch.Tensor) -> Posterior:
        with self.autocast():
            post = encode(self.nets["encoder"], x, self.model_cfg)
        return Posterior(post.mean.float(), post.log_sigma.float(), post.plan)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.nets["decoder"](z).float()


def write_samples(out: Path, step: int, ev: dict) -> None:
    """The evaluation's grid: the fixed frames, their reconstructions and prior samples, one row each."""
    write_png(Path(out) / "samples" / f"step-{step:07d}.png", grid([ev["frames"], ev["recon"], ev["prior"]]))
