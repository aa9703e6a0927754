"""The base of every sequence DataModule: splits held as tensors, loaders built from the config."""

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset

from project.data.batches import batch_loader
from project.errors import UserError
from project.models.supervised import Task


class SequenceDataModule(LightningDataModule):
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
        super().__init__()
        if batch_size <= 0:
            raise UserError(f"data.batch_size must be a positive integer, got {batch_size}")
        if num_workers < 0:
            raise UserError(f"data.num_workers must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.loader_options = dict(
            num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers
        )
        self.datasets: dict[str, TensorDataset] = {}

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if split not in self.datasets:
            raise UserError(f"{type(self).__name__} has no {split} split")
        return batch_loader(self.datasets[split], self.batch_size, shuffle, **self.loader_options)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")


def split_off(dataset: TensorDataset, size: int, seed: int) -> tuple[TensorDataset, TensorDataset]:
    """Splits `size` random samples off `dataset`, the same ones for the same seed."""
    n = len(dataset)
    if not 0 < size < n:
        raise UserError(f"validation split of {size} samples must be between 1 and {n - 1}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    rest, held = order[size:].sort().values, order[:size].sort().values
    return TensorDataset(*dataset[rest]), TensorDataset(*dataset[held])
