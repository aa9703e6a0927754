"""The `checkpoint:` callback: the best checkpoints by a metric, and `last.ckpt` every epoch."""

import inspect
import os
import sys
from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.model_helpers import is_overridden

from project.runs import CHECKPOINTS


class BestAndLastCheckpoint(ModelCheckpoint):
    """Lightning's `ModelCheckpoint` (the `checkpoint:` key), with `last.ckpt` refreshed at
    the end of every epoch (at every validation) when `save_last` is true.

    Since Lightning 2.6 `save_last=True` writes `last.ckpt` only at a step that also saved a
    best-k checkpoint: after an epoch that did not improve the monitored metric, last.ckpt was
    still the best epoch, and a run resumed from it (`--ckpt_path last`, a Slurm requeue)
    silently trained the epochs since then again. So a second, plain `ModelCheckpoint` inside
    this one writes it: one checkpoint named `last`, no monitor, at this one's moments (its
    epochs, steps and time interval), so that Lightning's own rules decide when (never in a
    sanity check or a fast_dev_run, once a step). This one's `save_last` is then off: last.ckpt
    is written once a step, not once for each callback.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        given = inspect.signature(ModelCheckpoint).bind(*args, **kwargs)
        given.apply_defaults()
        self.last: ModelCheckpoint | None = None
        # the last.ckpt checkpoint's step hook only acts when it saves within epochs; skipped
        # otherwise, as it costs ~0.1 ms a step (its file name is formatted anew every time)
        self.saves_within_epochs = bool(
            given.arguments["every_n_train_steps"] or given.arguments["train_time_interval"]
        )
        if self.save_last is True:
            same = ("dirpath", "save_on_exception", "save_weights_only", "every_n_train_steps")
            same += ("train_time_interval", "every_n_epochs", "save_on_train_epoch_end")
            self.last = ModelCheckpoint(
                filename=self.CHECKPOINT_NAME_LAST,
                save_top_k=1,
                enable_version_counter=given.arguments["enable_version_counter"],
                **{name: given.arguments[name] for name in same},
            )
            self.save_last = False

    def refresh_last(self, hook: str, trainer: Trainer, *args: Any) -> None:
        """Runs the `last.ckpt` checkpoint's `hook`; `last_model_path` names its file from
        the first save on (set before, as Lightning does: it is part of the saved state)."""
        if self.last is None:
            return
        previous, self.last_model_path = self.last_model_path, self.last.format_checkpoint_name({})
        getattr(self.last, hook)(trainer, *args)
        self.last_model_path = self.last.best_model_path or previous

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # a broadcast: every rank asks. None under fast_dev_run (its DummyLogger)
        log_dir = trainer.log_dir if self.dirpath is None and trainer.loggers else None
        if log_dir is not None:
            # `<run folder>/checkpoints` with any logger: Lightning's own choice is that for
            # TensorBoard and CSV, but `<save_dir>/<experiment id>/<run id>` for MLflow
            self.dirpath = os.path.join(log_dir, CHECKPOINTS)
            if self.last is not None:
                self.last.dirpath = self.dirpath
        super().setup(trainer, pl_module, stage)
        if self.last is not None:
            self.last.setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # here, not in `setup`: after the model's own checks (its optimizer, its schedule)
        # (`limit_val_batches: 0` is the user's choice: Lightning's own warning then)
        validates = is_overridden("validation_step", pl_module)
        if str(self.monitor).startswith("val") and not validates:
            self.no_best(trainer, "the model does not validate")
        super().on_train_start(trainer, pl_module)
        self.refresh_last("on_train_start", trainer, pl_module)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.saves_within_epochs:
            self.refresh_last("on_train_batch_end", trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self.refresh_last("on_train_epoch_end", trainer, pl_module)

    def no_best(self, trainer: Trainer, reason: str) -> None:
        """Only last.ckpt from now on: Lightning would stop the run with an error."""
        if trainer.is_global_zero:
            print(f"note: no best checkpoint by {self.monitor}: {reason}; last.ckpt is still "
                  "saved (--checkpoint.monitor NAME picks a metric)", file=sys.stderr)  # fmt: skip
        # the monitor stays: it names this callback's state in the checkpoint (a resume finds it)
        self.save_top_k = 0

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # any LightningModule: its own metric names (`val_loss`, as in Lightning's docs)
        logged = {*trainer.callback_metrics, "epoch", "step"}  # Lightning adds the two counters
        missing = self.save_top_k != 0 and self.monitor not in logged
        if missing and trainer.state.fn == "fit" and not trainer.sanity_checking:
            logged = ", ".join(k for k in trainer.callback_metrics if k.startswith("val")) or "none"
            self.no_best(trainer, f"the model does not log it (val metrics it logs: {logged})")
        super().on_validation_end(trainer, pl_module)
        self.refresh_last("on_validation_end", trainer, pl_module)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        super().on_exception(trainer, pl_module, exception)
        self.refresh_last("on_exception", trainer, pl_module, exception)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning 2.6 saves last.ckpt at the end of a fit without its fast_dev_run check; with
        # no logger (fast_dev_run drops it) into `<default_root_dir>/checkpoints`: the folder the
        # user started from, by a smoke test that writes no checkpoint
        if trainer.fast_dev_run:
            return
        super().on_train_end(trainer, pl_module)
        if self.last is not None and not self.last.best_model_path:
            # a fit that saved nothing (it ended before an epoch did): `save_last` saves then
            self.last_model_path = self.last.format_checkpoint_name({})
            trainer.save_checkpoint(self.last_model_path, self.save_weights_only)
