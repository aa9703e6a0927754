"""MNIST-1D drawn as images: each 40-step signal becomes a line plot of 1×32×32 pixels; offline.

Linear models do poorly on MNIST-1D by design (its digits are shifted, scaled, sheared and
noisy), so a network's learned features matter: the fine-tuning demo pretrains on digits 0-4 and
transfers to 5-9, where a frozen pretrained backbone clearly beats a frozen random one.
"""

from typing import Any

import torch
from torch.utils.data import TensorDataset

from project.data.digit_labels import digit_classes, relabelled
from project.data.images import ImageDataModule, labelled_images
from project.data.mnist1d import mnist1d_arrays

AMPLITUDE = 4.0  # the plot's vertical range is ±4: 99.9% of MNIST-1D's values lie within ±3.7


def line_plots(signals: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images `(n, 1, size, size)`: time runs left to right, amplitude bottom to top."""
    x = torch.nn.functional.interpolate(signals[:, None], size=size, mode="linear")[:, 0]
    rows = ((AMPLITUDE - x) / (2 * AMPLITUDE) * (size - 1)).round().clamp(0, size - 1).long()
    # each column is lit from its point to the next one's, so the line has no gaps
    top = torch.minimum(rows, torch.cat([rows[:, 1:], rows[:, -1:]], dim=1))
    bottom = torch.maximum(rows, torch.cat([rows[:, 1:], rows[:, -1:]], dim=1))
    row = torch.arange(size)[None, :, None]
    lit = (row >= top[:, None, :]) & (row <= bottom[:, None, :])
    return (lit.to(torch.uint8) * 255)[:, None]


class MNIST1DImagesDataModule(ImageDataModule):
    """MNIST-1D's 4000 training and 1000 test signals as line plots, validation from train.

    `classes` keeps some digits only, relabelled 0, 1, … in the order given.
    """

    def __init__(
        self,
        *,
        classes: list[int] | None = None,
        image_size: int = 32,
        batch_size: int = 64,
        augment: bool = False,
        val_fraction: float = 0.125,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            classes: the digits to keep (default: all ten).
            image_size: side of the plots; the 40 steps are resampled to that many columns.
            augment: no augmentation exists for plots (MNIST-1D's own shifts and noise are in
                the data); the option is here for the common signature.
        """
        super().__init__(batch_size, augment=augment, val_fraction=val_fraction, **kwargs)
        self.classes = digit_classes(classes)
        self.image_size = image_size
        self.num_outputs = len(self.classes)
        self.input_size = (1, image_size, image_size)

    def load(self) -> dict[str, TensorDataset]:
        raw = mnist1d_arrays()
        splits = {}
        for split, x, y in (("train", raw["x"], raw["y"]), ("test", raw["x_test"], raw["y_test"])):
            labels = relabelled(torch.as_tensor(y), self.classes)
            keep = labels >= 0
            signals = torch.as_tensor(x, dtype=torch.float32)[keep]
            splits[split] = labelled_images(line_plots(signals, self.image_size), labels[keep])
        return splits
