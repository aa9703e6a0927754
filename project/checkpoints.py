"""Checks a checkpoint given with `--ckpt_path` before any work, so a wrong one costs one line."""

import pickle
from pathlib import Path

import torch
from lightning import LightningModule

from project.errors import UserError

# values Lightning resolves itself (`fit --ckpt_path last` and friends)
LIGHTNING_KEYWORDS = {"last", "best", "hpc", "registry"}


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint at `path`, loaded weights-only; a one-line `UserError` if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        # weights only: a checkpoint that needs code to unpickle never runs it
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):  # the file names a class or function to call
            raise UserError(
                f"checkpoint {path} needs code to unpickle, refused: only files that hold "
                "tensors and plain values are loaded"
            ) from None
        raise UserError(f"checkpoint {path} is corrupt or not a PyTorch checkpoint") from None
    except (RuntimeError, EOFError, OSError, ValueError):
        raise UserError(f"checkpoint {path} is corrupt or not a PyTorch checkpoint") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(f"{path} is not a Lightning checkpoint (no state_dict inside)")
    return checkpoint


def check_checkpoint(path: str | Path, model: LightningModule | None = None) -> None:
    """Fails unless `path` is a readable Lightning checkpoint whose weights fit `model`."""
    if str(path) in LIGHTNING_KEYWORDS:
        return
    checkpoint = read_checkpoint(path)
    if model is None:
        return
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
