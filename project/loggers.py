"""Lightning's TensorBoard logger, with version folders that two runs can never share, and
curves that continue, without a doubled stretch, when a run is resumed."""

from pathlib import Path
from typing import Any

from lightning import LightningModule
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from project.runs import claim_version


class TensorBoardLogger(LightningTensorBoardLogger):
    """Claims `version_N` by creating it, so runs started at the same moment get separate folders.

    Lightning picks "highest existing version + 1", which two processes starting together both
    pick. `os.mkdir` succeeds for exactly one of them; the other moves on to the next number.
    Only rank 0 claims: the other ranks of a DDP run receive rank 0's folder from Lightning.

    `purge_step` (set by the CLI: 0 for a new `fit`, the checkpoint's step for a resumed one)
    marks where this run's events start: TensorBoard then hides whatever earlier event files of
    the folder hold from that step on, i.e. what a killed run logged after its last checkpoint,
    which the resumed run logs again. TensorBoard ignores the first such mark of a folder,
    hence the one at step 0.
    """

    def __init__(
        self,
        save_dir: str | Path,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        purge_step: int | None = None,
        first_step: int | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            purge_step: where this process's events start, hiding later ones of earlier files.
            first_step: log nothing below this step (set by the CLI when evaluating a run).
        """
        if purge_step is not None:
            kwargs["purge_step"] = purge_step  # for torch's SummaryWriter
        super().__init__(save_dir, name, version, **kwargs)
        self.first_step = first_step
        self.asked_version = version
        self.claimed: int | str | None = None

    def at_step(self, step: int) -> int:
        """The step to log at: `validate`, `test` and `predict` of a finished run start at step
        0, and TensorBoard's default loader, seeing a tag's step go back in a new event file,
        hides the tag's later points: one `validate` left of a 20-epoch `val/acc` curve a single
        point. Logged at the run's last step instead, the curves stay whole, and the evaluation
        is the newest point."""
        return step if self.first_step is None else max(step, self.first_step)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.first_step is not None:
            # Lightning adds `epoch` to every record; an evaluation's (0) would end the run's
            # epoch curve with a drop to 0
            metrics = {k: v for k, v in metrics.items() if k != "epoch"}
        super().log_metrics(metrics, None if step is None else self.at_step(step))

    @property
    def version(self) -> int | str:
        """The version given, else the one this process claimed (rank 0 only: the other ranks
        of a DDP run receive rank 0's folder from Lightning)."""
        if self.claimed is None:
            self.claimed = super().version  # Lightning's "highest existing + 1" if none given
            local = "://" not in self.root_dir  # remote storage: Lightning's way
            if self.asked_version is None and rank_zero_only.rank == 0 and local:
                self.claimed = claim_version(self.root_dir, int(self.claimed))
        return self.claimed


def step_is_written(module: LightningModule) -> bool:
    """Whether Lightning writes the module's training step's logged values to the loggers: every
    `trainer.log_every_n_steps` optimizer steps, the last step of a stopping run, and every
    step of a `fast_dev_run` (its logger connector's rule, with the public step counter;
    tests/test_training.py fails if the two ever disagree). A `self.log` costs ~0.4 ms: the
    models log a step's values only on these steps."""
    try:
        trainer = module.trainer
    except RuntimeError:  # a step called by hand: nothing writes it
        return False
    if trainer.fast_dev_run or trainer.should_stop:
        return True
    every = trainer.log_every_n_steps
    return every > 0 and (trainer.global_step + 1) % every == 0
