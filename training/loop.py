"""The Trainer: Larsen VAE-GAN steps, noise annealing, balance, collapse guard with rollback, checkpoints.

Determinism: model init uses the run seed; the data order of each epoch is a permutation seeded by
(seed, epoch, rollbacks); the noise of each micro-batch comes from a generator seeded by
(seed, step, micro-batch, rollbacks). So the data position and the random draws are functions of the
step, and a resumed run (weights, optimizers, BN statistics, schedule, balance and guard state restored)
repeats an uninterrupted run's losses exactly on the same machine.

The equilibrium/margin decision for step s uses the discriminator costs measured at step s-1 (so every
micro-batch and process knows it before computing gradients); that state is in the checkpoint too.

The parts beside it: the data order is training/order.py, the reports (metrics.jsonl, TensorBoard, the
console) training/runlog.py, the objective training/losses.py, the evaluation at each checkpoint
training/run_evaluation.py, saving, resuming and rolling back training/checkpoints.py, the collapse guard
training/guard.py.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import numpy as np
import torch

from autoencoded import signals
from autoencoded.errors import UserError
from autoencoded.training import distributed as dist_mod
from autoencoded.training.augment import Augmentation
from autoencoded.training.batchnorm import bn_momentum
from autoencoded.training.checkpoints import Checkpoints, resume_trainer, roll_back_trainer, save_trainer
from autoencoded.training.compiled import compile_networks
from autoencoded.training.config import TrainConfig
from autoencoded.training.device import autocast_dtype, pick_device
from autoencoded.training.ema import WeightAverage
from autoencoded.training.evaluation import write_run_palette
from autoencoded.training.guard import CollapseGuard
from autoencoded.training.losses import DiscriminatorOutputs, VAEGANLoss, balance
from autoencoded.training.model import build, encode, frames_to_input
from autoencoded.training.order import DataOrder, seed_hash
from autoencoded.training.run_evaluation import EVAL_KEYS, RunEvaluation, write_samples
from autoencoded.training.runlog import RunLog
from autoencoded.training.schedules import lr_at, noise_at

NETS = ("encoder", "decoder", "discriminator")


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
        self.model_cfg = cfg.model_config()
        amp_note = self._build_networks()
        self.loss = VAEGANLoss(self.model_cfg.sim_layers, **cfg.loss_settings())
        # the film through other cameras (training/augment.py): off, the frames are the input and the target
        self.augmentation = Augmentation(cfg.augment_plain, cfg.augment_degrade, cfg.augment_grey) if cfg.augment else None
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
        self.evaluation = RunEvaluation(self.model, self.model_cfg, dataset, self.ema, cfg.seed, cfg.sample_count,
                                        self.micro, self._to_input, self._autocast, self.device)
        self._stop = False
        self.log = RunLog(self.out, console, self.dist.main)
        self.saved_step: int | None = None  # the step of the checkpoint on disk that matches the weights
        if amp_note and self.dist.main:
            self.log.line(amp_note)
        if resume:
            resume_trainer(self)

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
                # the prior samples leave the running statistics alone, so the decoder's eval-mode ones
                # describe reconstructions only: what export and live decode
                with bn_momentum([self.nets["decoder"]], 0.0):
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

    @property
    def noise(self) -> float:
        """The prior's std at the current step: what the step trains with and its checkpoint records."""
        c = self.cfg
        return noise_at(self.step, self.total, c.noise_start, c.noise_end, c.noise_schedule, c.noise_stages)

    def train_step(self) -> dict[str, float]:
        """One optimisation step (all micro-batches). Raises Collapse before applying a bad update."""
        c = self.cfg
        step = self.step
        noise = self.noise
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

    # ---- evaluation and checkpoints --------------------------------------------------------------------

    def evaluate(self) -> dict:
        """The current weights' evaluation (training/run_evaluation.py): what a checkpoint records."""
        return self.evaluation.evaluate()

    def save(self, ev: dict | None = None) -> Path | None:
        """A checkpoint at this step (training/checkpoints.py), scored by `ev` or by an evaluation made now."""
        return save_trainer(self, ev)

    def write_samples(self, ev: dict) -> None:
        """The evaluation's sample grid, from rank 0."""
        if self.dist.main:
            write_samples(self.out, self.step, ev)

    # ---- the run -------------------------------------------------------------------------------------

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
                    roll_back_trainer(self, str(exc))
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
            write_run_palette(self.out, self.ds)
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
            roll_back_trainer(self, reason or "reconstruction diversity collapsed")
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
