"""Where a training run reports, on rank 0 only: RUN/metrics.jsonl (a record per step, evaluation and
event), TensorBoard scalars under RUN/logs, and the console's lines."""

from __future__ import annotations

import json
from pathlib import Path

NETS = ("encoder", "decoder", "discriminator")


class RunLog:
    def __init__(self, out: Path, console, main: bool) -> None:
        self.out = out
        self.console = console
        self.main = main
        self.writer = None
        self.metrics = None

    def open(self) -> None:
        if not self.main or self.writer is not None:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.out / "logs"))
        self.metrics = open(self.out / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def line(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)

    def _record(self, record: dict, flush: bool = True) -> None:
        if self.metrics:
            self.metrics.write(json.dumps(record) + "\n")
            if flush:
                self.metrics.flush()

    def step(self, step: int, losses: dict, names: list[str], sps: float, lrs: dict[str, float], skips: dict,
             rollbacks: int) -> None:
        """A step's losses (the named terms `names` as loss/NAME), learning rates, balance and speed."""
        if not self.main:
            return
        self._record({"step": step, **losses, "samples_per_s": sps}, flush=False)
        w = self.writer
        if w is None:
            return
        for k in names:
            w.add_scalar(f"loss/{k}", losses[k], step)
        w.add_scalar("noise", losses["noise"], step)
        for k in NETS:
            w.add_scalar(f"lr/{k}", lrs[k], step)
            if f"grad_norm_{k}" in losses:
                w.add_scalar(f"grad_norm/{k}", losses[f"grad_norm_{k}"], step)
        w.add_scalar("balance/skip_dis", skips["dis"], step)
        w.add_scalar("balance/skip_dec_gan", skips["dec_gan"], step)
        w.add_scalar("guard/rollbacks", rollbacks, step)
        w.add_scalar("speed/samples_per_s", sps, step)

    def evaluation(self, step: int, values: dict) -> None:
        if self.writer:
            for k, v in values.items():
                self.writer.add_scalar(f"eval/{k}", v, step)
        self._record({"step": step, "eval": values})

    def event(self, event: dict, at: int, rollbacks: int) -> None:
        """A guard event (a rollback): in metrics.jsonl and as TensorBoard text."""
        self._record(event)
        if self.writer:
            self.writer.add_scalar("guard/rollbacks", rollbacks, at)
            self.writer.add_text("guard/events", json.dumps(event), at)

    def flush(self) -> None:
        if self.writer:
            self.writer.flush()

    def close(self) -> None:
        if self.writer:
            self.writer.flush()
            self.writer.close()
            self.writer = None
        if self.metrics:
            self.metrics.close()
            self.metrics = None
