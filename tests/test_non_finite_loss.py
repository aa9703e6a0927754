"""StopOnNonFiniteLoss reads the losses only every few steps, yet names the first broken step
and stops before any checkpoint is written, wherever the broken step falls."""

from types import SimpleNamespace

import pytest
import torch

from project.callbacks import StopOnNonFiniteLoss
from project.errors import TrainingDiverged


def trainer(every: int) -> SimpleNamespace:
    return SimpleNamespace(
        global_step=0,
        current_epoch=0,
        log_every_n_steps=every,
        strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all: decision),
        checkpoint_callback=SimpleNamespace(last_model_path="last.ckpt"),
    )


@pytest.mark.parametrize("every", [1, 3, 10, 50])
@pytest.mark.parametrize("broken_at", [0, 2, 7, 29])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_the_first_broken_step_is_named(every: int, broken_at: int, value: float) -> None:
    callback, run = StopOnNonFiniteLoss(), trainer(every)
    with pytest.raises(TrainingDiverged, match=rf"became {value} at step {broken_at + 1} "):
        for step in range(30):
            loss = torch.tensor(value if step >= broken_at else 1.0, requires_grad=True)
            run.global_step = step + 1  # after the step's optimizer step, as Lightning counts
            callback.on_train_batch_end(run, None, {"loss": loss}, None, step)
        callback.on_train_epoch_end(run, None)


@pytest.mark.parametrize(
    "hook", ["on_save_checkpoint", "on_validation_start", "on_train_epoch_end"]
)
def test_a_broken_step_is_caught_before_the_next_save_or_evaluation(hook: str) -> None:
    callback, run = StopOnNonFiniteLoss(), trainer(50)
    for step, value in enumerate([1.0, float("nan"), 2.0]):
        run.global_step = step + 1
        callback.on_train_batch_end(run, None, torch.tensor(value), None, step)
    arguments = (run, None, {}) if hook == "on_save_checkpoint" else (run, None)
    with pytest.raises(TrainingDiverged, match="at step 2 .*last good checkpoint: last.ckpt"):
        getattr(callback, hook)(*arguments)


def test_finite_losses_pass_every_check() -> None:
    callback, run = StopOnNonFiniteLoss(), trainer(4)
    for step in range(10):
        run.global_step = step + 1
        callback.on_train_batch_end(run, None, {"loss": torch.tensor(float(step))}, None, step)
    callback.on_save_checkpoint(run, None, {})
    assert callback.unchecked == []
