"""A torchrun worker for tests/test_train_ddp.py: the real `autoencoded train`, with one rank made late or
made to see a signal that the others do not. Nothing else is changed.

    AE_LATE_RANK=1 AE_LATE_S=4     that rank enters the training run 4 s after the others (a slow host or
                                   disk), after rank 0 may already have written the first checkpoint;
    AE_SIGINT_RANK=1 AE_SIGINT_STEP=2
                                   that rank alone receives a real SIGINT once it has finished step 2.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from autoencoded.cli import main
from autoencoded.training.loop import Trainer

RANK = int(os.environ.get("RANK", "0"))
_run = Trainer.run


def run(self, on_step=None):
    if RANK == int(os.environ.get("AE_LATE_RANK", "-1")):
        time.sleep(float(os.environ.get("AE_LATE_S", "4")))

    def hook(trainer, losses):
        if RANK == int(os.environ.get("AE_SIGINT_RANK", "-1")) and trainer.step == int(os.environ["AE_SIGINT_STEP"]):
            signal.raise_signal(signal.SIGINT)
        if on_step is not None:
            on_step(trainer, losses)

    return _run(self, on_step=hook)


Trainer.run = run

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
