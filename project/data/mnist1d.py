"""MNIST-1D (Greydanus & Kobak, 2020): 10 classes of length-40 signals, generated offline."""

from typing import Any

import torch
from torch.utils.data import TensorDataset

from project.data.base import split_off
from project.data.sequences import SequenceDataModule


def mnist1d_arrays() -> dict:
    """The official MNIST-1D dataset (4000 train / 1000 test), generated locally.

    `make_dataset` with the default arguments reproduces the published pickle exactly, so the
    package's `get_dataset`, which tries the network first, is never needed.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    return make_dataset(get_dataset_args())


class MNIST1DDataModule(SequenceDataModule):
    """MNIST-1D as sequences of 40 steps with one feature; validation carved from train."""

    input_size = 1
    num_outputs = 10

    def __init__(self, *, val_size: int = 500, split_seed: int = 0, **kwargs: Any) -> None:
        """
        Args:
            val_size: samples held out of the 4000 training samples for validation.
            split_seed: seed of that split; fixed so every run validates on the same samples.
        """
        super().__init__(**kwargs)
        self.val_size = val_size
        self.split_seed = split_seed

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        raw = mnist1d_arrays()

        def as_dataset(x, y) -> TensorDataset:
            return TensorDataset(
                torch.as_tensor(x, dtype=torch.float32).unsqueeze(-1), torch.as_tensor(y)
            )

        train = as_dataset(raw["x"], raw["y"])
        self.datasets["train"], self.datasets["val"] = split_off(
            train, self.val_size, self.split_seed
        )
        self.datasets["test"] = as_dataset(raw["x_test"], raw["y_test"])
