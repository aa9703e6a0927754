"""A user's own sequences from `.npz` or `.pt` files: new data needs a config, not code.

Each file holds `x` shaped `(samples, time)` or `(samples, time, features)`, `y` shaped
`(samples,)` (class indices, or values for regression) or `(samples, outputs)`, and optionally
`lengths` `(samples,)` when sequences are zero-padded to a common length. A `predict` file may
leave out `y`: new samples to label.

For data larger than memory, give a folder instead of a file: `x.npy`, `y.npy` and optionally
`lengths.npy` in it, `x` read from disk a batch at a time (`sequence_arrays.py`).
"""

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from project.data.base import split_off
from project.data.sequence_arrays import (
    SequenceArrays,
    labels_and_lengths,
    open_sequence_folder,
    warn_if_zero_padded,
)
from project.data.sequences import SequenceDataModule
from project.errors import UserError
from project.task import Task

EXPECTED = "x (samples, time[, features]), y (samples[, outputs]), optional lengths (samples,)"
UNLABELLED = "x (samples, time[, features]), optional y and lengths (samples,)"


def load_sequences(
    path: str | Path, task: Task, labelled: bool = True
) -> TensorDataset | SequenceArrays:
    """Reads and checks one file (or opens a folder of `.npy` files, read a batch at a time);
    every problem is a one-line `UserError` naming the file.

    With `labelled=False` (samples to predict) `y` may be missing: each sample then gets the
    placeholder target -1 (NaN for regression), which `predict_step` ignores.
    """
    path = Path(path)
    expected = EXPECTED if labelled else UNLABELLED
    if path.is_dir():
        return open_sequence_folder(path, task, labelled)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist (expected a .npz or .pt with {expected})")
    try:
        if path.suffix == ".npz":
            arrays = read_npz(path)
        elif path.suffix == ".pt":
            arrays = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise UserError(f"data file {path}: unknown suffix, use .npz or .pt")
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"data file {path} could not be read ({error})") from None
    if not isinstance(arrays, dict) or not ({"x", "y"} if labelled else {"x"}) <= set(arrays):
        raise UserError(f"data file {path} must hold {expected}")
    x, y, lengths = arrays["x"], arrays.get("y"), arrays.get("lengths")
    if x.dim() == 2:
        x = x.unsqueeze(-1)
    if x.dim() != 3:
        raise UserError(f"data file {path}: x has shape {tuple(x.shape)}, expected {expected}")
    if len(x) == 0:
        raise UserError(f"data file {path} holds no samples")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise UserError(f"data file {path}: x holds NaN or infinite values")
    y, lengths = labels_and_lengths(path, tuple(x.shape), y, lengths, task)
    if lengths is None:
        warn_if_zero_padded(path, x)
    tensors = [x.float(), y, *([] if lengths is None else [lengths])]
    return TensorDataset(*tensors)


def read_npz(path: Path) -> dict[str, torch.Tensor]:
    # np.load takes any file that is not a zip (nor a .npy) for a pickle, and refuses it as
    # "pickled (object) data": a corrupt or renamed file would be reported as a security refusal
    if not zipfile.is_zipfile(path):
        raise UserError(f"data file {path} is not a valid .npz archive (corrupt, or not an npz)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: torch.from_numpy(archive[k]) for k in archive.files}
    except ValueError as error:
        if "allow_pickle" not in str(error):
            raise
        raise UserError(
            f"data file {path} holds pickled (object) arrays, refused: save numeric arrays only"
        ) from None


def features(dataset: TensorDataset | SequenceArrays) -> int:
    return dataset.features if isinstance(dataset, SequenceArrays) else dataset.tensors[0].shape[-1]


def targets(dataset: TensorDataset | SequenceArrays) -> torch.Tensor:
    return dataset.targets if isinstance(dataset, SequenceArrays) else dataset.tensors[1]


class SequenceFileDataModule(SequenceDataModule):
    """Sequences from files; validation is carved from `train` when no `val` file is given."""

    def __init__(
        self,
        *,
        train: str,
        val: str | None = None,
        test: str | None = None,
        predict: str | None = None,
        task: Task = "classification",
        num_classes: int | None = None,
        val_size: float = 0.1,
        split_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            train, val, test: paths of `.npz` or `.pt` files, or of folders of `.npy` files for
                data larger than memory (see the module docstring).
            predict: a file of samples for `predict`, `y` optional; the test split if unset.
            num_classes: for classification; inferred as `max(y) + 1` over all files if unset.
            val_size: fraction of `train` held out for validation when `val` is not given.
        """
        super().__init__(**kwargs)
        self.task = task
        # read now: the model's input size and output count depend on the files
        files = {"train": train, "val": val, "test": test, "predict": predict}
        data = {
            split: load_sequences(path, task, labelled=split != "predict")
            for split, path in files.items()
            if path is not None
        }
        self.input_size = features(data["train"])
        for split, dataset in data.items():
            if features(dataset) != self.input_size:
                raise UserError(
                    f"data file {files[split]}: {features(dataset)} features per step, "
                    f"but {train} has {self.input_size}"
                )
        if task == "classification":
            labels = torch.cat([targets(d) for s, d in data.items() if s != "predict"])
            self.num_outputs = num_classes or int(labels.max()) + 1
            if labels.min() < 0 or labels.max() >= self.num_outputs:
                raise UserError(
                    f"labels must lie in 0..{self.num_outputs - 1}, found {int(labels.min())}.."
                    f"{int(labels.max())} (set data.init_args.num_classes or fix the files)"
                )
        else:
            y = targets(data["train"])
            self.num_outputs = 1 if y.dim() == 1 else y.shape[1]
        if "val" not in data:
            held = max(1, round(val_size * len(data["train"])))
            data["train"], data["val"] = split_off(data["train"], held, split_seed)
        self.datasets = data
