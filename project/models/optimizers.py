"""The optimizer and learning-rate schedule a model trains with: the config's callables applied to
the model's parameter groups, and the schedules sized from the run once it starts."""

import math
from collections.abc import Iterable

import torch
from lightning import Trainer
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn


def as_groups(groups: Iterable[dict] | Iterable[nn.Parameter]) -> list[dict]:
    """A model's `parameter_groups()` as the optimizer's groups (plain parameters: one group)."""
    groups = list(groups)
    return [{"params": groups}] if groups and not isinstance(groups[0], dict) else groups


def configure_optimizers(
    groups: list[dict],
    optimizer: OptimizerCallable | None,
    lr_scheduler: LRSchedulerCallable | None,
) -> torch.optim.Optimizer | dict:
    """What `LightningModule.configure_optimizers` returns for these groups (a group may set
    `lr_factor`) and the config's optimizer and scheduler."""
    # no `optimizer:` in the config: Adam with torch's default learning rate
    built = (optimizer or torch.optim.Adam)(groups)
    # a group may train at a multiple of the configured rate (an image backbone at 0.1×);
    # applied before the scheduler, which takes each group's rate as its starting point
    for group in built.param_groups:
        group["lr"] = group["lr"] * group.get("lr_factor", 1.0)
    if lr_scheduler is None:
        return built
    scheduler = lr_scheduler(built)  # a project.schedules one is sized at train start
    # stepped per epoch unless the schedule says it counts optimizer steps
    config = {"scheduler": scheduler, "interval": getattr(scheduler, "interval", "epoch")}
    monitor = getattr(scheduler, "monitor", None)  # set by Lightning's ReduceLROnPlateau
    if monitor:
        config["monitor"] = monitor
    return {"optimizer": built, "lr_scheduler": config}


def size_schedules(trainer: Trainer) -> None:
    """Sizes each schedule whose length is the run's (project.schedules) to this run.

    Called at train start, not in configure_optimizers: reading `estimated_stepping_batches` there
    builds the train loader before Lightning restores its mid-epoch position, and a resumed run
    then silently trains on other batches than the interrupted one (Lightning issue 20550, open
    in 2.6.6). A restored schedule keeps its size.
    """
    for config in trainer.lr_scheduler_configs:
        scheduler = config.scheduler
        if getattr(scheduler, "total_steps", 0) is None:  # WarmupCosineLR, not yet sized
            total = trainer.estimated_stepping_batches  # optimizer steps, after accumulation
            per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
            smoke_test = bool(trainer.fast_dev_run)
            scheduler.size_to_run(int(total), per_epoch, smoke_test=smoke_test)


def spare_norms_and_biases(groups: list[dict]) -> list[dict]:
    """Each group split in two: its matrices and kernels, and its vectors (biases and the
    scales and shifts of normalization layers) with `weight_decay: 0`, as in timm and
    torchvision's reference recipes: decaying those only pulls the layers' outputs to zero."""
    split = []
    for group in groups:
        params = list(group["params"])
        decayed = [p for p in params if p.ndim > 1]
        vectors = [p for p in params if p.ndim <= 1]
        name = group.get("name", "params")
        if decayed:
            split.append({**group, "params": decayed})
        if vectors:
            split.append(
                {**group, "params": vectors, "weight_decay": 0.0, "name": f"{name}/no_decay"}
            )
    return split
