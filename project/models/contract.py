"""The contract between a `SupervisedModule` subclass and the CLI (README: "Add your model, your
data"), checked so that a slip in a user's class is one line naming the fix, not a traceback from
deep inside Lightning: the checks on `__init__` run before the model is built, the others when
the model first meets the data.

A module that does not subclass `SupervisedModule` is not held to it: it trains its own way.
"""

import importlib
import inspect
import typing
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from project.errors import UserError

CONTRACT = 'README: "Add your model, your data", the contract'
# the hint each linked argument needs: without it jsonargparse hands the model the config's
# settings (a Namespace) instead of something it can call
CALLABLES = {
    "optimizer": ("OptimizerCallable", OptimizerCallable),
    "lr_scheduler": ("LRSchedulerCallable", LRSchedulerCallable),
}


def hinted(hint: Any, name: str, wanted: Any) -> bool:
    """Whether `hint` is `wanted`, or a Union (`wanted | None`) that holds it."""
    if isinstance(hint, str):  # `from __future__ import annotations`, unresolved
        return name in hint
    return hint == wanted or wanted in typing.get_args(hint)


def check_init_of(class_path: str, data_class_path: str | None) -> None:
    """`check_init` for the classes a config names (nothing when one does not import: the
    parser reports that)."""
    cls, data = imported(class_path), imported(data_class_path or "")
    if cls is None:
        return
    facts = {f: getattr(data, f) for f in ("num_outputs", "task", "input_size") if hasattr(data, f)}
    check_init(cls, facts)


def imported(class_path: str) -> type | None:
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def check_init(cls: type, facts: dict[str, Any]) -> None:
    """A SupervisedModule subclass's `__init__` takes the data's `num_outputs` (and `task`, when
    the data is not classification: the default would train the wrong loss), and declares
    `optimizer` / `lr_scheduler` with the hints that make the CLI build them."""
    from project.models.supervised import SupervisedModule  # this module is imported by it

    if not (isinstance(cls, type) and issubclass(cls, SupervisedModule)):
        return
    name = f"{cls.__module__}.{cls.__qualname__}"
    parameters = inspect.signature(cls.__init__).parameters
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 (a hint that does not resolve: read the written one)
        hints = {k: p.annotation for k, p in parameters.items()}
    for argument, (hint, wanted) in CALLABLES.items():
        if argument in parameters and not hinted(hints.get(argument), hint, wanted):
            raise UserError(
                f"model {name}: `{argument}` has no type hint {hint}, so it receives the "
                f"config's settings instead of something to call; declare `{argument}: {hint} "
                f"| None = None` ({CONTRACT})"
            )
    needed = ["num_outputs"] + (["task"] if facts.get("task", "classification") != "classification"
                                else [])  # fmt: skip
    missing = [f for f in needed if f not in parameters and f in facts]
    if missing and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        raise UserError(
            f"model {name}: __init__ does not take {' and '.join(missing)}, which the data "
            f"gives; add `{missing[0]}` to __init__ and pass it to SupervisedModule ({CONTRACT})"
        )


def check_net(model: torch.nn.Module) -> None:
    if not isinstance(getattr(model, "net", None), torch.nn.Module):
        raise UserError(
            f"model {type(model).__module__}.{type(model).__qualname__} sets no `self.net`, the "
            f"nn.Module that SupervisedModule trains; build it in __init__ ({CONTRACT})"
        )


def check_outputs(model: Any, outputs: torch.Tensor, batch_size: int) -> None:
    """`forward` returns one row of `num_outputs` values per sample (a regression with one
    output may return one value per sample)."""
    shape = tuple(outputs.shape)
    per_sample = outputs[0].numel() if len(outputs) else model.num_outputs
    if shape[:1] == (batch_size,) and per_sample == model.num_outputs:
        return
    raise UserError(
        f"model {type(model).__module__}.{type(model).__qualname__}: forward returned shape "
        f"{shape} for a batch of {batch_size}; with num_outputs={model.num_outputs} it must "
        f"return ({batch_size}, {model.num_outputs}) ({CONTRACT})"
    )


def check_outputs_once(model: Any, outputs: torch.Tensor, batch_size: int, stage: str) -> None:
    """`check_outputs` at a stage's first step: a check costs about as much as a `self.log`."""
    if stage not in model.outputs_checked:
        check_outputs(model, outputs, batch_size)
        model.outputs_checked.add(stage)
