"""DataLoaders over in-memory tensors (or `.npy` files, `sequence_arrays.py`) that index a whole
batch at once.

`DataLoader` hands a dataset's `__getitems__` the list of a batch's indices when it has one;
indexing each tensor with that list returns the stacked batch directly, so the loader skips
per-sample `__getitem__` calls and collation (the main cost for small sequences). Samplers stay
ordinary, so Lightning can still swap in distributed, sequential or overfitting samplers.
"""

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from project.data.resumable import ResumableLoader, SeededShuffle


class TensorBatches(TensorDataset):
    pure_reads = True  # a read draws no random numbers: a resume skips batches without reading

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices)
        return tuple(tensor[index] for tensor in self.tensors)


def already_collated(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return batch


def batch_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    drop_last: bool = False,
    sampler: Sampler | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = False,
) -> DataLoader:
    if isinstance(dataset, TensorDataset):  # else a dataset that reads whole batches itself
        dataset = TensorBatches(*dataset.tensors)
    # `sampler` and no `shuffle` argument: Lightning reads a `shuffle=False` as "do not shuffle
    # under DDP either"; a resumable loader so that a mid-epoch checkpoint resumes exactly
    return ResumableLoader(
        dataset,
        batch_size=batch_size,
        sampler=SeededShuffle(dataset) if shuffle else sampler,
        collate_fn=already_collated,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers,
    )
