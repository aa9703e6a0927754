"""What a supervised model measures: each task's metrics, the epoch's exact loss, and the checks
and class weights of its loss options."""

import torch
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from project.errors import UserError
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

    def update(self, weighted: torch.Tensor, weight: torch.Tensor | int) -> None:
        """`weighted`: Σ weight·loss of one batch or more (a batch's mean loss times its
        weight); `weight`: Σ weight of the same batches."""
        self.total += weighted.float()
        self.weight += weight

    def compute(self) -> torch.Tensor:
        return self.total / self.weight
