"""The training metrics, fed every few steps, count exactly what per-step updates would: any
number of steps, uneven batches, class weights, regression."""

import pytest
import torch
import torch.nn.functional as F

from project.models import SequenceClassifier


@pytest.mark.parametrize("steps", [1, 15, 16, 17, 37])
@pytest.mark.parametrize("class_weights", [None, [1.0, 2.0, 0.5]])
def test_classification_epoch_metrics_match_the_steps(
    steps: int, class_weights: list | None
) -> None:
    torch.manual_seed(steps)
    model = SequenceClassifier(
        input_size=2, num_outputs=3, hidden_size=4, class_weights=class_weights
    )
    weight = None if class_weights is None else torch.tensor(class_weights)
    correct = seen = 0
    weighted_sum = total_weight = 0.0
    for step in range(steps):
        size = 5 + step % 4  # uneven batches, like an epoch's last one
        inputs, targets = torch.randn(size, 6, 2), torch.randint(0, 3, (size,))
        loss = model.training_step((inputs, targets), step)
        with torch.no_grad():
            outputs = model(inputs)
        torch.testing.assert_close(loss, F.cross_entropy(outputs, targets, weight=weight))
        correct += int((outputs.argmax(-1) == targets).sum())
        seen += size
        batch_weight = size if weight is None else float(weight[targets].sum())
        weighted_sum += float(loss.detach()) * batch_weight
        total_weight += batch_weight
    model.apply_training_metrics()
    accuracy = model.stage_metrics["train_"]["train/acc"].compute()
    torch.testing.assert_close(accuracy, torch.tensor(correct / seen))
    mean = model.stage_losses["train_"].compute()
    torch.testing.assert_close(mean, torch.tensor(weighted_sum / total_weight))
    assert model.unapplied == []


@pytest.mark.parametrize("steps", [3, 20])
def test_regression_epoch_metrics_match_the_steps(steps: int) -> None:
    torch.manual_seed(0)
    model = SequenceClassifier(input_size=1, num_outputs=1, task="regression", hidden_size=4)
    squared = seen = 0.0
    for step in range(steps):
        inputs, targets = torch.randn(4, 5, 1), torch.randn(4)
        model.training_step((inputs, targets), step)
        with torch.no_grad():
            squared += float(((model(inputs).reshape(4) - targets) ** 2).sum())
        seen += 4
    model.apply_training_metrics()
    mse = model.stage_metrics["train_"]["train/mse"].compute()
    torch.testing.assert_close(mse, torch.tensor(squared / seen))
