"""Data-parallel helpers for `torchrun --nproc-per-node N autoencoded train ...`.

The loop computes each network's gradients with torch.autograd.grad (three losses, three optimizers),
which DistributedDataParallel's backward hooks do not see, so gradients are averaged here with one
all_reduce per network instead. BatchNorm statistics stay per process (ghost batch norm over each
process's share of the batch), exactly as a single process with the same number of micro-batches
(--accum) computes them: that is what the 2-process test compares against.

Every decision that changes which collectives a process enters next is made once and shared, never
taken by each process from its own view of the disk or its own signals: rank 0 decides what to resume
from (`decide`), and a stop request on any rank stops every rank at the same step (`any_rank`).
A process that decided alone could skip a barrier the others wait in, and the job would hang.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from autoencoded.errors import UserError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init(device_kind: str) -> Dist:
    """Join the process group torchrun set up (env WORLD_SIZE > 1); otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_kind not in ("cuda", "cpu"):
        raise UserError(f"several processes train on CUDA GPUs (NCCL) or CPUs (gloo), not on {device_kind}")
    if not dist.is_initialized():
        if device_kind == "cuda":
            torch.cuda.set_device(local)
            # the group is bound to this process's GPU: barrier() takes it from here (without it, torch 2.13's
            # barrier guesses the current device and warns on rank 0), and NCCL connects now, so a broken
            # setup fails at the start rather than at the first collective
            dist.init_process_group(backend="nccl", device_id=torch.device("cuda", local))
        else:
            dist.init_process_group(backend="gloo")
    return Dist(rank=rank, world=world, local_rank=local)


def average_grads(grads: list[torch.Tensor | None], d: Dist) -> None:
    """In place: each gradient becomes the mean over processes (flattened into one all_reduce)."""
    if not d.active:
        return
    present = [g for g in grads if g is not None]
    if not present:
        return
    flat = torch.cat([g.reshape(-1) for g in present])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(d.world)
    offset = 0
    for g in present:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def average_values(values: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.active:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values.div_(d.world)
    return values


def broadcast_flag(flag: bool, d: Dist, device: torch.device) -> bool:
    if not d.active:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def decide(value, d: Dist):
    """Rank 0's `value` on every rank (any picklable object; the other ranks' values are ignored)."""
    if not d.active:
        return value
    box = [value if d.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool, d: Dist, device: torch.device) -> bool:
    """True on every rank when `flag` is true on at least one (a stop request seen by any process)."""
    if not d.active:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def shutdown(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()
