"""Checks a checkpoint given with `--ckpt_path` before any work, so a wrong one costs one line;
writes checkpoints so that a kill mid-write never costs the previous one."""

import inspect
import os
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from project.errors import UserError
from project.weights import load_weights_only

# values Lightning resolves itself (`fit --ckpt_path last` and friends)
LIGHTNING_KEYWORDS = {"last", "best", "hpc", "registry"}


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint at `path`, loaded weights-only; a one-line `UserError` if it is unusable."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a directory, not a checkpoint file (name a .ckpt)")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    checkpoint = load_weights_only(path, "checkpoint")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(f"{path} is not a Lightning checkpoint (no state_dict inside)")
    return checkpoint


def check_checkpoint(
    path: str | Path, model: LightningModule | None = None, read: dict | None = None
) -> dict | None:
    """Fails unless `path` is a readable Lightning checkpoint whose weights fit `model`; returns
    it (None for Lightning's keywords). `read`: the file as `read_checkpoint` returned it."""
    if str(path) in LIGHTNING_KEYWORDS:
        return None
    checkpoint = read_checkpoint(path) if read is None else read
    if model is None:
        return checkpoint
    state = checkpoint["state_dict"]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"checkpoint {path} belongs to another model ({checkpoint.get('hparams_name', '')}"
            f"{checkpoint.get('hyper_parameters', {}).get('_class_path', '')}): "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for key, value in expected.items():
        if state[key].shape != value.shape:
            raise UserError(
                f"checkpoint {path} does not fit this model: {key} is "
                f"{tuple(state[key].shape)} there and {tuple(value.shape)} here "
                "(trained on data with another number of classes or input size?)"
            )
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes `<name>.tmp` beside the checkpoint, flushes it to disk, then renames it over the
    checkpoint: at every instant the file at `path` is the old checkpoint or the new one, whole.

    Lightning's own writer (2.6) stages the file in the system temp folder (`/tmp`) and moves it
    into place; when that is another filesystem (a tmpfs `/tmp`, logs on NFS or Lustre), the move
    is a copy onto the checkpoint itself, and a kill during the copy leaves it truncated, the
    previous checkpoint already overwritten. A rename within one folder cannot be half done.
    Remote paths (`s3://...`) go to Lightning's writer, whose object stores replace files whole.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):  # Lightning's error, or remote
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # one fixed name per target: a write killed halfway leaves one stray file, which the next
        # save of the same checkpoint replaces (only rank 0 writes, so no two processes share it)
        partial = path.with_name(f".{path.name}.tmp")
        with open(partial, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())  # the data is on disk before the name points at it
        os.replace(partial, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # ... and the rename itself survives a power cut
        finally:
            os.close(folder)


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
        super().setup(trainer, pl_module, stage)
        if self.last is not None:
            self.last.setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.refresh_last("on_train_start", trainer, pl_module)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.refresh_last("on_train_batch_end", trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self.refresh_last("on_train_epoch_end", trainer, pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
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
