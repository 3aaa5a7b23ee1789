"""Checkpoints of a run, in the format fixed by training/weights.py. No pickle anywhere.

    RUN/checkpoints/step-NNNNNNN.safetensors        weights + ModelConfig (autoencoded.training.weights.save_weights)
    RUN/checkpoints/step-NNNNNNN.state.safetensors  optimizer tensors + RNG; JSON metadata "state" holds the
                                                    optimizer param groups, schedule, data position, guard
    RUN/checkpoints/step-NNNNNNN.json               sidecar: step, epoch, noise, losses, quality
    RUN/checkpoints/index.json                      {"latest": ..., "best": ...}, written last

Every file is written atomically (temp + fsync + rename), state first, index last: a crash or a full disk
at any moment leaves the previous checkpoint complete and named by index.json.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from autoencoded.documents import parse_json
from autoencoded.errors import UserError, one_line
from autoencoded.fileio import LOCK_INSIDE, Claim
from autoencoded.training.model import ModelConfig
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
