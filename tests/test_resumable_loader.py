"""The training loader's order is a function of (seed, epoch) drawn when the first batch is asked
for, with or without DataLoader workers: Lightning sets the epoch after it made the iterator (when
a run starts, and when it resumes from an end-of-epoch checkpoint, whose loader state it does not
restore). With workers the order used to be drawn with the iterator, and a run resumed from an
end-of-epoch `last.ckpt` trained its next epoch in the order of the one before."""

import pytest
import torch
from torch.utils.data import TensorDataset

from project.data.resumable import ResumableLoader, SeededShuffle

SIZE, BATCH, SEED = 20, 5, 7


def loader(workers: int) -> ResumableLoader:
    data = TensorDataset(torch.arange(SIZE))
    return ResumableLoader(
        data, batch_size=BATCH, sampler=SeededShuffle(data, seed=SEED), num_workers=workers
    )


def order(epoch: int) -> torch.Tensor:
    return torch.randperm(SIZE, generator=torch.Generator().manual_seed(SEED + epoch))


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("epoch", [0, 1, 3])
def test_the_epoch_set_after_the_iterator_is_made_decides_the_order(
    workers: int, epoch: int
) -> None:
    training = loader(workers)
    training.sampler.set_epoch(5)  # a previous pass's
    batches = iter(training)
    training.sampler.set_epoch(epoch)  # as Lightning's fit loop does, after `iter`
    assert torch.equal(torch.cat([b[0] for b in batches]), order(epoch))
    assert training.state_dict() == {"epoch": epoch + 1, "batches": 0}


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("done", [0, 1, 2])
def test_a_restored_position_continues_the_pass(workers: int, done: int) -> None:
    training = loader(workers)
    training.load_state_dict({"epoch": 2, "batches": done})
    batches = iter(training)
    assert training.state_dict() == {"epoch": 2, "batches": done}
    first = next(batches)[0]
    assert training.state_dict() == {"epoch": 2, "batches": done + 1}
    rest = torch.cat([first, *(b[0] for b in batches)])
    assert torch.equal(rest, order(2)[done * BATCH :])
