"""Run examples/train_acn.py and kill -9 the process itself at one chosen point, for the resume tests.

    python tests/kill_probe.py POINT EPOCH <train_acn.py arguments>

POINT is where SIGKILL arrives while the run works on epoch EPOCH (1-based):
    training_step     at the second training batch of the epoch
    checkpoint_write  during the checkpoint write, after the weights and before the optimiser state
    before_rename     with the checkpoint complete in its temporary folder, before it is renamed into place
    best_model_write  at the EPOCH-th save of the best weights, written to their temporary folder, before the rename
"""

import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from acn_mner import checkpoint as acn_checkpoint
from acn_mner import train as train_acn
from modeling_acn import AcnForTokenClassification

POINTS = ("training_step", "checkpoint_write", "before_rename", "best_model_write")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str, epoch: int) -> None:
    """Patch the function that runs at `point` so that it kills the process in epoch `epoch`."""
    if point == "training_step":
        forward, calls = AcnForTokenClassification.forward, []

        def dying_forward(self, *args, **kwargs):
            if self.training:
                calls.append(1)
                batches_per_epoch = int(os.environ["ACN_BATCHES_PER_EPOCH"])
                if len(calls) == (epoch - 1) * batches_per_epoch + 2:
                    die()
            return forward(self, *args, **kwargs)

        AcnForTokenClassification.forward = dying_forward
    elif point == "checkpoint_write":
        save_model = acn_checkpoint.save_model

        def dying_save_model(model, filename):
            save_model(model, filename)
            if Path(filename).parent.name == f".epoch_{epoch}.tmp":
                die()

        acn_checkpoint.save_model = dying_save_model
    elif point == "before_rename":
        replace_folder = acn_checkpoint.replace_folder

        def dying_replace_folder(source, target):
            if target.name == f"epoch_{epoch}":
                die()
            replace_folder(source, target)

        acn_checkpoint.replace_folder = dying_replace_folder
    elif point == "best_model_write":
        atomic_folder, saves = train_acn.atomic_folder, []

        @contextmanager
        def dying_atomic_folder(folder):
            with atomic_folder(folder) as temporary:
                yield temporary
                saves.append(1)
                if len(saves) == epoch:  # the best weights are saved after every improving epoch
                    die()

        train_acn.atomic_folder = dying_atomic_folder
    else:
        raise ValueError(f"POINT must be one of {POINTS}, got {point!r}")


if __name__ == "__main__":
    arm(sys.argv[1], int(sys.argv[2]))
    train_acn.main(sys.argv[3:])
