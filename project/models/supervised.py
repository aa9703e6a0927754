"""What every model of this template shares: loss, metrics, logging and the optimizer."""

import copy
from collections.abc import Iterable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MaxMetric, MetricCollection, MinMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from project.loggers import step_is_written
from project.models import contract, optimizers
from project.models.metrics import LossMean, balanced_weights, check_loss_options, task_metrics
from project.task import Task

# training steps given to the training metrics at once (memory: this many batches' outputs)
APPLY_EVERY = 16


class SupervisedModule(LightningModule):
    """Trains `self.net` on `(inputs, targets)` or `(inputs, targets, lengths)` batches.

    Subclasses build `self.net` and may override `forward`, `loss` and `parameter_groups`.
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
        # training steps not yet given to the training metrics (`apply_training_metrics`)
        self.unapplied: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]] = []
        self.outputs_checked: set[str] = set()  # stages whose `forward` had the right shape
        self.best_val = MaxMetric() if task == "classification" else MinMetric()
        # drawn after each validation and test by project.callbacks.results.RunResults
        stages = ("val_", "test_") if task == "classification" else ()
        self.confusion = nn.ModuleDict({s: MulticlassConfusionMatrix(num_outputs) for s in stages})

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
        contract.check_net(self)  # before any work: not at the first batch, as a traceback
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
        """The loss of one prediction: cross-entropy, or for regression the squared error."""
        if self.task == "classification":
            return F.cross_entropy(
                outputs, targets, weight=self.class_weight, label_smoothing=self.label_smoothing
            )
        return F.mse_loss(outputs.reshape(targets.shape), targets.to(outputs.dtype))

    def loss(self, outputs: torch.Tensor | tuple, targets: torch.Tensor) -> torch.Tensor:
        """The batch's loss from what `forward` returned. With auxiliary outputs (Inception in
        training) that is a tuple, prediction first: the model adds their losses here."""
        return self.loss_fn(outputs, targets)

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
        prediction = outputs[0] if isinstance(outputs, tuple) else outputs  # see `loss`
        contract.check_outputs_once(self, prediction, len(targets), stage)
        loss = self.loss(outputs, loss_targets)
        outputs = prediction
        if self.task == "regression":
            outputs = outputs.reshape(targets.shape)
            targets = targets.to(outputs.dtype)
        # the metrics are logged once, at the epoch's end (`log_epoch_metrics`): each `self.log`
        # call costs Lightning ~0.2 ms, as much as a small model's whole step
        weight = self.batch_weight(loss_targets)
        weighted = loss.detach().float() * weight  # the epoch's loss sums these (`LossMean`)
        if stage == "train":
            # kept, and given to the metrics together every few steps: their updates cost
            # ~0.15 ms in each step of a small model (docs/benchmarks.md); the counts are the same
            self.unapplied.append((outputs.detach(), targets, weighted, weight))
            if len(self.unapplied) >= APPLY_EVERY:
                self.apply_training_metrics()
        else:
            self.stage_metrics[f"{stage}_"].update(outputs.detach(), targets)
            self.stage_losses[f"{stage}_"].update(weighted, weight)
        if stage == "train" and step_is_written(self):
            # the step's loss, this rank's batch alone (no collective per step), logged only on
            # the steps Lightning writes: a `self.log` call costs ~0.4 ms (docs/benchmarks.md)
            self.log("train/loss_step", loss, prog_bar=True)
        if f"{stage}_" in self.confusion:
            self.confusion[f"{stage}_"].update(outputs.detach(), targets)
        return loss

    def apply_training_metrics(self) -> None:
        """Updates the training metrics with the steps kept since the last update."""
        if not self.unapplied:
            return
        outputs, targets, weighted, weights = zip(*self.unapplied, strict=True)
        self.unapplied = []
        self.stage_metrics["train_"].update(torch.cat(outputs), torch.cat(targets))
        # class weights make a batch's weight a tensor (on the device), else it is its size
        weight = torch.stack(weights).sum() if torch.is_tensor(weights[0]) else sum(weights)
        self.stage_losses["train_"].update(torch.stack(weighted).sum(), weight)

    def log_epoch_metrics(self, stage: str) -> None:
        # Metric objects: Lightning computes them (synced across ranks) and resets them. The
        # evaluation loaders give each sample to one rank exactly once (data/base.py), so
        # the synced values are those of one process
        self.log_dict(self.stage_metrics[f"{stage}_"], prog_bar=stage != "train")
        name = "train/loss_epoch" if stage == "train" else f"{stage}/loss"
        self.log(name, self.stage_losses[f"{stage}_"], prog_bar=stage != "train")

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        inputs, _, *lengths = batch
        outputs = self(inputs, *lengths)
        contract.check_outputs(self, outputs, len(inputs))
        return outputs.softmax(-1) if self.task == "classification" else outputs

    def on_train_epoch_end(self) -> None:
        self.apply_training_metrics()
        self.log_epoch_metrics("train")

    def on_test_epoch_end(self) -> None:
        self.log_epoch_metrics("test")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            val = [self.stage_metrics["val_"], self.stage_losses["val_"]]
            for metric in [*self.confusion.values(), *val]:
                metric.reset()
            return
        self.log_epoch_metrics("val")
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
        return groups if self.decay_norms_and_biases else optimizers.spare_norms_and_biases(groups)

    def on_train_start(self) -> None:
        optimizers.size_schedules(self.trainer)

    def configure_optimizers(self):  # noqa: ANN201 (Lightning accepts several shapes)
        groups = self.decay_groups(optimizers.as_groups(self.parameter_groups()))
        return optimizers.configure_optimizers(groups, self.optimizer, self.lr_scheduler)
