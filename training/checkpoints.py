"""Checkpoints of a run, in the format fixed by training/weights.py. No pickle anywhere.

    RUN/checkpoints/step-NNNNNNN.safetensors        weights + ModelConfig (autoencoded.training.weights.save_weights)
    RUN/checkpoints/step-NNNNNNN.state.safetensors  optimizer tensors + RNG; JSON metadata "state" holds the
                                                    optimizer param groups, schedule, data position, guard
    RUN/checkpoints/step-NNNNNNN.json               sidecar: step, epoch, noise, losses, quality
    RUN/checkpoints/index.json                      {"latest": ..., "best": ...}, written last

Every file is written atomically (temp + fsync + rename), state first, index last: a crash or a full disk
at any moment leaves the previous checkpoint complete and named by index.json.

Below the files, a trainer's side of them (save_trainer, resume_trainer, roll_back_trainer): what of the
run goes into a checkpoint and comes back from one. They read and set the Trainer's fields (training/
loop.py), which hands itself in; this module never imports the loop.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from autoencoded.documents import parse_json
from autoencoded.errors import UserError, one_line
from autoencoded.fileio import LOCK_INSIDE, Claim
from autoencoded.training import distributed as dist_mod
from autoencoded.training.ema import WeightAverage
from autoencoded.training.model import ModelConfig
from autoencoded.training.run_evaluation import EVAL_KEYS
from autoencoded.training.weights import STEP_RE, atomic_write_bytes, load_weights, save_weights

STATE_FORMAT = "autoencoded-train-state"


RUN_LOCK = LOCK_INSIDE  # the run folder's lock file: not part of the run, never cleared or copied


class RunClaim:
    """A run folder held by one trainer for the length of its run: a second trainer on it (a new run, a
    --resume, an --overwrite) is refused at once with one line, instead of both writing checkpoints and
    metrics.jsonl and one deleting what the other writes. Under torchrun rank 0 holds it for the whole job.
    A folder made only to hold the claim is removed again when the run never started (`release`)."""

    def __init__(self, out: Path) -> None:
        self.out, self.claim, self.made = out, None, False
        if int(os.environ.get("RANK", "0") or 0) != 0:
            return
        if out.exists() and not out.is_dir():
            raise UserError(f"{out}: exists and is not a folder")
        self.made = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{out}: cannot write the run folder ({exc.strerror or exc})") from None
        try:
            self.claim = Claim(out, "a training run", inside=True)
        except UserError:
            self._remove_if_unused()
            raise

    def release(self) -> None:
        if self.claim is not None:
            self.claim.release()
            self.claim = None
            self._remove_if_unused()

    def _remove_if_unused(self) -> None:
        if self.made:
            try:
                self.out.rmdir()  # only when empty: a run that started keeps its folder
            except OSError:
                pass


def step_name(step: int) -> str:
    return f"step-{step:07d}"


# ---- optimizer state <-> tensors + JSON ----------------------------------------------------------------

def optimizer_to_flat(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"opt.{name}.{idx}.{key}"] = val.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = val
    groups = []
    for g in sd["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()})
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_flat(name: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                        meta: dict, device: torch.device) -> None:
    state: dict[int, dict] = {}
    prefix = f"opt.{name}."
    for k, v in tensors.items():
        if k.startswith(prefix):
            idx, key = k[len(prefix):].split(".", 1)
            # Adam keeps `step` on the CPU unless capturable; everything else lives with the params
            state.setdefault(int(idx), {})[key] = v if key == "step" else v.to(device)
    for idx, sc in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(sc)
    groups = []
    for g in meta["param_groups"]:
        groups.append({k: (tuple(v) if k == "betas" else v) for k, v in g.items()})
    opt.load_state_dict({"state": state, "param_groups": groups})


def rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ---- the manager -----------------------------------------------------------------------------------------

class Checkpoints:
    """Writes, indexes, prunes and reads the checkpoints of one run folder."""

    def __init__(self, run: str | Path, keep: int = 3) -> None:
        self.dir = Path(run) / "checkpoints"
        self.keep = max(1, int(keep))

    def clean_temps(self) -> None:
        """Remove temp files left by a save that was killed (never a complete checkpoint)."""
        if self.dir.is_dir():
            for f in self.dir.glob(".*.tmp"):
                f.unlink(missing_ok=True)

    def index(self) -> dict:
        p = self.dir / "index.json"
        if not p.is_file():
            return {}
        try:
            data = parse_json(p.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, step: int, cfg: ModelConfig, weights: dict[str, torch.Tensor],
             optimizers: dict[str, torch.optim.Optimizer], state: dict, sidecar: dict,
             score: float | None = None) -> Path:
        """Write one checkpoint (state, weights, sidecar, then index) and prune old ones."""
        name = step_name(step)
        tensors = rng_tensors()
        opt_meta = {}
        for oname, opt in optimizers.items():
            t, m = optimizer_to_flat(oname, opt)
            tensors.update(t)
            opt_meta[oname] = m
        meta = {"format": STATE_FORMAT, "version": "1",
                "state": json.dumps({**state, "optimizers": opt_meta})}
        atomic_write_bytes(self.dir / f"{name}.state.safetensors", st_save(tensors, metadata=meta))
        save_weights(self.dir / f"{name}.safetensors", cfg, weights,
                     metadata={"step": step, "noise": sidecar.get("noise"), "epoch": sidecar.get("epoch"),
                               "score": score})
        side = {**sidecar, "step": step, "score": score, "weights": f"{name}.safetensors",
                "state": f"{name}.state.safetensors"}
        atomic_write_bytes(self.dir / f"{name}.json", (json.dumps(side, indent=2) + "\n").encode())
        index = self.index()
        best = index.get("best")
        best_score = index.get("best_score")
        if best and not (self.dir / best).is_file():
            best, best_score = None, None
        if score is not None and math.isfinite(score) and (best_score is None or score <= best_score):
            best, best_score = f"{name}.safetensors", score
        new_index = {"latest": f"{name}.safetensors", "best": best or f"{name}.safetensors",
                     "best_score": best_score}
        atomic_write_bytes(self.dir / "index.json", (json.dumps(new_index, indent=2) + "\n").encode())
        self.prune(new_index)
        return self.dir / f"{name}.safetensors"

    def steps(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        return sorted(int(m.group(1)) for f in self.dir.iterdir() if (m := STEP_RE.match(f.name)))

    def prune(self, index: dict) -> None:
        protect = {index.get("latest"), index.get("best")}
        steps = self.steps()
        for s in steps[:-self.keep]:
            name = step_name(s)
            if f"{name}.safetensors" in protect:
                continue
            for suffix in (".json", ".state.safetensors", ".safetensors"):
                (self.dir / f"{name}{suffix}").unlink(missing_ok=True)

    def latest(self) -> Path | None:
        """The newest complete checkpoint: the index's latest, else the highest step with its state file."""
        name = self.index().get("latest")
        if name and (self.dir / name).is_file():
            return self.dir / name
        for s in reversed(self.steps()):
            p = self.dir / f"{step_name(s)}.safetensors"
            if (self.dir / f"{step_name(s)}.state.safetensors").is_file():
                return p
        return None

    def agreed_latest(self, dist) -> Path | None:
        """The newest complete checkpoint, as rank 0 sees it, on every rank (one choice for all)."""
        latest = self.latest() if dist.main else None
        name = dist_mod.decide(latest.name if latest else None, dist)
        return self.dir / name if name else None

    def load(self, path: Path, device: torch.device | str = "cpu"
             ) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
        """(model config, weights, state tensors, state dict) of a checkpoint. Only safetensors are read."""
        cfg, weights, _ = load_weights(path, device=str(device))
        state_path = path.with_name(path.name[: -len(".safetensors")] + ".state.safetensors")
        if not state_path.is_file():
            raise UserError(f"{path}: no training state beside it ({state_path.name}); cannot resume from it")
        try:
            tensors: dict[str, torch.Tensor] = {}
            with safe_open(str(state_path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                for k in f.keys():
                    tensors[k] = f.get_tensor(k)
            if meta.get("format") != STATE_FORMAT:
                raise ValueError("not a training state file of this tool")
            state = parse_json(meta["state"])
        except (SafetensorError, OSError, ValueError, KeyError) as exc:
            raise UserError(f"{state_path}: corrupt training state ({one_line(exc)})") from None
        return cfg, weights, tensors, state


# ---- a trainer's state in and out of its checkpoints -------------------------------------------------------

def trainer_state(t) -> dict:
    """The schedule a checkpoint carries beside the weights and optimizers: what a resume needs to repeat
    the uninterrupted run, and where in the data it was."""
    return {"step": t.step, "epoch": t.step / t.steps_per_epoch, "lr_scale": t.lr_scale,
            "rollbacks": t.rollbacks, "skips": t.skips, "last_bce": list(t.last_bce),
            "guard": t.guard.state(), "total_steps": t.total, "seed": t.cfg.seed,
            "first_eval": t.first_eval,
            "data_position": {"epoch": t.step // t.steps_per_epoch, "batch": t.step % t.steps_per_epoch}}


def save_trainer(t, ev: dict | None = None) -> Path | None:
    """A checkpoint of trainer `t` at its step, scored by its evaluation `ev` (made now when not given),
    written by rank 0 while the others wait. -> its weights file (None on the other ranks)."""
    path = None
    if t.dist.main:
        ev = ev or t.evaluate()
        side = {"epoch": t.step / t.steps_per_epoch, "noise": t.noise,
                "losses": {k: v for k, v in t.last_losses.items() if math.isfinite(v)},
                "eval": {k: ev[k] for k in EVAL_KEYS},
                "lr_scale": t.lr_scale, "rollbacks": t.rollbacks, "time": time.time()}
        try:
            path = t.ckpt.save(t.step, t.model_cfg, {**t.model.state_dict(), **ev["averaged"]},
                               t.opts, trainer_state(t), side, score=-ev["psnr"])
        except OSError as exc:
            raise UserError(f"could not write checkpoint at step {t.step} in {t.ckpt.dir} "
                            f"({exc.strerror or exc}); the previous checkpoint is intact") from None
    dist_mod.barrier(t.dist)
    t.saved_step = t.step
    return path


def resume_trainer(t) -> None:
    """Trainer `t` where its newest checkpoint left it, schedule and random state included; a checkpoint of
    another model (its ModelConfig differs) is refused."""
    path = t.ckpt.agreed_latest(t.dist)
    if path is None:
        raise UserError(f"{t.out}: no checkpoint to resume from")
    cfg, _, _, _ = t.ckpt.load(path)
    mine = t.model_cfg.to_dict()
    theirs = cfg.to_dict()
    diff = [k for k in mine if k != "extra" and mine[k] != theirs.get(k)]
    if diff:
        desc = ", ".join(f"{k}: checkpoint {theirs.get(k)} vs now {mine[k]}" for k in diff[:3])
        raise UserError(f"--resume: checkpoint {path.name} is incompatible ({desc})")
    restore_trainer(t, path, schedule=True)


def restore_trainer(t, path: Path, schedule: bool) -> dict:
    """Checkpoint `path`'s weights (averaged ones too), optimizers and step into trainer `t`; with `schedule`
    also its random state, lr scale, rollbacks, balance skips and guard (a resume; a rollback keeps its
    own). -> the checkpoint's state dict."""
    _, weights, tensors, state = t.ckpt.load(path, device=t.device)
    averaged = {k: v for k, v in weights.items() if k.startswith(WeightAverage.PREFIX)}
    weights = {k: v for k, v in weights.items() if not k.startswith(WeightAverage.PREFIX)}
    if t.ema is not None:
        t.ema.load(averaged, t.nets)
    try:
        t.model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not fit this model ({one_line(exc)})") from None
    for k, opt in t.opts.items():
        optimizer_from_flat(k, opt, tensors, state["optimizers"][k], t.device)
    t.step = int(state["step"])
    t.saved_step = t.step
    t.last_bce = tuple(state["last_bce"])
    if schedule:
        restore_rng(tensors)
        t.lr_scale = float(state["lr_scale"])
        t.rollbacks = int(state["rollbacks"])
        t.skips = dict(state["skips"])
        t.guard.load_state(state["guard"])
        t.first_eval = state.get("first_eval")
    return state


def roll_back_trainer(t, reason: str) -> None:
    """Trainer `t` back at its last good checkpoint after a collapse (`reason`), its lr lowered; past
    --max-rollbacks, or with no checkpoint yet, the run stops with one line instead."""
    t.rollbacks += 1
    at = t.step
    path = t.ckpt.agreed_latest(t.dist)
    if t.rollbacks > t.cfg.max_rollbacks:  # stop: the last good checkpoint stays as it is
        kept = f"; the last good checkpoint {path.name} is kept" if path else ""
        raise UserError(f"training stopped: it collapsed {t.rollbacks} times, more than the "
                        f"{t.cfg.max_rollbacks} rollbacks allowed (last: {reason} at step {at}){kept}; "
                        "continue it with --resume and a lower --lr or a smaller --noise-end")
    if path is None:
        raise UserError(f"training collapsed ({reason}) before any checkpoint was written")
    rollbacks, current = t.rollbacks, t.lr_scale
    state = restore_trainer(t, path, schedule=False)
    # the lr that was good at the checkpoint (or the current one, if already lower), times the factor
    t.rollbacks = rollbacks
    t.lr_scale = min(current, float(state["lr_scale"])) * t.cfg.rollback_lr_factor
    t.guard.reset_after_rollback()
    t.order.forget_read_ahead()
    event = {"event": "rollback", "reason": reason, "at_step": at, "to_step": t.step,
             "checkpoint": path.name, "lr_scale": t.lr_scale, "rollbacks": t.rollbacks}
    t.events.append(event)
    if t.dist.main:
        t.log.line(f"[yellow]collapse at step {at}: {reason}; rolled back to {path.name}, "
                   f"lr x{t.lr_scale:g}[/]")
        t.log.event(event, at, t.rollbacks)
