"""The base of every sequence DataModule: splits held as tensors, loaders built from the config."""

from typing import Any

from project.data.base import InMemoryDataModule
from project.task import Task


class SequenceDataModule(InMemoryDataModule):
    """Serves `(x, y)` or `(x, y, lengths)` batches with x shaped `(batch, time, features)`.

    Subclasses set `input_size`, `num_outputs` and `task` (the CLI passes them to the model)
    and fill `self.datasets` in `setup`.
    """

    input_size: int
    num_outputs: int
    task: Task = "classification"

    def __init__(self, batch_size: int = 100, **kwargs: Any) -> None:
        super().__init__(batch_size, **kwargs)
