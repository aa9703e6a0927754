"""The pictures drawn into TensorBoard: a confusion matrix a person can read."""

import pytest
import torch
import torch.nn.functional as F

from project.figures import blue, confusion_image


def block_colours(image: torch.Tensor, side: int = 6) -> set[tuple[int, int, int]]:
    """The colours that fill some `side`×`side` square of the image: the cells' fills (the
    legend's lines of one colour are thinner, the text is inside the cells' middles)."""
    r, g, b = image.double()
    codes = (r * 65536 + g * 256 + b)[None, None]
    high = F.max_pool2d(codes, side, stride=1)
    low = -F.max_pool2d(-codes, side, stride=1)
    uniform = high[high == low].long().unique().tolist()
    return {(c >> 16, (c >> 8) & 255, c & 255) for c in uniform}


@pytest.mark.parametrize("classes", [1, 2, 10, 40])
def test_each_cell_is_coloured_by_its_share_of_the_true_class(classes: int) -> None:
    generator = torch.Generator().manual_seed(classes)
    counts = torch.randint(0, 20, (classes, classes), generator=generator)
    counts[0] = 0  # a class with no sample: an empty row, not a division by zero
    counts[-1, -1] += 50
    image = confusion_image(counts)
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    shares = counts.float() / counts.sum(1, keepdim=True).clamp(min=1)
    drawn = {blue(float(share)) for share in shares.flatten()}
    blocks = block_colours(image)
    assert drawn <= blocks
    absent = {blue(s / 97) for s in range(1, 98)} - drawn  # shares no cell has; 0 is white
    assert not absent & blocks


def test_class_names_widen_the_image_and_keep_the_cells() -> None:
    counts = torch.eye(3, dtype=torch.long) * 7
    numbered = confusion_image(counts)
    named = confusion_image(counts, ["a rather long class name", "cat", "dog"])
    assert named.shape[2] > numbered.shape[2]  # room for the names at the left
    assert {blue(1.0), blue(0.0)} <= block_colours(named)
