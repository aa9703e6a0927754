"""`python -m project` that pauses at one place, so a test can strike it with a real fault:
`python -m tests.fault_point PLACE SIGNALS -- fit -c ...`.

Just before the run writes PLACE, the process creates `SIGNALS/paused` and waits for
`SIGNALS/go`; the test then fills the disk, remounts it read-only or takes the folder's write
permission away, and creates `go`. Only the moment is chosen here: the error that follows is the
kernel's, through the project's own writers.
"""

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from project.callbacks import results
from project.callbacks.checkpoints import LastCheckpoint
from project.callbacks.results import RunResults
from project.checkpoints import AtomicCheckpointIO
from project.cli import main
from project.loggers import TensorBoardLogger

# the first log of training curves from this step on: mid-epoch, where no checkpoint is due
TENSORBOARD_STEP = 6


def pause(signals: Path) -> None:
    (signals / "paused").touch()
    deadline = time.monotonic() + 120
    while not (signals / "go").exists():
        if time.monotonic() > deadline:
            sys.exit("fault_point: no `go` from the test within 120 s")
        time.sleep(0.02)


def pausing_once(method: Callable, signals: Path, when: Callable[..., bool]) -> Callable:
    """`method`, pausing before the first call for which `when(*args)` holds."""
    done = False

    def paused(*args: Any, **kwargs: Any) -> Any:
        nonlocal done
        if not done and when(*args, **kwargs):
            done = True
            pause(signals)
        return method(*args, **kwargs)

    return paused


def always(*args: Any, **kwargs: Any) -> bool:
    return True


PLACES: dict[str, tuple[object, str, Callable[..., bool]]] = {  # a class or a module
    # the run's first checkpoint: the end of epoch 0 (the best and last.ckpt)
    "first_checkpoint": (AtomicCheckpointIO, "save_checkpoint", always),
    # a periodic last.ckpt (`--last_checkpoint.every_n_train_steps`), over the epoch's one
    "periodic_last_ckpt": (LastCheckpoint, "write", always),
    # TensorBoard's events: the training curves logged mid-epoch
    "tensorboard_events": (
        TensorBoardLogger,
        "log_metrics",
        lambda self, metrics, step=None: step is not None and step >= TENSORBOARD_STEP,
    ),
    "metrics_json": (RunResults, "write_metrics", always),
    "predictions_csv": (results, "write_predictions_csv", always),
}


if __name__ == "__main__":
    place, signals, separator, *args = sys.argv[1:]
    assert separator == "--", "usage: python -m tests.fault_point PLACE SIGNALS -- ARGS"
    owner, name, when = PLACES[place]
    method = owner.__dict__[name]
    wrapped = pausing_once(getattr(method, "__func__", method), Path(signals), when)
    setattr(owner, name, staticmethod(wrapped) if isinstance(method, staticmethod) else wrapped)
    sys.argv = [sys.argv[0], *args]  # as `python -m project ARGS` sees them
    main()
