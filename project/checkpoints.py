"""The one reader of checkpoint files, and their writer: checks a checkpoint given with
`--ckpt_path` before any work, so a wrong one costs one line, reads each file once and its step;
writes checkpoints so that a kill mid-write never costs the previous one. The callbacks that
decide when to write: project/callbacks/checkpoints.py."""

from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule
from lightning.pytorch.plugins.io import TorchCheckpointIO

from project.errors import UserError
from project.files import written_whole
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


def read_checkpoint_state(path: Path) -> dict:
    """A checkpoint file memory-mapped: its counters and callback states read, its weights not."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def checkpoint_step(checkpoint: Path | dict) -> int:
    """The global step a checkpoint (a file, or one read) was saved at: the first step a run
    resumed from it logs."""
    if not isinstance(checkpoint, dict):
        checkpoint = read_checkpoint_state(checkpoint)
    return int(checkpoint.get("global_step", 0))


class CheckpointReads:
    """The checkpoint files a command names, each read once (and checked: `check_checkpoint`),
    though the CLI needs one before the model exists (for its hyperparameters), then its step
    (where the curves continue), then its weights (do they fit the model?)."""

    def __init__(self) -> None:
        self.read: dict[Path, dict] = {}

    def check(self, path: str | Path, model: LightningModule | None = None) -> dict | None:
        if str(path) in LIGHTNING_KEYWORDS:
            return None
        key = Path(path).resolve()
        if key not in self.read:
            self.read[key] = read_checkpoint(path)
        return check_checkpoint(path, model, self.read[key])


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
        # one fixed name per target (project/files.py): a write killed halfway leaves one stray
        # file, which the next save of the same checkpoint replaces (only rank 0 writes)
        with written_whole(path, "wb") as file:
            torch.save(checkpoint, file)
