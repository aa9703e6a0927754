"""DataLoaders that resume mid-epoch exactly, on one process or many.

Lightning stores a train loader's `state_dict()` in every checkpoint and gives it back through
`load_state_dict()` on resume (a plain DataLoader has neither, and a mid-epoch resume then starts
the epoch over with a fresh shuffle). Two things make the resumed epoch the same as the
interrupted one:
- the shuffle order is a function of (seed, epoch) alone, like that of Lightning's
  DistributedSampler, and not of how much the global RNG was used before the epoch began;
- the loader counts the batches it handed out and, after a restore, replays the epoch's order and
  skips that many.

Skipped batches are read and dropped, so that randomness drawn while reading (an image folder's
augmentation, in the DataLoader workers) repeats as well. A dataset whose reads draw nothing says
so with `pure_reads = True` (tensors, `.npy` files on disk): its skipped batches are not read at
all, and a resume deep into an epoch of a data set larger than memory starts at once.
"""

import itertools
import os
from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler


class SeededShuffle(RandomSampler):
    """Epoch `e` visits the samples in `randperm(n)` seeded with `seed + e`.

    It is the order a `DistributedSampler(shuffle=True, seed=seed)` splits between ranks, and the
    seed defaults to the one `seed_everything` set (as Lightning's sampler's does), so one process
    with batch 2b sees at each step the union of what two DDP ranks with batch b see. Being a
    `RandomSampler`, Lightning replaces it by that DistributedSampler under DDP.
    """

    def __init__(self, data_source: Sized, seed: int | None = None) -> None:
        super().__init__(data_source)
        self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it at the start of each epoch
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class SkippedIndices:
    """The loader's batches of indices, less the first `skip` of the next pass: what a loader
    over a dataset with `pure_reads` iterates, so that skipped batches are never read."""

    def __init__(self, loader: "ResumableLoader") -> None:
        self.loader, self.skip = loader, 0

    def __len__(self) -> int:  # DataLoader's len: the whole pass, as Lightning counts it
        return len(self.loader.batch_sampler)

    def __iter__(self) -> Iterator[list[int]]:
        # called more than once per pass (torch's worker iterator calls it again in `_reset`):
        # the loader sets `skip` before it makes the pass's iterator, and clears it after
        return itertools.islice(iter(self.loader.batch_sampler), self.skip, None)


class ResumableLoader(DataLoader):
    """A DataLoader whose position in the epoch is part of Lightning's checkpoints.

    A checkpoint taken at the end of an epoch cut short by `limit_train_batches` resumes at that
    offset of the next epoch's order, not at its start.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handed_out = 0  # batches of the current pass given to the training loop
        self._resume: dict | None = None
        self._skipped_indices = SkippedIndices(self)

    @property
    def _index_sampler(self) -> Any:
        # a private DataLoader property, but the one torch's iterators read batches of indices
        # from (tests/test_big_sequences.py counts the reads: it fails if a torch stops reading
        # it); a persistent-workers iterator keeps the object it got: `skip` lives in a fixed one
        pure_reads = getattr(self.dataset, "pure_reads", False)
        if pure_reads and self.batch_sampler is not None and hasattr(self, "_skipped_indices"):
            return self._skipped_indices
        return super()._index_sampler

    def state_dict(self) -> dict:
        epoch = getattr(self.sampler, "epoch", None)  # SeededShuffle or DistributedSampler
        if self._handed_out >= len(self):  # the pass is over: resume at the next one's start
            return {"epoch": None if epoch is None else epoch + 1, "batches": 0}
        return {"epoch": epoch, "batches": self._handed_out}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state  # applied by the next __iter__, which Lightning calls after this

    def __iter__(self) -> Iterator:
        resume, self._resume = self._resume or {"epoch": None, "batches": 0}, None
        if resume["epoch"] is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(resume["epoch"])
        self._handed_out = resume["batches"]
        return self._pass(resume["batches"])

    def _pass(self, skip: int) -> Iterator:
        # A generator: nothing here runs before the first batch is asked for. Lightning makes the
        # iterator before it sets the epoch (when a run starts, and when it resumes from an
        # end-of-epoch checkpoint, whose loader state it does not restore), and DataLoader
        # workers draw the order as soon as their iterator is made: made then, they shuffled the
        # resumed epoch like the one before it (without workers the draw waited for a batch).
        #
        # A pass draws its workers' base seed from `generator`, by default from the global RNG:
        # that draw would shift the dropout of every later step, and a resumed pass would give
        # its workers other seeds than the interrupted one. Seeded by (seed, epoch), like the
        # order, the pass draws nothing from the global RNG and its workers' seeds repeat.
        seed = getattr(self.sampler, "seed", None)
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed
        self.generator = torch.Generator().manual_seed(seed + getattr(self.sampler, "epoch", 0))
        skips_reads = self._index_sampler is self._skipped_indices
        self._skipped_indices.skip = skip if skips_reads else 0
        batches = super().__iter__()
        self._skipped_indices.skip = 0
        for _ in range(0 if skips_reads else skip):
            next(batches)
        for batch in batches:
            self._handed_out += 1
            yield batch
