"""The `trainer:` numbers Lightning takes without a word although they make no sense, checked
before any work starts, each reported as one line (`UserError`).

Left alone, `accumulate_grad_batches: -2` trains the model backwards (the loss is divided by -2),
as does `gradient_clip_val: -1` (the gradients are scaled by a negative factor);
`accumulate_grad_batches`, `val_check_interval` or `check_val_every_n_epoch` of 0 stop the run with
a ZeroDivisionError after its first batch; the others quietly do something else than asked.

Callbacks too: an `EMAWeightAveraging` decay of 1 never moves the average off the initial weights
(and one above 1 extrapolates away from training); an `EarlyStopping` patience below 0 stops the
run at its first validation.

What Lightning refuses itself (`max_epochs`, `max_steps`, `limit_*_batches`, `overfit_batches`,
`fast_dev_run`, `reload_dataloaders_every_n_epochs`) is its own one-line error already (see
`project.cli.user_error_in`), and `devices` is checked by `project.launch_checks`.
"""

from collections.abc import Callable, Mapping
from typing import Any

from jsonargparse import Namespace

from project.errors import UserError

# setting: (whether a number is valid, what it must be); None always means Lightning's default
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "accumulate_grad_batches": (lambda v: v >= 1, "an integer >= 1"),
    "min_epochs": (lambda v: v >= 0, ">= 0"),
    "min_steps": (lambda v: v >= 0, ">= 0"),
    "val_check_interval": (lambda v: v > 0, "> 0 (a fraction of an epoch, or a number of batches)"),
    "check_val_every_n_epoch": (
        lambda v: v >= 1,
        ">= 1, or null to validate every val_check_interval batches across epochs",
    ),
    "log_every_n_steps": (lambda v: v >= 0, ">= 0 (0: no training curve)"),
    "gradient_clip_val": (lambda v: v >= 0, ">= 0 (0 or null: no clipping)"),
    "num_sanity_val_steps": (lambda v: v >= -1, ">= -1 (-1: the whole validation set, 0: none)"),
    "num_nodes": (lambda v: v >= 1, ">= 1"),  # Lightning's own refusal is a traceback
}

# callback class name: {argument: (whether a number is valid, what it must be)}
CALLBACK_RANGES: dict[str, dict[str, tuple[Callable[[float], bool], str]]] = {
    "EMAWeightAveraging": {
        "decay": (lambda v: 0 < v < 1, "in (0, 1), e.g. 0.999"),
        "update_every_n_steps": (lambda v: v >= 1, ">= 1"),
    },
    "EarlyStopping": {"patience": (lambda v: v >= 0, ">= 0 (validations without improvement)")},
}


def check_settings(trainer: Namespace | Mapping[str, Any]) -> None:
    """Fails on the first `trainer:` number of `RANGES` outside its range."""
    for name, (valid, expected) in RANGES.items():
        value = trainer.get(name)
        # val_check_interval may also be a duration ("00:00:30:00"): Lightning parses those
        if isinstance(value, int | float) and not isinstance(value, bool) and not valid(value):
            raise UserError(f"trainer.{name} must be {expected}, got {value}")
    for callback in trainer.get("callbacks") or []:
        name = str(getattr(callback, "class_path", "")).rsplit(".", 1)[-1]
        init_args = getattr(callback, "init_args", None) or {}
        for argument, (valid, expected) in CALLBACK_RANGES.get(name, {}).items():
            value = init_args.get(argument)
            if isinstance(value, int | float) and not isinstance(value, bool) and not valid(value):
                raise UserError(f"{name} {argument} must be {expected}, got {value}")
