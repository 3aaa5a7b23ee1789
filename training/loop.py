"""The Trainer: Larsen VAE-GAN steps, noise annealing, balance, collapse guard with rollback, checkpoints.

Determinism: model init uses the run seed; the data order of each epoch is a permutation seeded by
(seed, epoch, rollbacks); the noise of each micro-batch comes from a generator seeded by
(seed, step, micro-batch, rollbacks). So the data position and the random draws are functions of the
step, and a resumed run (weights, optimizers, BN statistics, schedule, balance and guard state restored)
repeats an uninterrupted run's losses exactly on the same machine.

The equilibrium/margin decision for step s uses the discriminator costs measured at step s-1 (so every
micro-batch and process knows it before computing gradients); that state is in the checkpoint too.

The parts beside it: the data order is training/order.py, the reports (metrics.jsonl, TensorBoard, the
console) training/runlog.py, the objective training/losses.py, checkpoints training/checkpoints.py, the
collapse guard training/guard.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autoencoded import metrics, signals
from autoencoded.errors import UserError, one_line
from autoencoded.posterior import Posterior
from autoencoded.training import distributed as dist_mod
from autoencoded.training.augment import Augmentation
from autoencoded.training.checkpoints import Checkpoints, optimizer_from_flat, restore_rng
from autoencoded.training.compiled import compile_networks
from autoencoded.training.config import TrainConfig
from autoencoded.training.device import autocast_dtype, pick_device
from autoencoded.training.ema import WeightAverage
from autoencoded.training.foreign import foreign_frames
from autoencoded.training.guard import CollapseGuard
from autoencoded.training.losses import DiscriminatorOutputs, VAEGANLoss, balance
from autoencoded.training.model import ModelConfig, build, encode, frames_to_input, output_to_frames
from autoencoded.training.order import DataOrder, seed_hash
from autoencoded.training.runlog import RunLog
from autoencoded.training.samples import grid, write_png
from autoencoded.training.schedules import lr_at, noise_at

NETS = ("encoder", "decoder", "discriminator")
EVAL_FRAMES = 64
CALIBRATION_FRAMES = 1024  # frames that re-estimate BatchNorm statistics at each evaluation
# structure_foreign and colourfulness_foreign: of the shipped foreign frames (training/foreign.py), so a run
# shows whether footage it never saw keeps its composition while the film's PSNR climbs
# dream_change_foreign: the mean |difference| (0..255) that live noise amount 1 makes to those frames, and
# dream_sharpness_foreign their sharpness at amount 1 over the film's (above 1: static, not a picture)
EVAL_KEYS = ("recon_mse", "diversity", "psnr", "ssim", "psnr_minus_thumb", "structure_foreign",
             "colourfulness_foreign", "dream_change_foreign", "dream_sharpness_foreign")
@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module):
    """Train-mode BatchNorm that does not update running statistics (for the prior-sample pass), so the
    decoder's eval-mode statistics describe reconstructions only: what export and live decode."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom


class Collapse(Exception):
    pass


def _clock(seconds: float) -> str:
    s = int(min(seconds, 99 * 3600))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Trainer:
    def __init__(self, cfg: TrainConfig, dataset, resume: bool = False, console=None,
                 progress: bool = True) -> None:
        self.cfg = cfg
        self.ds = dataset
        self.console = console
        self.show_progress = progress
        self.device = pick_device(cfg.device)
        self.dist = dist_mod.init(self.device.type)
        if self.device.type == "cuda" and self.dist.active:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.out = Path(cfg.out)
        n = len(dataset)
        self._size_the_run(n)
        self.order = DataOrder(dataset, cfg.batch, cfg.seed, self.dist.rank, self.dist.world, self.total)
        self.model_cfg = self._model_config()
        amp_note = self._build_networks()
        self.loss = VAEGANLoss(self.model_cfg.sim_layers, **cfg.loss_settings())
        # the film through other cameras (training/augment.py): off, the frames are the input and the target
        self.augmentation = Augmentation(cfg.augment_plain, cfg.augment_degrade) if cfg.augment else None
        # the moving average of the encoder's and decoder's weights: what evaluation and export use
        self.ema = WeightAverage({k: self.nets[k] for k in ("encoder", "decoder")}, cfg.ema) if cfg.ema else None
        self.adversarial_from = round(cfg.adversarial_start * self.total)
        self.guard = CollapseGuard(cfg.sat_eps, cfg.sat_steps, cfg.spike_factor, cfg.spike_window,
                                   cfg.spike_warmup, cfg.diversity_ratio)
        self.ckpt = Checkpoints(self.out, cfg.keep)
        self.step = 0
        self.lr_scale = 1.0
        self.rollbacks = 0
        self.skips = {"dis": 0, "dec_gan": 0}
        self.last_bce = (cfg.equilibrium, cfg.equilibrium)
        self.first_eval: float | None = None
        self.last_eval: dict = {}
        self.last_losses: dict = {}
        self.loss_names: list[str] = []
        self.events: list[dict] = []
        self._pick_evaluation_frames(n)
        self._stop = False
        self.log = RunLog(self.out, console, self.dist.main)
        self.saved_step: int | None = None  # the step of the checkpoint on disk that matches the weights
        if amp_note and self.dist.main:
            self.log.line(amp_note)
        if resume:
            self._resume()

    # ---- setup ---------------------------------------------------------------------------------------

    def _size_the_run(self, n: int) -> None:
        """Each process's micro-batch, the steps of an epoch and of the run, from the global batch."""
        cfg, gb = self.cfg, self.cfg.batch
        if gb > n:
            raise UserError(f"--batch {gb} is larger than the dataset ({n} frames)")
        parts = self.dist.world * cfg.accum
        if gb % parts:
            raise UserError(f"--batch {gb} must divide by processes x --accum ({parts})")
        self.micro = gb // parts
        self.steps_per_epoch = n // gb
        self.total = cfg.steps or max(1, math.ceil(cfg.epochs * self.steps_per_epoch))

    def _build_networks(self) -> str | None:
        """The three networks from the run's seed on the device, their compiled forms and their optimizers.
        -> a note on the autocast precision, if there is one to say."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.model = build(self.model_cfg).to(self.device)
        self.cuda = self.device.type == "cuda"
        # NHWC convolutions: tensor cores on CUDA, and oneDNN's faster kernels on the CPU (benchmarks/
        # bench_train.py --layout both); MPS keeps the default layout
        self.use_channels_last(self.device.type in ("cuda", "cpu"))
        capability = torch.cuda.get_device_capability(self.device) if self.cuda else None
        gpu = torch.cuda.get_device_name(self.device) if self.cuda else ""
        self.amp_dtype, amp_note = autocast_dtype(self.device.type, cfg.amp, capability, gpu)
        self.nets = {k: getattr(self.model, k) for k in NETS}
        self.fns = dict(self.nets)
        if cfg.compile:  # the compiled forms run the steps; the modules keep the weights (training/compiled.py)
            self.fns = compile_networks(self.nets, self.device.type)
        self.base_lr = {"encoder": cfg.lr, "decoder": cfg.lr, "discriminator": cfg.lr_dis}
        self.opts = {k: torch.optim.Adam(m.parameters(), lr=self.base_lr[k], betas=(cfg.beta1, cfg.beta2))
                     for k, m in self.nets.items()}
        return amp_note

    def _pick_evaluation_frames(self, n: int) -> None:
        k = min(self.cfg.sample_count, n)
        self.fixed_idx = np.linspace(0, n - 1, k).round().astype(np.int64)
        # the frames scored at every evaluation (PSNR/SSIM against the 16x9 thumbnail): spread over the film
        self.eval_idx = np.unique(np.linspace(0, n - 1, min(n, EVAL_FRAMES)).round().astype(np.int64))
        g = torch.Generator().manual_seed(seed_hash(self.cfg.seed, 7777))
        # fixed weights that mix the evaluation frames' latents into prior samples (see evaluate)
        self.fixed_mix = torch.randn(k, len(self.eval_idx), generator=g)
        self.dream_eps = torch.randn(64, self.model_cfg.latent_dim, generator=g).to(self.device)
        self.film_sharpness = metrics.sharpness(self.ds.batch(self.eval_idx))

    def _model_config(self) -> ModelConfig:
        c = self.cfg
        over = dict(c.model_overrides)
        if c.z_dim:
            over["z_dim"] = c.z_dim
        if c.layout is not None:
            over["layout"] = c.layout
        if c.layout_scale is not None:
            over["layout_scale"] = c.layout_scale
        try:
            return ModelConfig.preset(c.arch, width=c.width, height=c.height, **over)
        except (ValueError, TypeError) as exc:
            raise UserError(f"model configuration: {exc}") from None

    def _agreed_latest(self) -> Path | None:
        """The newest complete checkpoint, as rank 0 sees it, on every rank (one choice for all)."""
        latest = self.ckpt.latest() if self.dist.main else None
        name = dist_mod.decide(latest.name if latest else None, self.dist)
        return self.ckpt.dir / name if name else None

    def _resume(self) -> None:
        path = self._agreed_latest()
        if path is None:
            raise UserError(f"{self.out}: no checkpoint to resume from")
        cfg, _, _, _ = self.ckpt.load(path)
        mine = self.model_cfg.to_dict()
        theirs = cfg.to_dict()
        diff = [k for k in mine if k != "extra" and mine[k] != theirs.get(k)]
        if diff:
            desc = ", ".join(f"{k}: checkpoint {theirs.get(k)} vs now {mine[k]}" for k in diff[:3])
            raise UserError(f"--resume: checkpoint {path.name} is incompatible ({desc})")
        self._load(path, restore_schedule=True)

    def _load(self, path: Path, restore_schedule: bool) -> dict:
        _, weights, tensors, state = self.ckpt.load(path, device=self.device)
        averaged = {k: v for k, v in weights.items() if k.startswith(WeightAverage.PREFIX)}
        weights = {k: v for k, v in weights.items() if not k.startswith(WeightAverage.PREFIX)}
        if self.ema is not None:
            self.ema.load(averaged, self.nets)
        try:
            self.model.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise UserError(f"{path}: weights do not fit this model ({one_line(exc)})") from None
        for k, opt in self.opts.items():
            optimizer_from_flat(k, opt, tensors, state["optimizers"][k], self.device)
        self.step = int(state["step"])
        self.saved_step = self.step
        self.last_bce = tuple(state["last_bce"])
        if restore_schedule:
            restore_rng(tensors)
            self.lr_scale = float(state["lr_scale"])
            self.rollbacks = int(state["rollbacks"])
            self.skips = dict(state["skips"])
            self.guard.load_state(state["guard"])
            self.first_eval = state.get("first_eval")
        return state

    # ---- data ----------------------------------------------------------------------------------------

    def use_channels_last(self, on: bool) -> None:
        """The memory layout of the networks and of the batches fed to them."""
        self.channels_last = on
        self.model.to(memory_format=torch.channels_last if on else torch.contiguous_format)

    def _to_input(self, frames: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(frames)
        if self.cuda:
            t = t.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            t = t.to(self.device)
        x = frames_to_input(t)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # ---- one step ------------------------------------------------------------------------------------

    def _autocast(self):
        if self.amp_dtype is not None:
            return torch.autocast(self.device.type, dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def adversarial(self, step: int) -> bool:
        """Whether the discriminator takes part at `step` (after the pixel-led phase)."""
        return step >= self.adversarial_from

    def _micro(self, inp: torch.Tensor, x: torch.Tensor, gen: torch.Generator, noise: float, adversarial: bool,
               train_dis: bool, dec_gan: bool) -> tuple[dict[str, float], dict[str, list]]:
        """One micro-batch: the encoder sees `inp`, the reconstruction is scored against the target `x`
        (the same tensor unless augmentation degraded the input), which is also what the discriminator
        sees as real."""
        enc, dec, dis = self.fns["encoder"], self.fns["decoder"], self.fns["discriminator"]
        b = x.shape[0]
        zdim = self.model_cfg.latent_dim
        eps = torch.randn(b, zdim, generator=gen)
        zp = torch.randn(b, zdim, generator=gen).to(self.device) * noise
        # how much of the noise each sample plays, in live's amounts (autoencoded.posterior): the prior's
        # std for most, and for the dream share the amounts a VJ plays, uniform from 0 to 1
        amount = torch.full((b, 1), noise / self.model_cfg.noise_scale)
        dreamt = round(self.cfg.dream_share * b)
        if dreamt:
            amount[:dreamt] = torch.rand(dreamt, 1, generator=gen)
        with self._autocast():
            post = encode(enc, inp, self.model_cfg)
            z = post.sample(eps.to(self.device), amount.to(self.device))
            mu, log_sigma = post.learned()  # the KL and the saturation penalty are of the learned code
            xr = dec(z)
            seen = None
            if adversarial:
                with frozen_bn_stats(self.nets["decoder"]):
                    xp = dec(zp)
                logits, feats = dis(torch.cat([x, xr, xp]))
                l_real, l_rec, l_prior = logits.float().split(b)
                seen = DiscriminatorOutputs(l_real, l_rec, l_prior, [f[:b] for f in feats],
                                            [f[b:2 * b] for f in feats])
        obj = self.loss(x, xr, mu, log_sigma, noise, seen, decoder_gan=dec_gan, pre_mu=post.pre_mean)
        params = {k: [p for p in m.parameters() if p.requires_grad] for k, m in self.nets.items()}
        train_dis = train_dis and obj.discriminator is not None
        if obj.decoder_shares_encoder:  # the pixel-led phase: one backward pass instead of two
            both = torch.autograd.grad(obj.encoder, params["encoder"] + params["decoder"])
            grads = {"encoder": both[:len(params["encoder"])], "decoder": both[len(params["encoder"]):]}
        else:
            grads = {"encoder": torch.autograd.grad(obj.encoder, params["encoder"], retain_graph=True)}
            grads["decoder"] = torch.autograd.grad(obj.decoder, params["decoder"], retain_graph=train_dis)
        if train_dis:
            grads["discriminator"] = torch.autograd.grad(obj.discriminator, params["discriminator"])
        return {k: float(v.detach()) for k, v in obj.terms.items()}, grads

    def train_step(self) -> dict[str, float]:
        """One optimisation step (all micro-batches). Raises Collapse before applying a bad update."""
        c = self.cfg
        step = self.step
        noise = noise_at(step, self.total, c.noise_start, c.noise_end, c.noise_schedule, c.noise_stages)
        for key, opt in self.opts.items():
            for g in opt.param_groups:
                g["lr"] = lr_at(self.base_lr[key], self.lr_scale, step, self.total, c.lr_schedule, c.lr_min_factor)
        lr = self.opts["encoder"].param_groups[0]["lr"]
        adversarial = self.adversarial(step)
        bal = balance(self.last_bce[0], self.last_bce[1], c.equilibrium, c.margin, c.balance and adversarial)
        sums, acc = self._accumulate(noise, adversarial, bal)
        keys = sorted(sums)
        avg = dist_mod.average_values(torch.tensor([sums[k] for k in keys], dtype=torch.float64,
                                                   device=self.device), self.dist).tolist()
        losses = dict(zip(keys, avg, strict=True))
        self.loss_names = keys
        norms = self._apply(acc, losses)
        if adversarial:
            if not bal.train_dis:
                self.skips["dis"] += 1
            if not bal.train_dec_gan:
                self.skips["dec_gan"] += 1
            self.last_bce = (losses["bce_real"], (losses["bce_recon"] + losses["bce_prior"]) / 2)
        self.step += 1
        losses.update(noise=noise, lr=lr, adversarial=float(adversarial), train_dis=float(bal.train_dis and adversarial),
                      train_dec_gan=float(bal.train_dec_gan and adversarial))
        losses.update({f"grad_norm_{k}": v for k, v in norms.items()})
        self.last_losses = losses
        return losses

    def _accumulate(self, noise: float, adversarial: bool, bal) -> tuple[dict[str, float], dict[str, list]]:
        """This process's micro-batches of the step: their mean terms and their mean gradients per network."""
        c, step = self.cfg, self.step
        frames = self.order.frames(step, self.rollbacks)
        sums: dict[str, float] = {}
        acc: dict[str, list] = {}
        for a in range(c.accum):
            k = self.dist.rank * c.accum + a
            gen = torch.Generator().manual_seed(seed_hash(c.seed, step, k, self.rollbacks, 2))
            x = self._to_input(frames[a * self.micro:(a + 1) * self.micro])
            # the augmentation draws first, so a run without it draws its noise exactly as before
            inp, x = self.augmentation(x, gen) if self.augmentation is not None else (x, x)
            vals, grads = self._micro(inp, x, gen, noise, adversarial, bal.train_dis, bal.train_dec_gan)
            for key, v in vals.items():
                sums[key] = sums.get(key, 0.0) + v / c.accum
            for key, gs in grads.items():
                if c.accum == 1:  # one micro-batch: its gradients are the step's, no copy
                    acc[key] = list(gs)
                elif key not in acc:
                    acc[key] = [g.detach().clone() / c.accum for g in gs]
                else:
                    for t, g in zip(acc[key], gs, strict=True):
                        t.add_(g.detach() / c.accum)
        return sums, acc

    def _apply(self, acc: dict[str, list], losses: dict[str, float]) -> dict[str, float]:
        """Average the gradients over the processes, clip them, and step the optimizers, unless the guard
        finds the step bad (Collapse, nothing applied). -> each network's gradient norm."""
        c = self.cfg
        norms = {}
        for key in NETS:
            if key not in acc:
                continue
            dist_mod.average_grads(acc[key], self.dist)
            params = [p for p in self.nets[key].parameters() if p.requires_grad]
            for p, g in zip(params, acc[key], strict=True):
                p.grad = g
            max_norm = c.clip_grad if c.clip_grad > 0 else float("inf")
            norms[key] = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        check = {**losses, **{f"grad_{k}": v for k, v in norms.items()}}
        reason = self.guard.check_step(check) if c.guard else None
        if reason is None and not c.guard:
            bad = [k for k, v in check.items() if not math.isfinite(v)]
            reason = f"non-finite values ({', '.join(bad)})" if bad else None
        if reason:
            for m in self.nets.values():
                m.zero_grad(set_to_none=True)
            raise Collapse(reason)
        for key in acc:
            self.opts[key].step()
        for m in self.nets.values():
            m.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update({k: self.nets[k] for k in ("encoder", "decoder")}, self.step)
        return norms

    # ---- evaluation, samples, checkpoints -------------------------------------------------------------

    @torch.no_grad()
    def recalibrate_bn(self, frames: int = CALIBRATION_FRAMES) -> None:
        """Re-estimate the encoder's and decoder's BatchNorm running statistics on decode-the-mean passes
        (what export and live run: z = mu, no noise) as a plain average over up to `frames` frames spread
        over the whole film, in batches of the training batch's size, each batch itself spread over the film.

        Training normalises with batch statistics of noisy latents, so an exponential average of those
        does not describe noise-free decoding. Running statistics never enter the training losses, so this
        changes nothing in the optimisation (resume stays exact). How many frames are enough:
        docs/models.md, "Figures behind the code's choices"."""
        mods = [m for k in ("encoder", "decoder") for m in self.nets[k].modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in mods]
        for m in mods:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        n = len(self.ds)
        b = min(max(self.micro, 2), n)
        batches = max(1, min(n, frames) // b)
        picks = np.linspace(0, n - 1, batches * b).round().astype(int)
        try:
            for i in range(batches):
                x = self._to_input(self.ds.batch(picks[i::batches]))  # sorted, as picks is
                with self._autocast():
                    mu, _ = self.nets["encoder"](x)
                    self.nets["decoder"](mu)
        finally:
            for m, mom in zip(mods, saved, strict=True):
                m.momentum = mom

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Decode-the-mean reconstructions (eval mode, the averaged weights when --ema is on) of the fixed
        batch, prior samples, and PSNR/SSIM on the evaluation frames beside the 16x9 thumbnail."""
        coder = {k: self.nets[k] for k in ("encoder", "decoder")}
        swap = self.ema.swapped_in(coder) if self.ema is not None else contextlib.nullcontext()
        with swap:
            self.recalibrate_bn()
            self.model.eval()
            try:
                frames = self.ds.batch(self.fixed_idx)
                x = self._to_input(frames)
                xr = self._decode(self._encode_mean(x))
                scored = self.ds.batch(self.eval_idx)
                mus = [self._encode_mean(self._to_input(scored[i:i + 32])) for i in range(0, len(scored), 32)]
                recon = np.concatenate([output_to_frames(self._decode(mu).cpu()).numpy() for mu in mus])
                foreign = foreign_frames(self.model_cfg.width, self.model_cfg.height)
                post = self._encode(self._to_input(foreign))
                foreign_out = output_to_frames(self._decode(post.mode()).cpu()).numpy()
                # the dream: the same frames at live noise amount 1, one fixed pattern from run to run
                dreamt = output_to_frames(self._decode(post.sample(self.dream_eps[:len(foreign)])).cpu()).numpy()
                # prior samples from the latent distribution of the film's frames: a Gaussian with the mean
                # and the covariance of the evaluation frames' latents (mean + centred latents mixed by
                # N(0, 1/(n-1)) weights), not N(0, noise^2): late in a run the noise is small next to the
                # spread of the latents, and z ~ N(0, noise^2) decodes to one average haze however the model
                # is doing; the covariance keeps the dimensions' correlations, i.e. scenes rather than patches
                mu = torch.cat(mus)
                centred = mu - mu.mean(dim=0)
                mix = self.fixed_mix.to(self.device) / max(mu.shape[0] - 1, 1) ** 0.5
                xp = self._decode(mu.mean(dim=0) + mix @ centred)
                averaged = WeightAverage.tensors(coder) if self.ema is not None else {}
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

    def _encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        return self._encode(x).mode()

    def _encode(self, x: torch.Tensor):
        with self._autocast():
            post = encode(self.nets["encoder"], x, self.model_cfg)
        return Posterior(post.mean.float(), post.log_sigma.float(), post.plan)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.nets["decoder"](z).float()

    def _state(self) -> dict:
        return {"step": self.step, "epoch": self.step / self.steps_per_epoch, "lr_scale": self.lr_scale,
                "rollbacks": self.rollbacks, "skips": self.skips, "last_bce": list(self.last_bce),
                "guard": self.guard.state(), "total_steps": self.total, "seed": self.cfg.seed,
                "first_eval": self.first_eval,
                "data_position": {"epoch": self.step // self.steps_per_epoch,
                                  "batch": self.step % self.steps_per_epoch}}

    def save(self, ev: dict | None = None) -> Path | None:
        path = None
        if self.dist.main:
            ev = ev or self.evaluate()
            noise = noise_at(self.step, self.total, self.cfg.noise_start, self.cfg.noise_end,
                             self.cfg.noise_schedule, self.cfg.noise_stages)
            side = {"epoch": self.step / self.steps_per_epoch, "noise": noise,
                    "losses": {k: v for k, v in self.last_losses.items() if math.isfinite(v)},
                    "eval": {k: ev[k] for k in EVAL_KEYS},
                    "lr_scale": self.lr_scale, "rollbacks": self.rollbacks, "time": time.time()}
            try:
                path = self.ckpt.save(self.step, self.model_cfg, {**self.model.state_dict(), **ev["averaged"]},
                                      self.opts, self._state(), side, score=-ev["psnr"])
            except OSError as exc:
                raise UserError(f"could not write checkpoint at step {self.step} in {self.ckpt.dir} "
                                f"({exc.strerror or exc}); the previous checkpoint is intact") from None
        dist_mod.barrier(self.dist)
        self.saved_step = self.step
        return path

    def write_samples(self, ev: dict) -> None:
        if not self.dist.main:
            return
        img = grid([ev["frames"], ev["recon"], ev["prior"]])
        write_png(self.out / "samples" / f"step-{self.step:07d}.png", img)

    def rollback(self, reason: str) -> None:
        self.rollbacks += 1
        at = self.step
        path = self._agreed_latest()
        if self.rollbacks > self.cfg.max_rollbacks:  # stop: the last good checkpoint stays as it is
            kept = f"; the last good checkpoint {path.name} is kept" if path else ""
            raise UserError(f"training stopped: it collapsed {self.rollbacks} times, more than the "
                            f"{self.cfg.max_rollbacks} rollbacks allowed (last: {reason} at step {at}){kept}; "
                            "continue it with --resume and a lower --lr or a smaller --noise-end")
        if path is None:
            raise UserError(f"training collapsed ({reason}) before any checkpoint was written")
        rollbacks, current = self.rollbacks, self.lr_scale
        state = self._load(path, restore_schedule=False)
        # the lr that was good at the checkpoint (or the current one, if already lower), times the factor
        self.rollbacks = rollbacks
        self.lr_scale = min(current, float(state["lr_scale"])) * self.cfg.rollback_lr_factor
        self.guard.reset_after_rollback()
        self.order.forget_read_ahead()
        event = {"event": "rollback", "reason": reason, "at_step": at, "to_step": self.step,
                 "checkpoint": path.name, "lr_scale": self.lr_scale, "rollbacks": self.rollbacks}
        self.events.append(event)
        if self.dist.main:
            self.log.line(f"[yellow]collapse at step {at}: {reason}; rolled back to {path.name}, "
                          f"lr x{self.lr_scale:g}[/]")
            self.log.event(event, at, self.rollbacks)

    # ---- the run -------------------------------------------------------------------------------------

    def _write_palette(self) -> None:
        """The training frames' colours (CIELAB mean and covariance), which export copies into the model
        pack so that `autoencoded eval` can measure palette transfer without the dataset. A record from an
        older version (an RGB histogram) is written anew."""
        from autoencoded.fileio import atomic_write_bytes
        from autoencoded.training.evaluation import PALETTE_FILE, palette_record, run_palette_record

        path = self.out / PALETTE_FILE
        if run_palette_record(self.out) is None:
            atomic_write_bytes(path, (json.dumps(palette_record(self.ds)) + "\n").encode())

    @staticmethod
    def _dis_text(losses: dict) -> str:
        # the pixel-led phase has no discriminator loss: say so instead of printing nan
        return f"dis {losses['dis']:.3f}  " if "dis" in losses else "dis off  "

    def request_stop(self) -> None:
        self._stop = True

    def run(self, on_step=None) -> dict:
        """Train to the end (or to Ctrl-C / request_stop()); returns a summary dict.

        `on_step(trainer, losses)` is called after every completed step (progress hooks, tests)."""
        c = self.cfg
        self._start()
        # Ctrl-C, SIGTERM and SIGHUP finish the step and save; a second one aborts at once
        restore_signals = signals.route_stop(lambda signum: self.request_stop())
        start_step, t0 = self.step, time.time()
        sps, t_last = 0.0, time.time()
        progress = self._make_progress()
        interrupted = False
        try:
            task = progress.add_task("train", total=self.total, completed=self.step, info="") if progress else None
            while self.step < self.total:
                if dist_mod.any_rank(self._stop, self.dist, self.device):  # all ranks stop at one step
                    interrupted = True
                    break
                try:
                    losses = self.train_step()
                except Collapse as exc:
                    self.rollback(str(exc))
                    if progress:
                        progress.update(task, completed=self.step)
                    continue
                now = time.time()
                inst = c.batch / max(now - t_last, 1e-9)
                sps = inst if sps == 0 else 0.9 * sps + 0.1 * inst
                t_last = now
                self.log.step(self.step, losses, self.loss_names, sps,
                              {k: opt.param_groups[0]["lr"] for k, opt in self.opts.items()}, self.skips, self.rollbacks)
                if on_step is not None:
                    on_step(self, losses)
                self._show(losses, sps, progress, task)
                do_ckpt = self.step % c.checkpoint_every == 0 or self.step == self.total
                do_sample = self.step % c.sample_every == 0 or self.step == self.total
                if do_ckpt or do_sample:
                    if self._checkpoint(do_ckpt, do_sample):
                        if progress:
                            progress.update(task, completed=self.step)
                        continue
            if interrupted and self.step != self.saved_step:
                self.save()
        finally:
            if progress:
                progress.stop()
            restore_signals()
            self.order.close()
            self.log.close()
        return self._summary(interrupted, self.step - start_step, time.time() - t0)

    def _start(self) -> None:
        """Open the logs; a new run evaluates its untrained model and saves it as step 0 (the rollback target)."""
        self.log.open()
        if self.dist.main:
            self.ckpt.clean_temps()
            self._write_palette()
        if self.saved_step is None:  # a new run (same answer on every rank: no process asks the disk)
            ev = self.evaluate()
            self.first_eval = ev["recon_mse"]
            if self.cfg.guard:  # the diversity baseline: a collapse before the first checkpoint is caught too
                self.guard.check_diversity(ev["diversity"])
            self.save(ev)
            self.write_samples(ev)

    def _show(self, losses: dict, sps: float, progress, task) -> None:
        """The step on the progress bar, and every --log-every steps as a line of its own."""
        c = self.cfg
        if progress:
            progress.update(task, completed=self.step, info=f"{sps:6.1f} samples/s  rec {losses['rec']:.4f} "
                            f"{self._dis_text(losses)}noise {losses['noise']:.3f}")
        if self.dist.main and c.log_every and self.step % c.log_every == 0:
            eta = (self.total - self.step) * c.batch / max(sps, 1e-9)
            self.log.line(f"step {self.step}/{self.total}  rec {losses['rec']:.4f}  kl {losses['kl']:.4f}  "
                          f"pix {losses['pix']:.4f}  {self._dis_text(losses)}"
                          f"noise {losses['noise']:.3f}  {sps:.1f} samples/s  ETA {_clock(eta)}")

    def _summary(self, interrupted: bool, done: int, elapsed: float) -> dict:
        return {"interrupted": interrupted, "step": self.step, "total": self.total, "steps_run": done,
                "seconds": elapsed, "samples_per_s": done * self.cfg.batch / elapsed if elapsed > 0 else 0.0,
                "first_recon_mse": self.first_eval, "last_eval": dict(self.last_eval),
                "rollbacks": self.rollbacks, "skips": dict(self.skips), "events": self.events,
                "latest": str(self.ckpt.latest()), "best": self.ckpt.index().get("best")}

    def _checkpoint(self, do_ckpt: bool, do_sample: bool) -> bool:
        """Evaluate, guard the diversity and the error, write samples and/or a checkpoint. True if it rolled back."""
        ev = self.evaluate() if self.dist.main else None
        reason = None
        if self.dist.main and self.cfg.guard:
            reason = (self.guard.check_diversity(ev["diversity"])
                      or self.guard.check_error(ev["recon_mse"], self.first_eval))
        collapsed = dist_mod.broadcast_flag(reason is not None, self.dist, self.device)
        if collapsed:
            self.rollback(reason or "reconstruction diversity collapsed")
            return True
        if ev is not None:
            self.last_eval = {"step": self.step, **{k: ev[k] for k in EVAL_KEYS}}
            self.log.evaluation(self.step, {k: ev[k] for k in EVAL_KEYS})
            self.log.line(f"step {self.step}: eval PSNR {ev['psnr']:.2f} dB ({ev['psnr_minus_thumb']:+.2f} vs the "
                          f"16x9 thumbnail), SSIM {ev['ssim']:.3f}, diversity {ev['diversity']:.4f}, "
                          f"structure on foreign frames {ev['structure_foreign']:.2f}, their dream at noise 1 "
                          f"changes {ev['dream_change_foreign']:.1f} grey levels at "
                          f"{ev['dream_sharpness_foreign']:.2f}x the film's sharpness")
            if do_sample:
                self.write_samples(ev)
        if do_ckpt:
            self.save(ev)
            self.log.flush()
        return False

    def _make_progress(self):
        if not (self.show_progress and self.dist.main):
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        p = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                     TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=False)
        p.start()
        return p
