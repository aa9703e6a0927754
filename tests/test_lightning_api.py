"""What this project relies on in Lightning beyond its documented API, checked in a tiny fit
each, so that a Lightning upgrade that changes it fails here, in seconds, and not in a resumed
run that silently trains epochs again or a SIGTERM that saves nothing."""

import logging
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.plugins.io import TorchCheckpointIO

from project.callbacks.checkpoints import BestAndLastCheckpoint, LastCheckpoint
from project.cli.lightning_noise import (
    RANK_ZERO_LOG,
    SILENCED_LINES,
    helpful,
    ignore_lightning_noise,
)
from project.cli.unused_hooks import BATCH_HOOKS, skip_unused_hooks


class RecordedWrites(TorchCheckpointIO):
    def __init__(self) -> None:
        self.names: list[str] = []

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None):
        self.names.append(Path(path).name)
        super().save_checkpoint(checkpoint, path, storage_options)


def tiny_fit(folder: Path, *callbacks: Callback, **trainer: Any) -> Trainer:
    trainer = Trainer(
        default_root_dir=folder,
        logger=False,
        limit_train_batches=2,
        limit_val_batches=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        **{"max_epochs": 3, **trainer},
    )
    trainer.fit(BoringModel())
    return trainer


def test_last_ckpt_is_written_once_per_epoch_even_when_it_is_not_the_best(tmp_path: Path) -> None:
    """Lightning 2.6's `save_last=True` writes last.ckpt only beside a new best checkpoint;
    the second ModelCheckpoint inside `BestAndLastCheckpoint` writes it every epoch, once."""
    io = RecordedWrites()
    never_better = BestAndLastCheckpoint(
        monitor="epoch", mode="min", save_last=True, enable_version_counter=False
    )
    tiny_fit(tmp_path, never_better, plugins=[io])
    assert io.names == ["epoch=0-step=2.ckpt", "last.ckpt", "last.ckpt", "last.ckpt"]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 6
    (state,) = [v for k, v in last["callbacks"].items() if k.startswith("BestAndLastCheckpoint")]
    assert state["last_model_path"] == str(tmp_path / "checkpoints" / "last.ckpt")
    assert state["best_model_path"] == str(tmp_path / "checkpoints" / "epoch=0-step=2.ckpt")
    assert never_better.last_model_path == state["last_model_path"]


def test_without_save_last_true_only_lightning_saves(tmp_path: Path) -> None:
    io = RecordedWrites()
    tiny_fit(tmp_path, BestAndLastCheckpoint(monitor="epoch", mode="min"), plugins=[io])
    assert io.names == ["epoch=0-step=2.ckpt"]


def test_fast_dev_run_saves_no_checkpoint(tmp_path: Path) -> None:
    """Lightning 2.6's `on_train_end` saves last.ckpt without its fast_dev_run check."""
    io = RecordedWrites()
    tiny_fit(tmp_path, BestAndLastCheckpoint(save_last=True), plugins=[io], fast_dev_run=True)
    assert io.names == []


class HandlerDuringTraining(Callback):
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.seen.append(signal.getsignal(signal.SIGTERM))


def test_stop_on_signal_owns_sigterm_while_training(tmp_path: Path) -> None:
    """Lightning sets a SIGTERM handler of its own (no public switch in 2.6) after the `setup`
    hooks; `StopOnSignal` takes SIGTERM back in `on_train_start`. Every training batch must run
    under this project's handler, and the one from before the fit must be back after it."""
    before = signal.getsignal(signal.SIGTERM)
    last = LastCheckpoint(every_n_minutes=None)
    probe = HandlerDuringTraining()
    tiny_fit(tmp_path, last, probe, max_epochs=1)
    handlers = {getattr(h, "__self__", h) for h in probe.seen}
    assert handlers == {last}, probe.seen
    assert signal.getsignal(signal.SIGTERM) == before


def test_the_lines_silenced_are_those_lightning_prints(caplog: pytest.LogCaptureFixture) -> None:
    """Each silenced line is still printed, word for word, by a plain Trainer (if Lightning
    rewords one, the filter no longer matches it: update SILENCED_LINES); with the filter on,
    none of them reaches the user, and the GPU line still does."""
    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    RANK_ZERO_LOG.removeFilter(helpful)
    Trainer(logger=False, enable_progress_bar=False)
    printed = [record.getMessage() for record in caplog.records]
    for line in SILENCED_LINES:
        assert any(message.startswith(line) for message in printed), (line, printed)
    caplog.clear()
    ignore_lightning_noise()
    Trainer(logger=False, enable_progress_bar=False)
    printed = [record.getMessage() for record in caplog.records]
    assert not [m for m in printed if m.startswith(SILENCED_LINES)]
    assert any(m.startswith("GPU available") for m in printed)


class CountsTheBatchHooks(Callback):
    """Implements one per-batch hook; Lightning should call it, and skip the ones set to None."""

    def __init__(self) -> None:
        self.ends = 0

    def on_train_batch_end(self, *args: Any) -> None:
        self.ends += 1


class AlsoCountsBackward(CountsTheBatchHooks):
    def __init__(self) -> None:
        super().__init__()
        self.backwards = 0

    def on_before_backward(self, *args: Any) -> None:
        super().on_before_backward(*args)  # Callback's: the class is untouched, never None
        self.backwards += 1


def test_lightning_skips_a_callback_hook_set_to_none(tmp_path: Path) -> None:
    """project/cli/unused_hooks.py: a per-batch hook a callback does not implement is
    set to None on the instance, and Lightning calls only callable hooks. A Lightning that calls
    every hook regardless fails here with `'NoneType' object is not callable`."""
    counts, also = CountsTheBatchHooks(), AlsoCountsBackward()
    skip_unused_hooks([counts, also])
    assert counts.on_before_backward is None and also.on_before_backward is not None
    assert {hook for hook in BATCH_HOOKS if getattr(counts, hook) is None} == set(BATCH_HOOKS) - {
        "on_train_batch_end"
    }
    tiny_fit(tmp_path, counts, also, max_epochs=2)
    assert counts.ends == also.ends == also.backwards == 4  # 2 epochs of 2 batches
