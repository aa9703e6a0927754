"""Learning-rate schedules whose length follows the run (`trainer.max_epochs` or `max_steps`)."""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from project.errors import UserError


class WarmupCosineLR(LRScheduler):
    """A linear warmup from ~0 to the configured rate, then a cosine decay to `final_lr_factor`
    times that rate at the run's last optimizer step; stepped once per optimizer step.

    The model sizes it from the Trainer (`size_to_run`) at train start, before the first step
    and after a resumed run's state is restored: the decay ends with the run however
    `max_epochs`, `max_steps`, the data or gradient accumulation change, so a longer run never
    sees its learning rate climb back up (a `CosineAnnealingLR` whose `T_max` repeats
    `max_epochs` does). A resumed run keeps the length it was sized to.
    """

    interval = "step"  # read by SupervisedModule.configure_optimizers

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_epochs: float = 0.0,
        final_lr_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        """
        Args:
            warmup_epochs: epochs (fractions allowed) over which the rate climbs; 0: none.
            final_lr_factor: the last step's rate as a fraction of the configured one.
        """
        if warmup_epochs < 0:
            raise UserError(f"lr_scheduler warmup_epochs must be >= 0, got {warmup_epochs}")
        if not 0 <= final_lr_factor <= 1:
            raise UserError(
                f"lr_scheduler final_lr_factor must be in [0, 1], got {final_lr_factor}"
            )
        self.warmup_epochs = warmup_epochs
        self.final_lr_factor = final_lr_factor
        self.total_steps: int | None = None  # until `size_to_run`: the configured rate
        self.warmup_steps = 0
        super().__init__(optimizer, last_epoch)

    def size_to_run(self, total_steps: int, steps_per_epoch: int, smoke_test: bool = False) -> None:
        """Fits the schedule to a run of `total_steps` optimizer steps, `steps_per_epoch` each.

        `smoke_test` (`fast_dev_run`): a warmup longer than the run is cut short, not refused.
        """
        warmup_steps = math.ceil(self.warmup_epochs * steps_per_epoch)
        if smoke_test:
            warmup_steps = min(warmup_steps, total_steps - 1)
        if warmup_steps >= total_steps:
            raise UserError(
                f"lr_scheduler warmup_epochs {self.warmup_epochs} ({warmup_steps} steps) is not "
                f"shorter than the run ({total_steps} steps): lower it or train longer"
            )
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def factor(self, step: int) -> float:
        """The rate at optimizer step `step` (0-based) as a fraction of the configured one."""
        if self.total_steps is None:
            return 1.0
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        decay_steps = max(1, self.total_steps - 1 - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.final_lr_factor + (1 - self.final_lr_factor) * cosine

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]
