"""The base of every DataModule here: splits in `self.datasets`, served with the config's batch
size and loader settings, which only `SplitsDataModule.__init__` declares.

Subclasses take their own arguments keyword-only and pass the rest on with `**kwargs`;
jsonargparse follows `**kwargs` to the parent's parameters, so `--data.help` and the configs
still list `batch_size`, `num_workers`, … with their defaults and help.
"""

import math

import torch
from lightning import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset

from project.data.batches import batch_loader
from project.errors import UserError


def split_off(dataset: TensorDataset, size: int, seed: int) -> tuple[TensorDataset, TensorDataset]:
    """Splits `size` random samples off `dataset`, the same ones for the same seed (a dataset
    with a `subset` method, kept on disk, gives two subsets of itself)."""
    n = len(dataset)
    if not 0 < size < n:
        raise UserError(f"validation split of {size} samples must be between 1 and {n - 1}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    rest, held = order[size:].sort().values, order[:size].sort().values
    if hasattr(dataset, "subset"):
        return dataset.subset(rest), dataset.subset(held)
    return TensorDataset(*dataset[rest]), TensorDataset(*dataset[held])


class SplitsDataModule(LightningDataModule):
    """Splits in `self.datasets`, served with the config's batch size and loader settings; the
    base of every DataModule here. Subclasses fill `datasets` in `setup` and build one loader in
    `_loader`."""

    def __init__(
        self,
        batch_size: int,
        *,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ) -> None:
        """
        Args:
            batch_size: samples per batch, for every split.
            num_workers: worker processes that load batches (0: the training process does).
            pin_memory: batches in page-locked memory, for faster copies to a GPU.
            persistent_workers: keep the workers alive from one epoch to the next.
        """
        super().__init__()
        if batch_size <= 0:
            raise UserError(f"data.batch_size must be a positive integer, got {batch_size}")
        if num_workers < 0:
            raise UserError(f"data.num_workers must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.loader_options = dict(
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers and num_workers > 0,  # torch refuses it at 0
        )
        self.datasets: dict[str, Dataset] = {}

    def _loader(
        self,
        split: str,
        shuffle: bool = False,
        drop_last: bool = False,
        sampler: Sampler | None = None,
    ) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, drop_last=self._last_batch_is_one_sample())

    def _last_batch_is_one_sample(self) -> bool:
        # BatchNorm cannot train on one sample ("Expected more than 1 value per channel"), so
        # such a last batch is dropped: one sample a pass, another each epoch as the order is
        # shuffled. Under DDP each rank's share (padded to equal sizes) is what gets batched.
        world_size = self.trainer.world_size if self.trainer is not None else 1
        per_rank = math.ceil(len(self.datasets.get("train", ())) / world_size)
        return self.batch_size > 1 and per_rank % self.batch_size == 1

    def train_labels(self) -> torch.Tensor:
        """The training split's labels (for `class_weights: balanced`), without loading inputs."""
        dataset = self.datasets["train"]
        indices = None
        if isinstance(dataset, Subset):
            dataset, indices = dataset.dataset, dataset.indices
        if isinstance(dataset, TensorDataset):
            labels = dataset.tensors[1]
        elif hasattr(dataset, "targets"):  # torchvision's ImageFolder and friends
            labels = torch.as_tensor(dataset.targets)
        else:
            raise UserError(
                f"{type(self).__name__}: class_weights balanced needs the training labels; give "
                "the weights per class instead"
            )
        return labels if indices is None else labels[torch.as_tensor(indices)]

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", sampler=self._each_sample_once("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", sampler=self._each_sample_once("test"))

    def _each_sample_once(self, split: str) -> Sampler | None:
        """Under DDP, each rank's share of an evaluation split, every sample on exactly one rank.

        Lightning's default, a `DistributedSampler`, pads the ranks to equal sizes by repeating
        samples, and the metrics count the repeats (250/369 correct became 251/370). Unpadded,
        the ranks may run one batch more or less; evaluation has no per-batch collective, so
        that is safe (Lightning's own `predict` does the same) once every rank has a sample.
        """
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1 or split not in self.datasets:
            return None
        size = len(self.datasets[split])
        if size < trainer.world_size:
            raise UserError(
                f"the {split} split has {size} sample(s) for {trainer.world_size} processes: "
                "give it at least one sample per process, or evaluate with --trainer.devices 1"
            )
        return UnrepeatedDistributedSampler(
            self.datasets[split],
            num_replicas=trainer.world_size,
            rank=trainer.global_rank,
            shuffle=False,
        )

    def predict_dataloader(self) -> DataLoader:
        # new samples to label when the DataModule was given some, else the test split
        return self._loader("predict" if "predict" in self.datasets else "test")


class InMemoryDataModule(SplitsDataModule):
    """Splits held as tensors, served by `batch_loader`; the base of the sequence and the
    in-memory image DataModules."""

    datasets: dict[str, TensorDataset]

    def _loader(
        self,
        split: str,
        shuffle: bool = False,
        drop_last: bool = False,
        sampler: Sampler | None = None,
    ) -> DataLoader:
        if split not in self.datasets:
            raise UserError(f"{type(self).__name__} has no {split} split")
        return batch_loader(
            self.datasets[split],
            self.batch_size,
            shuffle,
            drop_last,
            sampler=sampler,
            **self.loader_options,
        )
