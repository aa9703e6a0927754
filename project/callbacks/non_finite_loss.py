"""Stop at the first NaN or infinite loss, before a checkpoint takes the broken weights."""

from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

from project.errors import TrainingDiverged


class StopOnNonFiniteLoss(Callback):
    """Stops at the first NaN or infinite training loss, naming the step, the metric and the
    checkpoint to go back to. Raising before the next checkpoint is saved keeps the last good
    checkpoint from being overwritten with broken weights.

    A step costs no host sync and no collective: its loss is kept (detached, on the device) and
    the losses are read together every `trainer.log_every_n_steps` steps, before validation, at
    the epoch's end and before any checkpoint is written (one sync, and one all-reduce under
    DDP, per check). On a GPU a per-step check would stall the queue of kernels every step.
    """

    def __init__(self) -> None:
        self.unchecked: list[tuple[int, int, torch.Tensor]] = []  # (step, epoch, loss)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        self.unchecked.append((trainer.global_step, trainer.current_epoch, loss.detach()))
        if len(self.unchecked) >= max(trainer.log_every_n_steps, 1):
            self.check(trainer)

    def check(self, trainer: Trainer) -> None:
        """Raises if a loss since the last check was not finite, on every rank together (the
        healthy ones would otherwise wait forever in the next all-reduce)."""
        if not self.unchecked:
            return
        unchecked, self.unchecked = self.unchecked, []
        # one value per step, whatever a step's loss is shaped like
        finite = torch.stack([loss.isfinite().all() for _, _, loss in unchecked])
        broken_here = not bool(finite.all())  # the one host read of the check
        if trainer.strategy.reduce_boolean_decision(broken_here, all=False):
            # this rank's first broken step; a healthy rank names its newest one
            index = int((~finite).nonzero()[0]) if broken_here else -1
            step, epoch, loss = unchecked[index]
            self._stop(trainer, "train/loss", float(loss.float().mean()), step, epoch)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.check(trainer)  # else a broken step would show as "val/loss became nan"

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.check(trainer)

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # every rank builds the checkpoint (`Trainer.save_checkpoint`), so the check's
        # all-reduce is met; raising here keeps the file from being written
        self.check(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if not trainer.sanity_checking and loss is not None and not torch.isfinite(loss):
            self._stop(trainer, "val/loss", float(loss), trainer.global_step, trainer.current_epoch)

    @staticmethod
    def _stop(trainer: Trainer, metric: str, value: float, step: int, epoch: int) -> None:
        checkpoint = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none saved yet"
        raise TrainingDiverged(
            f"{metric} became {value} at step {step} (epoch {epoch}); "
            f"training stopped, last good checkpoint: {checkpoint}. Lower the learning rate or "
            "clip gradients (--trainer.gradient_clip_val 1.0)"
        )
