"""The base of the in-memory image DataModules: uint8 images `(N, C, H, W)` and class labels."""

from typing import Any

import torch
from torch.utils.data import TensorDataset
from torchvision.transforms import v2

from project.data.augmentation import Policy, check_recipe, recipe_steps
from project.data.base import InMemoryDataModule, split_off
from project.errors import UserError
from project.task import Task


class ImageDataModule(InMemoryDataModule):
    """Serves `(images, labels)` batches of uint8 images held in memory.

    Images stay uint8 at their own size (a quarter of the memory of floats, and of the transfer
    to the GPU); the model converts and resizes them. Subclasses set `num_outputs` and
    `input_size` `(channels, height, width)` in `__init__` (the CLI passes them to the model),
    return their splits from `load()` and their training augmentation from `augmentation()`.
    """

    num_outputs: int
    input_size: tuple[int, int, int]
    task: Task = "classification"

    def __init__(
        self,
        batch_size: int = 128,
        *,
        augment: bool = True,
        policy: Policy | None = None,
        random_erasing: float = 0.0,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            augment: apply `augmentation()` to each training image (random crops, flips, …).
            policy: then one of torchvision's augmentation policies: trivial_augment
                (TrivialAugmentWide), rand_augment or auto_augment.
            random_erasing: then blank a random rectangle of an image with this probability.
            val_fraction: share of the training images held out for validation, when the source
                has no validation split; `split_seed` fixes which.
        """
        super().__init__(batch_size, **kwargs)
        if not 0 < val_fraction < 1:
            raise UserError(f"data.val_fraction must be between 0 and 1, got {val_fraction}")
        check_recipe(policy, random_erasing)
        self.augment = augment
        self.policy, self.random_erasing = policy, random_erasing
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.transform: v2.Transform | None = None

    def load(self) -> dict[str, TensorDataset]:
        """`train` and `test` (and `val` if the source has one): uint8 images, int64 labels."""
        raise NotImplementedError

    def augmentation(self) -> v2.Transform | None:
        """What each training image goes through, one image at a time; None: nothing."""
        return None

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        splits = self.load()
        if "val" not in splits:
            train = splits.pop("train")
            size = max(1, round(self.val_fraction * len(train)))
            splits["train"], splits["val"] = split_off(train, size, self.split_seed)
        self.datasets = splits
        own = self.augmentation() if self.augment else None
        steps = [own] if own else []
        steps += recipe_steps(self.policy, self.random_erasing)
        self.transform = v2.Compose(steps) if steps else None

    def on_after_batch_transfer(self, batch: tuple, dataloader_idx: int) -> tuple:
        # per image, so that each gets its own random crop; on the batch's device, after the
        # loader, which stays the plain in-memory one (see project/data/batches.py). The model
        # summary sends its example input (a bare tensor) through this hook too: left alone.
        training = self.trainer is not None and self.trainer.training
        if self.transform is None or not training or not isinstance(batch, tuple | list):
            return batch
        images, *rest = batch
        return (torch.stack([self.transform(image) for image in images]), *rest)


def labelled_images(images: torch.Tensor, labels: torch.Tensor) -> TensorDataset:
    """A dataset of uint8 `(N, C, H, W)` images (a channel axis is added to `(N, H, W)`)."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return TensorDataset(images.to(torch.uint8).contiguous(), labels.to(torch.int64))
