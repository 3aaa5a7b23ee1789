"""Collapse guard: notices when training has gone wrong, so the loop can roll back and lower the lr.

Signals (any one is a collapse):
- a NaN or Inf in any loss;
- discriminator saturation: its loss below `sat_eps` for `sat_steps` steps in a row;
- a loss spike: the reconstruction or discriminator loss above `spike_factor` x its running median, judged
  from the second step on: while fewer than `spike_warmup` losses are known, against the largest of those
  first losses (a few early values make a noisy median; a learning rate that explodes the model shows at
  step 2, 1e12 against 0.5, and must not wait for a warm-up);
- loss of diversity: reconstructions of a fixed batch that differ among themselves far less than they
  did at their best (checked by the loop at each checkpoint, before saving);
- reconstructions worse than the untrained model's: a fixed batch's error above `error_ratio` x its error
  at step 0 (checked at each checkpoint). An untrained model paints a flat mid-grey; a learning rate that
  blew the weights up paints saturated noise, which varies from frame to frame (so diversity does not
  catch it) and whose losses are bounded (tanh output, SSIM), so they never spike 10x.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

WATCHED = ("rec", "dis")


class CollapseGuard:
    def __init__(self, sat_eps: float = 1e-3, sat_steps: int = 50, spike_factor: float = 10.0,
                 spike_window: int = 50, spike_warmup: int = 20, diversity_ratio: float = 0.2,
                 error_ratio: float = 2.0) -> None:
        self.sat_eps = sat_eps
        self.sat_steps = sat_steps
        self.spike_factor = spike_factor
        self.spike_window = spike_window
        self.spike_warmup = spike_warmup
        self.diversity_ratio = diversity_ratio
        self.error_ratio = error_ratio
        self.sat_count = 0
        self.history: dict[str, deque] = {k: deque(maxlen=spike_window) for k in WATCHED}
        self.best_diversity = 0.0

    def check_step(self, losses: dict[str, float]) -> str | None:
        """Feed one step's losses; return the reason if this step shows a collapse, else None."""
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if bad:
            return f"non-finite loss ({', '.join(sorted(bad))})"
        if losses.get("dis", 1.0) < self.sat_eps:
            self.sat_count += 1
            if self.sat_count >= self.sat_steps:
                return f"discriminator saturated (loss < {self.sat_eps:g} for {self.sat_count} steps)"
        else:
            self.sat_count = 0
        for k in WATCHED:
            if k not in losses:
                continue
            hist = self.history[k]
            if hist:
                early = len(hist) < self.spike_warmup
                ref = max(hist) if early else statistics.median(hist)
                if ref > 0 and losses[k] > self.spike_factor * ref:
                    what = "the first losses' largest" if early else "median"
                    return f"{k} loss spike ({losses[k]:.4g} > {self.spike_factor:g} x {what} {ref:.4g})"
            hist.append(float(losses[k]))
        return None

    def check_diversity(self, diversity: float) -> str | None:
        if not math.isfinite(diversity):
            return "non-finite reconstructions"
        if self.best_diversity > 0 and diversity < self.diversity_ratio * self.best_diversity:
            return (f"reconstruction diversity collapsed ({diversity:.4g} < {self.diversity_ratio:g} x best "
                    f"{self.best_diversity:.4g})")
        self.best_diversity = max(self.best_diversity, diversity)
        return None

    def check_error(self, recon_mse: float, untrained_mse: float | None) -> str | None:
        if untrained_mse and recon_mse > self.error_ratio * untrained_mse:
            return (f"reconstructions worse than the untrained model's (error {recon_mse:.4g} > {self.error_ratio:g} x "
                    f"{untrained_mse:.4g} at step 0)")
        return None

    def reset_after_rollback(self) -> None:
        self.sat_count = 0

    def state(self) -> dict:
        return {"sat_count": self.sat_count, "best_diversity": self.best_diversity,
                "history": {k: list(v) for k, v in self.history.items()}}

    def load_state(self, st: dict) -> None:
        self.sat_count = int(st.get("sat_count", 0))
        self.best_diversity = float(st.get("best_diversity", 0.0))
        for k in WATCHED:
            self.history[k] = deque(st.get("history", {}).get(k, []), maxlen=self.spike_window)
