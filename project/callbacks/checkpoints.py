"""The checkpoints a run writes: the best by a metric and `last.ckpt` every epoch
(`BestAndLastCheckpoint`, the `checkpoint:` key), and `last.ckpt` on a signal or every few
minutes (`LastCheckpoint`, the `last_checkpoint:` key). Reading and checking a checkpoint file,
and writing one whole: project/checkpoints.py. Stopping on a signal, and Slurm's requeue:
project/callbacks/signals.py.

Nothing lost: a `fit` that is stopped or killed continues where it was, exactly.

    python -m project fit -c logs/<experiment>/version_N/config.yaml --ckpt_path last

- Ctrl-C (SIGINT) or SIGTERM: `last.ckpt` is saved after the current optimizer step and the run
  stops with a line saying how to resume. A second Ctrl-C stops at once, without saving.
- SIGKILL, the out-of-memory killer or a power cut cannot be caught: `last.ckpt` is also saved every
  `every_n_minutes` (and/or `every_n_train_steps`), so such a run loses at most that much.

A resumed run ends with the weights of a run never stopped: the checkpoint holds the weights, the
optimizer and scheduler, the loops' counters, the training loader's place in its seeded order
(project/data/resumable.py) and, from this callback, the random number generators (dropout).
"""

import inspect
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.model_helpers import is_overridden

from project.callbacks.signals import StopOnSignal
from project.crashes import add_resume_note
from project.errors import UserError
from project.runs import CHECKPOINTS, CONFIG, checkpoints_of


def rng_states() -> dict[str, Any]:
    """The generators the model may draw from while training (dropout): torch's, on the CPU
    and on each GPU. Tensors only, so the checkpoint still loads weights-only."""
    states: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["cpu"])
    # resumed on other hardware: the CPU's generator still carries over, the GPUs' cannot
    if len(states.get("cuda", [])) == torch.cuda.device_count() > 0:
        torch.cuda.set_rng_state_all(states["cuda"])


class LastCheckpoint(StopOnSignal):
    """Keeps `checkpoints/last.ckpt` fresh enough that a stopped or killed run loses little.

    It is saved after the current step when one of `signals` arrives (and the run then stops),
    and every `every_n_minutes` and/or `every_n_train_steps` (off when None), in between the
    per-epoch saves of the `checkpoint:` callback. A save costs about the checkpoint's size in
    disk writes: a few MB for the sequence models here, hundreds for a large image model with
    Adam, which is why the default is by time and not by steps. When another process of the run
    is killed (a rank, a DataLoader worker), the error says how to resume (project/crashes.py).
    """

    def __init__(
        self,
        every_n_minutes: float | None = 10.0,
        every_n_train_steps: int | None = None,
        signals: Sequence[str] = ("SIGINT", "SIGTERM"),
    ) -> None:
        """
        Args:
            every_n_minutes: refresh last.ckpt this often (a SIGKILL loses at most this much).
            every_n_train_steps: ... or every this many optimizer steps.
            signals: save after the current step, then stop (exit code 128 + signal number).
        """
        super().__init__(signals)
        periods = {"every_n_minutes": every_n_minutes, "every_n_train_steps": every_n_train_steps}
        for name, value in periods.items():
            if value is not None and value <= 0:
                raise UserError(f"last_checkpoint.{name} must be > 0 or null, got {value}")
        self.every_n_minutes = every_n_minutes
        self.every_n_train_steps = every_n_train_steps
        self._saved_at = time.monotonic()
        self._flush_logs = False
        self._rng_to_restore: dict[str, Any] | None = None

    def path(self, trainer: Trainer) -> Path:
        """Where ModelCheckpoint writes `last.ckpt`, so that there is one latest checkpoint."""
        folder = getattr(trainer.checkpoint_callback, "dirpath", None)
        return Path(folder or checkpoints_of(Path(trainer.default_root_dir))) / "last.ckpt"

    def write(self, trainer: Trainer) -> Path:
        path = self.path(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # all ranks call it, rank 0 writes
        self._saved_at = time.monotonic()
        self._flush_logs = True
        return path

    def save(self, trainer: Trainer, signum: signal.Signals) -> tuple[str, int]:
        path = self.write(trainer)
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank asks
        config = Path(log_dir or ".") / CONFIG
        again = (
            f"python -m project fit -c {config} --ckpt_path last"
            if config.exists()
            else f"--ckpt_path {path}"
        )
        message = (
            f"Stopped by {signum.name} after step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}); saved {path}. Resume: {again}"
        )
        return message, 128 + signum

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
    ) -> None:
        if trainer.fast_dev_run:  # a smoke test: no checkpoints, as ModelCheckpoint
            return
        steps = self.every_n_train_steps
        minutes = self.every_n_minutes
        step_due = steps is not None and trainer.global_step % steps == 0
        time_due = minutes is not None and time.monotonic() - self._saved_at >= 60 * minutes
        # one collective for both: the clocks of the ranks may disagree
        signalled, periodic = self.signalled(trainer, batch_idx, step_due or time_due)
        if signalled:
            self._stop = self.save(trainer, self.received or self.signums[0])
        elif periodic:
            self.write(trainer)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int
    ) -> None:
        if self._flush_logs:
            # the curves up to the checkpoint's step (logged after it was saved) reach the disk
            # now, and not a few minutes later: after a SIGKILL, the resumed run logs from there
            for logger in trainer.loggers:
                logger.save()
            self._flush_logs = False
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._saved_at = time.monotonic()
        # restored here, once the sanity check and the training loader have started, and not
        # when the checkpoint is loaded: a run never stopped draws nothing between the save and
        # this point either (the loaders draw their workers' seeds from their own generators)
        if self._rng_to_restore is not None:
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, error: BaseException
    ) -> None:
        super().on_exception(trainer, pl_module, error)
        # a killed rank or DataLoader worker: the one line printed names how to resume
        add_resume_note(trainer, error)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng_to_restore = state_dict.get("rng")


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
