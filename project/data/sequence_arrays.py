"""Sequences larger than memory: a folder of `.npy` files, read from disk a batch at a time.

The folder holds the arrays a `.npz` would hold, one file each: `x.npy` `(samples, time)` or
`(samples, time, features)`, `y.npy` and optionally `lengths.npy`, saved with `np.save` or
written in pieces with `np.lib.format.open_memmap` (scripts/big_sequences.py does). `y` and
`lengths` are held in memory (bytes per sample); `x` stays on disk and each batch of it is read
by the DataLoader workers, through a memory map opened for that batch only: a map kept open
would count every page it ever read in the process's resident memory, up to the whole file.

Plain `.npy` rather than WebDataset, litdata or torchdata: those stream shards in an order of
their own (shuffled within a buffer), where memory maps give random access, so the order, the
DDP shares (Lightning's DistributedSampler) and the exact mid-epoch resume are those of the
in-memory path, with no new dependency.
"""

import ctypes
import ctypes.util
import os
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import Dataset, get_worker_info

from project.errors import UserError
from project.task import Task

FOLDER = "x.npy (samples, time[, features]), y.npy (samples[, outputs]), optional lengths.npy"
PREVIEW_BYTES = 2**24  # of x read at start to check its values (and guess zero padding)


class SequenceArrays(Dataset):
    """`(x, y)` or `(x, y, lengths)` batches with `x` read from `folder/x.npy` per batch."""

    pure_reads = True  # a read draws no random numbers: a resume skips batches without reading
    allocator_set = False  # in this process (each DataLoader worker has its own)

    def __init__(
        self,
        folder: Path,
        y: torch.Tensor,
        lengths: torch.Tensor | None,
        rows: np.ndarray | None = None,
    ) -> None:
        self.folder, self.y, self.lengths = folder, y, lengths
        self.rows = np.arange(len(y)) if rows is None else rows  # this split's rows of the files
        x = np.load(folder / "x.npy", mmap_mode="r")  # the header only: the map closes here
        # where each row lies in the file: rows of a C-ordered array are contiguous
        self.layout = (x.shape, x.dtype, x.offset) if x.flags.c_contiguous else None
        self.features = x.shape[2] if x.ndim == 3 else 1

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, positions: torch.Tensor) -> "SequenceArrays":
        return SequenceArrays(self.folder, self.y, self.lengths, self.rows[positions.numpy()])

    @property
    def targets(self) -> torch.Tensor:  # what `class_weights: balanced` counts
        return self.y[torch.from_numpy(self.rows)]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        if not SequenceArrays.allocator_set and get_worker_info() is not None:
            SequenceArrays.allocator_set = True
            return_large_blocks()
        rows = self.rows[np.asarray(indices)]
        batch = torch.from_numpy(read_rows(self.folder / "x.npy", rows, self.layout)).float()
        if batch.dim() == 2:
            batch = batch.unsqueeze(-1)
        if not torch.isfinite(batch).all():
            raise UserError(f"{self.folder}/x.npy: rows {rows.tolist()} hold NaN or infinity")
        index = torch.from_numpy(rows)
        return (batch, self.y[index], *([] if self.lengths is None else [self.lengths[index]]))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[0] for t in self.__getitems__([index]))


def read_rows(path: Path, rows: np.ndarray, layout: tuple | None) -> np.ndarray:
    """`x[rows]` of the `.npy` file at `path`, read with one `pread` a row.

    Not through a memory map: the kernel maps the pages around each one touched (fault-around,
    read-ahead), so a batch of 1024 scattered rows of 16 KiB counted 80 MB of the file in the
    reading process's resident memory, 5 times the batch, for as long as the map was open.
    `pread` copies the rows' bytes into the batch and maps nothing. A Fortran-ordered file
    (rows not contiguous) is read through a map.
    """
    if layout is None:
        return np.ascontiguousarray(np.load(path, mmap_mode="r")[rows])
    shape, dtype, offset = layout
    batch = np.empty((len(rows), *shape[1:]), dtype)
    row_bytes = batch[0].nbytes if len(rows) else 0
    with open(path, "rb", buffering=0) as file:
        for position in np.argsort(rows):  # in the file's order: forward reads for the disk
            start = offset + int(rows[position]) * row_bytes
            if os.preadv(file.fileno(), [batch[position]], start) != row_bytes:
                raise UserError(f"{path}: shorter than its header says (truncated?)")
    return batch


def return_large_blocks() -> None:
    """Makes glibc's malloc give blocks of 1 MiB and more back to the system when freed.

    By default the first such free raises malloc's threshold to that size, and every later batch
    of 16 MB is carved from the heap, which fragments and grows: a worker reading a 4 GB set held
    1 GB after 200 batches, 0.5 GB with this. Called in DataLoader workers only, where reads of
    whole batches are all the work; elsewhere (not glibc) it does nothing.
    """
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-3, 2**20)  # M_MMAP_THRESHOLD (malloc.h): a fixed threshold, not dynamic


def open_sequence_folder(folder: Path, task: Task, labelled: bool = True) -> SequenceArrays:
    """Checks the folder's arrays (all of `y` and `lengths`, the first samples of `x`); every
    problem is a one-line `UserError` naming the file."""
    try:
        x = np.load(folder / "x.npy", mmap_mode="r")
        y, lengths = (
            np.load(path) if path.is_file() else None
            for path in (folder / "y.npy", folder / "lengths.npy")
        )
    except FileNotFoundError:
        raise UserError(f"data folder {folder} has no x.npy (expected {FOLDER})") from None
    except ValueError as error:  # pickled (object) arrays, refused without allow_pickle
        raise UserError(f"data folder {folder}: a file could not be read ({error})") from None
    if x.ndim not in (2, 3) or x.dtype.kind not in "biuf":
        raise UserError(f"{folder}/x.npy: {x.dtype} {x.shape}, expected numbers {FOLDER}")
    if len(x) == 0:
        raise UserError(f"{folder}/x.npy holds no samples")
    if y is None and labelled:
        raise UserError(f"data folder {folder} has no y.npy (expected {FOLDER})")
    rows = max(1, PREVIEW_BYTES // (x[0].size * x.itemsize))  # a few thousand samples: bounded
    preview = torch.from_numpy(np.array(x[:rows])).float()
    preview = preview.unsqueeze(-1) if preview.dim() == 2 else preview
    if not torch.isfinite(preview).all():
        raise UserError(f"{folder}/x.npy holds NaN or infinite values")
    y_tensor, lengths_tensor = labels_and_lengths(
        folder, x.shape, None if y is None else torch.from_numpy(y), lengths, task
    )
    if lengths is None:
        warn_if_zero_padded(folder, preview)
    return SequenceArrays(folder, y_tensor, lengths_tensor)


def labels_and_lengths(
    path: Path,
    x_shape: tuple[int, ...],
    y: torch.Tensor | None,
    lengths: torch.Tensor | np.ndarray | None,
    task: Task,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`y` and `lengths` checked against `x`'s shape and the task; a missing `y` (samples to
    predict) becomes the placeholder target -1 (NaN for regression), which `predict_step`
    ignores."""
    samples, steps = x_shape[0], x_shape[1]
    if y is not None and (len(y) != samples or y.dim() > 2):
        raise UserError(f"data file {path}: y has shape {tuple(y.shape)}, expected ({samples},)")
    if y is not None and y.is_floating_point() and not torch.isfinite(y).all():
        raise UserError(f"data file {path}: y holds NaN or infinite values")
    if y is None:
        y = torch.full((samples,), -1 if task == "classification" else float("nan"))
    if task == "classification":
        if y.dim() != 1 or y.is_floating_point() and not torch.equal(y, y.round()):
            raise UserError(f"data file {path}: classification needs integer labels y ({samples},)")
        y = y.long()
    else:
        y = y.float()
    if lengths is not None:
        lengths = torch.as_tensor(lengths).long()
        if lengths.shape != (samples,) or lengths.min() < 1 or lengths.max() > steps:
            raise UserError(
                f"data file {path}: lengths must be ({samples},) with values in 1..{steps}"
            )
    return y, lengths


def warn_if_zero_padded(path: Path, x: torch.Tensor) -> None:
    """Warns once when `x`, read without `lengths`, looks zero-padded: the model would read the
    padding as signal (49.7% accuracy instead of 96.5% on one padded data set)."""
    zero_steps = (x == 0).all(-1)  # (samples, time)
    trailing = zero_steps.flip(1).int().cumprod(1).sum(1)  # each sample's zero steps at its end
    ends_in_zeros = trailing > 0
    # padding: most samples end in zero steps, not all of them the same number (sequences of
    # one length have none to vary), and the zeros lie at the ends rather than all through the
    # sequences (sparse counts, where zero steps are data)
    if (
        2 * ends_in_zeros.sum() > len(x)
        and trailing[ends_in_zeros].unique().numel() > 1
        and 2 * trailing.sum() > zero_steps.sum()
    ):
        rank_zero_warn(
            f"data file {path}: {int(ends_in_zeros.sum())} of {len(x)} samples end in all-zero "
            "time steps, as if zero-padded, and the file has no lengths, so the model reads the "
            f"padding as data: add `lengths` ({len(x)},), each sample's true number of steps"
        )
