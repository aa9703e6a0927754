"""scikit-learn's handwritten digits: 1797 images of 8×8 pixels, shipped inside the wheel."""

from typing import Any

import torch
from torch.utils.data import TensorDataset
from torchvision.transforms import v2

from project.data.base import split_off
from project.data.digit_labels import digit_classes, relabelled
from project.data.images import ImageDataModule, labelled_images
from project.errors import UserError


class DigitsDataModule(ImageDataModule):
    """`load_digits()` as 1×8×8 uint8 images (its 0–16 grey levels scaled to 0–255); offline.

    `classes` keeps some digits only, relabelled 0, 1, … in the order given.
    """

    def __init__(
        self,
        *,
        classes: list[int] | None = None,
        test_fraction: float = 0.2,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            classes: the digits to keep (default: all ten).
            test_fraction: share of the images held out for testing (the set has no test split);
                `val_fraction` is then taken from the rest, both with `split_seed`.
        """
        super().__init__(batch_size, val_fraction=val_fraction, **kwargs)
        self.classes = digit_classes(classes)
        if not 0 < test_fraction < 1:
            raise UserError(f"data.test_fraction must be between 0 and 1, got {test_fraction}")
        self.test_fraction = test_fraction
        self.num_outputs = len(self.classes)
        self.input_size = (1, 8, 8)
        try:  # here, not in `load`: a missing package is a one-line error before any work
            import sklearn.datasets  # noqa: F401
        except ImportError:
            raise UserError(
                "DigitsDataModule needs scikit-learn: pip install -e '.[digits]'"
            ) from None

    def load(self) -> dict[str, TensorDataset]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.as_tensor(digits.images * 255 / 16).round()
        labels = relabelled(torch.as_tensor(digits.target), self.classes)
        keep = labels >= 0
        dataset = labelled_images(images[keep], labels[keep])
        size = round(self.test_fraction * len(dataset))
        train, test = split_off(dataset, size, self.split_seed)
        return {"train": train, "test": test}

    def augmentation(self) -> v2.Transform:
        # shifts of a pixel and small rotations; no flips, which would change some digits
        return v2.RandomAffine(degrees=10, translate=(0.125, 0.125))
