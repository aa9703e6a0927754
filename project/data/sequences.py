"""The base of every sequence DataModule: splits held as tensors, loaders built from the config."""

import torch
from torch.utils.data import TensorDataset

from project.data.batches import InMemoryDataModule
from project.errors import UserError
from project.task import Task


class SequenceDataModule(InMemoryDataModule):
    """Serves `(x, y)` or `(x, y, lengths)` batches with x shaped `(batch, time, features)`.

    Subclasses set `input_size`, `num_outputs` and `task` (the CLI passes them to the model)
    and fill `self.datasets` in `setup`.
    """

    input_size: int
    num_outputs: int
    task: Task = "classification"

    def __init__(
        self,
        batch_size: int = 100,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, persistent_workers)


def split_off(dataset: TensorDataset, size: int, seed: int) -> tuple[TensorDataset, TensorDataset]:
    """Splits `size` random samples off `dataset`, the same ones for the same seed."""
    n = len(dataset)
    if not 0 < size < n:
        raise UserError(f"validation split of {size} samples must be between 1 and {n - 1}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    rest, held = order[size:].sort().values, order[:size].sort().values
    return TensorDataset(*dataset[rest]), TensorDataset(*dataset[held])
