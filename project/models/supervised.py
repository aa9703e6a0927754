"""What every model of this template shares: loss, metrics, logging and the optimizer."""

import copy
import math
from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from lightning import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import (
    MaxMetric,
    MeanAbsoluteError,
    MeanSquaredError,
    Metric,
    MetricCollection,
    MinMetric,
)
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from project.errors import UserError
from project.figures import confusion_image
from project.task import Task


def task_metrics(task: Task, num_outputs: int) -> MetricCollection:
    if task == "classification":
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(num_outputs, average="micro"),
                "f1_weighted": MulticlassF1Score(num_outputs, average="weighted"),
                "f1_macro": MulticlassF1Score(num_outputs, average="macro"),
            }
        )
    return MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})


def check_loss_options(
    task: Task, num_outputs: int, label_smoothing: float, class_weights: object
) -> None:
    if not 0.0 <= label_smoothing < 1.0:
        raise UserError(f"model.label_smoothing must be in [0, 1), got {label_smoothing}")
    if task == "regression" and (label_smoothing or class_weights is not None):
        raise UserError("model.label_smoothing and model.class_weights are for classification")
    if isinstance(class_weights, list) and (
        len(class_weights) != num_outputs or min(class_weights) <= 0
    ):
        raise UserError(
            f"model.class_weights must be {num_outputs} positive numbers (one per class) or "
            f"balanced, got {class_weights}"
        )


def balanced_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """scikit-learn's "balanced" weights: samples / (classes × samples of the class), so each
    class weighs as much in the loss as if the classes were equally common."""
    counts = torch.bincount(labels.long().flatten(), minlength=num_classes).float()
    if (counts == 0).any():
        missing = (counts == 0).nonzero().flatten().tolist()
        raise UserError(f"model.class_weights balanced: no training sample of class {missing}")
    return len(labels) / (num_classes * counts)


class LossMean(Metric):
    """An epoch's loss from its batches' mean losses: Σ weight·loss / Σ weight, where a batch's
    weight is what its mean was taken over (its samples, or their class weights). Under DDP the
    ranks' sums are added, so the value equals one process's over the same samples, whatever
    the batch sizes and however unevenly the ranks share them; `self.log(sync_dist=True)`
    averages the ranks' means instead. (torchmetrics' `MeanMetric` would do, but with
    `nan_strategy="disable"`, needed so a NaN loss reaches StopOnNonFiniteLoss without a host
    sync per step, torchmetrics 1.9 ignores its weights.)"""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        # float32: float64 has no kernels on Apple's MPS devices
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("weight", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, loss: torch.Tensor, weight: torch.Tensor | int) -> None:
        self.total += loss.float() * weight
        self.weight += weight

    def compute(self) -> torch.Tensor:
        return self.total / self.weight


class SupervisedModule(LightningModule):
    """Trains `self.net` on `(inputs, targets)` or `(inputs, targets, lengths)` batches.

    Subclasses build `self.net` and may override `forward` and `parameter_groups`.
    The optimizer and scheduler come from the config's top-level `optimizer:` and
    `lr_scheduler:` keys, which the CLI links here so that models can build parameter groups.
    """

    net: nn.Module

    def __init__(
        self,
        num_outputs: int,
        task: Task = "classification",
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        label_smoothing: float = 0.0,
        class_weights: list[float] | Literal["balanced"] | None = None,
        decay_norms_and_biases: bool = True,
    ) -> None:
        super().__init__()
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
        self.task = task
        self.num_outputs = num_outputs
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        check_loss_options(task, num_outputs, label_smoothing, class_weights)
        self.label_smoothing = label_smoothing
        self.decay_norms_and_biases = decay_norms_and_biases
        self.balanced = class_weights == "balanced"
        if class_weights is not None:
            # a buffer, moved to the device with the model. "balanced" weights are computed from
            # the training labels when fit starts (`setup`) and kept in checkpoints, so an
            # evaluation uses the ones the run trained with; given ones are in the config
            given = [1.0] * num_outputs if self.balanced else class_weights
            weights = torch.tensor(given, dtype=torch.float32)
            self.register_buffer("class_weight", weights, persistent=self.balanced)
        else:
            self.class_weight = None
        metrics = task_metrics(task, num_outputs)
        self.metric_names = ["loss", *metrics.keys()]
        # the best-so-far value of the headline metric is logged too, as e.g. `val/acc_best`
        self.headline = "acc" if task == "classification" else "mse"
        # one copy per stage so train numbers never leak into val ones; the keys end in "_"
        # because nn.Module already has an attribute called `train`. Training updates the
        # headline only: each metric's update costs ~0.05 ms, which a small model's step feels.
        training = MetricCollection({self.headline: metrics[self.headline].clone()})
        self.stage_metrics = nn.ModuleDict(
            {
                "train_": training.clone(prefix="train/"),
                "val_": metrics.clone(prefix="val/"),
                "test_": metrics.clone(prefix="test/"),
            }
        )
        # the epoch's loss as a metric too, exact over samples and ranks (see `LossMean`)
        self.stage_losses = nn.ModuleDict({s: LossMean() for s in ("train_", "val_", "test_")})
        self.best_val = MaxMetric() if task == "classification" else MinMetric()
        # drawn into TensorBoard at the end of each validation and test (classification only)
        self.confusion = nn.ModuleDict(
            {s: MulticlassConfusionMatrix(num_outputs) for s in ("val_", "test_")}
            if task == "classification"
            else {}
        )

    def __deepcopy__(self, memo: dict) -> "SupervisedModule":
        """A copy (Lightning's EMA callback makes one) shares the Trainer and the optimizer and
        scheduler callables (jsonargparse's hold the CLI, and through it the Trainer) instead
        of copying them: under DDP the Trainer's strategy holds thread locks, which cannot be
        copied ("cannot pickle '_thread.lock' object" in Lightning 2.6.6)."""
        shared = [self.optimizer, self.lr_scheduler]
        try:
            shared.append(self.trainer)
        except RuntimeError:  # not attached to a Trainer
            pass
        for value in shared:
            memo[id(value)] = value
        copied = self.__class__.__new__(self.__class__)
        memo[id(self)] = copied
        copied.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return copied

    def setup(self, stage: str) -> None:
        # a resumed run then loads the weights it started with from its checkpoint
        if stage == "fit" and self.balanced:
            labels = self.trainer.datamodule.train_labels()
            self.class_weight.copy_(balanced_weights(labels, self.num_outputs))

    def mix(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch as the loss sees it: unchanged here; an image model may blend its
        images and their labels (MixUp, CutMix), returning class probabilities as targets."""
        return inputs, targets

    def batch_weight(self, targets: torch.Tensor) -> torch.Tensor | int:
        """What the batch's mean loss averaged over: its samples, or their class weights.
        (torch divides a loss against class probabilities, e.g. mixed ones, by the samples
        whatever the class weights.)"""
        if self.class_weight is None or targets.is_floating_point():
            return len(targets)
        return self.class_weight[targets].sum()

    def loss_fn(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return F.cross_entropy(
                outputs, targets, weight=self.class_weight, label_smoothing=self.label_smoothing
            )
        return F.mse_loss(outputs, targets)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # under "16-true", "bf16-true" or "64-true" the weights change dtype but the data does
        # not; mixed precision keeps float32 weights, so this is then a no-op
        inputs = inputs.to(next(self.net.parameters()).dtype)
        return self.net(inputs) if lengths is None else self.net(inputs, lengths)

    def shared_step(self, batch: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        inputs, targets, *lengths = batch
        # what the loss compares with: the labels, or a training batch's mixed ones (`mix`);
        # the metrics always compare with the labels
        loss_targets = targets
        if stage == "train":
            inputs, loss_targets = self.mix(inputs, targets)
        outputs = self(inputs, *lengths)
        if self.task == "regression":
            outputs = outputs.reshape(targets.shape)
            targets = loss_targets = targets.to(outputs.dtype)
        loss = self.loss_fn(outputs, loss_targets)
        # the metrics are logged once, at the epoch's end (`log_epoch_metrics`): each `self.log`
        # call costs Lightning ~0.2 ms, as much as a small model's whole step
        self.stage_metrics[f"{stage}_"].update(outputs.detach(), targets)
        self.stage_losses[f"{stage}_"].update(loss.detach(), self.batch_weight(loss_targets))
        if stage == "train" and self.step_is_written():
            # the step's loss, this rank's batch alone (no collective per step), logged only on
            # the steps Lightning writes: a `self.log` call costs ~0.4 ms (docs/benchmarks.md)
            self.log("train/loss_step", loss, prog_bar=True)
        if f"{stage}_" in self.confusion:
            self.confusion[f"{stage}_"].update(outputs.detach(), targets)
        return loss

    def step_is_written(self) -> bool:
        """Whether Lightning writes this training step's logged values to the loggers: every
        `trainer.log_every_n_steps` optimizer steps, the last step of a stopping run, and every
        step of a `fast_dev_run` (its logger connector's rule, with the public step counter;
        tests/test_training.py fails if the two ever disagree)."""
        try:
            trainer = self.trainer
        except RuntimeError:  # a step called by hand: nothing writes it
            return False
        every = trainer.log_every_n_steps
        if trainer.fast_dev_run or trainer.should_stop:
            return True
        return every > 0 and (self.global_step + 1) % every == 0

    def log_epoch_metrics(self, stage: str) -> None:
        # Metric objects: Lightning computes them (synced across ranks) and resets them. The
        # evaluation loaders give each sample to one rank exactly once (data/batches.py), so
        # the synced values are those of one process
        self.log_dict(self.stage_metrics[f"{stage}_"], prog_bar=stage != "train")
        name = "train/loss_epoch" if stage == "train" else f"{stage}/loss"
        self.log(name, self.stage_losses[f"{stage}_"], prog_bar=stage != "train")

    def draw_confusion(self, stage: str) -> None:
        if f"{stage}_" not in self.confusion:
            return
        matrix = self.confusion[f"{stage}_"]
        # synced across ranks by torchmetrics
        image = confusion_image(matrix.compute(), self.class_names())
        matrix.reset()
        self.log_image(f"{stage}/confusion_matrix", image)

    def class_names(self) -> list[str]:
        """The data's names of its classes (CIFAR-10's "cat", an image folder's), when it has
        them as `classes`, else the class numbers."""
        names = getattr(self.trainer.datamodule, "classes", None)
        if names is None or len(names) != self.num_outputs:
            names = range(self.num_outputs)
        return [str(name) for name in names]

    def log_image(self, tag: str, image: torch.Tensor) -> None:
        """Draws a `(3, H, W)` image into TensorBoard at this step (rank 0; other loggers: no)."""
        experiment = getattr(self.logger, "experiment", None)
        if self.trainer.is_global_zero and hasattr(experiment, "add_image"):
            at_step = getattr(self.logger, "at_step", None)  # project.loggers.TensorBoardLogger
            step = at_step(self.global_step) if at_step else self.global_step
            experiment.add_image(tag, image, step)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        inputs, _, *lengths = batch
        outputs = self(inputs, *lengths)
        return outputs.softmax(-1) if self.task == "classification" else outputs

    def on_train_epoch_end(self) -> None:
        self.log_epoch_metrics("train")

    def on_test_epoch_end(self) -> None:
        self.log_epoch_metrics("test")
        self.draw_confusion("test")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            val = [self.stage_metrics["val_"], self.stage_losses["val_"]]
            for metric in [*self.confusion.values(), *val]:
                metric.reset()
            return
        self.log_epoch_metrics("val")
        self.draw_confusion("val")
        # `compute()` on the epoch metric is already synced across ranks by torchmetrics
        self.best_val.update(self.stage_metrics["val_"][self.headline].compute())
        self.log(f"val/{self.headline}_best", self.best_val.compute(), prog_bar=True)

    # the best-so-far value is a metric state, not a weight, so it is not in the state_dict:
    # carried beside it, a resumed run's `val/acc_best` continues instead of starting over
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        (best,) = self.best_val.metric_state.values()
        checkpoint["best_val"] = best.detach().cpu().clone()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        try:  # only a resumed fit: `validate` of a checkpoint reports that checkpoint alone
            fitting = self.trainer.state.fn == "fit"
        except RuntimeError:  # `load_from_checkpoint`, no trainer
            fitting = False
        best = checkpoint.get("best_val")
        if fitting and best is not None and torch.isfinite(best):  # ±inf: no validation yet
            self.best_val.reset()
            self.best_val.update(best.to(self.best_val.device))

    def parameter_groups(self) -> Iterable[dict] | Iterable[nn.Parameter]:
        """What the optimizer trains: parameters, or groups (a group may set `lr_factor`)."""
        return [p for p in self.parameters() if p.requires_grad]

    def decay_groups(self, groups: list[dict]) -> list[dict]:
        """The optimizer's groups as `decay_norms_and_biases` wants them (also for groups added
        during training, such as an unfrozen backbone's)."""
        return groups if self.decay_norms_and_biases else without_decay_on_norms_and_biases(groups)

    def on_train_start(self) -> None:
        # A schedule whose length is the run's (project.schedules) is sized here, not in
        # configure_optimizers: reading `estimated_stepping_batches` there builds the train loader
        # before Lightning restores its mid-epoch position, and a resumed run then silently
        # trains on other batches than the interrupted one (Lightning issue 20550, open in
        # 2.6.6). A restored schedule keeps its size.
        trainer = self.trainer
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if getattr(scheduler, "total_steps", 0) is None:  # WarmupCosineLR, not yet sized
                total = trainer.estimated_stepping_batches  # optimizer steps, after accumulation
                per_epoch = math.ceil(
                    trainer.num_training_batches / trainer.accumulate_grad_batches
                )
                smoke_test = bool(trainer.fast_dev_run)
                scheduler.size_to_run(int(total), per_epoch, smoke_test=smoke_test)

    def configure_optimizers(self):  # noqa: ANN201 (Lightning accepts several shapes)
        groups = list(self.parameter_groups())
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        groups = self.decay_groups(groups)
        # no `optimizer:` in the config: Adam with torch's default learning rate
        optimizer = (self.optimizer or torch.optim.Adam)(groups)
        # a group may train at a multiple of the configured rate (an image backbone at 0.1×);
        # applied before the scheduler, which takes each group's rate as its starting point
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * group.get("lr_factor", 1.0)
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)  # a project.schedules one is sized at train start
        # stepped per epoch unless the schedule says it counts optimizer steps
        config = {"scheduler": scheduler, "interval": getattr(scheduler, "interval", "epoch")}
        monitor = getattr(scheduler, "monitor", None)  # set by Lightning's ReduceLROnPlateau
        if monitor:
            config["monitor"] = monitor
        return {"optimizer": optimizer, "lr_scheduler": config}


def without_decay_on_norms_and_biases(groups: list[dict]) -> list[dict]:
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
